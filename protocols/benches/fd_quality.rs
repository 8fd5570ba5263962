//! Failure-detector quality versus cost, on the deterministic simulator.
//!
//! For each detector (Troupe's heartbeat, phi-accrual and SWIM+Lifeguard,
//! and the `foca` crate's SWIM at equal probe period, probe timeout, `k`,
//! retransmit limit and suspicion timeout), cluster size N and network
//! scenario (loss 0 / 5 / 20 %, and random 1-5 s pauses of members), it
//! crashes members one at a time and reports:
//! - time until the first and until all live members mark the crashed node
//!   Down (p50 / p99 over crashes and seeds),
//! - false positives per node-hour (a live member reported Down),
//! - messages and bytes (msgpack for Troupe, foca's postcard packets) per
//!   member per second,
//! - for SWIM/foca, protocol periods between the first and the last Down
//!   report of a crash (dissemination), next to log2(N),
//! - wall time of each run.
//!
//! Output: a table on stdout (also `target/fd_quality.md`), then the
//! per-member load against N (total, gossip-only part, per live member, and
//! its spread over N >= 64, to show whether the load stays flat), Troupe's
//! SWIM minus foca for each detection-time percentile with a 95 % bootstrap
//! interval (is a gap more than sampling noise?), and the
//! detection-time vs false-positive trade-off as `target/fd_quality.svg`.
//!
//! Run: `cargo bench -p troupe-protocols --bench fd_quality`
//! Presets: `-- --presets` (or `FD_PRESETS=1`) measures each detector with
//! each `[failure_detector]` preset instead (see [`run_presets`]).
//! Quick mode (N = 8, 64; short runs; one seed): add `-- --quick` or set
//! `FD_QUICK=1`. Filters: `FD_SIZES=64,1024`, `FD_KINDS=troupe-swim,foca`
//! (names as in the table), `FD_SCENARIOS=loss,pauses` (name prefixes),
//! `FD_SEEDS=k` (seeds 1..=k for every size); `FD_DEBUG=1` prints every
//! false positive; `FD_TRACE_CRASHES=1` prints each crash's first and
//! all-members detection time; `FD_SWIM="key=value,..."` overrides Troupe
//! SWIM's `[failure_detector]` keys (parameter sweeps without a rebuild);
//! `FD_ALIGNED_CRASHES=1` crashes on whole seconds (see
//! [`run`]); `FD_FINGERPRINT=1` prints each run's exact fingerprint (Down
//! reports, events processed, messages, bytes) to stderr, to check that a
//! speed-up changed nothing. The benchmark re-executes itself once with
//! glibc's huge-page malloc (see [`rerun_with_huge_pages`]); `FD_HUGEPAGES=0`
//! runs it with the default allocator settings.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::membership::{FailureDetector, MemberStatus};
use troupe_protocols::fd::config::{HeartbeatConfig, PhiAccrualConfig, SwimConfig};
use troupe_protocols::fd::sim::{DelayModel, NetConfig, Sim, WireSize};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, SimId};

/// Adapter running a `foca::Foca` as a Troupe sans-IO detector on the sim.
mod foca_adapter {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::time::Duration;

    use foca::{
        Config, Foca, Identity, Member, NoCustomBroadcast, Notification, PostcardCodec, Runtime,
        Timer,
    };
    use rand::RngCore;
    use rand_chacha::ChaCha8Rng;
    use serde::{Deserialize, Serialize};
    use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
    use troupe_framework::sansio::{Outputs, Protocol};
    use troupe_protocols::fd::sim::WireSize;
    use troupe_protocols::fd::SimId;

