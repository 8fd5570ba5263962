//! Messages per committed write of Raft in the failure-free case, counted on
//! the deterministic simulated network next to the textbook figure: without
//! batching, each entry costs one AppendEntries to each of the N-1
//! followers and one reply from each, 2(N-1) messages. Run with
//! `cargo bench -p troupe-protocols --bench raft_costs`.
//!
//! Network: reliable, one-way delay 1 ms, instant disks. Heartbeats are
//! taken out of the count: the heartbeat interval is set to an hour (and
//! the election timeouts to 10-20 hours, so that the first leader is
//! elected at a virtual time far in the past of the window and nobody
//! campaigns during it), so every message counted belongs to the writes;
//! what heartbeats add is computed beside it (2(N-1) per interval). `C`
//! closed-loop clients propose on the leader, each proposing again as soon
//! as its previous write is applied there (no think time); the window is
//! one virtual second after one of warm-up. With one client, or with
//! `max_batch = 1`, every append carries one entry and the count must be
//! exactly the textbook's; batching (entries proposed while the `max_inflight`
//! appends are out leave together in the next one) divides it by the
//! entries per append.
//!
//! The bench exits non-zero when an unbatched case differs from 2(N-1).

use std::time::Duration;

use troupe_protocols::raft::kv::{KvCommand, KvStore};
use troupe_protocols::raft::{Membership, Raft, RaftConfig, Role};
use troupe_protocols::testkit::{NetFaults, OracleConfig, Sim};

type Core = Raft<u32, KvStore>;

const D: Duration = Duration::from_millis(1);
const HEARTBEAT: Duration = Duration::from_millis(50);

/// What one case measured over its window.
struct Cost {
    writes: u64,
    appends: u64,
    replies: u64,
    other: u64,
}

fn config(max_batch: usize, max_inflight: usize) -> RaftConfig {
    RaftConfig {
        election_min: Duration::from_secs(36_000),
        election_max: Duration::from_secs(72_000),
        heartbeat: Duration::from_secs(3_600),
        max_batch,
        max_inflight,
        ..RaftConfig::default()
    }
}

fn leader(sim: &Sim<Core>) -> Option<u32> {
    sim.cores()
        .find(|(_, c)| c.role() == Role::Leader)
        .map(|(id, _)| *id)
}

/// `clients` closed-loop clients on an `n`-voter group for a window of
/// `window` after `warmup`.
fn cost(n: u32, clients: usize, cfg: RaftConfig, warmup: Duration, window: Duration) -> Cost {
    let members: Vec<u32> = (1..=n).collect();
    let m = members.clone();
    let mut sim: Sim<Core> = Sim::new(
        7,
        members,
        Box::new(move |id, r| {
            Raft::recover(*id, Membership::new(m.clone()), cfg.clone(), r).expect("recover")
        }),
        NetFaults::reliable(D),
        OracleConfig::default(),
    );
    sim.start(&mut ()).expect("start");
    // Elect a leader and commit its no-op.
    let l = loop {
        sim.step(&mut ()).expect("step");
        if let Some(l) = leader(&sim) {
            let c = sim.core(&l).expect("leader core");
            if c.commit_index() >= c.log().last_index() && c.commit_index() > 0 {
                break l;
            }
        }
    };
    let cmd = KvCommand::Put {
        key: "k".into(),
        value: "v".into(),
    };
    // Each client's outstanding write (its index), if any.
    let mut waiting: Vec<Option<u64>> = vec![None; clients];
    let start = sim.now() + warmup;
    let end = start + window;
    let mut counted_from = None;
    loop {
        let applied = sim.core(&l).expect("leader").applied_index();
        for w in waiting.iter_mut() {
            if w.is_none_or(|i| i <= applied) {
                let mut got = None;
                sim.command(&l, &mut (), |c, now, out| {
                    got = Some(
                        c.propose(now, None, &cmd, out)
                            .expect("the leader proposes"),
                    );
                })
                .expect("command");
                *w = got.map(|(i, _)| i);
            }
        }
        if counted_from.is_none() && sim.now() >= start {
            sim.reset_counts();
            counted_from = Some(sim.core(&l).expect("leader").applied_index());
        }
        if sim.now() >= end {
            break;
        }
        assert!(sim.step(&mut ()).expect("step"), "the simulation ran dry");
    }
    assert_eq!(leader(&sim), Some(l), "the leader changed");
    let writes = sim.core(&l).expect("leader").applied_index() - counted_from.unwrap_or(0);
    let sent = sim.sent_counts();
    let appends = sent.get("append").copied().unwrap_or(0);
    let replies = sent.get("append-reply").copied().unwrap_or(0);
    Cost {
        writes,
        appends,
        replies,
        other: sim.total_sent() - appends - replies,
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (warmup, window) = if quick {
        (Duration::from_millis(50), Duration::from_millis(100))
    } else {
        (Duration::from_secs(1), Duration::from_secs(1))
    };
    let cases: [(&str, usize, RaftConfig); 6] = [
        ("1 client (no batching)", 1, config(512, 8)),
        ("64 clients, max_batch 1", 64, config(1, 8)),
        ("64 clients (default)", 64, config(512, 8)),
        ("64 clients, max_inflight 1", 64, config(512, 1)),
        ("1024 clients (default)", 1024, config(512, 8)),
        ("1024 clients, max_inflight 1", 1024, config(512, 1)),
    ];
    println!(
        "Raft messages per committed write, failure-free: reliable network, one-way delay {D:?}, \
         instant disks, closed-loop clients on the leader, window {window:?} after {warmup:?}; \
         heartbeats kept out of the window (see the module docs).\n"
    );
    println!(
        "| N | case | writes | Append | AppendReply | other | msgs/write | textbook 2(N-1) | entries/append | + heartbeats at 50 ms, per write |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut wrong = Vec::new();
    for n in [3u32, 5, 7] {
        let textbook = 2.0 * f64::from(n - 1);
        for (name, clients, cfg) in &cases {
            let c = cost(n, *clients, cfg.clone(), warmup, window);
            let per_write = (c.appends + c.replies + c.other) as f64 / c.writes.max(1) as f64;
            let per_append = c.writes as f64 * f64::from(n - 1) / c.appends.max(1) as f64;
            let rate = c.writes as f64 / window.as_secs_f64();
            let hb = textbook / HEARTBEAT.as_secs_f64() / rate.max(1.0);
            println!(
                "| {n} | {name} | {} | {} | {} | {} | {per_write:.3} | {textbook:.0} | {per_append:.1} | {hb:.4} |",
                c.writes, c.appends, c.replies, c.other
            );
            let unbatched = *clients == 1 || cfg.max_batch == 1;
            if unbatched && (per_write - textbook).abs() > 1e-9 {
                wrong.push(format!("N={n} {name}: {per_write} messages per write"));
            }
            if c.writes == 0 {
                wrong.push(format!("N={n} {name}: nothing committed"));
            }
        }
    }
    println!(
        "\nHeartbeats (not in the window): one empty append to each follower and its reply per \
         interval, 2(N-1) per 50 ms = {} / {} / {} messages per second at N = 3 / 5 / 7, \
         whatever the load; the last column spreads them over the writes of the case.",
        4 * 20,
        8 * 20,
        12 * 20
    );
    if !wrong.is_empty() {
        eprintln!("figures differ from the expected ones: {wrong:?}");
        std::process::exit(1);
    }
}
