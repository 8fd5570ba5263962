//! Unit tests of the SWIM core: Lifeguard's suspicion timeout and
//! local health, refutation, the piggyback bound and retransmit limit,
//! the member table and the broadcast queue against simple models,
//! corrections of stale news, the last-chance ping, and bounded gossip.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::membership::{FailureDetector, MemberStatus};
use troupe_framework::sansio::{Protocol, TimerOp};

use super::broadcast::{priority, BroadcastQueue};
use super::members::{Member, MemberDetail, MemberTable, State};
use super::probe::Suspicion;
use super::{Swim, SwimMessage, SwimParams, SwimTimer, Update};
use crate::fd::{FdMessage, FdOutputs, FdTimer, SimId};

fn id(n: u32) -> SimId {
    SimId::new(n)
}

fn swim(n: u32, peers: u32) -> (Swim<SimId>, FdOutputs<SimId>) {
    let mut s = Swim::new(id(n), SwimParams::default(), vec![], 1);
    let mut out = FdOutputs::new();
    for p in 0..peers {
        if p != n {
            s.add_member(Duration::ZERO, id(p), &mut out);
            // Heard from (most tests are about members known to be up).
            s.hear(Duration::ZERO, &id(p), &mut out);
        }
    }
    out.events.clear();
    (s, out)
}

/// (member, status) of each event in `out`.
/// Member 0 with `params`, no peers yet, and an empty output buffer.
fn alone(params: SwimParams) -> (Swim<SimId>, FdOutputs<SimId>) {
    (Swim::new(id(0), params, vec![], 1), FdOutputs::new())
}

/// `s` receives SWIM message `msg` from `from` at `t`.
fn hear(
    s: &mut Swim<SimId>,
    t: Duration,
    from: SimId,
    msg: SwimMessage<SimId>,
    out: &mut FdOutputs<SimId>,
) {
    s.on_message(t, from, FdMessage::Swim(msg), out);
}

/// An ack of probe `seq` carrying no update.
fn ack(seq: u64) -> FdMessage<SimId> {
    FdMessage::Swim(SwimMessage::Ack {
        seq,
        updates: vec![],
    })
}

/// `member` suspected at incarnation `inc` by `from`.
fn suspect(member: u32, inc: u64, from: u32) -> Update<SimId> {
    Update::Suspect {
        member: id(member),
        inc,
        from: id(from),
    }
}

fn reports(out: &FdOutputs<SimId>) -> Vec<(u32, MemberStatus)> {
    out.events
        .iter()
        .map(|e| (e.member.node, e.status))
        .collect()
}

/// An added member is `Joining` until heard from; a message from it (or
/// an ack relayed for a probe of it, or news of it alive) makes it `Up`.
#[test]
fn an_added_member_is_joining_until_heard_from() {
    let mut s = Swim::new(id(0), SwimParams::default(), vec![], 1);
    let mut out = FdOutputs::new();
    for p in 1..=3 {
        s.add_member(Duration::ZERO, id(p), &mut out);
    }
    s.on_start(Duration::ZERO, &mut out);
    use MemberStatus::*;
    assert_eq!(
        reports(&out),
        vec![(1, Joining), (2, Joining), (3, Joining)]
    );
    assert!(s.view().iter().all(|(_, st)| *st == Joining));
    out.events.clear();
    let t = Duration::from_millis(10);
    let ping = SwimMessage::Ping {
        seq: 1,
        updates: vec![],
    };
    s.on_message(t, id(1), FdMessage::Swim(ping), &mut out);
    s.apply(
        t,
        Update::Alive {
            member: id(2),
            inc: 1,
        },
        &mut out,
    );
    // Already known at incarnation 0: not news, not heard.
    s.apply(
        t,
        Update::Alive {
            member: id(3),
            inc: 0,
        },
        &mut out,
    );
    assert_eq!(reports(&out), vec![(1, Up), (2, Up)]);
    assert_eq!(s.view()[2], (id(3), Joining));
}