    /// foca identity: the sim address plus foca's own renewal counter (foca
    /// renews its identity when it learns it was declared down).
    #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub struct FocaId {
        pub id: SimId,
        pub gen: u32,
    }

    impl Identity for FocaId {
        type Addr = SimId;
        fn renew(&self) -> Option<Self> {
            Some(FocaId {
                id: self.id,
                gen: self.gen.wrapping_add(1),
            })
        }
        fn addr(&self) -> SimId {
            self.id
        }
        fn win_addr_conflict(&self, adversary: &Self) -> bool {
            self.gen > adversary.gen
        }
    }

    /// The seeded ChaCha8 stream behind foca's rand 0.10 interface.
    pub struct FocaRng(pub ChaCha8Rng);

    impl foca_rand_core::TryRng for FocaRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(self.0.next_u32())
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            Ok(self.0.next_u64())
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            self.0.fill_bytes(dst);
            Ok(())
        }
    }

    /// One foca datagram.
    #[derive(Debug, Clone)]
    pub struct Packet(pub Vec<u8>);

    impl WireSize for Packet {
        fn wire_size(&self) -> usize {
            self.0.len()
        }
    }

    /// One of foca's timers, numbered: foca expects every timer it submits
    /// to fire, so no two submissions may be equal keys (Troupe's drivers
    /// replace a pending timer equal to a new one).
    #[derive(Debug, Clone, PartialEq)]
    pub struct FocaTimer(u64, Timer<FocaId>);

    type Out = Outputs<SimId, Packet, FocaTimer, MemberEvent<SimId>>;

    struct Rt<'a> {
        out: &'a mut Out,
        now: Duration,
        view: &'a mut BTreeMap<SimId, MemberStatus>,
        timers: &'a mut u64,
    }

    impl Rt<'_> {
        fn set(&mut self, id: SimId, status: MemberStatus) {
            if self.view.insert(id, status) != Some(status) {
                self.out.emit(MemberEvent {
                    member: id,
                    status,
                    at: self.now,
                });
            }
        }
    }

    impl Runtime<FocaId> for Rt<'_> {
        fn notify(&mut self, notification: Notification<'_, FocaId>) {
            match notification {
                Notification::MemberUp(id) => self.set(id.id, MemberStatus::Up),
                Notification::MemberDown(id) => self.set(id.id, MemberStatus::Down),
                _ => {}
            }
        }
        fn send_to(&mut self, to: FocaId, data: &[u8]) {
            self.out.send(to.id, Packet(data.to_vec()));
        }
        fn submit_after(&mut self, event: Timer<FocaId>, after: Duration) {
            *self.timers += 1;
            self.out.set_timer(after, FocaTimer(*self.timers, event));
        }
    }

    /// A foca node.
    pub struct FocaNode {
        foca: Foca<FocaId, PostcardCodec, FocaRng, NoCustomBroadcast>,
        view: BTreeMap<SimId, MemberStatus>,
        timers: u64,
        pub errors: u64,
    }

    impl FocaNode {
        pub fn new(id: SimId, config: Config, seed: u64) -> Self {
            use rand::SeedableRng;
            Self {
                foca: Foca::new(
                    FocaId { id, gen: 0 },
                    config,
                    FocaRng(ChaCha8Rng::seed_from_u64(seed)),
                    PostcardCodec,
                ),
                view: BTreeMap::new(),
                timers: 0,
                errors: 0,
            }
        }
    }

    impl Protocol for FocaNode {
        type Id = SimId;
        type Msg = Packet;
        type Timer = FocaTimer;
        type Event = MemberEvent<SimId>;

        fn on_start(&mut self, _now: Duration, _out: &mut Out) {}

        fn on_message(&mut self, now: Duration, _from: SimId, msg: Packet, out: &mut Out) {
            let rt = Rt {
                out,
                now,
                view: &mut self.view,
                timers: &mut self.timers,
            };
            if self.foca.handle_data(&msg.0, rt).is_err() {
                self.errors += 1;
            }
        }

        fn on_timer(&mut self, now: Duration, FocaTimer(_, timer): FocaTimer, out: &mut Out) {
            let rt = Rt {
                out,
                now,
                view: &mut self.view,
                timers: &mut self.timers,
            };
            if self.foca.handle_timer(timer, rt).is_err() {
                self.errors += 1;
            }
        }
    }

    impl FailureDetector for FocaNode {
        fn kind(&self) -> &'static str {
            "foca"
        }
        fn view(&self) -> Vec<(SimId, MemberStatus)> {
            self.view.iter().map(|(k, v)| (*k, *v)).collect()
        }
        fn add_member(&mut self, now: Duration, id: SimId, out: &mut Out) {
            let rt = Rt {
                out,
                now,
                view: &mut self.view,
                timers: &mut self.timers,
            };
            let m = Member::alive(FocaId { id, gen: 0 });
            if self.foca.apply_many(std::iter::once(m), false, rt).is_err() {
                self.errors += 1;
            }
        }
    }
}

use foca_adapter::FocaNode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Heartbeat,
    Phi,
    Swim,
    Foca,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Phi => "phi-accrual",
            Kind::Swim => "troupe-swim",
            Kind::Foca => "foca",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Kind::Heartbeat => "#1f77b4",
            Kind::Phi => "#2ca02c",
            Kind::Swim => "#d62728",
            Kind::Foca => "#ff7f0e",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    loss: f64,
    pauses: bool,
    /// Message delay, uniform in this range (milliseconds).
    delay_ms: (u64, u64),
}

/// A LAN: 1-10 ms.
const LAN_DELAY: (u64, u64) = (1, 10);

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "loss 0%",
        loss: 0.0,
        pauses: false,
        delay_ms: LAN_DELAY,
    },
    Scenario {
        name: "loss 5%",
        loss: 0.05,
        pauses: false,
        delay_ms: LAN_DELAY,
    },
    Scenario {
        name: "loss 20%",
        loss: 0.20,
        pauses: false,
        delay_ms: LAN_DELAY,
    },
    Scenario {
        name: "pauses 1-5s",
        loss: 0.0,
        pauses: true,
        delay_ms: LAN_DELAY,
    },
];

/// The scenarios of the presets' benchmark (`--presets`): a LAN without
/// and with loss, pauses, and a WAN (20-200 ms one way, 5 % loss).
const PRESET_SCENARIOS: [Scenario; 4] = [
    SCENARIOS[0],
    SCENARIOS[1],
    SCENARIOS[3],
    Scenario {
        name: "wan 5% 20-200ms",
        loss: 0.05,
        pauses: false,
        delay_ms: (20, 200),
    },
];

/// When a run crashes members: the first at `first`, then one every
/// `every` (each at a random offset within its second), at most N/4 of
/// them, none later than `tail` before the end.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Duration,
    every: Duration,
    tail: Duration,
}

