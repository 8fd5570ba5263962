//! `[failure_detector]` configuration: which detector a node runs and its
//! parameters.
//!
//! ```toml
//! [failure_detector]
//! kind = "swim"            # or "heartbeat", "phi-accrual"
//! probe_interval_ms = 1000
//! ```
//!
//! Every parameter has a default (documented on its field, taken from Akka
//! for phi-accrual and from memberlist's LAN profile for SWIM), unknown keys
//! are rejected, and [`FailureDetectorConfig::validate`] rejects impossible
//! values with an error naming the TOML key, e.g.
//! `failure_detector.threshold must be > 0, got -1`. Durations are integer
//! milliseconds (keys end in `_ms`); they are signed so that a negative value
//! gets that clear error instead of a bare type error.
//!
//! # Presets
//!
//! `preset = "lan-fast" | "lan" | "wan"` (any `kind`) starts from a named
//! set of values ([`Preset`]); keys given next to it override the preset's
//! values one by one. The defaults *are* the `lan` preset, so a table
//! without `preset` is `preset = "lan"`.
//!
//! ```toml
//! [failure_detector]
//! kind = "phi-accrual"
//! preset = "lan-fast"      # Down about 2 s after a crash
//! grace_ms = 500           # ...but this one value differs
//! ```
//!
//! | preset | heartbeat: interval / pause / grace / check | phi-accrual: interval / pause / min sd / first estimate / threshold / grace / check | SWIM: probe interval / timeout / suspicion_mult (other keys default unless listed) |
//! |---|---|---|---|
//! | `lan-fast` | 200 / 600 / 1000 / 100 ms | 200 / 600 / 50 / 200 ms, 8.0, 1000 / 100 ms | 300 / 150 ms, 3 |
//! | `lan` (default) | 1000 / 3000 / 4000 / 100 ms | 1000 / 3000 / 100 / 1000 ms, 8.0, 4000 / 100 ms | 1000 / 500 ms, 4 |
//! | `wan` | 1000 / 9000 / 10000 / 200 ms | 1000 / 8000 / 500 / 1000 ms, 10.0, 10000 / 200 ms | 2000 / 1000 ms, 5; gossip every 500 ms to 4, gossip to the dead 60 s |
//!
//! What each preset is for, and the detection times measured with each
//! detector, are in [`Preset`]'s documentation and in the README.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::heartbeat::HeartbeatParams;
use super::phi::PhiParams;
use super::swim::SwimParams;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not match the schema.
    #[error("failure_detector: {0}")]
    Parse(String),
    /// A value is out of range; `key` is the full TOML key.
    #[error("{key} {message}")]
    Invalid {
        /// The TOML key, e.g. `failure_detector.threshold`.
        key: String,
        /// What is wrong, e.g. `must be > 0, got -1`.
        message: String,
    },
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: format!("failure_detector.{key}"),
        message,
    }
}

fn positive_ms(key: &str, v: i64) -> Result<(), ConfigError> {
    if v > 0 {
        Ok(())
    } else {
        Err(invalid(key, format!("must be > 0 (milliseconds), got {v}")))
    }
}

fn positive(key: &str, v: i64) -> Result<(), ConfigError> {
    if v > 0 {
        Ok(())
    } else {
        Err(invalid(key, format!("must be > 0, got {v}")))
    }
}

fn non_negative_ms(key: &str, v: i64) -> Result<(), ConfigError> {
    if v >= 0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be >= 0 (milliseconds), got {v}"),
        ))
    }
}

/// Milliseconds (already validated non-negative) as a [`Duration`].
fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

/// Which failure detector a node runs, with its parameters
/// (the `[failure_detector]` table; `kind` selects the variant).
///
/// Deserializing reads the table key by key, without buffering it (as
/// serde's internally tagged enums do), so an error is raised at the key it
/// is about: a TOML deserializer then reports that key's line, and
/// `serde_path_to_error` its path (`failure_detector.threshold`). A value of
/// the wrong type, a key no detector has, and a key of another kind than
/// `kind` are each refused at that key (the last one at the table when
/// `kind` comes after it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailureDetectorConfig {
    /// `kind = "heartbeat"`: fixed-deadline heartbeats.
    Heartbeat(HeartbeatConfig),
    /// `kind = "phi-accrual"`: phi-accrual heartbeats.
    PhiAccrual(PhiAccrualConfig),
    /// `kind = "swim"`: SWIM + Lifeguard.
    Swim(SwimConfig),
}

impl Default for FailureDetectorConfig {
    /// SWIM with memberlist's LAN defaults (it scales to large clusters).
    fn default() -> Self {
        FailureDetectorConfig::Swim(SwimConfig::default())
    }
}

/// A named set of `[failure_detector]` values (`preset = "..."`), for each
/// kind; keys written next to `preset` override its values. Pick by how
/// long a silence must be tolerated before a member is declared `Down`
/// (a GC pause, a busy host, a lossy or slow link) against how fast a real
/// crash must be noticed. Detection times below are the time from a crash
/// until *every* live member reports it `Down`, measured on the simulator
/// (`fd_quality -- --presets`, N = 8 and 32, 64 crashes per cell; p50 and
/// p99 over the crashes; the full table is in BENCHMARKS.md,
/// "Failure-detector presets"), and [`Preset::detection_bound`] is the
/// bound each kind is documented (and tested) to meet:
///
/// - [`Preset::LanFast`] (`lan-fast`): one host or a quiet LAN (tests,
///   demos, a rack). Down in about 2 s (p50: heartbeat 1.8, phi-accrual
///   2.0-2.1, SWIM 1.4-2.0 s; p99 at most 1.9 / 2.2 / 3.2 s). The price:
///   a member silent for more than about 0.8 s (a stop-the-world pause, an
///   overloaded host) is suspected, and one silent for 1-2 s is declared
///   `Down` by mistake (130-300 false `Down`s per node-hour with 1-5 s
///   pauses every 10 s, none without pauses); five heartbeats per second
///   to every peer, or about three SWIM probes per second. Not for links
///   with 100 ms-class delays (SWIM then reports false `Down`s).
/// - [`Preset::Lan`] (`lan`, the default): a LAN with ordinary pauses;
///   tolerates about 3 s of silence before a suspicion. Down in about
///   8 s (p50: heartbeat 7.7-7.9, phi-accrual 8.2-9.7, SWIM 5.8-8.1 s; p99
///   at most 8.2 / 10.8 / 12.0 s); no false `Down` with 1-5 s pauses.
///   Akka's phi-accrual defaults and memberlist's LAN profile.
/// - [`Preset::Wan`] (`wan`): links across sites, with 100 ms-class
///   delays and loss; tolerates about 10 s of silence. Down in about 20 s
///   (p50: heartbeat 19.8-19.9, phi-accrual 21.6-21.9, SWIM 13.5-18.5 s;
///   p99 at most 20.2 / 22.2 / 26.6 s).
///
/// The values are in the module documentation's table and on each kind's
/// `preset` constructor ([`HeartbeatConfig::preset`],
/// [`PhiAccrualConfig::preset`], [`SwimConfig::preset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// `lan-fast`: Down in about 2 s on one host or a quiet LAN; a pause
    /// over about a second is taken for a crash.
    LanFast,
    /// `lan`: the defaults; Down in about 8 s, tolerates pauses of a few
    /// seconds.
    Lan,
    /// `wan`: tolerant of slow, lossy links; Down in about 20 s.
    Wan,
}