/// An added member that never answers is probed, suspected and declared
/// dead like any other, and reported `Joining -> Down` (no suspicion of a
/// member never up); heard while suspected, it is reported `Suspect`.
#[test]
fn an_added_member_never_heard_from_goes_joining_to_down() {
    let mut s = Swim::new(id(0), SwimParams::default(), vec![], 1);
    let mut out = FdOutputs::new();
    s.add_member(Duration::ZERO, id(1), &mut out);
    s.add_member(Duration::ZERO, id(2), &mut out);
    out.events.clear();
    let t = Duration::from_secs(1);
    for m in [1, 2] {
        let suspect = Update::Suspect {
            member: id(m),
            inc: 0,
            from: id(3),
        };
        s.apply(t, suspect, &mut out);
    }
    assert!(out.events.is_empty(), "{:?}", out.events);
    assert_eq!(s.view()[0], (id(1), MemberStatus::Joining));
    let gossip = SwimMessage::Gossip { updates: vec![] };
    s.on_message(t, id(2), FdMessage::Swim(gossip), &mut out);
    let dead = Update::Dead {
        member: id(1),
        inc: 0,
        from: id(3),
    };
    s.apply(t, dead, &mut out);
    use MemberStatus::*;
    assert_eq!(reports(&out), vec![(2, Suspect), (1, Down)]);
}

/// Seeds known by name only are placeholders: `Joining` at start, `Down`
/// at the first-contact deadline (6 s for three nodes with the defaults),
/// and replaced without a `Down` by a life of the same node once heard of.
#[test]
fn seeds_are_joining_then_down_at_the_first_contact_deadline() {
    let seeds = vec![id(1), id(2)];
    let mut s = Swim::new(id(0), SwimParams::default(), seeds, 1);
    let mut out = FdOutputs::new();
    s.on_start(Duration::ZERO, &mut out);
    use MemberStatus::*;
    assert_eq!(reports(&out), vec![(1, Joining), (2, Joining)]);
    assert_eq!(s.first_contact_deadline(), Duration::from_secs(6));
    assert!(out.timers.iter().any(|op| matches!(
        op,
        TimerOp::Set { after, timer }
            if *timer == FdTimer::Swim(SwimTimer::FirstContact) && *after == Duration::from_secs(6)
    )));
    out.events.clear();
    // Seed 1's real life answers the join.
    let real = SimId {
        node: 1,
        incarnation: 4,
    };
    let reply = SwimMessage::JoinReply {
        members: vec![Update::Alive {
            member: real,
            inc: 0,
        }],
    };
    hear(&mut s, Duration::from_secs(1), real, reply, &mut out);
    assert_eq!(reports(&out), vec![(1, Up)]);
    out.events.clear();
    let first_contact = FdTimer::Swim(SwimTimer::FirstContact);
    s.on_timer(Duration::from_secs(6), first_contact, &mut out);
    assert_eq!(reports(&out), vec![(2, Down)]);
    assert_eq!(s.view(), vec![(real, Up), (id(2), Down)]);
    out.events.clear();
    // Seed 2 starts late: its join replaces the placeholder, now `Up`.
    let late = SimId {
        node: 2,
        incarnation: 9,
    };
    let join = SwimMessage::Join { inc: 0 };
    hear(&mut s, Duration::from_secs(30), late, join, &mut out);
    assert_eq!(reports(&out), vec![(2, Up)]);
    assert_eq!(s.view(), vec![(real, Up), (late, Up)]);
}

#[test]
fn suspicion_timeout_shrinks_with_confirmations() {
    let mut s = Suspicion {
        start: Duration::ZERO,
        min: Duration::from_secs(4),
        max: Duration::from_secs(24),
        k: 2,
        confirmers: BTreeSet::from([id(1)]),
        verified: false,
    };
    assert_eq!(s.timeout(), Duration::from_secs(24));
    s.confirmers.insert(id(2));
    // 24 - ln2/ln3 * 20 = 11.381...
    assert_eq!(s.timeout(), Duration::from_millis(11381));
    s.confirmers.insert(id(3));
    assert_eq!(s.timeout(), Duration::from_secs(4));
    s.confirmers.insert(id(4));
    assert_eq!(s.timeout(), Duration::from_secs(4));
    s.k = 0;
    assert_eq!(s.timeout(), Duration::from_secs(4));
}