/// The schedule of the main benchmark.
const CRASHES: Schedule = Schedule {
    first: Duration::from_secs(30),
    every: Duration::from_secs(50),
    tail: Duration::from_secs(60),
};

const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// What one simulated run measured.
#[derive(Debug, Default, Clone)]
struct RunStats {
    first: Vec<f64>,
    all: Vec<f64>,
    crashes: usize,
    undetected: usize,
    dissemination_periods: Vec<f64>,
    false_positives: u64,
    node_hours: f64,
    msgs_per_member_s: f64,
    /// Of `msgs_per_member_s`, SWIM's gossip-only messages (the rest probe).
    gossip_per_member_s: f64,
    /// Messages per second per *live* member (crashed members send
    /// nothing, and with N/4 crashes in a run they weigh on small N).
    msgs_per_live_member_s: f64,
    bytes_per_member_s: f64,
    wall: f64,
}

impl RunStats {
    fn merge(&mut self, o: RunStats) {
        self.first.extend(o.first);
        self.all.extend(o.all);
        self.crashes += o.crashes;
        self.undetected += o.undetected;
        self.dissemination_periods.extend(o.dissemination_periods);
        self.false_positives += o.false_positives;
        self.node_hours += o.node_hours;
        // Averages over runs of equal length: keep a running sum, divide later.
        self.msgs_per_member_s += o.msgs_per_member_s;
        self.gossip_per_member_s += o.gossip_per_member_s;
        self.msgs_per_live_member_s += o.msgs_per_live_member_s;
        self.bytes_per_member_s += o.bytes_per_member_s;
        self.wall = self.wall.max(o.wall);
    }
}

/// Troupe SWIM's configuration: the defaults, with any keys given in
/// `FD_SWIM` (comma-separated TOML `key = value` pairs of
/// `[failure_detector]`, e.g. `FD_SWIM="gossip_transmits=6"`) overridden,
/// for parameter sweeps without rebuilding.
fn swim_config() -> SwimConfig {
    let Ok(extra) = std::env::var("FD_SWIM") else {
        return SwimConfig::default();
    };
    let mut text = String::from("[failure_detector]\nkind = \"swim\"\n");
    for kv in extra.split(',').filter(|kv| !kv.trim().is_empty()) {
        text.push_str(kv.trim());
        text.push('\n');
    }
    match FailureDetectorConfig::from_toml_str(&text) {
        Ok(FailureDetectorConfig::Swim(c)) => c,
        Ok(other) => panic!("FD_SWIM: not a SWIM config: {other:?}"),
        Err(e) => panic!("FD_SWIM={extra:?}: {e}"),
    }
}

/// foca's LAN profile with Troupe SWIM's probe period, probe timeout, k,
/// retransmit limit and (minimum) suspicion timeout.
fn foca_config(n: u32) -> foca::Config {
    let mut c = foca::Config::new_lan(
        std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN),
    );
    let s = swim_config();
    c.probe_period = PROBE_PERIOD;
    c.probe_rtt = Duration::from_millis(s.probe_timeout_ms as u64);
    c.num_indirect_probes = std::num::NonZeroUsize::new(s.indirect_checks.unwrap_or(3) as usize)
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let tx = s.retransmit_mult as f64 * ((n as f64 + 1.0).log10().ceil()).max(1.0);
    c.max_transmissions =
        std::num::NonZeroU8::new(tx.min(255.0) as u8).unwrap_or(std::num::NonZeroU8::MIN);
    let min = s.suspicion_mult as f64 * (n as f64).log10().max(1.0) * PROBE_PERIOD.as_secs_f64();
    c.suspect_to_down_after = Duration::from_secs_f64(min);
    c
}

fn any_config(kind: Kind) -> FailureDetectorConfig {
    match kind {
        Kind::Heartbeat => FailureDetectorConfig::Heartbeat(HeartbeatConfig::default()),
        Kind::Phi => FailureDetectorConfig::PhiAccrual(PhiAccrualConfig::default()),
        _ => FailureDetectorConfig::Swim(swim_config()),
    }
}

/// `FD_ALIGNED_CRASHES=1`: crash on whole seconds, as before 2026-11-25 evening.
fn aligned_crashes() -> bool {
    std::env::var("FD_ALIGNED_CRASHES").is_ok_and(|v| !v.is_empty() && v != "0")
}

enum Action {
    Crash,
    Pause(Duration),
}

