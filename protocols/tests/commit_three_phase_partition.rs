//! The textbook weakness of three-phase commit, made concrete: it decides
//! without a crashed coordinator because the live participants decide among
//! themselves — and a partition makes two groups of "live participants".
//! The coordinator's `PreCommit` reaches one side only, then it crashes: the
//! side with the pre-committed participant commits, the other side (all
//! uncertain) aborts, both by the rules. The checker must find the AC1
//! violation; the same run without the partition decides commit everywhere.
//! See the `three_phase` module docs.

use troupe_protocols::commit::{CommitConfig, CommitCore, Decision, Phase, ThreePhase};
use troupe_protocols::testkit::commit::CommitObserver;
use troupe_protocols::testkit::{ms, recover_state, NetFaults, OracleConfig, Sim};

type Core = ThreePhase<u32>;
const PARTICIPANTS: [u32; 3] = [2, 3, 4];

/// Begin, let every participant vote yes, optionally cut `{1, 2} | {3, 4}`
/// once they are all Ready, crash the coordinator once participant 2
/// pre-committed, and run for 5 s. The checker's verdict.
fn run(partition: bool) -> (Result<(), String>, Sim<Core>) {
    let mut s: Sim<Core> = Sim::new(
        7,
        [1, 2, 3, 4],
        Box::new(|id, r| {
            ThreePhase::new(
                *id,
                vec![1, 2, 3, 4],
                CommitConfig::default(),
                recover_state::<Core>(r),
            )
        }),
        NetFaults::reliable(ms(10)),
        OracleConfig::default(),
    );
    let mut obs = CommitObserver::default();
    let result = (|| {
        s.start(&mut obs)?;
        obs.begun(1, 1, PARTICIPANTS.to_vec());
        s.command(&1, &mut obs, |c, now, o| {
            c.begin(1, PARTICIPANTS.to_vec(), now, o)
        })?;
        let phase = |s: &Sim<Core>, p: u32| s.core(&p).and_then(|c| c.status(1)).map(|st| st.phase);
        let mut cut = false;
        loop {
            s.step(&mut obs)?;
            for (node, tx) in obs.take_prepares() {
                obs.voted(node, tx, true);
                s.command(&node, &mut obs, |c, now, o| c.vote(tx, true, now, o))?;
            }
            let all_ready = PARTICIPANTS
                .iter()
                .all(|p| phase(&s, *p) == Some(Phase::Ready));
            if partition && !cut && all_ready {
                // The votes are in flight and still arrive; the PreCommit
                // to 3 and 4 will not.
                s.partition(&[vec![1, 2], vec![3, 4]], &mut obs)?;
                cut = true;
            }
            if phase(&s, 2) == Some(Phase::PreCommitted) {
                break;
            }
        }
        s.crash(&1, &mut obs)?;
        s.run_for(ms(5000), &mut obs)
    })();
    (result, s)
}

#[test]
fn a_partition_makes_three_phase_commit_violate_agreement() {
    let (result, s) = run(true);
    let e = result.expect_err("3PC under a partition must be caught deciding both ways");
    assert!(e.contains("AC1"), "{e}");
    let d2 = s.core(&2).and_then(|c| c.decision(1));
    let d3 = s.core(&3).and_then(|c| c.decision(1));
    let d4 = s.core(&4).and_then(|c| c.decision(1));
    // The side with the pre-committed participant committed, the other
    // side aborted (the run stops at the first conflicting decision).
    assert_eq!(d2, Some(Decision::Commit), "{e}");
    assert!(
        d3 == Some(Decision::Abort) || d4 == Some(Decision::Abort),
        "{e}: {d3:?} {d4:?}"
    );
}

#[test]
fn without_the_partition_the_same_crash_is_decided_without_the_coordinator() {
    let (result, s) = run(false);
    result.unwrap();
    for p in PARTICIPANTS {
        assert_eq!(
            s.core(&p).and_then(|c| c.decision(1)),
            Some(Decision::Commit),
            "participant {p}"
        );
    }
    assert!(
        !s.is_alive(&1),
        "decided while the coordinator was still down"
    );
}
