//! Messages per broadcast on a fault-free network (one-way delay 5 ms), for
//! N = 3, 5, 9, 17, against the textbook figure for eager reliable
//! broadcast (the origin sends to N-1 members, each of them relays to the
//! others: N(N-1), "O(N^2)"). Here the copy a member would send back to the
//! member it got the message from is an `Ack` instead, so the total is the
//! same N(N-1); FIFO and causal add no message. Total order by a
//! sequencer with failover adds, per broadcast, one order message and the
//! N-1 members' accept messages, each itself N(N-1): (N+1)N(N-1), against
//! 2N(N-1) for the textbook fixed sequencer (its order message only);
//! counted once the embedded election settled (its heartbeats and the
//! join messages of the first epoch are not per broadcast). Lamport total
//! order adds the N-1 members' acknowledgements, each N(N-1): N^2(N-1),
//! against the textbook N(N-1) (one multicast and N-1 acknowledgement
//! multicasts of N-1 sends each, with no relaying). NACK-based multicast sends N-1 first
//! transmissions and no acknowledgement; its session messages are counted
//! separately (they depend on time, not on the number of broadcasts); the
//! epidemic algorithms are measured against their own textbook figures.
//! Printed as the tables in BENCHMARKS.md ("Broadcast costs"); the counts
//! are asserted.

use std::time::Duration;

use std::collections::BTreeMap;

use troupe_protocols::broadcast::{
    AnyBroadcast, BroadcastAlgorithm, BroadcastConfig, BroadcastCore, BroadcastEvent, GossipConfig,
};
use troupe_protocols::testkit::{ms, NetFaults, Observer, OracleConfig, Sim};

/// The algorithms on the reliable engine (the epidemic ones have their own
/// table below).
const RELAYING: [BroadcastAlgorithm; 5] = [
    BroadcastAlgorithm::EagerReliable,
    BroadcastAlgorithm::Fifo,
    BroadcastAlgorithm::Causal,
    BroadcastAlgorithm::Total,
    BroadcastAlgorithm::LamportTotal,
];

/// Messages sent per broadcast, by kind, for `algorithm` in a group of `n`
/// (every member broadcasting 4 times).
fn per_broadcast(algorithm: BroadcastAlgorithm, n: u32) -> (f64, f64) {
    per_broadcast_rounds(algorithm, n, 4)
}