/// One run: N nodes, crashes as `schedule` says ([`CRASHES`]: every 50 s
/// from t = 30 s, at most N/4, none in the last 60 s), optional pauses
/// (every 10 s a random live member stalls for 1-5 s).
fn run<P>(
    n: u32,
    sc: Scenario,
    seed: u64,
    duration: Duration,
    schedule: Schedule,
    make: &dyn Fn(SimId, u64) -> P,
) -> RunStats
where
    P: FailureDetector<Id = SimId>,
    P::Msg: WireSize,
{
    let wall = Instant::now();
    let net = NetConfig {
        loss: sc.loss,
        delay: DelayModel::Uniform {
            min: Duration::from_millis(sc.delay_ms.0),
            max: Duration::from_millis(sc.delay_ms.1),
        },
    };
    let mut sim: Sim<P> = Sim::new(seed, net);
    let trace = std::env::var_os("FD_TRACE_CRASHES").is_some();
    if trace {
        // Suspicions too, for the time to the first suspicion.
        sim.record_only(&[MemberStatus::Suspect, MemberStatus::Down]);
    } else {
        sim.record_only(&[MemberStatus::Down]);
    }
    let ids: Vec<SimId> = (0..n).map(SimId::new).collect();
    for id in &ids {
        sim.add_node(*id, make(*id, seed), &ids);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00fa_17ed);
    let mut actions: Vec<(Duration, Action)> = Vec::new();
    let max_crashes = (n / 4).max(1) as usize;
    // Each crash at a random offset within its second (own RNG stream, so
    // the victims and pauses are those of the aligned schedule): a crash
    // exactly on a whole second coincides with the probe instants of a
    // detector whose nodes all started at t = 0 and probe in lockstep
    // (foca), whose probe sent at that very instant then observes the crash
    // with zero delay.
    let mut phase = ChaCha8Rng::seed_from_u64(seed ^ 0x0c4a_5e00);
    let mut t = schedule.first;
    while actions.len() < max_crashes && t + schedule.tail <= duration {
        let offset = if aligned_crashes() {
            Duration::ZERO
        } else {
            Duration::from_millis(phase.gen_range(0..1000))
        };
        actions.push((t + offset, Action::Crash));
        t += schedule.every;
    }
    if sc.pauses {
        let mut t = Duration::from_secs(15);
        while t < duration {
            let d = Duration::from_millis(rng.gen_range(1000..=5000));
            actions.push((t, Action::Pause(d)));
            t += Duration::from_secs(10);
        }
    }
    actions.sort_by_key(|(t, _)| *t);
    let mut crashed: HashMap<SimId, Duration> = HashMap::new();
    for (at, action) in actions {
        sim.run_until(at);
        let running: Vec<u32> = (0..n).filter(|i| sim.is_running(*i)).collect();
        if running.is_empty() {
            continue;
        }
        let victim = running[rng.gen_range(0..running.len())];
        match action {
            Action::Crash => {
                crashed.insert(sim.id_of(victim), at);
                sim.crash(victim);
            }
            Action::Pause(d) => sim.pause(victim, d),
        }
    }
    sim.run_until(duration);

    let mut out = RunStats {
        node_hours: n as f64 * duration.as_secs_f64() / 3600.0,
        ..RunStats::default()
    };
    // Per crashed member: each live observer's first Down report after the crash.
    let mut reports: HashMap<SimId, BTreeMap<SimId, Duration>> = HashMap::new();
    for o in sim.events() {
        if o.event.status != MemberStatus::Down {
            continue; // Suspect, recorded only for FD_TRACE_CRASHES
        }
        match crashed.get(&o.event.member) {
            Some(tc) if o.event.at >= *tc => {
                reports
                    .entry(o.event.member)
                    .or_default()
                    .entry(o.observer)
                    .or_insert(o.event.at);
            }
            _ => {
                out.false_positives += 1;
                if std::env::var_os("FD_DEBUG").is_some() {
                    eprintln!("false positive (N={n}, {}, seed {seed}): {o:?}", sc.name);
                }
            }
        }
    }
    let live: Vec<SimId> = (0..n)
        .filter(|i| sim.is_running(*i))
        .map(|i| sim.id_of(i))
        .collect();
    for (member, tc) in &crashed {
        out.crashes += 1;
        let r = reports.get(member);
        let times: Vec<Duration> = live
            .iter()
            .filter_map(|o| r.and_then(|r| r.get(o)).copied())
            .collect();
        if let Some(first) = times.iter().min() {
            out.first.push((*first - *tc).as_secs_f64());
        }
        if trace {
            let secs = |t: Option<&Duration>| {
                t.map(|t| format!("{:.2}", (*t - *tc).as_secs_f64()))
                    .unwrap_or_else(|| "-".into())
            };
            let first_suspect = sim
                .events()
                .iter()
                .filter(|o| {
                    o.event.member == *member
                        && o.event.status == MemberStatus::Suspect
                        && o.event.at >= *tc
                })
                .min_by_key(|o| o.event.at);
            let last = (times.len() == live.len())
                .then(|| times.iter().max())
                .flatten();
            eprintln!(
                "crash N={n} {} seed {seed}: member {} at {:.3} s: first Suspect +{} s (by {}), first Down +{} s, all +{} s ({} of {} live)",
                sc.name,
                member.node,
                tc.as_secs_f64(),
                secs(first_suspect.map(|o| &o.event.at)),
                first_suspect.map_or(u32::MAX, |o| o.observer.node),
                secs(times.iter().min()),
                secs(last),
                times.len(),
                live.len()
            );
        }
        if times.len() == live.len() && !times.is_empty() {
            let last = times.iter().max().copied().unwrap_or(*tc);
            let first = times.iter().min().copied().unwrap_or(*tc);
            out.all.push((last - *tc).as_secs_f64());
            out.dissemination_periods
                .push((last - first).as_secs_f64() / PROBE_PERIOD.as_secs_f64());
        } else {
            out.undetected += 1;
        }
    }
    let total = sim.total_stats();
    if std::env::var("FD_FINGERPRINT").is_ok_and(|v| !v.is_empty() && v != "0") {
        // A run's exact fingerprint: every Down report, the events processed
        // and the traffic. Equal before and after a change that must not
        // change behaviour (speed-ups).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |x: u64| {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for o in sim.events() {
            mix(u64::from(o.observer.node));
            mix(u64::from(o.event.member.node));
            mix(o.event.at.as_nanos() as u64);
        }
        eprintln!(
            "fingerprint N={n} {} seed {seed}: events {} processed {} msgs {} bytes {} hash {h:016x}",
            sc.name,
            sim.events().len(),
            sim.processed(),
            total.msgs,
            total.bytes
        );
    }
    let member_s = n as f64 * duration.as_secs_f64();
    out.msgs_per_member_s = total.msgs as f64 / member_s;
    out.gossip_per_member_s = total.gossip_msgs as f64 / member_s;
    let dead_s: f64 = crashed
        .values()
        .map(|tc| duration.saturating_sub(*tc).as_secs_f64())
        .sum();
    out.msgs_per_live_member_s = total.msgs as f64 / (member_s - dead_s).max(1e-9);
    out.bytes_per_member_s = total.bytes as f64 / member_s;
    out.wall = wall.elapsed().as_secs_f64();
    out
}

