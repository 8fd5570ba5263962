//! Scripted Raft scenarios on hand-driven servers (`testkit::raft::Manual`).

use troupe_protocols::raft::kv::KvCommand;
use troupe_protocols::raft::{RaftConfig, RaftMsg, Role};
use troupe_protocols::testkit::raft::Manual;

fn config() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        max_batch: 1,
        ..RaftConfig::default()
    }
}

fn vote(msg: &RaftMsg<u32>) -> bool {
    matches!(msg, RaftMsg::RequestVote { .. } | RaftMsg::Vote { .. })
}

fn put(m: &mut Manual, id: u32, key: &str) -> (u64, u64) {
    m.input(id, |c, now, out| {
        c.propose(
            now,
            None,
            &KvCommand::Put {
                key: key.into(),
                value: "v".into(),
            },
            out,
        )
    })
    .expect("the leader accepts the proposal")
}

/// Figure 8 of the Raft paper: an entry of an older term stored on a
/// majority must not be committed by counting, or a later leader that
/// never had it overwrites it.
#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting() {
    let mut m = Manual::new(5, config());
    // (a) S1 leads term 1; its no-op (index 1) commits everywhere.
    m.timeout(1);
    m.deliver(|_, _, _| true);
    assert_eq!(m.core(1).role(), Role::Leader);
    assert_eq!(m.core(1).commit_index(), 1);
    // S1 appends index 2 (term 1) and replicates it to S2 only.
    assert_eq!(put(&mut m, 1, "a"), (2, 1));
    m.deliver(|f, t, _| (f, t) == (1, 2) || (f, t) == (2, 1));
    m.queue.clear();
    // (b) S5 is elected for term 2 by S3, S4, S5; its no-op (index 2,
    // term 2) stays on S5.
    m.timeout(5);
    m.deliver(|f, t, msg| {
        vote(msg) && ((f == 5 && (t == 3 || t == 4)) || (t == 5 && (f == 3 || f == 4)))
    });
    assert_eq!(m.core(5).role(), Role::Leader);
    assert_eq!(m.core(5).term(), 2);
    m.queue.retain(|(f, t, _)| *f != 5 || *t == 1);
    // S5's vote request deposes S1 (term 2), which refuses it.
    m.deliver(|f, t, msg| vote(msg) && (f, t) == (5, 1));
    m.queue.clear();
    // (c) S1 is elected for term 3 by S2 and S3 ...
    m.timeout(1);
    m.deliver(|f, t, msg| {
        vote(msg) && ((f == 1 && (t == 2 || t == 3)) || (t == 1 && (f == 2 || f == 3)))
    });
    assert_eq!(m.core(1).role(), Role::Leader);
    assert_eq!(m.core(1).term(), 3);
    // ... and brings index 2 (term 1) to S3: now on S1, S2, S3, a majority.
    // S2 also gets S1's no-op (index 3); S3 gets index 2 only.
    let mut s3_appends = 0;
    while let Some(i) = m.queue.iter().position(|(f, t, _)| {
        (*f == 1 && (*t == 2 || *t == 3)) || (*t == 1 && (*f == 2 || *f == 3))
    }) {
        let (from, to, msg) = m.queue.remove(i);
        if to == 3 && m.core(3).log().last_index() >= 2 {
            continue; // S3 gets nothing past index 2.
        }
        s3_appends += usize::from(to == 3);
        m.input(to, |c, now, out| {
            troupe_framework::sansio::Protocol::on_message(c, now, from, msg, out)
        });
    }
    assert!(s3_appends > 0);
    assert_eq!(m.core(3).log().term_at(2), Some(1));
    assert_eq!(m.core(3).log().last_index(), 2);
    // The rule: index 2 is of term 1, not S1's term: not committed.
    assert_eq!(
        m.core(1).commit_index(),
        1,
        "S1 committed an entry of an older term by counting replicas"
    );
    // (d) S1 crashes; S5 (last entry term 2) is elected for term 4 by S3
    // and S4, and overwrites index 2 everywhere it reaches: allowed, since
    // it was never committed.
    m.isolate(1);
    m.queue.clear();
    m.input(5, |c, now, out| {
        troupe_framework::sansio::Protocol::on_message(
            c,
            now,
            1,
            RaftMsg::RequestVote {
                term: 3,
                last_index: 3,
                last_term: 3,
                pre: false,
                transfer: false,
            },
            out,
        )
    });
    m.queue.clear();
    m.timeout(5);
    m.deliver(|f, t, _| f != 1 && t != 1);
    assert_eq!(m.core(5).role(), Role::Leader);
    assert_eq!(m.core(5).term(), 4);
    for id in [2, 3, 4, 5] {
        assert_eq!(m.core(id).log().term_at(2), Some(2), "S{id}");
    }
}

