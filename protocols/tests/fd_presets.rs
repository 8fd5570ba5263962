//! `[failure_detector]` presets keep their documented detection times
//! (issue 17, item 6): for each preset and each detector kind, built from
//! TOML the way a node builds it, members crash on the deterministic
//! simulator and every live member must report each of them `Down` within
//! [`Preset::detection_bound`], without a false `Down` of a live member;
//! and the presets are ordered, `lan-fast` faster than `lan` faster than
//! `wan`, for every kind.
//!
//! The bound is checked on the preset's own kind of network: one-way
//! delays of 1-10 ms with 5 % loss for `lan-fast` and `lan`, 20-200 ms
//! with 5 % loss for `wan`; in clusters of 8 and 32 members.

use std::time::Duration;

use troupe_framework::membership::MemberStatus;
use troupe_protocols::fd::config::Preset;
use troupe_protocols::fd::sim::{DelayModel, NetConfig, Sim};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, SimId};

fn config(kind: &str, preset: Preset) -> FailureDetectorConfig {
    let text = format!("[failure_detector]\nkind = \"{kind}\"\npreset = \"{preset}\"\n");
    FailureDetectorConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{kind} {preset}: {e}"))
}

/// The network a preset is documented for.
fn network(preset: Preset) -> NetConfig {
    let (min, max) = match preset {
        Preset::LanFast | Preset::Lan => (1, 10),
        Preset::Wan => (20, 200),
    };
    NetConfig {
        loss: 0.05,
        delay: DelayModel::Uniform {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        },
    }
}

/// One run: `n` members that know each other; after 20 s of warm-up,
/// three members crash one after the other, each once the previous one
/// had time to be detected (twice the bound apart), at offsets within a
/// second that depend on `seed`. Returns, per crash, the time until every
/// live member reported it `Down` (`None`: some never did), and the false
/// `Down` reports (of members that had not crashed).
fn run(kind: &str, preset: Preset, n: u32, seed: u64) -> (Vec<Option<Duration>>, usize) {
    let cfg = config(kind, preset);
    let bound = preset
        .detection_bound(kind)
        .expect("a bound for every kind");
    let ids: Vec<SimId> = (0..n).map(SimId::new).collect();
    let mut sim = Sim::new(seed, network(preset));
    sim.set_count_bytes(false);
    for id in &ids {
        let rng = seed ^ (u64::from(id.node) << 32);
        let d = AnyDetector::from_config(*id, &cfg, vec![], rng).expect("detector");
        sim.add_node(*id, d, &ids);
    }
    let victims = [3 % n, (n / 2 + 1) % n, n - 1];
    let mut crashes = Vec::new();
    let mut t = Duration::from_secs(20);
    for (i, v) in victims.into_iter().enumerate() {
        let offset = Duration::from_millis((seed * 397 + i as u64 * 211) % 1000);
        sim.run_until(t + offset);
        sim.crash(v);
        crashes.push((v, t + offset));
        t += bound * 2;
    }
    sim.run_until(t + bound);
    // Crash k must be seen by every member not crashed by then (the later
    // victims crash only after its bound has passed).
    let times = crashes
        .iter()
        .enumerate()
        .map(|(k, &(v, at))| {
            let reports = sim.first_reports(SimId::new(v), MemberStatus::Down, at);
            let gone: Vec<u32> = crashes[..=k].iter().map(|c| c.0).collect();
            (0..n)
                .filter(|o| !gone.contains(o))
                .map(|o| {
                    reports
                        .iter()
                        .find(|(obs, _)| obs.node == o)
                        .map(|(_, when)| *when - at)
                })
                .collect::<Option<Vec<Duration>>>()?
                .into_iter()
                .max()
        })
        .collect();
    let false_downs = sim
        .events()
        .iter()
        .filter(|o| o.event.status == MemberStatus::Down)
        .filter(|o| {
            crashes
                .iter()
                .all(|&(v, at)| o.event.member.node != v || o.event.at < at)
        })
        .count();
    (times, false_downs)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Each preset of `kind` within its bound, with no false `Down`; and
/// the presets' median detection times ordered.
fn presets_keep_their_bounds(kind: &str) {
    let mut medians = Vec::new();
    for preset in Preset::ALL {
        let bound = preset.detection_bound(kind).expect("bound");
        let mut all = Vec::new();
        for (n, seeds) in [(8u32, 1..=4u64), (32, 1..=2)] {
            for seed in seeds {
                let ctx = format!("{kind} {preset} N={n} seed {seed}");
                let (times, false_downs) = run(kind, preset, n, seed);
                assert_eq!(false_downs, 0, "{ctx}: false Down reports");
                for t in times {
                    let t = t.unwrap_or_else(|| panic!("{ctx}: a crash never detected by all"));
                    assert!(
                        t <= bound,
                        "{ctx}: every member saw the crash Down after {:.2} s, over the documented {:.1} s",
                        secs(t),
                        secs(bound)
                    );
                    all.push(t);
                }
            }
        }
        all.sort();
        medians.push(all[all.len() / 2]);
    }
    assert!(
        medians.windows(2).all(|w| w[0] < w[1]),
        "{kind}: median detection times {medians:?} not ordered lan-fast < lan < wan"
    );
}

#[test]
fn heartbeat_presets_detect_within_their_documented_bounds() {
    presets_keep_their_bounds("heartbeat");
}

#[test]
fn phi_accrual_presets_detect_within_their_documented_bounds() {
    presets_keep_their_bounds("phi-accrual");
}

#[test]
fn swim_presets_detect_within_their_documented_bounds() {
    presets_keep_their_bounds("swim");
}