/// [`run`] of Troupe's detector configured by `cfg` on every member.
fn run_troupe(
    n: u32,
    sc: Scenario,
    seed: u64,
    duration: Duration,
    schedule: Schedule,
    cfg: &FailureDetectorConfig,
) -> RunStats {
    run(n, sc, seed, duration, schedule, &|id, s| {
        AnyDetector::from_config(id, cfg, vec![], s ^ (u64::from(id.node) << 20))
            .unwrap_or_else(|e| panic!("config: {e}"))
    })
}

fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s.get(idx.min(s.len() - 1)).copied()
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}

struct Row {
    kind: Kind,
    n: u32,
    scenario: &'static str,
    stats: RunStats,
    runs: usize,
    secs: u64,
}

/// Re-run this benchmark with glibc's malloc backed by transparent huge
/// pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) unless `FD_HUGEPAGES=0`
/// or that was already done. The simulator's working set (the state of up
/// to 1024 detectors, ~170 MB, touched at random) otherwise spends about a
/// fifth of its time on TLB misses; results are unchanged (same seeds, same
/// events), only wall time. Returns the child's exit code, or `None` to run
/// here (re-executing not wanted, not Linux, or it failed to start).
fn rerun_with_huge_pages() -> Option<i32> {
    if !cfg!(target_os = "linux")
        || std::env::var("FD_HUGEPAGES").is_ok_and(|v| v == "0")
        || std::env::var_os("FD_HUGEPAGES_CHILD").is_some()
    {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:glibc.malloc.hugetlb=1"),
        _ => "glibc.malloc.hugetlb=1".to_string(),
    };
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", tunables)
        .env("FD_HUGEPAGES_CHILD", "1")
        .status()
        .ok()?;
    Some(status.code().unwrap_or(1))
}

fn main() {
    if let Some(code) = rerun_with_huge_pages() {
        std::process::exit(code);
    }
    let quick = std::env::args().any(|a| a == "--quick" || a == "quick")
        || std::env::var("FD_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if std::env::args().any(|a| a == "--presets") || std::env::var_os("FD_PRESETS").is_some() {
        run_presets(quick);
        return;
    }
    let mut sizes: Vec<u32> = if quick {
        vec![8, 64]
    } else {
        vec![8, 64, 256, 1024]
    };
    if let Ok(v) = std::env::var("FD_SIZES") {
        sizes = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let kinds_filter: Option<Vec<String>> = std::env::var("FD_KINDS")
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    let scen_filter: Option<Vec<String>> = std::env::var("FD_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    println!(
        "fd_quality ({} mode): probe period / heartbeat interval 1 s, delay U(1,10) ms",
        if quick { "quick" } else { "full" }
    );
    let mut rows: Vec<Row> = Vec::new();
    for &n in &sizes {
        for kind in [Kind::Heartbeat, Kind::Phi, Kind::Swim, Kind::Foca] {
            if kinds_filter
                .as_ref()
                .is_some_and(|f| !f.iter().any(|k| k == kind.name()))
            {
                continue;
            }
            let all_to_all = matches!(kind, Kind::Heartbeat | Kind::Phi);
            if all_to_all && n > 256 {
                continue; // O(N^2) heartbeats: not meant for this size.
            }
            let secs: u64 = match (quick, all_to_all, n) {
                (true, _, _) => 180,
                (false, true, 256) => 180,
                (false, _, _) => 600,
            };
            let mut seeds: Vec<u64> = match (quick, n) {
                (true, _) => vec![1],
                (false, 8) => (1..=8).collect(),
                (false, 64) => (1..=3).collect(),
                _ => vec![1],
            };
            if let Some(k) = std::env::var("FD_SEEDS")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                seeds = (1..=k.max(1)).collect();
            }
            for sc in SCENARIOS {
                if scen_filter
                    .as_ref()
                    .is_some_and(|f| !f.iter().any(|k| sc.name.starts_with(k.as_str())))
                {
                    continue;
                }
                let mut agg = RunStats::default();
                for &seed in &seeds {
                    let d = Duration::from_secs(secs);
                    let st = match kind {
                        Kind::Foca => run(n, sc, seed, d, CRASHES, &|id, s| {
                            FocaNode::new(id, foca_config(n), s ^ (u64::from(id.node) << 20))
                        }),
                        _ => run_troupe(n, sc, seed, d, CRASHES, &any_config(kind)),
                    };
                    agg.merge(st);
                }
                let row = Row {
                    kind,
                    n,
                    scenario: sc.name,
                    stats: agg,
                    runs: seeds.len(),
                    secs,
                };
                print_row(&row);
                rows.push(row);
            }
        }
    }
    let table = table_markdown(&rows);
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = std::fs::write(
        format!("{target}/fd_quality.md"),
        format!("{table}\n{}\n{}", load_table(&rows), versus_table(&rows)),
    ) {
        eprintln!("could not write fd_quality.md: {e}");
    }
    if let Err(e) = std::fs::write(format!("{target}/fd_quality.svg"), svg(&rows)) {
        eprintln!("could not write fd_quality.svg: {e}");
    }
    println!("\n{table}");
    let load = load_table(&rows);
    println!("{load}");
    let versus = versus_table(&rows);
    println!("{versus}");
    println!("wrote {target}/fd_quality.md and {target}/fd_quality.svg");
}