/// [`per_broadcast`] with every member broadcasting `rounds` times.
fn per_broadcast_rounds(algorithm: BroadcastAlgorithm, n: u32, rounds: u32) -> (f64, f64) {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    let mut sim: Sim<AnyBroadcast<u32>> = Sim::new(
        1,
        members.clone(),
        Box::new(move |id, _| {
            AnyBroadcast::new(algorithm, *id, m2.clone(), Default::default(), None)
        }),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    sim.start(&mut ()).unwrap();
    if algorithm == BroadcastAlgorithm::Total {
        // The election and the first epoch's joins, before any broadcast.
        sim.run_for(Duration::from_secs(1), &mut ()).unwrap();
        sim.reset_counts();
    }
    for r in 0..rounds {
        for &m in &members {
            let payload = (r * 100 + m).to_le_bytes().to_vec();
            sim.command(&m, &mut (), |c, now, o| c.broadcast(payload, now, o))
                .unwrap();
            sim.run_for(Duration::from_millis(20), &mut ()).unwrap();
        }
    }
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    for (_, c) in sim.cores() {
        let s = c.stats();
        assert_eq!(s.delivered, u64::from(rounds * n), "{algorithm} N={n}");
        assert_eq!(s.buffered, 0, "{algorithm} N={n}: history not collected");
    }
    let b = f64::from(rounds * n);
    let data = sim.sent_counts().get("data").copied().unwrap_or(0) as f64;
    let acks = sim.sent_counts().get("ack").copied().unwrap_or(0) as f64;
    (data / b, acks / b)
}

#[test]
fn messages_per_broadcast_match_the_textbook() {
    println!("| algorithm | N | data / broadcast | acks / broadcast | total | textbook N(N-1) | expected here |");
    println!("|---|---|---|---|---|---|---|");
    for algorithm in RELAYING {
        for n in [3u32, 5, 9, 17] {
            let (data, acks) = per_broadcast(algorithm, n);
            let textbook = f64::from(n * (n - 1));
            let expected = match algorithm {
                BroadcastAlgorithm::Total => textbook * f64::from(n + 1),
                BroadcastAlgorithm::LamportTotal => textbook * f64::from(n),
                _ => textbook,
            };
            println!(
                "| {algorithm} | {n} | {data:.1} | {acks:.1} | {:.1} | {textbook} | {expected} |",
                data + acks
            );
            assert!((data + acks - expected).abs() < 1e-9, "{algorithm} N={n}");
        }
    }
}

/// Records when each member delivered each payload.
#[derive(Default)]
struct Arrivals(BTreeMap<Vec<u8>, Vec<Duration>>);

impl Observer<AnyBroadcast<u32>> for Arrivals {
    fn on_event(&mut self, now: Duration, _: &u32, e: &BroadcastEvent<u32>) -> Result<(), String> {
        let BroadcastEvent::Delivered { payload, .. } = e;
        self.0.entry(payload.clone()).or_default().push(now);
        Ok(())
    }
}

/// What one epidemic algorithm costs in a group of `n`: `count` broadcasts
/// from rotating members, `gap` apart (so that they do not overlap), on a
/// fault-free network (one-way delay 5 ms).
struct Epidemic {
    /// Messages per broadcast, by kind.
    kinds: BTreeMap<&'static str, f64>,
    /// Mean over broadcasts of the fraction of members that never delivered.
    residue: f64,
    /// Mean over fully delivered broadcasts of the time to reach the last
    /// member, in rounds of the gossip period.
    rounds_to_all: f64,
}

fn epidemic(
    algorithm: BroadcastAlgorithm,
    n: u32,
    count: u32,
    gap: Duration,
    gossip: GossipConfig,
    warm_up: u32,
) -> Epidemic {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    let period = gossip.period;
    let config = BroadcastConfig {
        gossip,
        ..BroadcastConfig::default()
    };
    let mut sim: Sim<AnyBroadcast<u32>> = Sim::new(
        1,
        members.clone(),
        Box::new(move |id, _| AnyBroadcast::new(algorithm, *id, m2.clone(), config.clone(), None)),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    let mut obs = Arrivals::default();
    sim.start(&mut obs).unwrap();
    let mut sent_at = BTreeMap::new();
    for i in 0..warm_up + count {
        if i == warm_up {
            sim.reset_counts();
            obs.0.clear();
            sent_at.clear();
        }
        let m = members[(i % n) as usize];
        let payload = i.to_le_bytes().to_vec();
        sent_at.insert(payload.clone(), sim.now());
        sim.command(&m, &mut obs, |c, now, o| c.broadcast(payload, now, o))
            .unwrap();
        sim.run_for(gap, &mut obs).unwrap();
    }
    let b = f64::from(count);
    let kinds = sim
        .sent_counts()
        .iter()
        .map(|(k, v)| (*k, *v as f64 / b))
        .collect();
    let mut residue = 0.0;
    let mut rounds = Vec::new();
    for (p, at) in &sent_at {
        let got = obs.0.get(p).map_or(0, Vec::len);
        residue += 1.0 - got as f64 / f64::from(n);
        if got == n as usize {
            let last = obs.0[p].iter().max().copied().unwrap_or_default();
            rounds.push((last - *at).as_secs_f64() / period.as_secs_f64());
        }
    }
    Epidemic {
        kinds,
        residue: residue / b,
        rounds_to_all: rounds.iter().sum::<f64>() / rounds.len().max(1) as f64,
    }
}

/// The fraction `s` of members a feedback + coin rumor never reaches,
/// `s = e^{-(k+1)(1-s)}` (Demers et al.), by fixed-point iteration.
fn residue(k: f64) -> f64 {
    let mut s: f64 = 0.5;
    for _ in 0..200 {
        s = (-(k + 1.0) * (1.0 - s)).exp();
    }
    s
}

fn kind(e: &Epidemic, k: &str) -> f64 {
    e.kinds.get(k).copied().unwrap_or(0.0)
}

#[test]
fn epidemic_messages_per_broadcast_match_the_textbook() {
    println!(
        "| algorithm | N | messages / broadcast (by kind) | rounds to all | residue | textbook |"
    );
    println!("|---|---|---|---|---|---|");
    let period = GossipConfig::default().period;
    for n in [16u32, 64] {
        // Anti-entropy: every member reached in O(log N) rounds (push with
        // one peer per round: log2 N + ln N, Pittel); the cost is per round,
        // not per broadcast: every active member contacts `fanout` peers.
        let bound = f64::from(n).log2() + f64::from(n).ln() + 2.0;
        for a in [
            BroadcastAlgorithm::AntiEntropyPush,
            BroadcastAlgorithm::AntiEntropyPull,
            BroadcastAlgorithm::AntiEntropyPushPull,
        ] {
            let e = epidemic(a, n, 8, Duration::from_secs(4), GossipConfig::default(), 0);
            let total: f64 = e.kinds.values().sum();
            println!(
                "| {a} | {n} | {total:.0} ({:?}) | {:.1} | {:.3} | rounds <= log2 N + ln N + 2 = {bound:.1} |",
                e.kinds, e.rounds_to_all, e.residue
            );
            assert_eq!(e.residue, 0.0, "{a} N={n}: every member delivers");
            assert!(
                e.rounds_to_all <= bound,
                "{a} N={n}: {:.1} rounds",
                e.rounds_to_all
            );
        }
        // Rumor mongering, feedback + coin, k = 1/p: (k+1)(1-s) pushes per
        // member, one feedback per useless push (k(1-s)), residue s. The
        // textbook's model: one contact per round (with `fanout` f, a
        // member makes the f contacts of its last round before it sees the
        // feedback that stops it: about (f-1)/2 more pushes per member).
        let gossip = GossipConfig {
            fanout: 1,
            anti_entropy_period: Duration::ZERO,
            ..GossipConfig::default()
        };
        let k = 1.0 / gossip.stop_probability;
        let s = residue(k);
        let e = epidemic(BroadcastAlgorithm::Rumor, n, 60, ms(600), gossip, 0);
        let (pushes, feedback) = (kind(&e, "rumor"), kind(&e, "feedback"));
        let textbook = (k + 1.0) * (1.0 - s) * f64::from(n);
        println!(
            "| rumor (k={k}, fanout 1) | {n} | {:.1} ({pushes:.1} rumor, {feedback:.1} feedback) | {:.1} | {:.3} | (k+1)(1-s)N = {textbook:.1} rumor, s = {s:.3} |",
            pushes + feedback, e.rounds_to_all, e.residue
        );
        assert!(
            (pushes - textbook).abs() < 0.2 * textbook,
            "rumor N={n}: {pushes:.1} pushes per broadcast, textbook {textbook:.1}"
        );
        assert!(
            e.residue < 3.0 * s + 0.02,
            "rumor N={n}: residue {:.3}",
            e.residue
        );
        // Plumtree, after warm-up: N-1 payloads (a spanning tree) plus
        // announcements on the lazy links.
        let gossip = GossipConfig {
            anti_entropy_period: Duration::ZERO,
            ..GossipConfig::default()
        };
        let e = epidemic(
            BroadcastAlgorithm::Plumtree,
            n,
            4 * n,
            ms(200),
            gossip,
            2 * n,
        );
        let payloads = kind(&e, "gossip");
        let tree = f64::from(n - 1);
        println!(
            "| plumtree | {n} | {:.1} ({payloads:.1} gossip, {:.1} ihave, {:.2} graft, {:.2} prune) | {:.1} | {:.3} | N-1 = {tree} gossip |",
            e.kinds.values().sum::<f64>(),
            kind(&e, "ihave"),
            kind(&e, "graft"),
            kind(&e, "prune"),
            e.rounds_to_all,
            e.residue
        );
        assert_eq!(e.residue, 0.0, "plumtree N={n}: every member delivers");
        assert!(
            (payloads - tree).abs() < 0.05 * tree,
            "plumtree N={n}: {payloads:.1} payloads"
        );
    }
    let _ = period;
}

/// NACK-based multicast (`"nack"`), `rounds` rounds in which every member
/// broadcasts once, `gap` apart: per broadcast, the first transmissions
/// ("data"), the session messages, and the NACKs and repairs (none without
/// loss); and the virtual time from the first broadcast to the last.
fn nack_per_broadcast(n: u32, rounds: u32, gap: Duration) -> (f64, f64, f64, Duration) {
    let members: Vec<u32> = (1..=n).collect();
    let m2 = members.clone();
    let mut sim: Sim<AnyBroadcast<u32>> = Sim::new(
        1,
        members.clone(),
        Box::new(move |id, _| {
            AnyBroadcast::new(
                BroadcastAlgorithm::Nack,
                *id,
                m2.clone(),
                Default::default(),
                None,
            )
        }),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    sim.start(&mut ()).unwrap();
    let start = sim.now();
    for r in 0..rounds {
        for &m in &members {
            let payload = (r * 100 + m).to_le_bytes().to_vec();
            sim.command(&m, &mut (), |c, now, o| c.broadcast(payload, now, o))
                .unwrap();
            sim.run_for(gap, &mut ()).unwrap();
        }
    }
    let span = sim.now() - start;
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    for (_, c) in sim.cores() {
        let s = c.stats();
        assert_eq!(s.delivered, u64::from(rounds * n), "nack N={n}");
        assert_eq!(s.buffered, 0, "nack N={n}: history not collected");
    }
    assert!(
        sim.is_idle(),
        "nack N={n}: sessions go on once all is stable"
    );
    let b = f64::from(rounds * n);
    let count = |k: &str| sim.sent_counts().get(k).copied().unwrap_or(0) as f64;
    let recovery = count("nack") + count("repair");
    (count("data") / b, count("session") / b, recovery / b, span)
}

/// NACK-based multicast: exactly `N-1` first transmissions per broadcast
/// (the textbook figure), no NACK or repair without loss, and session
/// messages that depend on time, not on the number of broadcasts: at most
/// one multicast (`N-1` messages) per member per session period (100 ms)
/// from the first broadcast until the history is collected (a period or
/// two after the last). Two workloads: the one above (every member
/// broadcasts 4 times, one broadcast every 20 ms), and a burst (every
/// member 10 times, one broadcast every 1 ms), where the sessions are
/// spread over more broadcasts.
#[test]
fn nack_sends_n_minus_one_per_broadcast_plus_sessions() {
    let period = Duration::from_millis(100);
    println!("| workload | N | data / broadcast | sessions / broadcast | NACK + repair | total | eager N(N-1) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, rounds, gap) in [
        ("4 each, 20 ms apart", 4u32, ms(20)),
        ("burst: 10 each, 1 ms apart", 10, ms(1)),
    ] {
        for n in [3u32, 5, 9, 17] {
            let (data, sessions, recovery, span) = nack_per_broadcast(n, rounds, gap);
            let eager = f64::from(n * (n - 1));
            println!(
                "| {name} | {n} | {data:.1} | {sessions:.1} | {recovery:.1} | {:.1} | {eager} |",
                data + sessions + recovery
            );
            assert!((data - f64::from(n - 1)).abs() < 1e-9, "nack N={n}: {data}");
            assert_eq!(recovery, 0.0, "nack N={n}: NACKs without loss");
            // Session periods from the first broadcast to the collection.
            let periods = (span.as_secs_f64() / period.as_secs_f64()).ceil() + 3.0;
            let bound = f64::from(n * (n - 1)) * periods / f64::from(rounds * n);
            assert!(
                sessions <= bound,
                "nack N={n} {name}: {sessions} sessions per broadcast, bound {bound}"
            );
            assert!(
                data + sessions < eager,
                "nack N={n} {name}: not cheaper than eager"
            );
        }
    }
}

/// N = 65 for the relaying algorithms whose cost is N(N-1) (eager, FIFO,
/// causal) and NACK multicast: slow in a debug build (over a million
/// messages each), so run on demand:
/// `cargo test -p troupe-protocols --test broadcast_costs -- --ignored --nocapture`.
/// The total-order algorithms (N or N+1 times that) are not run at 65.
#[test]
#[ignore = "over a million simulated messages per algorithm; run on demand"]
fn messages_per_broadcast_at_65_members() {
    let n = 65u32;
    let textbook = f64::from(n * (n - 1));
    for algorithm in [
        BroadcastAlgorithm::EagerReliable,
        BroadcastAlgorithm::Fifo,
        BroadcastAlgorithm::Causal,
    ] {
        let (data, acks) = per_broadcast(algorithm, n);
        println!(
            "| {algorithm} | {n} | {data:.1} | {acks:.1} | {:.1} | {textbook} |",
            data + acks
        );
        assert!((data + acks - textbook).abs() < 1e-9, "{algorithm} N={n}");
    }
    let (data, sessions, recovery, _) = nack_per_broadcast(n, 2, ms(1));
    println!("| nack (burst) | {n} | {data:.1} | sessions {sessions:.1} | NACK + repair {recovery:.1} | N-1 = {} |", n - 1);
    assert!((data - f64::from(n - 1)).abs() < 1e-9, "nack N={n}");
    assert_eq!(recovery, 0.0, "nack N={n}: no loss, no NACK");
}

/// N = 65 for the two total orders, every member broadcasting once: about
/// 18 million simulated messages each, so run on demand in a release build:
/// `cargo test --release -p troupe-protocols --test broadcast_costs --
/// --ignored total_order --nocapture`.
#[test]
#[ignore = "about 18 million simulated messages per algorithm; run on demand, in release"]
fn total_order_messages_per_broadcast_at_65_members() {
    let n = 65u32;
    let textbook = f64::from(n * (n - 1));
    for (algorithm, expected) in [
        (BroadcastAlgorithm::Total, textbook * f64::from(n + 1)),
        (BroadcastAlgorithm::LamportTotal, textbook * f64::from(n)),
    ] {
        let started = std::time::Instant::now();
        let (data, acks) = per_broadcast_rounds(algorithm, n, 1);
        println!(
            "| {algorithm} | {n} | {data:.1} | {acks:.1} | {:.1} | {textbook} | {expected} | ({:.1} s)",
            data + acks,
            started.elapsed().as_secs_f64()
        );
        assert!((data + acks - expected).abs() < 1e-9, "{algorithm} N={n}");
    }
}
