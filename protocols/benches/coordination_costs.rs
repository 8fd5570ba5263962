//! Message and time costs of the mutual-exclusion and election cores,
//! counted on the deterministic simulated network, next to the textbook
//! numbers. Run with `cargo bench -p troupe-protocols --bench coordination_costs`.
//!
//! Network: reliable, fixed one-way delay `D` (no loss, no reordering), so
//! delays are reported in units of `D`. Retry/regeneration timers are set far
//! beyond the run so that only the algorithm's own messages are counted;
//! leader heartbeats are excluded from election counts.
//!
//! The election table's detection column is measured, like the time to
//! elect: from the crash until every survivor's failure detector (the
//! simulator's oracle, configured to report `Down` after a fixed delay)
//! reports the old leader `Down`. The bench checks (and exits non-zero
//! otherwise) that every survivor learns it at the same moment, as the
//! table's header says, that this moment is the configured delay, and that
//! nobody agreed on a new leader before it.

use std::time::Duration;

use troupe_framework::membership::MemberStatus;
use troupe_framework::sansio::SnapshotCore;
use troupe_protocols::election::{
    Bully, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent, NextInLine, RingElection,
};
use troupe_protocols::mutex::{
    Centralized, LamportMutex, MutexConfig, MutexCore, MutexDurable, MutexEvent, RicartAgrawala,
    TokenRing,
};
use troupe_protocols::testkit::scenarios::one_leader;
use troupe_protocols::testkit::{recover_state, NetFaults, OracleConfig, Sim, SimProtocol};

const D: Duration = Duration::from_millis(10);
const SIZES: [u32; 4] = [3, 5, 9, 17];

fn quiet_mutex_config() -> MutexConfig {
    MutexConfig {
        resource: "r".into(),
        retry: Duration::from_secs(3600),
        token_timeout: Duration::from_secs(3600),
        ..MutexConfig::new("r")
    }
}

fn sim_of<P: SimProtocol<Id = u32> + SnapshotCore + 'static>(
    n: u32,
    make: fn(u32, Vec<u32>, Option<P::State>) -> P,
    oracle: OracleConfig,
) -> Sim<P> {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    Sim::new(
        42,
        members,
        Box::new(move |id, r| make(*id, m2.clone(), recover_state::<P>(r))),
        NetFaults::reliable(D),
        oracle,
    )
}

struct MutexCost {
    light_msgs: f64,
    light_delay: f64,
    saturated_msgs: f64,
}

fn mutex_cost<P>(n: u32, make: fn(u32, Vec<u32>, Option<MutexDurable>) -> P) -> MutexCost
where
    P: SimProtocol<Id = u32, Event = MutexEvent>
        + SnapshotCore<State = MutexDurable>
        + MutexCore
        + 'static,
{
    let mut sim = sim_of(n, make, OracleConfig::default());
    let obs = &mut ();
    sim.start(obs).expect("start");
    sim.run_for(Duration::from_secs(1), obs).expect("warm up");
    // Light load: one request at a time, every 100 ms, from the non-highest
    // members in turn (the centralized coordinator is the highest).
    let ops = 2 * (n - 1).max(1);
    let (mut msgs, mut delay) = (0u64, Duration::ZERO);
    for k in 0..ops {
        let node = k % (n - 1).max(1) + 1;
        let before = sim.total_sent();
        let t0 = sim.now();
        sim.command(&node, obs, |c, now, out| c.request(now, out))
            .expect("request");
        while sim.core(&node).and_then(|c| c.holding()).is_none() {
            sim.run_for(Duration::from_millis(1), obs).expect("run");
            assert!(sim.now() - t0 < Duration::from_secs(60), "no grant");
        }
        delay += sim.now() - t0;
        sim.command(&node, obs, |c, now, out| c.release(now, out))
            .expect("release");
        sim.run_until(t0 + Duration::from_millis(100), obs)
            .expect("run");
        msgs += sim.total_sent() - before;
    }
    // Saturation: every member requests again as soon as it released.
    // Counted after a warm-up of 2N grants (until every member is queued).
    let mut before = sim.total_sent();
    let mut grants = 0u64;
    let warm = 2 * u64::from(n);
    let target = warm + 6 * u64::from(n);
    while grants < target {
        if grants == warm {
            before = sim.total_sent();
        }
        for id in 1..=n {
            let c = sim.core(&id).expect("alive");
            if c.holding().is_some() {
                grants += 1;

                sim.command(&id, obs, |c, now, out| c.release(now, out))
                    .expect("release");
            }
            let c = sim.core(&id).expect("alive");
            if c.holding().is_none() && !c.is_waiting() {
                sim.command(&id, obs, |c, now, out| c.request(now, out))
                    .expect("request");
            }
        }
        sim.run_for(Duration::from_millis(1), obs).expect("run");
    }
    MutexCost {
        light_msgs: msgs as f64 / f64::from(ops),
        light_delay: delay.as_secs_f64() / f64::from(ops) / D.as_secs_f64(),
        saturated_msgs: (sim.total_sent() - before) as f64 / (grants - warm) as f64,
    }
}