/// Troupe's SWIM against foca wherever both ran the same size and
/// scenario: the differences of the detection-time percentiles (Troupe
/// minus foca, negative = Troupe faster) with a 95 % bootstrap interval.
/// A tail percentile over a few hundred crashes moves by tenths of a
/// second from one sample of seeds to the next; the interval says whether
/// a difference is more than that.
fn versus_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "Troupe SWIM minus foca, seconds, with 95 % bootstrap intervals (2000 resamples of each side's crashes; negative = Troupe faster):\n\n| N | scenario | crashes | first p50 | first p99 | all p50 | all p99 |\n|---|---|---|---|---|---|---|\n",
    );
    let mut any = false;
    for ours in rows.iter().filter(|r| r.kind == Kind::Swim) {
        let Some(theirs) = rows
            .iter()
            .find(|r| r.kind == Kind::Foca && r.n == ours.n && r.scenario == ours.scenario)
        else {
            continue;
        };
        any = true;
        let cell = |a: &[f64], b: &[f64], p: f64| match bootstrap_difference(a, b, p, 2000) {
            Some((d, lo, hi)) => format!("{d:+.2} [{lo:+.2}, {hi:+.2}]"),
            None => "-".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} / {} | {} | {} | {} | {} |",
            ours.n,
            ours.scenario,
            ours.stats.first.len(),
            theirs.stats.first.len(),
            cell(&ours.stats.first, &theirs.stats.first, 50.0),
            cell(&ours.stats.first, &theirs.stats.first, 99.0),
            cell(&ours.stats.all, &theirs.stats.all, 50.0),
            cell(&ours.stats.all, &theirs.stats.all, 99.0),
        );
    }
    if any {
        t
    } else {
        String::new()
    }
}

/// The `p`-th percentile of `a` minus that of `b`, and the 2.5 / 97.5 %
/// percentiles of the same difference over `iters` bootstrap resamples
/// (each side resampled with replacement, seeded: the output is
/// reproducible). `None` if either side is empty.
fn bootstrap_difference(a: &[f64], b: &[f64], p: f64, iters: usize) -> Option<(f64, f64, f64)> {
    let d = percentile(a, p)? - percentile(b, p)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_b007);
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    let mut diffs = Vec::with_capacity(iters);
    for _ in 0..iters {
        for x in ra.iter_mut() {
            *x = a[rng.gen_range(0..a.len())];
        }
        for x in rb.iter_mut() {
            *x = b[rng.gen_range(0..b.len())];
        }
        diffs.push(percentile(&ra, p)? - percentile(&rb, p)?);
    }
    Some((d, percentile(&diffs, 2.5)?, percentile(&diffs, 97.5)?))
}

fn header() -> String {
    "| detector | N | scenario | runs x s | crashes (undetected) | first p50/p99 s | all p50/p99 s | FP per node-hour | msgs/member/s (gossip) | bytes/member/s | dissem. periods p50/p99 (log2 N) | max wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n".to_string()
}

fn row_markdown(r: &Row) -> String {
    let s = &r.stats;
    let runs = r.runs.max(1) as f64;
    let dissem = if matches!(r.kind, Kind::Swim | Kind::Foca) {
        format!(
            "{}/{} ({:.1})",
            fmt_opt(percentile(&s.dissemination_periods, 50.0)),
            fmt_opt(percentile(&s.dissemination_periods, 99.0)),
            (r.n as f64).log2()
        )
    } else {
        "-".into()
    };
    let msgs = if s.gossip_per_member_s > 0.0 {
        format!(
            "{:.2} ({:.2})",
            s.msgs_per_member_s / runs,
            s.gossip_per_member_s / runs
        )
    } else {
        format!("{:.2}", s.msgs_per_member_s / runs)
    };
    format!(
        "| {} | {} | {} | {}x{} | {} ({}) | {}/{} | {}/{} | {:.2} | {} | {:.0} | {} | {:.1} |\n",
        r.kind.name(),
        r.n,
        r.scenario,
        r.runs,
        r.secs,
        s.crashes,
        s.undetected,
        fmt_opt(percentile(&s.first, 50.0)),
        fmt_opt(percentile(&s.first, 99.0)),
        fmt_opt(percentile(&s.all, 50.0)),
        fmt_opt(percentile(&s.all, 99.0)),
        s.false_positives as f64 / s.node_hours.max(1e-9),
        msgs,
        s.bytes_per_member_s / runs,
        dissem,
        s.wall
    )
}

