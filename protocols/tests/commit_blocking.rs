//! The textbook weakness of two-phase commit, made concrete: once every
//! participant voted yes, a participant cannot decide without the
//! coordinator's decision, so while the coordinator is down (or cut off)
//! they all block — safely (AC1–AC3 checked at every step) — and decide as
//! soon as it is back, from its log.

use std::time::Duration;

use troupe_protocols::commit::{CommitConfig, CommitCore, Decision, Phase, TwoPhase};
use troupe_protocols::testkit::commit::CommitObserver;
use troupe_protocols::testkit::{ms, recover_state, NetFaults, OracleConfig, Sim};

type Core = TwoPhase<u32>;
const PARTICIPANTS: [u32; 3] = [2, 3, 4];

fn sim() -> Sim<Core> {
    Sim::new(
        1,
        [1, 2, 3, 4],
        Box::new(|id, r| {
            let m = vec![1, 2, 3, 4];
            TwoPhase::new(*id, m, CommitConfig::default(), recover_state::<Core>(r))
        }),
        NetFaults::reliable(ms(10)),
        OracleConfig::default(),
    )
}

/// Step until `done`, voting yes on every prepare.
fn run_until(s: &mut Sim<Core>, obs: &mut CommitObserver, done: impl Fn(&Sim<Core>) -> bool) {
    for _ in 0..100_000 {
        if done(s) {
            return;
        }
        s.step(obs).unwrap();
        for (node, tx) in obs.take_prepares() {
            obs.voted(node, tx, true);
            s.command(&node, obs, |c, now, o| c.vote(tx, true, now, o))
                .unwrap();
        }
    }
    panic!("condition never reached");
}

fn phases(s: &Sim<Core>) -> Vec<Option<Phase>> {
    PARTICIPANTS
        .iter()
        .map(|p| s.core(p).and_then(|c| c.status(1)).map(|st| st.phase))
        .collect()
}

fn all_ready(s: &Sim<Core>) -> bool {
    phases(s).iter().all(|p| *p == Some(Phase::Ready))
}

/// Participants stay `Ready` for `d`, asking each other in vain.
fn blocked_for(s: &mut Sim<Core>, obs: &mut CommitObserver, d: Duration) {
    let asked = s.sent_counts().get("inquire").copied().unwrap_or(0);
    s.run_for(d, obs).unwrap();
    assert!(
        all_ready(s),
        "a participant decided without the coordinator: {:?}",
        phases(s)
    );
    let asked_now = s.sent_counts().get("inquire").copied().unwrap_or(0);
    assert!(
        asked_now > asked + 100,
        "cooperative termination asked {} times",
        asked_now - asked
    );
}

#[test]
fn two_phase_blocks_while_the_coordinator_is_down_and_presumes_abort_after() {
    let (mut s, mut obs) = (sim(), CommitObserver::default());
    s.start(&mut obs).unwrap();
    obs.begun(1, 1, PARTICIPANTS.to_vec());
    s.command(&1, &mut obs, |c, now, o| {
        c.begin(1, PARTICIPANTS.to_vec(), now, o)
    })
    .unwrap();
    // Every participant is Ready; the coordinator crashes before the last
    // vote reaches it (it never decided, nothing of the transaction is in
    // its log: presumed abort).
    run_until(&mut s, &mut obs, all_ready);
    s.crash(&1, &mut obs).unwrap();
    blocked_for(&mut s, &mut obs, Duration::from_secs(10));
    s.restart(&1, &mut obs).unwrap();
    s.run_for(Duration::from_secs(1), &mut obs).unwrap();
    let decided: Vec<Option<Decision>> = PARTICIPANTS
        .iter()
        .map(|p| s.core(p).unwrap().decision(1))
        .collect();
    assert_eq!(decided, vec![Some(Decision::Abort); 3]);
}

#[test]
fn two_phase_blocks_while_the_coordinator_is_cut_off_and_commits_after() {
    let (mut s, mut obs) = (sim(), CommitObserver::default());
    s.start(&mut obs).unwrap();
    obs.begun(1, 1, PARTICIPANTS.to_vec());
    s.command(&1, &mut obs, |c, now, o| {
        c.begin(1, PARTICIPANTS.to_vec(), now, o)
    })
    .unwrap();
    // The votes are on their way when the coordinator is cut off: it
    // decides commit (durably) but the decision cannot leave; then it
    // crashes too.
    run_until(&mut s, &mut obs, all_ready);
    s.partition(&[vec![1]], &mut obs).unwrap();
    run_until(&mut s, &mut obs, |s| {
        s.core(&1).unwrap().decision(1).is_some()
    });
    s.crash(&1, &mut obs).unwrap();
    blocked_for(&mut s, &mut obs, Duration::from_secs(10));
    s.heal(&mut obs).unwrap();
    s.restart(&1, &mut obs).unwrap();
    s.run_for(Duration::from_secs(1), &mut obs).unwrap();
    let decided: Vec<Option<Decision>> = PARTICIPANTS
        .iter()
        .map(|p| s.core(p).unwrap().decision(1))
        .collect();
    assert_eq!(decided, vec![Some(Decision::Commit); 3]);
    assert_eq!(obs.decision(1), Some(Decision::Commit));
}