struct ElectCost {
    msgs: u64,
    time: Duration,
    /// From the crash until every survivor's detector reported it.
    detection: Duration,
}

fn elect_cost<P>(
    n: u32,
    make: fn(u32, Vec<u32>, Option<ElectionDurable<u32>>) -> P,
    detect: Duration,
) -> ElectCost
where
    P: SimProtocol<Id = u32, Event = ElectionEvent<u32>>
        + SnapshotCore<State = ElectionDurable<u32>>
        + ElectionCore
        + 'static,
{
    let oracle = OracleConfig {
        down_after: detect,
        up_after: detect,
    };
    let mut sim = sim_of(n, make, oracle);
    let obs = &mut ();
    sim.start(obs).expect("start");
    sim.run_for(Duration::from_secs(5), obs)
        .expect("initial election");
    let (_, first) = one_leader(&sim, false).expect("a first leader");
    sim.reset_counts();
    let t0 = sim.now();
    sim.crash(&first, obs).expect("crash");
    let survivors = sim.alive();
    // When the first, and when the last, survivor's detector reported the
    // crash.
    let (mut first_knew, mut all_knew) = (None, None);
    loop {
        sim.run_for(Duration::from_millis(1), obs).expect("run");
        let knowing = survivors
            .iter()
            .filter(|s| sim.opinion(s, &first) == MemberStatus::Down)
            .count();
        if knowing > 0 && first_knew.is_none() {
            first_knew = Some(sim.now() - t0);
        }
        if knowing == survivors.len() && all_knew.is_none() {
            all_knew = Some(sim.now() - t0);
        }
        if one_leader(&sim, false).is_ok() {
            break;
        }
        assert!(sim.now() - t0 < Duration::from_secs(120), "no new leader");
    }
    let time = sim.now() - t0;
    let detection = all_knew.unwrap_or_else(|| {
        panic!("N = {n}: a new leader was agreed on {time:?} after the crash, before every survivor's detector reported it")
    });
    assert_eq!(
        first_knew,
        Some(detection),
        "N = {n}: the survivors did not all learn of the crash at the same moment"
    );
    assert!(
        detection.abs_diff(detect) <= Duration::from_millis(1),
        "N = {n}: the crash was reported after {detection:?}, not after the configured {detect:?}"
    );
    // Let trailing messages of the election finish, then count.
    sim.run_for(Duration::from_secs(5), obs).expect("settle");
    let msgs = sim
        .sent_counts()
        .iter()
        .filter(|(k, _)| **k != "heartbeat")
        .map(|(_, v)| *v)
        .sum();
    ElectCost {
        msgs,
        time,
        detection,
    }
}