/// Logs of the given terms (index 1..) as a server's durable state.
fn disk(term: u64, terms: &[u64]) -> troupe_framework::sansio::Recovered {
    use troupe_framework::sansio::{Outputs, Recovered};
    use troupe_protocols::raft::{Entry, HardState, Payload, HARD_KEY, LOG};
    let mut out = Outputs::<u32, (), (), ()>::new();
    out.put(HARD_KEY, &HardState::<u32> { term, vote: None });
    let entries: Vec<Entry<u32>> = terms
        .iter()
        .map(|t| Entry {
            term: *t,
            payload: Payload::Noop,
        })
        .collect();
    out.append(LOG, 1, &entries);
    let mut r = Recovered::empty();
    r.apply(&out.writes).unwrap();
    r
}

/// The fast back-up (section 5.3): a follower with a long log of stale
/// terms is brought in line in one rejection per conflicting term, not one
/// per entry.
#[test]
fn a_rejection_skips_a_whole_conflicting_term() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let follower_log = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3];
    let mut m = Manual::with_disks(2, config(), |id| {
        if id == 1 {
            disk(6, &leader_log)
        } else {
            disk(3, &follower_log)
        }
    });
    m.timeout(1);
    let mut rejections = 0;
    while let Some(i) = m.queue.iter().position(|_| true) {
        let (from, to, msg) = m.queue.remove(i);
        if let RaftMsg::AppendReply { ok: false, .. } = msg {
            rejections += 1;
        }
        m.input(to, |c, now, out| {
            troupe_framework::sansio::Protocol::on_message(c, now, from, msg, out)
        });
    }
    assert_eq!(m.core(1).role(), Role::Leader);
    assert_eq!(m.core(1).term(), 7);
    // The follower's log now is the leader's (plus its no-op).
    for i in 1..=11 {
        assert_eq!(
            m.core(2).log().term_at(i),
            m.core(1).log().term_at(i),
            "index {i}"
        );
    }
    // Without the hint this takes one rejection per entry (8); with it one
    // per conflicting term of the follower (3 and 2) plus the first probe.
    assert!(rejections <= 3, "{rejections} rejections");
}