/// Per-member load against N, one line per (detector, scenario) run at
/// two or more sizes: messages per member per second, its gossip-only
/// part, and per live member; then the spread (max / min - 1) of the
/// total and of the per-live-member figure over N >= 64 (N = 8 loses 2 of
/// its 8 members to crashes early, so it is left out of the spread).
fn load_table(rows: &[Row]) -> String {
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.n).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut t = String::from(
        "Load per member vs N: msgs/member/s (gossip-only part) [per live member]\n\n| detector | scenario |",
    );
    for n in &sizes {
        let _ = write!(t, " N={n} |");
    }
    t.push_str(" spread N>=64 (live) |\n|---|---|");
    for _ in &sizes {
        t.push_str("---|");
    }
    t.push_str("---|\n");
    let mut keys: Vec<(Kind, &'static str)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.kind, r.scenario)) {
            keys.push((r.kind, r.scenario));
        }
    }
    for (kind, scenario) in keys {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| r.kind == kind && r.scenario == scenario)
            .collect();
        if mine.len() < 2 {
            continue;
        }
        let _ = write!(t, "| {} | {} |", kind.name(), scenario);
        let (mut tot, mut live) = (Vec::new(), Vec::new());
        for n in &sizes {
            match mine.iter().find(|r| r.n == *n) {
                Some(r) => {
                    let runs = r.runs.max(1) as f64;
                    let s = &r.stats;
                    let (m, g, l) = (
                        s.msgs_per_member_s / runs,
                        s.gossip_per_member_s / runs,
                        s.msgs_per_live_member_s / runs,
                    );
                    if *n >= 64 {
                        tot.push(m);
                        live.push(l);
                    }
                    if g > 0.0 {
                        let _ = write!(t, " {m:.2} ({g:.2}) [{l:.2}] |");
                    } else {
                        // No gossip-only messages, or not told apart (foca).
                        let _ = write!(t, " {m:.2} [{l:.2}] |");
                    }
                }
                None => t.push_str(" - |"),
            }
        }
        let spread = |v: &[f64]| {
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            100.0 * (max / min.max(1e-9) - 1.0)
        };
        if tot.len() >= 2 {
            let _ = writeln!(t, " {:.0} % ({:.0} %) |", spread(&tot), spread(&live));
        } else {
            t.push_str(" - |\n");
        }
    }
    t
}

fn print_row(r: &Row) {
    print!("{}", row_markdown(r));
}

fn table_markdown(rows: &[Row]) -> String {
    let mut t = header();
    for r in rows {
        t.push_str(&row_markdown(r));
    }
    t
}

/// Scatter plot: x = all-aware detection time p50, y = log10(1 + false
/// positives per node-hour); one point per (detector, N, scenario).
fn svg(rows: &[Row]) -> String {
    let (w, h, ml, mr, mt, mb) = (900.0, 560.0, 70.0, 190.0, 40.0, 60.0);
    let pts: Vec<(f64, f64, &Row)> = rows
        .iter()
        .filter_map(|r| {
            let x = percentile(&r.stats.all, 50.0)?;
            let fp = r.stats.false_positives as f64 / r.stats.node_hours.max(1e-9);
            Some((x, (1.0 + fp).log10(), r))
        })
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(10.0_f64, f64::max) * 1.1;
    let ymax = pts.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
    let sx = |x: f64| ml + x / xmax * (w - ml - mr);
    let sy = |y: f64| h - mb - y / ymax * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Detection time vs false positives (each point: detector, N, scenario)</text>"#,
        (w - mr + ml) / 2.0
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r#"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for i in 0..=5 {
        let xv = xmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{xv:.0}</text>"#,
            sx(xv),
            h - mb + 18.0
        );
        let yv = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.1}</text>"#,
            ml - 6.0,
            sy(yv) + 4.0,
            10f64.powf(yv) - 1.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time until all members mark a crashed node Down, p50 (s)</text>"#,
        (w - mr + ml) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">false positives per node-hour (log scale)</text>"#,
        (h - mb + mt) / 2.0
    );
    for (x, y, r) in &pts {
        let shape = match r.scenario {
            "pauses 1-5s" => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{}" fill-opacity="0.8"><title>{} N={} {}</title></rect>"#,
                sx(*x) - 4.0,
                sy(*y) - 4.0,
                r.kind.color(),
                r.kind.name(),
                r.n,
                r.scenario
            ),
            _ => format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="{:.1}" fill="{}" fill-opacity="0.7"><title>{} N={} {}</title></circle>"#,
                sx(*x),
                sy(*y),
                3.0 + (r.n as f64).log2() / 2.0,
                r.kind.color(),
                r.kind.name(),
                r.n,
                r.scenario
            ),
        };
        let _ = writeln!(s, "{shape}");
    }
    let lx = w - mr + 20.0;
    for (i, k) in [Kind::Heartbeat, Kind::Phi, Kind::Swim, Kind::Foca]
        .iter()
        .enumerate()
    {
        let y = mt + 20.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<circle cx="{lx}" cy="{y}" r="6" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            k.color(),
            lx + 12.0,
            y + 4.0,
            k.name()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{}">circle size ~ log2 N</text><text x="{lx}" y="{}">square = pauses 1-5 s</text>"#,
        mt + 110.0,
        mt + 128.0
    );
    s.push_str("</svg>\n");
    s
}