fn ra(id: u32, m: Vec<u32>, d: Option<MutexDurable>) -> RicartAgrawala<u32> {
    RicartAgrawala::new(id, m, quiet_mutex_config(), d)
}
fn central(id: u32, m: Vec<u32>, d: Option<MutexDurable>) -> Centralized<u32> {
    Centralized::new(id, m, quiet_mutex_config(), d)
}
fn lamport(id: u32, m: Vec<u32>, d: Option<MutexDurable>) -> LamportMutex<u32> {
    LamportMutex::new(id, m, quiet_mutex_config(), d)
}
fn ring_mutex(id: u32, m: Vec<u32>, d: Option<MutexDurable>) -> TokenRing<u32> {
    TokenRing::new(id, m, quiet_mutex_config(), d)
}
fn bully(id: u32, m: Vec<u32>, d: Option<ElectionDurable<u32>>) -> Bully<u32> {
    Bully::new(id, m, ElectionConfig::default(), d)
}
fn ring(id: u32, m: Vec<u32>, d: Option<ElectionDurable<u32>>) -> RingElection<u32> {
    RingElection::new(id, m, ElectionConfig::default(), d)
}
fn next(id: u32, m: Vec<u32>, d: Option<ElectionDurable<u32>>) -> NextInLine<u32> {
    NextInLine::new(id, m, ElectionConfig::default(), d)
}

fn main() {
    let wall = std::time::Instant::now();
    println!("## Mutual exclusion: messages per entry+exit (one-way delay D = {D:?})\n");
    println!("Light load = one request at a time, 100 ms apart; saturated = every member always requesting.\n");
    println!("| algorithm | N | msgs/op light | textbook | entry delay (D) light | textbook | msgs/grant saturated |");
    println!("|---|---:|---:|---|---:|---|---:|");
    for n in SIZES {
        let rows: [(&str, MutexCost, String, &str); 4] = [
            ("centralized", mutex_cost(n, central), "3".into(), "2"),
            (
                "ricart-agrawala",
                mutex_cost(n, ra),
                format!("2(N-1) = {}", 2 * (n - 1)),
                "2",
            ),
            (
                "lamport",
                mutex_cost(n, lamport),
                format!("3(N-1) = {}", 3 * (n - 1)),
                "2",
            ),
            (
                "token-ring",
                mutex_cost(n, ring_mutex),
                "1 .. unbounded".into(),
                "0 .. N-1",
            ),
        ];
        for (name, c, tb, td) in rows {
            println!(
                "| {name} | {n} | {:.2} | {tb} | {:.2} | {td} | {:.2} |",
                c.light_msgs, c.light_delay, c.saturated_msgs
            );
        }
    }
    println!("\n## Leader election after the leader crashes (D = {D:?})\n");
    println!("Every survivor learns of the crash at the same moment (the worst case for bully). Heartbeats excluded.\n");
    println!(
        "| algorithm | N | messages | textbook | time to elect (all know) | of which detection |"
    );
    println!("|---|---:|---:|---|---:|---:|");
    for (detect, n) in [Duration::from_millis(300), Duration::from_secs(1)]
        .into_iter()
        .flat_map(|d| SIZES.into_iter().map(move |n| (d, n)))
    {
        let rows: [(&str, ElectCost, String); 3] = [
            (
                "bully",
                elect_cost(n, bully, detect),
                format!("O(N^2), N^2 = {}", n * n),
            ),
            (
                "ring",
                elect_cost(n, ring, detect),
                format!("~2N = {}", 2 * n),
            ),
            (
                "next-in-line",
                elect_cost(n, next, detect),
                format!("N-2 = {}", n - 2),
            ),
        ];
        for (name, c, tb) in rows {
            println!(
                "| {name} | {n} | {} | {tb} | {:.0} ms | {:.0} ms |",
                c.msgs,
                c.time.as_secs_f64() * 1000.0,
                c.detection.as_secs_f64() * 1000.0
            );
        }
    }
    println!("\n(bench wall time {:.1} s)", wall.elapsed().as_secs_f64());
}