impl Preset {
    /// Every preset, fastest first.
    pub const ALL: [Preset; 3] = [Preset::LanFast, Preset::Lan, Preset::Wan];

    /// The preset's name as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::LanFast => "lan-fast",
            Preset::Lan => "lan",
            Preset::Wan => "wan",
        }
    }

    /// The preset called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The names of all presets, for messages: `lan-fast, lan, wan`.
    fn names() -> String {
        Self::ALL.map(Preset::name).join(", ")
    }

    /// How soon after a crash every live member reports the crashed member
    /// `Down` with this preset and detector `kind` (`"heartbeat"`,
    /// `"phi-accrual"`, `"swim"`; `None` for another name), at worst: the
    /// documented bound, above the p99 measured on the simulator (see
    /// [`Preset`]) in a cluster of up to 32 members, on a network like the
    /// preset's (`lan-fast` and `lan`: one-way delays up to 10 ms, up to 5 %
    /// loss; `wan`: delays of 20-200 ms, 5 % loss), and without members
    /// stalling (a paused observer reports late).
    ///
    /// | preset | heartbeat | phi-accrual | SWIM |
    /// |---|---|---|---|
    /// | `lan-fast` | 2.5 s | 3 s | 4 s |
    /// | `lan` | 9 s | 12 s | 14 s |
    /// | `wan` | 21 s | 24 s | 30 s |
    pub fn detection_bound(self, kind: &str) -> Option<Duration> {
        let ms = match (self, kind) {
            (Preset::LanFast, "heartbeat") => 2_500,
            (Preset::LanFast, "phi-accrual") => 3_000,
            (Preset::LanFast, "swim") => 4_000,
            (Preset::Lan, "heartbeat") => 9_000,
            (Preset::Lan, "phi-accrual") => 12_000,
            (Preset::Lan, "swim") => 14_000,
            (Preset::Wan, "heartbeat") => 21_000,
            (Preset::Wan, "phi-accrual") => 24_000,
            (Preset::Wan, "swim") => 30_000,
            _ => return None,
        };
        Some(Duration::from_millis(ms))
    }

    /// `kind`'s configuration from this preset.
    pub fn config(self, kind: &str) -> Option<FailureDetectorConfig> {
        Some(match kind {
            "heartbeat" => FailureDetectorConfig::Heartbeat(HeartbeatConfig::preset(self)),
            "phi-accrual" => FailureDetectorConfig::PhiAccrual(PhiAccrualConfig::preset(self)),
            "swim" => FailureDetectorConfig::Swim(SwimConfig::preset(self)),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The value of `preset`: refused at that key (so at its line), naming the
/// known presets.
struct PresetName;

impl<'de> serde::de::DeserializeSeed<'de> for PresetName {
    type Value = Preset;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Preset, D::Error> {
        use serde::de::Error;
        let name = String::deserialize(d)?;
        Preset::from_name(&name).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown preset `{name}`: the presets are {}",
                Preset::names()
            ))
        })
    }
}

/// A whole node config file, of which only `[failure_detector]` is read here.
#[derive(Deserialize)]
struct NodeFile {
    #[serde(default)]
    failure_detector: Option<FailureDetectorConfig>,
}

/// The keys of each kind's table besides `kind` (checked against the
/// structs' fields by a test). Every key is an integer but `threshold`.
const HEARTBEAT_KEYS: &[&str] = &[
    "interval_ms",
    "acceptable_pause_ms",
    "grace_ms",
    "check_interval_ms",
];
const PHI_ACCRUAL_KEYS: &[&str] = &[
    "threshold",
    "max_sample_size",
    "min_std_deviation_ms",
    "acceptable_heartbeat_pause_ms",
    "heartbeat_interval_ms",
    "first_heartbeat_estimate_ms",
    "grace_ms",
    "check_interval_ms",
];
const SWIM_KEYS: &[&str] = &[
    "probe_interval_ms",
    "probe_timeout_ms",
    "indirect_checks",
    "retransmit_mult",
    "suspicion_mult",
    "suspicion_max_timeout_mult",
    "awareness_max_multiplier",
    "max_piggyback",
    "reconnect_interval_ms",
    "gossip_interval_ms",
    "gossip_nodes",
    "gossip_to_the_dead_ms",
    "gossip_transmits",
];
const KINDS: &[&str] = &["heartbeat", "phi-accrual", "swim"];

/// The `kind` of a `[failure_detector]` table.
#[derive(Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Heartbeat,
    PhiAccrual,
    Swim,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::PhiAccrual => "phi-accrual",
            Kind::Swim => "swim",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Heartbeat => HEARTBEAT_KEYS,
            Kind::PhiAccrual => PHI_ACCRUAL_KEYS,
            Kind::Swim => SWIM_KEYS,
        }
    }

    /// Why `key` is not a setting of this kind.
    fn refuse(self, key: &str) -> String {
        let of: Vec<&str> = [Kind::Heartbeat, Kind::PhiAccrual, Kind::Swim]
            .into_iter()
            .filter(|k| k.keys().contains(&key))
            .map(Kind::name)
            .collect();
        format!(
            "`{key}` is a setting of {}, not of kind = \"{}\" (whose settings are {})",
            of.join(" and "),
            self.name(),
            self.keys().join(", ")
        )
    }
}