/// Deviation (f): a probe acked only after the indirect phase began (a
/// relayed ack, or the answer to the second direct ping) leaves the
/// local-health score unchanged; a direct ack in time lowers it.
#[test]
fn only_a_direct_ack_in_time_lowers_local_health() {
    let (mut s, mut out) = swim(0, 5);
    let t = Duration::from_secs(1);
    // Two refutations raise the score to 2.
    for inc in 0..2 {
        s.on_message(
            t,
            id(1),
            FdMessage::Swim(SwimMessage::Gossip {
                updates: vec![Update::Suspect {
                    member: id(0),
                    inc,
                    from: id(1),
                }],
            }),
            &mut out,
        );
    }
    assert_eq!(s.local_health(), 2);
    out.sends.clear();
    s.on_timer(t, FdTimer::Swim(SwimTimer::Probe), &mut out);
    let (target, seq) = match &out.sends[..] {
        [(to, FdMessage::Swim(SwimMessage::Ping { seq, .. }))] => (*to, *seq),
        other => panic!("expected one ping: {other:?}"),
    };
    // No direct ack in time: indirect probes go out.
    s.on_timer(
        t + Duration::from_millis(1500),
        FdTimer::Swim(SwimTimer::ProbeTimeout { seq }),
        &mut out,
    );
    assert!(out
        .sends
        .iter()
        .any(|(_, m)| matches!(m, FdMessage::Swim(SwimMessage::PingReq { .. }))));
    // A helper relays the target's ack.
    let helper = out
        .sends
        .iter()
        .find_map(|(to, m)| {
            matches!(m, FdMessage::Swim(SwimMessage::PingReq { .. })).then_some(*to)
        })
        .expect("a helper");
    assert_ne!(helper, target);
    s.on_message(t + Duration::from_millis(1600), helper, ack(seq), &mut out);
    assert_eq!(s.local_health(), 2);
    // The next probe is acked directly, in time.
    let t2 = t + Duration::from_secs(3);
    out.sends.clear();
    s.on_timer(t2, FdTimer::Swim(SwimTimer::Probe), &mut out);
    let (target, seq) = match &out.sends[..] {
        [(to, FdMessage::Swim(SwimMessage::Ping { seq, .. }))] => (*to, *seq),
        other => panic!("expected one ping: {other:?}"),
    };
    s.on_message(t2 + Duration::from_millis(5), target, ack(seq), &mut out);
    assert_eq!(s.local_health(), 1);
}

#[test]
fn refutes_suspicion_of_itself() {
    let (mut s, mut out) = swim(0, 5);
    s.on_message(
        Duration::from_secs(1),
        id(1),
        FdMessage::Swim(SwimMessage::Ping {
            seq: 1,
            updates: vec![suspect(0, 0, 1)],
        }),
        &mut out,
    );
    assert_eq!(s.incarnation(), 1);
    assert_eq!(s.local_health(), 1);
    let (_, FdMessage::Swim(SwimMessage::Ack { updates, .. })) = &out.sends[0] else {
        panic!("expected an ack: {:?}", out.sends)
    };
    assert!(updates.contains(&Update::Alive {
        member: id(0),
        inc: 1
    }));
}