/// A leader cut off from the majority stops serving linearizable reads
/// (check-quorum), and the majority elects a new leader that serves.
#[test]
fn a_partitioned_leader_stops_serving_and_the_majority_elects() {
    use std::time::Duration;
    use troupe_protocols::raft::kv::KvStore;
    use troupe_protocols::raft::{Membership, Raft};
    use troupe_protocols::testkit::{NetFaults, OracleConfig, Sim};
    let members: Vec<u32> = (1..=5).collect();
    let m2 = members.clone();
    let mut sim: Sim<Raft<u32, KvStore>> = Sim::new(
        7,
        members.clone(),
        Box::new(move |id, r| {
            Raft::recover(*id, Membership::new(m2.clone()), RaftConfig::default(), r).unwrap()
        }),
        NetFaults::reliable(Duration::from_millis(2)),
        OracleConfig::default(),
    );
    sim.start(&mut ()).unwrap();
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    let leader = *sim
        .cores()
        .find(|(_, c)| c.role() == Role::Leader)
        .expect("a leader")
        .0;
    let term = sim.core(&leader).unwrap().term();
    let buddy = *members.iter().find(|m| **m != leader).unwrap();
    let majority: Vec<u32> = members
        .iter()
        .copied()
        .filter(|m| *m != leader && *m != buddy)
        .collect();
    sim.partition(&[vec![leader, buddy], majority.clone()], &mut ())
        .unwrap();
    // A read asked right after the cut is never confirmed.
    let mut read = None;
    sim.command(&leader, &mut (), |c, now, out| {
        read = c.read_index(now, out).ok()
    })
    .unwrap();
    let read = read.expect("the leader accepts the read");
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    let mut outcome = None;
    sim.command(&leader, &mut (), |c, _, _| outcome = c.take_read(read).0)
        .unwrap();
    assert_eq!(outcome, Some(None), "the cut-off leader failed the read");
    let old = sim.core(&leader).unwrap();
    assert_ne!(old.role(), Role::Leader, "check-quorum: it stepped down");
    let mut refused = false;
    sim.command(&leader, &mut (), |c, now, out| {
        refused = c.read_index(now, out).is_err()
    })
    .unwrap();
    assert!(refused);
    let new = majority
        .iter()
        .find(|m| sim.core(m).unwrap().role() == Role::Leader)
        .expect("the majority elected a leader");
    assert!(sim.core(new).unwrap().term() > term);
    let mut ok = None;
    sim.command(new, &mut (), |c, now, out| ok = c.read_index(now, out).ok())
        .unwrap();
    sim.run_for(Duration::from_millis(200), &mut ()).unwrap();
    let mut confirmed = None;
    let id = ok.expect("the new leader accepts reads");
    sim.command(new, &mut (), |c, _, _| confirmed = c.take_read(id).0)
        .unwrap();
    assert!(matches!(confirmed, Some(Some(_))), "{confirmed:?}");
    // Healing: the old leader follows the new term, with pre-vote its term
    // did not run ahead.
    sim.heal(&mut ()).unwrap();
    sim.run_for(Duration::from_secs(1), &mut ()).unwrap();
    let new_term = sim.core(new).unwrap().term();
    assert_eq!(
        sim.core(new).unwrap().role(),
        Role::Leader,
        "not deposed by the rejoin"
    );
    assert_eq!(sim.core(&leader).unwrap().term(), new_term);
}