/// One value of the table, typed by its key; refused at once (so at that
/// key) when no detector, or not the one `kind` already named, has it.
struct Setting<'a> {
    key: &'a str,
    kind: Option<Kind>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Setting<'_> {
    type Value = toml::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<toml::Value, D::Error> {
        use serde::de::Error;
        let known = [Kind::Heartbeat, Kind::PhiAccrual, Kind::Swim]
            .iter()
            .any(|k| k.keys().contains(&self.key));
        if !known {
            let mut all: Vec<&str> = [HEARTBEAT_KEYS, PHI_ACCRUAL_KEYS, SWIM_KEYS].concat();
            all.sort_unstable();
            all.dedup();
            return Err(D::Error::custom(match self.kind {
                Some(kind) => format!(
                    "unknown key `{}`: the settings of kind = \"{}\" are {}",
                    self.key,
                    kind.name(),
                    kind.keys().join(", ")
                ),
                None => format!(
                    "unknown key `{}`: known keys are kind, preset, {}",
                    self.key,
                    all.join(", ")
                ),
            }));
        }
        if let Some(kind) = self.kind.filter(|k| !k.keys().contains(&self.key)) {
            return Err(D::Error::custom(kind.refuse(self.key)));
        }
        Ok(if self.key == "threshold" {
            toml::Value::Float(f64::deserialize(d)?)
        } else {
            toml::Value::Integer(i64::deserialize(d)?)
        })
    }
}

impl<'de> Deserialize<'de> for FailureDetectorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TableVisitor)
    }
}

struct TableVisitor;

impl<'de> serde::de::Visitor<'de> for TableVisitor {
    type Value = FailureDetectorConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a [failure_detector] table with kind = one of {}",
            KINDS.join(", ")
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut kind: Option<Kind> = None;
        let mut preset: Option<Preset> = None;
        let mut settings = toml::Table::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "kind" {
                if kind.is_some() {
                    return Err(A::Error::duplicate_field("kind"));
                }
                kind = Some(map.next_value()?);
            } else if key == "preset" {
                if preset.is_some() {
                    return Err(A::Error::duplicate_field("preset"));
                }
                preset = Some(map.next_value_seed(PresetName)?);
            } else {
                let value = map.next_value_seed(Setting { key: &key, kind })?;
                settings.insert(key, value);
            }
        }
        let Some(kind) = kind else {
            return Err(A::Error::custom(format!(
                "`kind` is missing: one of {}",
                KINDS.join(", ")
            )));
        };
        // Keys read before `kind` was known.
        if let Some(key) = settings.keys().find(|k| !kind.keys().contains(&k.as_str())) {
            return Err(A::Error::custom(kind.refuse(key)));
        }
        // The preset's values (the defaults are `lan`), then the keys
        // written, one by one.
        let preset = preset.unwrap_or(Preset::Lan);
        let built = match kind {
            Kind::Heartbeat => overlay(HeartbeatConfig::preset(preset), settings)
                .map(FailureDetectorConfig::Heartbeat),
            Kind::PhiAccrual => overlay(PhiAccrualConfig::preset(preset), settings)
                .map(FailureDetectorConfig::PhiAccrual),
            Kind::Swim => {
                overlay(SwimConfig::preset(preset), settings).map(FailureDetectorConfig::Swim)
            }
        };
        built.map_err(A::Error::custom)
    }
}

/// `base` with the keys of `settings` set to their values. Every key is
/// one of `T`'s and typed (checked as it was read): this fails only on a
/// bug.
fn overlay<T: Serialize + serde::de::DeserializeOwned>(
    base: T,
    settings: toml::Table,
) -> Result<T, String> {
    let mut values = match toml::Value::try_from(base) {
        Ok(toml::Value::Table(t)) => t,
        Ok(other) => return Err(format!("a preset is not a table: {other}")),
        Err(e) => return Err(e.to_string()),
    };
    values.extend(settings);
    toml::Value::Table(values)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

impl FailureDetectorConfig {
    /// The `kind` string as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            FailureDetectorConfig::Heartbeat(_) => "heartbeat",
            FailureDetectorConfig::PhiAccrual(_) => "phi-accrual",
            FailureDetectorConfig::Swim(_) => "swim",
        }
    }

    /// Read the `[failure_detector]` table out of a node's TOML config text
    /// (other tables are ignored; a missing table gives the default) and
    /// validate it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let file: NodeFile = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let cfg = file.failure_detector.unwrap_or_default();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every value; the error names the offending TOML key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            FailureDetectorConfig::Heartbeat(c) => c.validate(),
            FailureDetectorConfig::PhiAccrual(c) => c.validate(),
            FailureDetectorConfig::Swim(c) => c.validate(),
        }
    }

    /// [`validate`](Self::validate), plus the checks that depend on the
    /// cluster size `n` (SWIM's `indirect_checks` must be at most `n - 1`;
    /// at run time the core also caps it at the `n - 2` members that are
    /// neither the prober nor the probed member).
    pub fn validate_for_cluster(&self, n: usize) -> Result<(), ConfigError> {
        self.validate()?;
        if let FailureDetectorConfig::Swim(c) = self {
            let max = n.saturating_sub(1) as i64;
            if let Some(k) = c.indirect_checks.filter(|k| *k > max) {
                return Err(invalid(
                    "indirect_checks",
                    format!("must be <= cluster size - 1 = {max} for a cluster of {n}, got {k}"),
                ));
            }
        }
        Ok(())
    }
}

/// `kind = "heartbeat"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often each node heartbeats every member. Default 1000.
    pub interval_ms: i64,
    /// Extra silence tolerated before `Suspect` (suspect after
    /// `interval + acceptable_pause`). Default 3000.
    pub acceptable_pause_ms: i64,
    /// Further silence after `Suspect` before `Down`. Default 4000.
    pub grace_ms: i64,
    /// How often deadlines are checked (detection resolution). Default 100.
    pub check_interval_ms: i64,
}

impl Default for HeartbeatConfig {
    /// The `lan` preset.
    fn default() -> Self {
        Self::preset(Preset::Lan)
    }
}