/// The presets' benchmark (`-- --presets`, or `FD_PRESETS=lan-fast,wan`
/// to choose presets): each detector with each `[failure_detector]`
/// preset, at N = 8 and 32 (`FD_SIZES`), in [`PRESET_SCENARIOS`]
/// (`FD_SCENARIOS`), over many seeds (`FD_SEEDS`; default 32 at N = 8, 8
/// at N = 32, 4 in quick mode). Crashes are spaced for the preset's
/// detection time (every 20 / 50 / 120 s for lan-fast / lan / wan, at most
/// N/4 per run, none in the last 20 / 60 / 150 s) in runs of 600 s (1200 s
/// for wan), so the rest of each run measures false positives. Reports
/// the time from a crash to the first and to every live member's `Down`
/// (p50 / p99 over crashes), false positives per node-hour and messages
/// per member per second; also written to `target/fd_presets.md`.
fn run_presets(quick: bool) {
    use troupe_protocols::fd::config::Preset;
    let only = |var: &str| -> Option<Vec<String>> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty() && v != "1")
            .map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
    };
    let presets: Vec<Preset> = match only("FD_PRESETS") {
        Some(names) => names
            .iter()
            .map(|n| Preset::from_name(n).unwrap_or_else(|| panic!("FD_PRESETS: no preset {n:?}")))
            .collect(),
        None => Preset::ALL.to_vec(),
    };
    let kinds_filter = only("FD_KINDS");
    let scen_filter = only("FD_SCENARIOS");
    let sizes: Vec<u32> = match std::env::var("FD_SIZES") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) if quick => vec![8],
        Err(_) => vec![8, 32],
    };
    println!(
        "fd_quality presets ({} mode): each detector with each [failure_detector] preset",
        if quick { "quick" } else { "full" }
    );
    let mut table = String::from(
        "| detector | preset | N | scenario | runs x s | crashes (undetected) | first Down p50/p99 s | all Down p50/p99 s | FP per node-hour | msgs/member/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    print!("{table}");
    for &n in &sizes {
        for kind in [Kind::Heartbeat, Kind::Phi, Kind::Swim] {
            if kinds_filter
                .as_ref()
                .is_some_and(|f| !f.iter().any(|k| k == kind.name()))
            {
                continue;
            }
            for &preset in &presets {
                let (every, tail, secs) = match preset {
                    Preset::LanFast => (20, 20, 600),
                    Preset::Lan => (50, 60, 600),
                    Preset::Wan => (120, 150, 1200),
                };
                let schedule = Schedule {
                    first: Duration::from_secs(30),
                    every: Duration::from_secs(every),
                    tail: Duration::from_secs(tail),
                };
                let name = if kind == Kind::Swim {
                    "swim"
                } else {
                    kind.name()
                };
                let cfg = preset
                    .config(name)
                    .unwrap_or_else(|| panic!("no preset for {name}"));
                let seeds: u64 = match std::env::var("FD_SEEDS").ok().and_then(|v| v.parse().ok()) {
                    Some(k) => k,
                    None if quick => 4,
                    None if n <= 8 => 32,
                    None => 8,
                };
                for sc in PRESET_SCENARIOS {
                    if scen_filter
                        .as_ref()
                        .is_some_and(|f| !f.iter().any(|k| sc.name.starts_with(k.as_str())))
                    {
                        continue;
                    }
                    let mut agg = RunStats::default();
                    for seed in 1..=seeds.max(1) {
                        let d = Duration::from_secs(secs);
                        agg.merge(run_troupe(n, sc, seed, d, schedule, &cfg));
                    }
                    let s = &agg;
                    let line = format!(
                        "| {} | {} | {} | {} | {}x{} | {} ({}) | {}/{} | {}/{} | {:.2} | {:.2} |\n",
                        kind.name(),
                        preset,
                        n,
                        sc.name,
                        seeds,
                        secs,
                        s.crashes,
                        s.undetected,
                        fmt_opt(percentile(&s.first, 50.0)),
                        fmt_opt(percentile(&s.first, 99.0)),
                        fmt_opt(percentile(&s.all, 50.0)),
                        fmt_opt(percentile(&s.all, 99.0)),
                        s.false_positives as f64 / s.node_hours.max(1e-9),
                        s.msgs_per_member_s / seeds.max(1) as f64,
                    );
                    print!("{line}");
                    table.push_str(&line);
                }
            }
        }
    }
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    let _ = std::fs::create_dir_all(target);
    match std::fs::write(format!("{target}/fd_presets.md"), &table) {
        Ok(()) => println!("wrote {target}/fd_presets.md"),
        Err(e) => eprintln!("could not write fd_presets.md: {e}"),
    }
}