/// Awaited requests (how the driver collects outcomes) settle exactly as
/// polled ones would, each once: a write applied with its reply, a write
/// the cut-off leader took and a new leader replaced as not applied, a
/// read the cut-off leader could not confirm as failed, a confirmed read
/// once its index is applied; a settlement already there when the request
/// is awaited is queued at once.
#[test]
fn awaited_requests_settle_once_as_polled_ones_would() {
    use std::collections::HashMap;
    use std::time::Duration;
    use troupe_framework::sansio::Settles;
    use troupe_protocols::raft::kv::{KvReply, KvStore};
    use troupe_protocols::raft::{Membership, Outcome, Raft, RaftSettled, RaftToken};
    use troupe_protocols::testkit::{NetFaults, OracleConfig, Sim};
    type Core = Raft<u32, KvStore>;
    let members: Vec<u32> = (1..=3).collect();
    let m2 = members.clone();
    let mut sim: Sim<Core> = Sim::new(
        11,
        members.clone(),
        Box::new(move |id, r| {
            Raft::recover(*id, Membership::new(m2.clone()), RaftConfig::default(), r).unwrap()
        }),
        NetFaults::reliable(Duration::from_millis(2)),
        OracleConfig::default(),
    );
    sim.start(&mut ()).unwrap();
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    let leader = *sim
        .cores()
        .find(|(_, c)| c.role() == Role::Leader)
        .expect("a leader")
        .0;
    let cmd = |k: &str| KvCommand::Put {
        key: k.into(),
        value: "v".into(),
    };
    // What `node` settled since the last call, each token once.
    let settled = |sim: &mut Sim<Core>, node: u32| {
        let mut got = Vec::new();
        sim.command(&node, &mut (), |c, _, _| c.take_settled(&mut got))
            .unwrap();
        let n = got.len();
        let map: HashMap<RaftToken, RaftSettled<KvReply>> = got.into_iter().collect();
        assert_eq!(map.len(), n, "a token settled twice");
        map
    };
    // An awaited write and read that succeed.
    let (mut w, mut r) = (None, None);
    sim.command(&leader, &mut (), |c, now, out| {
        let (i, t) = c.propose(now, None, &cmd("a"), out).unwrap();
        w = Some(c.await_result(i, t));
        let id = c.read_index(now, out).unwrap();
        r = Some(c.await_read(id));
    })
    .unwrap();
    let (w, r) = (w.unwrap(), r.unwrap());
    assert!(
        settled(&mut sim, leader).is_empty(),
        "nothing settles at once"
    );
    sim.run_for(Duration::from_millis(100), &mut ()).unwrap();
    let got = settled(&mut sim, leader);
    assert!(
        matches!(
            got.get(&w),
            Some(RaftSettled::Write(Outcome::Applied(Ok(
                KvReply::Done { .. }
            ))))
        ),
        "{got:?}"
    );
    assert_eq!(got.get(&r), Some(&RaftSettled::Read(true)));
    assert_eq!(got.len(), 2);
    // A polled write settles for `take_result`, never as awaited; awaiting
    // it afterwards queues its outcome at once.
    let mut polled = None;
    sim.command(&leader, &mut (), |c, now, out| {
        polled = c.propose(now, None, &cmd("b"), out).ok();
    })
    .unwrap();
    let (pi, pt) = polled.unwrap();
    sim.run_for(Duration::from_millis(100), &mut ()).unwrap();
    assert!(settled(&mut sim, leader).is_empty());
    let mut late = None;
    sim.command(&leader, &mut (), |c, _, _| {
        late = Some(c.await_result(pi, pt))
    })
    .unwrap();
    let got = settled(&mut sim, leader);
    assert!(
        matches!(
            got.get(&late.unwrap()),
            Some(RaftSettled::Write(Outcome::Applied(Ok(_))))
        ),
        "{got:?}"
    );
    // Cut the leader off: what it takes now is replaced or fails.
    let others: Vec<u32> = members.iter().copied().filter(|m| *m != leader).collect();
    sim.partition(&[vec![leader], others.clone()], &mut ())
        .unwrap();
    let (mut lost_w, mut lost_r) = (None, None);
    sim.command(&leader, &mut (), |c, now, out| {
        let (i, t) = c.propose(now, None, &cmd("c"), out).unwrap();
        lost_w = Some(c.await_result(i, t));
        let id = c.read_index(now, out).unwrap();
        lost_r = Some(c.await_read(id));
    })
    .unwrap();
    sim.run_for(Duration::from_secs(2), &mut ()).unwrap();
    let got = settled(&mut sim, leader);
    assert_eq!(
        got.get(&lost_r.unwrap()),
        Some(&RaftSettled::Read(false)),
        "check-quorum failed the read: {got:?}"
    );
    assert!(!got.contains_key(&lost_w.unwrap()), "not settled yet");
    let new = *others
        .iter()
        .find(|m| sim.core(m).unwrap().role() == Role::Leader)
        .expect("the others elected a leader");
    sim.command(&new, &mut (), |c, now, out| {
        c.propose(now, None, &cmd("d"), out).unwrap();
    })
    .unwrap();
    sim.heal(&mut ()).unwrap();
    sim.run_for(Duration::from_secs(1), &mut ()).unwrap();
    let got = settled(&mut sim, leader);
    assert_eq!(
        got.get(&lost_w.unwrap()),
        Some(&RaftSettled::Write(Outcome::NotApplied)),
        "the new leader's entry replaced it: {got:?}"
    );
    assert_eq!(got.len(), 1);
    // Nothing settles twice.
    sim.run_for(Duration::from_secs(1), &mut ()).unwrap();
    assert!(settled(&mut sim, leader).is_empty());
}
