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
