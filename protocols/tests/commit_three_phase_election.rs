//! Three-phase commit's termination coordinator is the leader of the
//! embedded bully election: the coordinator crashes while the participants
//! are `Ready` / `PreCommitted`, and the node the election chose — here
//! member 5, the highest, which is not a participant of the transaction —
//! runs the termination round and decides without the coordinator. A
//! leader that crashes mid-round is replaced by the next one, which runs a
//! higher round. AC1–AC3 are checked at every step (`CommitObserver`).

use std::collections::BTreeMap;

use troupe_protocols::commit::{CommitConfig, CommitCore, Decision, Phase, ThreePhase};
use troupe_protocols::testkit::commit::CommitObserver;
use troupe_protocols::testkit::{ms, recover_state, NetFaults, OracleConfig, Sim};

type Core = ThreePhase<u32>;
const MEMBERS: [u32; 5] = [1, 2, 3, 4, 5];
const PARTICIPANTS: [u32; 3] = [2, 3, 4];

fn sim() -> Sim<Core> {
    Sim::new(
        11,
        MEMBERS,
        Box::new(|id, r| {
            ThreePhase::new(
                *id,
                MEMBERS.to_vec(),
                CommitConfig::default(),
                recover_state::<Core>(r),
            )
        }),
        NetFaults::reliable(ms(10)),
        OracleConfig::default(),
    )
}

fn phase(s: &Sim<Core>, p: u32) -> Option<Phase> {
    s.core(&p).and_then(|c| c.status(1)).map(|st| st.phase)
}

/// Member 1 begins transaction 1 over 2, 3 and 4, which vote yes; step
/// until `crash_when` holds, then crash the coordinator.
fn begin_and_crash_coordinator(
    s: &mut Sim<Core>,
    obs: &mut CommitObserver,
    crash_when: impl Fn(&Sim<Core>) -> bool,
) -> Result<(), String> {
    s.start(obs)?;
    obs.begun(1, 1, PARTICIPANTS.to_vec());
    s.command(&1, obs, |c, now, o| {
        c.begin(1, PARTICIPANTS.to_vec(), now, o)
    })?;
    while !crash_when(s) {
        if !s.step(obs)? {
            return Err("idle before the crash point".into());
        }
        for (node, tx) in obs.take_prepares() {
            obs.voted(node, tx, true);
            s.command(&node, obs, |c, now, o| c.vote(tx, true, now, o))?;
        }
    }
    s.crash(&1, obs)
}

/// Step for `d`; per member, the termination rounds it ran for tx 1 (in
/// the order it started them). Stops early once every participant decided.
fn run_watching_rounds(
    s: &mut Sim<Core>,
    obs: &mut CommitObserver,
    d: std::time::Duration,
    mut after_step: impl FnMut(&mut Sim<Core>, &mut CommitObserver) -> Result<(), String>,
) -> Result<BTreeMap<u32, Vec<u64>>, String> {
    let end = s.now() + d;
    let mut runners: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    while s.now() < end {
        if !s.step(obs)? {
            break;
        }
        for (id, c) in s.cores() {
            if let Some(r) = c.termination_rounds().get(&1) {
                let seen = runners.entry(*id).or_default();
                if seen.last() != Some(r) {
                    seen.push(*r);
                }
            }
        }
        after_step(s, obs)?;
        if PARTICIPANTS
            .iter()
            .all(|p| matches!(phase(s, *p), Some(Phase::Decided(_))))
        {
            break;
        }
    }
    Ok(runners)
}

fn decisions(s: &Sim<Core>) -> Vec<Option<Decision>> {
    PARTICIPANTS
        .iter()
        .map(|p| s.core(p).and_then(|c| c.decision(1)))
        .collect()
}

fn leaders(s: &Sim<Core>) -> Vec<Option<u32>> {
    PARTICIPANTS
        .iter()
        .map(|p| s.core(p).and_then(|c| c.termination_leader().1.copied()))
        .collect()
}