impl HeartbeatConfig {
    /// The values of `preset`; a crash is `Down` after `interval +
    /// acceptable_pause + grace` of silence (plus up to one
    /// `check_interval`):
    /// - `lan-fast`: interval 200, acceptable pause 600, grace 1000, check
    ///   100 ms (Suspect after 0.8 s of silence, Down after 1.8 s);
    /// - `lan`: 1000, 3000, 4000, 100 ms (Suspect after 4 s, Down after 8 s);
    /// - `wan`: 1000, 9000, 10000, 200 ms (Suspect after 10 s, Down after
    ///   20 s).
    pub fn preset(preset: Preset) -> Self {
        let (interval_ms, acceptable_pause_ms, grace_ms, check_interval_ms) = match preset {
            Preset::LanFast => (200, 600, 1000, 100),
            Preset::Lan => (1000, 3000, 4000, 100),
            Preset::Wan => (1000, 9000, 10_000, 200),
        };
        Self {
            interval_ms,
            acceptable_pause_ms,
            grace_ms,
            check_interval_ms,
        }
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive_ms("interval_ms", self.interval_ms)?;
        non_negative_ms("acceptable_pause_ms", self.acceptable_pause_ms)?;
        non_negative_ms("grace_ms", self.grace_ms)?;
        positive_ms("check_interval_ms", self.check_interval_ms)?;
        Ok(())
    }

    /// The detector's parameters.
    pub fn params(&self) -> HeartbeatParams {
        HeartbeatParams {
            interval: ms(self.interval_ms),
            acceptable_pause: ms(self.acceptable_pause_ms),
            grace: ms(self.grace_ms),
            check_interval: ms(self.check_interval_ms),
        }
    }
}

/// `kind = "phi-accrual"` (defaults are Akka cluster's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhiAccrualConfig {
    /// Suspect when phi exceeds this. Default 8.0.
    pub threshold: f64,
    /// Inter-arrival samples kept (sliding window). Default 1000.
    pub max_sample_size: i64,
    /// Lower bound of the standard deviation used. Default 100.
    pub min_std_deviation_ms: i64,
    /// Added to the mean inter-arrival time (tolerated pause). Default 3000.
    pub acceptable_heartbeat_pause_ms: i64,
    /// How often heartbeats are sent. Default 1000.
    pub heartbeat_interval_ms: i64,
    /// Assumed mean interval before any sample (history seeded with 0.75x
    /// and 1.25x of it, like Akka). Default 1000.
    pub first_heartbeat_estimate_ms: i64,
    /// Time above the threshold after `Suspect` before `Down`. Default 4000.
    pub grace_ms: i64,
    /// How often phi is evaluated. Default 100.
    pub check_interval_ms: i64,
}

impl Default for PhiAccrualConfig {
    /// The `lan` preset (Akka's defaults).
    fn default() -> Self {
        Self::preset(Preset::Lan)
    }
}

impl PhiAccrualConfig {
    /// The values of `preset` (`max_sample_size` 1000 in all); a crash is
    /// `Suspect` once phi passes `threshold`, about `heartbeat_interval +
    /// acceptable_heartbeat_pause` plus 4-5 standard deviations after the
    /// last heartbeat, and `Down` `grace` later:
    /// - `lan-fast`: heartbeat interval 200, acceptable pause 600, minimum
    ///   standard deviation 50, first estimate 200 ms, threshold 8.0, grace
    ///   1000, check 100 ms (Suspect after about 1 s of silence, Down after
    ///   about 2 s);
    /// - `lan` (Akka's defaults): 1000, 3000, 100, 1000 ms, 8.0, 4000, 100
    ///   ms (Suspect after about 4.5-5 s, Down after about 9 s);
    /// - `wan`: 1000, 8000, 500, 1000 ms, threshold 10.0, grace 10000, check
    ///   200 ms (Suspect after about 11.5 s, Down after about 21.5 s).
    pub fn preset(preset: Preset) -> Self {
        let lan = Self {
            threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation_ms: 100,
            acceptable_heartbeat_pause_ms: 3000,
            heartbeat_interval_ms: 1000,
            first_heartbeat_estimate_ms: 1000,
            grace_ms: 4000,
            check_interval_ms: 100,
        };
        match preset {
            Preset::LanFast => Self {
                min_std_deviation_ms: 50,
                acceptable_heartbeat_pause_ms: 600,
                heartbeat_interval_ms: 200,
                first_heartbeat_estimate_ms: 200,
                grace_ms: 1000,
                ..lan
            },
            Preset::Lan => lan,
            Preset::Wan => Self {
                threshold: 10.0,
                min_std_deviation_ms: 500,
                acceptable_heartbeat_pause_ms: 8000,
                grace_ms: 10_000,
                check_interval_ms: 200,
                ..lan
            },
        }
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(invalid(
                "threshold",
                format!("must be > 0, got {}", self.threshold),
            ));
        }
        positive("max_sample_size", self.max_sample_size)?;
        positive_ms("min_std_deviation_ms", self.min_std_deviation_ms)?;
        non_negative_ms(
            "acceptable_heartbeat_pause_ms",
            self.acceptable_heartbeat_pause_ms,
        )?;
        positive_ms("heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        positive_ms(
            "first_heartbeat_estimate_ms",
            self.first_heartbeat_estimate_ms,
        )?;
        non_negative_ms("grace_ms", self.grace_ms)?;
        positive_ms("check_interval_ms", self.check_interval_ms)?;
        Ok(())
    }

    /// The detector's parameters.
    pub fn params(&self) -> PhiParams {
        PhiParams {
            threshold: self.threshold,
            max_sample_size: self.max_sample_size.max(1) as usize,
            min_std_deviation: ms(self.min_std_deviation_ms),
            acceptable_heartbeat_pause: ms(self.acceptable_heartbeat_pause_ms),
            heartbeat_interval: ms(self.heartbeat_interval_ms),
            first_heartbeat_estimate: ms(self.first_heartbeat_estimate_ms),
            grace: ms(self.grace_ms),
            check_interval: ms(self.check_interval_ms),
        }
    }
}