#[test]
fn retransmit_limit_and_piggyback_bound() {
    let (mut s, _) = swim(0, 100);
    assert_eq!(s.cluster_size(), 100);
    assert_eq!(s.retransmit_limit(), 4 * 3);
    for n in 200..240 {
        s.enqueue(Update::Alive {
            member: id(n),
            inc: 0,
        });
    }
    let p = s.piggyback(&id(1));
    assert_eq!(p.len(), 16);
    // The newest among the never-sent ones.
    let mut got: Vec<u32> = p.iter().map(|u| u.member().node).collect();
    got.sort_unstable();
    assert_eq!(got, (224..240).collect::<Vec<u32>>());
    // Next message: the 24 never-sent ones come before re-sends.
    let p2 = s.piggyback(&id(1));
    assert!(p2.iter().all(|u| u.member().node < 224));
}

#[test]
fn member_table_finds_every_member_and_keeps_admission_order() {
    let mut t: MemberTable<SimId> = MemberTable::new();
    let detail = || MemberDetail {
        suspicion: None,
        since: Duration::ZERO,
    };
    let ids: Vec<SimId> = (0..300).map(|n| id(n * 7 + 3)).collect();
    for (i, m) in ids.iter().enumerate() {
        let member = Member {
            inc: i as u64,
            state: State::Alive,
            heard: true,
        };
        t.insert(*m, member, detail());
    }
    assert!(t.index.len() >= 2 * t.len());
    for (i, m) in ids.iter().enumerate() {
        assert_eq!(t.get(m).map(|e| e.inc), Some(i as u64));
    }
    assert!(t.get(&id(1)).is_none());
    // Remove every third member: the others keep their order and entry.
    for m in ids.iter().step_by(3) {
        assert!(t.remove(m).is_some());
        assert!(t.remove(m).is_none());
    }
    let kept: Vec<SimId> = ids.iter().skip(1).step_by(3).copied().collect();
    let order: Vec<SimId> = t.entries.iter().map(|(k, _)| *k).collect();
    let want: Vec<SimId> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(order, want);
    for m in &kept {
        let i = ids.iter().position(|x| x == m).map(|i| i as u64);
        assert_eq!(t.get(m).map(|e| e.inc), i);
    }
    for m in ids.iter().step_by(3) {
        assert!(!t.contains_key(m));
    }
    assert_eq!(t.details.len(), t.entries.len());
}

/// The bucketed queue against a direct model of memberlist's order
/// (class, transmissions, newest first), with replacements, removals,
/// drops at the limit and compactions on the way.
#[test]
fn broadcast_queue_matches_a_sorted_model() {
    const FRESH: u32 = 3;
    let mut q: BroadcastQueue<SimId> = BroadcastQueue::new(FRESH);
    // Model: (class, transmits, push order, update).
    let mut model: Vec<(u8, u32, u64, Update<SimId>)> = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut order = 0u64;
    let mut compactions = 0;
    for step in 0..4000 {
        let member = id(rng.gen_range(0..40));
        match rng.gen_range(0..10) {
            0..=4 => {
                let inc = step;
                let u = match rng.gen_range(0..3) {
                    0 => Update::Alive { member, inc },
                    1 => Update::Dead {
                        member,
                        inc,
                        from: id(99),
                    },
                    _ => Update::Suspect {
                        member,
                        inc,
                        from: id(99),
                    },
                };
                let before = q.slots.len();
                q.push(u.clone());
                if q.slots.len() <= before {
                    compactions += 1;
                }
                model.retain(|e| *e.3.member() != member);
                order += 1;
                model.push((priority(&u), 0, order, u));
            }
            5 => {
                q.remove_member(&member);
                model.retain(|e| *e.3.member() != member);
            }
            _ => {
                let room = rng.gen_range(1..8);
                let limit = rng.gen_range(2..6);
                let got = q.take(room, limit);
                model.sort_by_key(|e| (e.0, e.1, std::cmp::Reverse(e.2)));
                let mut want = Vec::new();
                let mut keep = Vec::new();
                for mut e in std::mem::take(&mut model) {
                    if want.len() == room {
                        keep.push(e);
                    } else if e.1 < limit {
                        want.push(e.3.clone());
                        e.1 += 1;
                        if e.1 < limit {
                            keep.push(e);
                        }
                    }
                }
                model = keep;
                assert_eq!(got, want, "step {step}");
            }
        }
        assert_eq!(q.len(), model.len(), "step {step}");
        let fresh = model.iter().filter(|e| e.0 == 0 || e.1 < FRESH).count();
        assert_eq!(q.fresh, fresh, "fresh updates, step {step}");
        assert_eq!(q.has_fresh(), fresh > 0, "step {step}");
    }
    assert!(compactions > 10, "compactions: {compactions}");
}