#[test]
fn the_elected_leader_runs_the_termination_round_and_commits_without_the_coordinator() {
    let mut s = sim();
    let mut obs = CommitObserver::default();
    begin_and_crash_coordinator(&mut s, &mut obs, |s| {
        phase(s, 2) == Some(Phase::PreCommitted)
    })
    .unwrap();
    assert_eq!(phase(&s, 3), Some(Phase::Ready), "3 is still uncertain");
    let runners = run_watching_rounds(&mut s, &mut obs, ms(5000), |_, _| Ok(())).unwrap();
    assert_eq!(decisions(&s), vec![Some(Decision::Commit); 3]);
    assert!(!s.is_alive(&1), "decided while the coordinator was down");
    // The election chose 5 (the highest live member; not a participant),
    // and only 5 ran a round, in its stripe (rank 4 of 5).
    assert_eq!(leaders(&s), vec![Some(5); 3]);
    assert_eq!(
        runners.keys().copied().collect::<Vec<_>>(),
        vec![5],
        "{runners:?}"
    );
    assert!(runners[&5].iter().all(|r| r % 5 == 4), "{runners:?}");
    assert_eq!(s.sent_counts().get("round-abort"), None);
}

#[test]
fn a_non_participant_leaders_abort_is_decided_by_an_uncertain_participant() {
    let mut s = sim();
    let mut obs = CommitObserver::default();
    // Every participant Ready, no PreCommit sent yet: crash the coordinator.
    begin_and_crash_coordinator(&mut s, &mut obs, |s| {
        PARTICIPANTS
            .iter()
            .all(|p| phase(s, *p) == Some(Phase::Ready))
    })
    .unwrap();
    let runners = run_watching_rounds(&mut s, &mut obs, ms(5000), |_, _| Ok(())).unwrap();
    assert_eq!(decisions(&s), vec![Some(Decision::Abort); 3]);
    assert!(!s.is_alive(&1));
    assert_eq!(leaders(&s), vec![Some(5); 3]);
    assert_eq!(
        runners.keys().copied().collect::<Vec<_>>(),
        vec![5],
        "{runners:?}"
    );
    // 5 did not decide itself: it asked the uncertain reporters.
    assert!(s.sent_counts().get("round-abort").is_some_and(|n| *n >= 1));
    assert_eq!(
        s.core(&5).and_then(|c| c.status(1)),
        None,
        "5 keeps no state of tx 1"
    );
}

#[test]
fn a_leader_that_crashes_mid_round_is_replaced_by_one_running_a_higher_round() {
    let mut s = sim();
    let mut obs = CommitObserver::default();
    begin_and_crash_coordinator(&mut s, &mut obs, |s| {
        phase(s, 2) == Some(Phase::PreCommitted)
    })
    .unwrap();
    // Crash 5 as soon as it has started its round (its `StateReq`s are on
    // their way, some participants join it).
    let mut crashed = false;
    let runners = run_watching_rounds(&mut s, &mut obs, ms(10_000), |s, obs| {
        let running = s
            .core(&5)
            .is_some_and(|c| c.termination_rounds().contains_key(&1));
        if !crashed && running {
            crashed = true;
            s.crash(&5, obs)?;
        }
        Ok(())
    })
    .unwrap();
    assert!(crashed);
    assert_eq!(decisions(&s), vec![Some(Decision::Commit); 3]);
    // 4, the highest live member once 5 is down, took over with a round
    // above 5's.
    assert_eq!(leaders(&s), vec![Some(4); 3]);
    assert_eq!(
        runners.keys().copied().collect::<Vec<_>>(),
        vec![4, 5],
        "{runners:?}"
    );
    let (r5, r4) = (runners[&5][0], runners[&4][0]);
    assert!(r4 > r5, "{runners:?}");
    assert_eq!((r5 % 5, r4 % 5), (4, 3), "{runners:?}");
}