/// `kind = "swim"` (defaults are memberlist's LAN profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwimConfig {
    /// Protocol period: one probe per period (scaled by local health). Default 1000.
    pub probe_interval_ms: i64,
    /// Wait for a direct ack before indirect probes (scaled by local health);
    /// must be < `probe_interval_ms`. Default 500.
    pub probe_timeout_ms: i64,
    /// Members asked to probe indirectly (`k`). Default: 3, capped at run
    /// time by the members available (cluster size - 2). An explicit value
    /// larger than the configured cluster size - 1 is rejected.
    pub indirect_checks: Option<i64>,
    /// Each update is piggybacked `retransmit_mult * ceil(log10(N+1))` times. Default 4.
    pub retransmit_mult: i64,
    /// Suspicion timeout min = `suspicion_mult * max(1, log10 N) * probe_interval`;
    /// Lifeguard expects `suspicion_mult - 2` confirmations. Default 4.
    pub suspicion_mult: i64,
    /// Suspicion timeout max = this times the min. Default 6.
    pub suspicion_max_timeout_mult: i64,
    /// Lifeguard local-health multiplier cap: timeouts scale by 1..=this. Default 8.
    pub awareness_max_multiplier: i64,
    /// At most this many membership updates piggybacked per message. Default 16.
    pub max_piggyback: i64,
    /// How often a `Down` member is pinged to heal partitions. Default 5000.
    pub reconnect_interval_ms: i64,
    /// Period of gossip rounds (memberlist's `GossipInterval`): every
    /// period, pending updates are sent to `gossip_nodes` random members as
    /// a gossip-only message (none is sent when nothing is pending); must
    /// be > 0. Default 200.
    pub gossip_interval_ms: i64,
    /// Members gossiped to per gossip round (memberlist's `GossipNodes`);
    /// 0 disables periodic gossip (updates then ride only on probe
    /// traffic). Default 3.
    pub gossip_nodes: i64,
    /// For this long after a member is declared `Down` it is still a gossip
    /// target, so that a member declared dead by mistake learns it and
    /// refutes (memberlist's `GossipToTheDeadTime`); 0 = never. Default 30000.
    pub gossip_to_the_dead_ms: i64,
    /// A gossip round sends gossip-only messages only while some pending
    /// suspicion or death has been sent (piggybacked or gossiped) fewer
    /// than this many times, or some alive/left update (a refutation) is
    /// pending at all; a suspicion's or death's remaining
    /// `retransmit_mult * ceil(log10(N+1))` sends ride on pings, acks and
    /// ping-reqs only. This bounds the gossip-only messages per such update
    /// by a constant, so per-member load does not grow with N (memberlist
    /// has no such bound; a value >= the retransmit limit behaves like
    /// memberlist). Must be > 0. Default 6 (measured in `fd_quality`: 4
    /// slowed dissemination at N = 1024 and raised false positives at 20 %
    /// loss before refutations were exempted; 6 keeps both as without the
    /// bound).
    pub gossip_transmits: i64,
}

impl Default for SwimConfig {
    /// The `lan` preset (memberlist's LAN profile).
    fn default() -> Self {
        Self::preset(Preset::Lan)
    }
}

impl SwimConfig {
    /// The values of `preset` (`indirect_checks` is left to its default in
    /// all, so a preset fits any cluster size); a crash is `Down` about a
    /// probe period or two after it, plus the suspicion timeout (between
    /// `suspicion_mult * max(1, log10 N)` periods with enough confirmations
    /// and `suspicion_max_timeout_mult` times that without):
    /// - `lan-fast`: probe interval 300, probe timeout 150 ms, suspicion
    ///   multiplier 3, the rest as `lan`;
    /// - `lan` (memberlist's LAN profile): probe interval 1000, timeout 500
    ///   ms, `retransmit_mult` 4, `suspicion_mult` 4,
    ///   `suspicion_max_timeout_mult` 6, `awareness_max_multiplier` 8,
    ///   `max_piggyback` 16, reconnect every 5000 ms, gossip every 200 ms to
    ///   3 members, gossip to the dead for 30 s, `gossip_transmits` 6;
    /// - `wan`: probe interval 2000, timeout 1000 ms, suspicion multiplier
    ///   5, gossip every 500 ms to 4 members, gossip to the dead for 60 s
    ///   (memberlist's WAN gossip settings), the rest as `lan`.
    pub fn preset(preset: Preset) -> Self {
        let lan = Self {
            probe_interval_ms: 1000,
            probe_timeout_ms: 500,
            indirect_checks: None,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            max_piggyback: 16,
            reconnect_interval_ms: 5000,
            gossip_interval_ms: 200,
            gossip_nodes: 3,
            gossip_to_the_dead_ms: 30_000,
            gossip_transmits: 6,
        };
        match preset {
            Preset::LanFast => Self {
                probe_interval_ms: 300,
                probe_timeout_ms: 150,
                suspicion_mult: 3,
                ..lan
            },
            Preset::Lan => lan,
            Preset::Wan => Self {
                probe_interval_ms: 2000,
                probe_timeout_ms: 1000,
                suspicion_mult: 5,
                gossip_interval_ms: 500,
                gossip_nodes: 4,
                gossip_to_the_dead_ms: 60_000,
                ..lan
            },
        }
    }