#[test]
fn stale_news_is_corrected_in_the_ack() {
    let (mut s, mut out) = swim(0, 5);
    let t = Duration::from_secs(1);
    s.apply(
        t,
        Update::Alive {
            member: id(2),
            inc: 3,
        },
        &mut out,
    );
    out.sends.clear();
    s.on_message(
        t,
        id(1),
        FdMessage::Swim(SwimMessage::Ping {
            seq: 9,
            updates: vec![suspect(2, 1, 1)],
        }),
        &mut out,
    );
    let (to, FdMessage::Swim(SwimMessage::Ack { seq: 9, updates })) = &out.sends[0] else {
        panic!("expected an ack: {:?}", out.sends)
    };
    assert_eq!(*to, id(1));
    assert_eq!(
        updates[0],
        Update::Alive {
            member: id(2),
            inc: 3
        }
    );
    assert_eq!(s.view()[1], (id(2), MemberStatus::Up));
}

#[test]
fn suspicion_is_verified_by_a_last_ping_before_the_deadline() {
    let (mut s, mut out) = swim(0, 3);
    let t = Duration::from_secs(1);
    s.apply(t, suspect(2, 0, 1), &mut out);
    // N = 3: no confirmations expected, timeout = min = 4 s.
    let Some(TimerOp::Set { after, timer }) = out.timers.last().cloned() else {
        panic!("a timer was set")
    };
    assert_eq!(after, Duration::from_millis(3500));
    out.sends.clear();
    s.on_timer(t + after, timer, &mut out);
    assert!(matches!(
        &out.sends[..],
        [(to, FdMessage::Swim(SwimMessage::Ping { .. }))] if *to == id(2)
    ));
    let Some(TimerOp::Set { after, timer }) = out.timers.last().cloned() else {
        panic!("a timer was set")
    };
    assert_eq!(after, Duration::from_millis(500));
    s.on_timer(t + Duration::from_secs(4), timer, &mut out);
    assert_eq!(s.view()[1], (id(2), MemberStatus::Down));
}

#[test]
fn gossip_round_sends_pending_updates_to_distinct_members_or_nothing() {
    let (mut s, mut out) = swim(0, 10);
    let t = Duration::from_secs(1);
    // Nothing pending: no gossip message, but the next round is armed.
    s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
    assert!(out.sends.is_empty(), "{:?}", out.sends);
    assert_eq!(
        out.timers,
        vec![TimerOp::Set {
            after: Duration::from_millis(200),
            timer: FdTimer::Swim(SwimTimer::Gossip)
        }]
    );
    let news = Update::Alive {
        member: id(42),
        inc: 7,
    };
    s.enqueue(news.clone());
    out.sends.clear();
    s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
    let mut to: Vec<SimId> = out.sends.iter().map(|(to, _)| *to).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), 3, "{:?}", out.sends);
    for (_, m) in &out.sends {
        let FdMessage::Swim(SwimMessage::Gossip { updates }) = m else {
            panic!("expected gossip: {m:?}")
        };
        assert_eq!(updates, &vec![news.clone()]);
    }
}

