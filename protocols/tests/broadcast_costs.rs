//! Messages per broadcast on a fault-free network (one-way delay 5 ms), for
//! N = 3, 5, 9, 17, against the textbook figure for eager reliable
//! broadcast (the origin sends to N-1 members, each of them relays to the
//! others: N(N-1), "O(N^2)"). Here the copy a member would send back to the
//! member it got the message from is an `Ack` instead, so the total is the
//! same N(N-1); FIFO and causal add no message. Total order (fixed
//! sequencer) adds one order message, itself N(N-1), per broadcast of the
//! N-1 members that are not the sequencer: N(N-1)(2N-1)/N here, where every
//! member broadcasts as often. Printed as the table in
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
    println!("| algorithm | N | data / broadcast | acks / broadcast | total | textbook N(N-1) |");
    println!("|---|---|---|---|---|---|");
    for algorithm in BroadcastAlgorithm::ALL {
        for n in [3u32, 5, 9, 17] {
            let (data, acks) = per_broadcast(algorithm, n);
            let textbook = f64::from(n * (n - 1));
            println!(
                "| {algorithm} | {n} | {data:.1} | {acks:.1} | {:.1} | {textbook} |",
                data + acks
            );
            let expected = match algorithm {
                BroadcastAlgorithm::Total => textbook * f64::from(2 * n - 1) / f64::from(n),
                _ => textbook,
            };
            assert!((data + acks - expected).abs() < 1e-9, "{algorithm} N={n}");
        }
    }
}