    /// Check every value (cluster-size checks are in
    /// [`FailureDetectorConfig::validate_for_cluster`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive_ms("probe_interval_ms", self.probe_interval_ms)?;
        positive_ms("probe_timeout_ms", self.probe_timeout_ms)?;
        if self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(invalid(
                "probe_timeout_ms",
                format!(
                    "must be < probe_interval_ms ({}), got {}",
                    self.probe_interval_ms, self.probe_timeout_ms
                ),
            ));
        }
        if let Some(k) = self.indirect_checks.filter(|k| *k < 0) {
            return Err(invalid("indirect_checks", format!("must be >= 0, got {k}")));
        }
        positive("retransmit_mult", self.retransmit_mult)?;
        positive("suspicion_mult", self.suspicion_mult)?;
        if self.suspicion_max_timeout_mult < 1 {
            return Err(invalid(
                "suspicion_max_timeout_mult",
                format!("must be >= 1, got {}", self.suspicion_max_timeout_mult),
            ));
        }
        if !(1..=64).contains(&self.awareness_max_multiplier) {
            return Err(invalid(
                "awareness_max_multiplier",
                format!("must be in 1..=64, got {}", self.awareness_max_multiplier),
            ));
        }
        positive("max_piggyback", self.max_piggyback)?;
        positive_ms("reconnect_interval_ms", self.reconnect_interval_ms)?;
        positive_ms("gossip_interval_ms", self.gossip_interval_ms)?;
        if self.gossip_nodes < 0 {
            return Err(invalid(
                "gossip_nodes",
                format!(
                    "must be >= 0 (0 disables gossip), got {}",
                    self.gossip_nodes
                ),
            ));
        }
        non_negative_ms("gossip_to_the_dead_ms", self.gossip_to_the_dead_ms)?;
        if !(1..=i64::from(u32::MAX)).contains(&self.gossip_transmits) {
            return Err(invalid(
                "gossip_transmits",
                format!("must be in 1..={}, got {}", u32::MAX, self.gossip_transmits),
            ));
        }
        Ok(())
    }

    /// The detector's parameters.
    pub fn params(&self) -> SwimParams {
        SwimParams {
            probe_interval: ms(self.probe_interval_ms),
            probe_timeout: ms(self.probe_timeout_ms),
            indirect_checks: self.indirect_checks.unwrap_or(3).max(0) as usize,
            retransmit_mult: self.retransmit_mult.max(1) as u32,
            suspicion_mult: self.suspicion_mult.max(1) as u32,
            suspicion_max_timeout_mult: self.suspicion_max_timeout_mult.max(1) as u32,
            awareness_max_multiplier: self.awareness_max_multiplier.max(1) as u32,
            max_piggyback: self.max_piggyback.max(1) as usize,
            reconnect_interval: ms(self.reconnect_interval_ms),
            gossip_interval: ms(self.gossip_interval_ms),
            gossip_nodes: self.gossip_nodes.max(0) as usize,
            gossip_to_the_dead: ms(self.gossip_to_the_dead_ms),
            gossip_transmits: self.gossip_transmits.clamp(1, i64::from(u32::MAX)) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match FailureDetectorConfig::from_toml_str(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_each_kind() {
        let c = FailureDetectorConfig::from_toml_str(
            "[node]\nname = \"a\"\n[failure_detector]\nkind = \"swim\"\nprobe_interval_ms = 2000\n",
        )
        .expect("swim");
        let FailureDetectorConfig::Swim(s) = &c else {
            panic!("not swim: {c:?}")
        };
        assert_eq!(s.probe_interval_ms, 2000);
        assert_eq!(s.probe_timeout_ms, 500);
        assert_eq!(c.kind(), "swim");

        let c = FailureDetectorConfig::from_toml_str(
            "[failure_detector]\nkind = \"phi-accrual\"\nthreshold = 10.5\n",
        )
        .expect("phi");
        let FailureDetectorConfig::PhiAccrual(p) = &c else {
            panic!("not phi: {c:?}")
        };
        assert_eq!(p.threshold, 10.5);
        assert_eq!(p.max_sample_size, 1000);

        let c = FailureDetectorConfig::from_toml_str(
            "[failure_detector]\nkind = \"heartbeat\"\ninterval_ms = 250\ngrace_ms = 0\n",
        )
        .expect("heartbeat");
        let FailureDetectorConfig::Heartbeat(h) = &c else {
            panic!("not heartbeat: {c:?}")
        };
        assert_eq!(h.interval_ms, 250);
        assert_eq!(h.grace_ms, 0);
        assert_eq!(h.acceptable_pause_ms, 3000);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        assert_eq!(
            FailureDetectorConfig::from_toml_str("").expect("empty"),
            FailureDetectorConfig::Swim(SwimConfig::default())
        );
        let p = PhiAccrualConfig::default().params();
        assert_eq!(p.threshold, 8.0);
        assert_eq!(p.max_sample_size, 1000);
        assert_eq!(p.min_std_deviation, Duration::from_millis(100));
        assert_eq!(p.acceptable_heartbeat_pause, Duration::from_secs(3));
        assert_eq!(p.heartbeat_interval, Duration::from_secs(1));
        let s = SwimConfig::default().params();
        assert_eq!(s.probe_interval, Duration::from_secs(1));
        assert_eq!(s.probe_timeout, Duration::from_millis(500));
        assert_eq!(SwimConfig::default().indirect_checks, None);
        assert_eq!(s.indirect_checks, 3);
        assert_eq!(s.retransmit_mult, 4);
        assert_eq!(s.suspicion_mult, 4);
        assert_eq!(s.suspicion_max_timeout_mult, 6);
        assert_eq!(s.awareness_max_multiplier, 8);
        assert_eq!(s.gossip_interval, Duration::from_millis(200));
        assert_eq!(s.gossip_nodes, 3);
        assert_eq!(s.gossip_to_the_dead, Duration::from_secs(30));
        assert_eq!(s.gossip_transmits, 6);
        let h = HeartbeatConfig::default().params();
        assert_eq!(h.interval, Duration::from_secs(1));
        assert_eq!(h.acceptable_pause, Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let cases = [
            (
                "kind = \"phi-accrual\"\nthreshold = -1.0",
                "failure_detector.threshold must be > 0, got -1",
            ),
            (
                "kind = \"phi-accrual\"\nthreshold = 0.0",
                "failure_detector.threshold must be > 0",
            ),
            (
                "kind = \"phi-accrual\"\nmax_sample_size = 0",
                "failure_detector.max_sample_size must be > 0, got 0",
            ),
            (
                "kind = \"phi-accrual\"\nmin_std_deviation_ms = 0",
                "failure_detector.min_std_deviation_ms must be > 0",
            ),
            (
                "kind = \"phi-accrual\"\nheartbeat_interval_ms = -5",
                "failure_detector.heartbeat_interval_ms must be > 0 (milliseconds), got -5",
            ),
            (
                "kind = \"phi-accrual\"\nacceptable_heartbeat_pause_ms = -1",
                "failure_detector.acceptable_heartbeat_pause_ms must be >= 0",
            ),
            (
                "kind = \"heartbeat\"\ninterval_ms = 0",
                "failure_detector.interval_ms must be > 0",
            ),
            (
                "kind = \"heartbeat\"\ngrace_ms = -1",
                "failure_detector.grace_ms must be >= 0",
            ),
            (
                "kind = \"heartbeat\"\ncheck_interval_ms = 0",
                "failure_detector.check_interval_ms must be > 0",
            ),
            (
                "kind = \"swim\"\nprobe_interval_ms = 0",
                "failure_detector.probe_interval_ms must be > 0",
            ),
            (
                "kind = \"swim\"\nprobe_timeout_ms = 1500",
                "failure_detector.probe_timeout_ms must be < probe_interval_ms (1000), got 1500",
            ),
            (
                "kind = \"swim\"\nindirect_checks = -1",
                "failure_detector.indirect_checks must be >= 0",
            ),
            (
                "kind = \"swim\"\nretransmit_mult = 0",
                "failure_detector.retransmit_mult must be > 0",
            ),
            (
                "kind = \"swim\"\nsuspicion_mult = 0",
                "failure_detector.suspicion_mult must be > 0",
            ),
            (
                "kind = \"swim\"\nawareness_max_multiplier = 0",
                "failure_detector.awareness_max_multiplier must be in 1..=64",
            ),
            (
                "kind = \"swim\"\nmax_piggyback = 0",
                "failure_detector.max_piggyback must be > 0",
            ),
            (
                "kind = \"swim\"\ngossip_interval_ms = 0",
                "failure_detector.gossip_interval_ms must be > 0",
            ),
            (
                "kind = \"swim\"\ngossip_nodes = -1",
                "failure_detector.gossip_nodes must be >= 0",
            ),
            (
                "kind = \"swim\"\ngossip_to_the_dead_ms = -5",
                "failure_detector.gossip_to_the_dead_ms must be >= 0",
            ),
            (
                "kind = \"swim\"\ngossip_transmits = 0",
                "failure_detector.gossip_transmits must be in 1..=4294967295, got 0",
            ),
            (
                "kind = \"swim\"\ngossip_transmits = 5000000000",
                "failure_detector.gossip_transmits must be in 1..=4294967295, got 5000000000",
            ),
        ];
        for (body, want) in cases {
            let got = err_of(&format!("[failure_detector]\n{body}\n"));
            assert!(
                got.contains(want),
                "for {body:?}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn swim_gossip_keys_parse_and_zero_nodes_disables_gossip() {
        let c = FailureDetectorConfig::from_toml_str(
            "[failure_detector]\nkind = \"swim\"\ngossip_interval_ms = 50\ngossip_nodes = 0\ngossip_to_the_dead_ms = 0\ngossip_transmits = 9\n",
        )
        .expect("gossip keys");
        let FailureDetectorConfig::Swim(s) = &c else {
            panic!("not swim: {c:?}")
        };
        let p = s.params();
        assert_eq!(p.gossip_interval, Duration::from_millis(50));
        assert_eq!(p.gossip_nodes, 0);
        assert_eq!(p.gossip_to_the_dead, Duration::ZERO);
        assert_eq!(p.gossip_transmits, 9);
    }

    #[test]
    fn rejects_unknown_kinds_and_keys() {
        assert!(err_of("[failure_detector]\nkind = \"gossip\"\n").contains("gossip"));
        assert!(
            err_of("[failure_detector]\nkind = \"swim\"\nthreshold = 3.0\n").contains("threshold")
        );
        assert!(
            err_of("[failure_detector]\nkind = \"swim\"\nprobe_interval_ms = \"x\"\n")
                .contains("failure_detector")
        );
    }

    /// The error of a bad `[failure_detector]` key is raised at that key,
    /// not at the table: TOML reports the key's line (the table header is
    /// on line 2 here, every bad key on line 5).
    #[test]
    fn errors_point_at_the_key_not_the_table() {
        for (kind, bad, says) in [
            ("phi-accrual", "thresold = 3.0", "unknown key `thresold`"),
            (
                "phi-accrual",
                "threshold = \"high\"",
                "invalid type: string \"high\", expected f64",
            ),
            (
                "swim",
                "threshold = 3.0",
                "`threshold` is a setting of phi-accrual",
            ),
            ("heartbeat", "interval_ms = 1.5", "expected i64"),
        ] {
            let text = format!(
                "name = \"a\"\n[failure_detector]\nkind = \"{kind}\"\ngrace_ms = 1000\n{bad}\n"
            )
            .replace(
                "grace_ms = 1000",
                if kind == "swim" {
                    "gossip_nodes = 2"
                } else {
                    "grace_ms = 1000"
                },
            );
            let err = err_of(&text);
            assert!(
                err.contains("line 5") && err.contains(says),
                "for {bad:?} under kind {kind}: {err}"
            );
        }
        // `kind` after the key: refused at the table, naming the key.
        let err = err_of("[failure_detector]\nthreshold = 3.0\nkind = \"swim\"\n");
        assert!(
            err.contains("`threshold` is a setting of phi-accrual"),
            "{err}"
        );
    }

    /// Each preset expands, for each kind, to the values its documentation
    /// gives; no preset is the `lan` preset.
    #[test]
    fn presets_expand_to_their_documented_values() {
        let read = |kind: &str, preset: &str| {
            FailureDetectorConfig::from_toml_str(&format!(
                "[failure_detector]\nkind = \"{kind}\"\npreset = \"{preset}\"\n"
            ))
            .unwrap_or_else(|e| panic!("{kind} {preset}: {e}"))
        };
        let hb = |i, p, g, c| {
            FailureDetectorConfig::Heartbeat(HeartbeatConfig {
                interval_ms: i,
                acceptable_pause_ms: p,
                grace_ms: g,
                check_interval_ms: c,
            })
        };
        assert_eq!(read("heartbeat", "lan-fast"), hb(200, 600, 1000, 100));
        assert_eq!(read("heartbeat", "lan"), hb(1000, 3000, 4000, 100));
        assert_eq!(read("heartbeat", "wan"), hb(1000, 9000, 10_000, 200));
        let phi = |i, p, sd, first, threshold, g, c| {
            FailureDetectorConfig::PhiAccrual(PhiAccrualConfig {
                threshold,
                max_sample_size: 1000,
                min_std_deviation_ms: sd,
                acceptable_heartbeat_pause_ms: p,
                heartbeat_interval_ms: i,
                first_heartbeat_estimate_ms: first,
                grace_ms: g,
                check_interval_ms: c,
            })
        };
        assert_eq!(
            read("phi-accrual", "lan-fast"),
            phi(200, 600, 50, 200, 8.0, 1000, 100)
        );
        assert_eq!(
            read("phi-accrual", "lan"),
            phi(1000, 3000, 100, 1000, 8.0, 4000, 100)
        );
        assert_eq!(
            read("phi-accrual", "wan"),
            phi(1000, 8000, 500, 1000, 10.0, 10_000, 200)
        );
        let lan = SwimConfig {
            probe_interval_ms: 1000,
            probe_timeout_ms: 500,
            indirect_checks: None,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            max_piggyback: 16,
            reconnect_interval_ms: 5000,
            gossip_interval_ms: 200,
            gossip_nodes: 3,
            gossip_to_the_dead_ms: 30_000,
            gossip_transmits: 6,
        };
        let swim = |c: SwimConfig| FailureDetectorConfig::Swim(c);
        assert_eq!(
            read("swim", "lan-fast"),
            swim(SwimConfig {
                probe_interval_ms: 300,
                probe_timeout_ms: 150,
                suspicion_mult: 3,
                ..lan.clone()
            })
        );
        assert_eq!(read("swim", "lan"), swim(lan.clone()));
        assert_eq!(
            read("swim", "wan"),
            swim(SwimConfig {
                probe_interval_ms: 2000,
                probe_timeout_ms: 1000,
                suspicion_mult: 5,
                gossip_interval_ms: 500,
                gossip_nodes: 4,
                gossip_to_the_dead_ms: 60_000,
                ..lan.clone()
            })
        );
        // No preset: `lan`, which is also each kind's `Default`.
        for kind in KINDS {
            let text = format!("[failure_detector]\nkind = \"{kind}\"\n");
            let none = FailureDetectorConfig::from_toml_str(&text).expect("no preset");
            assert_eq!(none, read(kind, "lan"), "{kind}");
            assert_eq!(Some(none), Preset::Lan.config(kind), "{kind}");
            for p in Preset::ALL {
                assert_eq!(p.config(kind), Some(read(kind, p.name())), "{kind} {p}");
                assert!(p.config(kind).is_some_and(|c| c.validate().is_ok()));
                // A preset fits any cluster size (SWIM's indirect checks).
                assert!(read(kind, p.name()).validate_for_cluster(2).is_ok());
            }
        }
        assert_eq!(Preset::from_name("wan"), Some(Preset::Wan));
        assert_eq!(Preset::from_name("WAN"), None);
    }

    /// Keys written next to `preset` override its values, whichever comes
    /// first; the others keep the preset's values.
    #[test]
    fn explicit_keys_override_the_preset() {
        for text in [
            "[failure_detector]\nkind = \"phi-accrual\"\npreset = \"lan-fast\"\ngrace_ms = 500\n",
            "[failure_detector]\ngrace_ms = 500\npreset = \"lan-fast\"\nkind = \"phi-accrual\"\n",
        ] {
            let c = FailureDetectorConfig::from_toml_str(text).expect("valid");
            assert_eq!(
                c,
                FailureDetectorConfig::PhiAccrual(PhiAccrualConfig {
                    grace_ms: 500,
                    ..PhiAccrualConfig::preset(Preset::LanFast)
                }),
                "{text}"
            );
        }
        let c = FailureDetectorConfig::from_toml_str(
            "[failure_detector]\nkind = \"swim\"\npreset = \"wan\"\nindirect_checks = 1\nprobe_timeout_ms = 1500\n",
        )
        .expect("valid");
        assert_eq!(
            c,
            FailureDetectorConfig::Swim(SwimConfig {
                indirect_checks: Some(1),
                probe_timeout_ms: 1500,
                ..SwimConfig::preset(Preset::Wan)
            })
        );
        // An override is validated against the preset's other values.
        let err = err_of(
            "[failure_detector]\nkind = \"swim\"\npreset = \"lan-fast\"\nprobe_timeout_ms = 500\n",
        );
        assert!(
            err.contains("probe_timeout_ms must be < probe_interval_ms (300), got 500"),
            "{err}"
        );
    }

    /// An unknown preset is refused at its key (its line), naming the
    /// known presets; so is a preset that is not a string.
    #[test]
    fn an_unknown_preset_is_refused_at_its_line_naming_the_presets() {
        let err = err_of(
            "name = \"a\"\n[failure_detector]\nkind = \"heartbeat\"\npreset = \"lan-slow\"\n",
        );
        assert!(
            err.contains("line 4")
                && err.contains("unknown preset `lan-slow`: the presets are lan-fast, lan, wan"),
            "{err}"
        );
        let err = err_of("[failure_detector]\npreset = 3\nkind = \"swim\"\n");
        assert!(
            err.contains("line 2") && err.contains("invalid type: integer `3`"),
            "{err}"
        );
        let err = err_of("[failure_detector]\nkind = \"swim\"\npresets = \"lan\"\n");
        assert!(err.contains("unknown key `presets`"), "{err}");
    }

    /// The key lists that type and check each key are the structs' fields.
    #[test]
    fn key_lists_match_the_settings() {
        fn keys<T: Serialize>(t: &T) -> Vec<String> {
            let toml::Value::Table(t) = toml::Value::try_from(t).expect("table") else {
                panic!("not a table")
            };
            let mut keys: Vec<String> = t.keys().cloned().collect();
            keys.sort();
            keys
        }
        let sorted = |k: &[&str]| {
            let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let swim = SwimConfig {
            indirect_checks: Some(3),
            ..SwimConfig::default()
        };
        assert_eq!(keys(&HeartbeatConfig::default()), sorted(HEARTBEAT_KEYS));
        assert_eq!(keys(&PhiAccrualConfig::default()), sorted(PHI_ACCRUAL_KEYS));
        assert_eq!(keys(&swim), sorted(SWIM_KEYS));
    }

    #[test]
    fn indirect_checks_must_fit_the_cluster() {
        // The default adapts to small clusters...
        let c = FailureDetectorConfig::default();
        assert!(c.validate_for_cluster(3).is_ok());
        assert!(c.validate_for_cluster(2).is_ok());
        // ...an explicit k must fit.
        let c = FailureDetectorConfig::Swim(SwimConfig {
            indirect_checks: Some(3),
            ..SwimConfig::default()
        });
        assert!(c.validate_for_cluster(4).is_ok());
        let e = c
            .validate_for_cluster(3)
            .expect_err("k=3 in 3 nodes")
            .to_string();
        assert_eq!(
            e,
            "failure_detector.indirect_checks must be <= cluster size - 1 = 2 for a cluster of 3, got 3"
        );
        assert!(FailureDetectorConfig::Heartbeat(HeartbeatConfig::default())
            .validate_for_cluster(2)
            .is_ok());
    }
}