/// Gossip-only messages carry a death (or suspicion) only for its first
/// `gossip_transmits` sends; its other sends (up to the retransmit
/// limit) ride on probe traffic only. A refutation (alive) is gossiped
/// for all its sends.
#[test]
fn gossip_stops_after_gossip_transmits_and_piggyback_finishes_the_job() {
    let params = SwimParams {
        gossip_transmits: 4,
        ..SwimParams::default()
    };
    let (mut s, mut out) = alone(params);
    for p in 1..10 {
        s.add_member(Duration::ZERO, id(p), &mut out);
    }
    // N = 10: each update is sent 4 * ceil(log10(11)) = 8 times.
    assert_eq!(s.retransmit_limit(), 8);
    let news = Update::Dead {
        member: id(42),
        inc: 7,
        from: id(3),
    };
    s.enqueue(news.clone());
    let t = Duration::from_secs(1);
    let mut gossip_counts = Vec::new();
    for _ in 0..4 {
        out.sends.clear();
        s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
        for (_, m) in &out.sends {
            assert!(
                matches!(m, FdMessage::Swim(SwimMessage::Gossip { updates }) if *updates == vec![news.clone()]),
                "{m:?}"
            );
        }
        gossip_counts.push(out.sends.len());
    }
    // 3 messages, then the 4th send, then nothing: 4 gossip sends.
    assert_eq!(gossip_counts, vec![3, 1, 0, 0]);
    assert_eq!(s.pending_updates(), 1);
    // The 4 remaining sends ride on pings (probe periods).
    let mut piggybacked = 0;
    for period in 0..6u64 {
        out.sends.clear();
        s.on_timer(
            t + Duration::from_secs(period),
            FdTimer::Swim(SwimTimer::Probe),
            &mut out,
        );
        let pings: Vec<(SimId, u64, usize)> = out
            .sends
            .iter()
            .filter_map(|(to, m)| match m {
                FdMessage::Swim(SwimMessage::Ping { seq, updates }) => {
                    Some((*to, *seq, updates.iter().filter(|u| **u == news).count()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(pings.len(), 1, "{:?}", out.sends);
        for (to, seq, n) in pings {
            piggybacked += n;
            // The target answers: no suspicion, nothing else queued.
            let ack = SwimMessage::Ack {
                seq,
                updates: vec![],
            };
            s.on_message(t, to, FdMessage::Swim(ack), &mut out);
        }
    }
    assert_eq!(piggybacked, 4);
    assert_eq!(s.pending_updates(), 0);
    // A refutation goes out in gossip messages for all its 8 sends.
    s.enqueue(Update::Alive {
        member: id(43),
        inc: 1,
    });
    let mut gossip_counts = Vec::new();
    for _ in 0..4 {
        out.sends.clear();
        s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
        gossip_counts.push(out.sends.len());
    }
    assert_eq!(gossip_counts, vec![3, 3, 2, 0]);
    assert_eq!(s.pending_updates(), 0);
}

#[test]
fn no_gossip_timer_when_gossip_nodes_is_zero() {
    let params = SwimParams {
        gossip_nodes: 0,
        ..SwimParams::default()
    };
    let (mut s, mut out) = alone(params);
    s.on_start(Duration::ZERO, &mut out);
    assert!(!out.timers.iter().any(
        |op| matches!(op, TimerOp::Set { timer, .. } if *timer == FdTimer::Swim(SwimTimer::Gossip))
    ));
    let mut s = Swim::new(id(0), SwimParams::default(), vec![], 1);
    s.on_start(Duration::ZERO, &mut out);
    assert!(out.timers.iter().any(
        |op| matches!(op, TimerOp::Set { timer, .. } if *timer == FdTimer::Swim(SwimTimer::Gossip))
    ));
}

#[test]
fn alive_with_higher_incarnation_clears_suspicion() {
    let (mut s, mut out) = swim(0, 5);
    let t = Duration::from_secs(1);
    s.apply(t, suspect(2, 0, 1), &mut out);
    s.apply(
        t,
        Update::Alive {
            member: id(2),
            inc: 0,
        },
        &mut out,
    );
    s.apply(
        t,
        Update::Alive {
            member: id(2),
            inc: 1,
        },
        &mut out,
    );
    let st: Vec<_> = out.events.iter().map(|e| e.status).collect();
    assert_eq!(st, vec![MemberStatus::Suspect, MemberStatus::Up]);
}
