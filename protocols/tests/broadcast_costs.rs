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
//! separately (they depend on time, not on the number of broadcasts).
//! Printed as the table in
//! BENCHMARKS.md ("Broadcast costs"); the counts are asserted.

use std::time::Duration;

use troupe_protocols::broadcast::{AnyBroadcast, BroadcastAlgorithm, BroadcastCore};
use troupe_protocols::testkit::{ms, NetFaults, OracleConfig, Sim};

/// Messages sent per broadcast, by kind, for `algorithm` in a group of `n`.
fn per_broadcast(algorithm: BroadcastAlgorithm, n: u32) -> (f64, f64) {
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
    let rounds = 4u32;
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
    for algorithm in BroadcastAlgorithm::ALL {
        for n in [3u32, 5, 9, 17] {
            let (data, acks) = per_broadcast(algorithm, n);
            let textbook = f64::from(n * (n - 1));
            let expected = match algorithm {
                BroadcastAlgorithm::Total => textbook * f64::from(n + 1),
                BroadcastAlgorithm::LamportTotal => textbook * f64::from(n),
                // First transmissions only; its sessions are counted in
                // `nack_sends_n_minus_one_per_broadcast_plus_sessions`.
                BroadcastAlgorithm::Nack => f64::from(n - 1),
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
