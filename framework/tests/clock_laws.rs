//! Laws of the logical clocks, checked with proptest:
//!
//! - algebra: vector `merge` is a commutative, associative, idempotent least
//!   upper bound; `compare` is antisymmetric, agrees with a naive pointwise
//!   definition and with `PartialOrd`; Lamport clocks are monotonic and follow
//!   the receive rule;
//! - traces: random executions of N processes (local, send and receive events,
//!   messages received in random order or never), where happens-before is
//!   built from the trace alone (process order plus send->receive edges,
//!   transitively closed) and compared with what the clocks say;
//! - causal broadcast: `can_deliver` delivers every message after its causal
//!   past and never blocks forever;
//! - msgpack round trips of both clock types.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use troupe_framework::clock::{ClockOrdering, LamportClock, LamportStamp, VectorClock};
use troupe_framework::NodeId;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Small clocks over a few names, so that equal and ordered pairs are common.
fn small_clock() -> impl Strategy<Value = VectorClock> {
    prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), 0..4u64, 0..=4)
        .prop_map(|m| m.into_iter().collect())
}

/// Every node name with an entry in either clock.
fn keys(a: &VectorClock, b: &VectorClock) -> BTreeSet<String> {
    a.iter()
        .chain(b.iter())
        .map(|(k, _)| k.to_owned())
        .collect()
}

/// `compare` written straight from the definition.
fn naive_compare(a: &VectorClock, b: &VectorClock) -> ClockOrdering {
    let ks = keys(a, b);
    let le = ks.iter().all(|k| a.get(k) <= b.get(k));
    let ge = ks.iter().all(|k| a.get(k) >= b.get(k));
    match (le, ge) {
        (true, true) => ClockOrdering::Equal,
        (true, false) => ClockOrdering::Before,
        (false, true) => ClockOrdering::After,
        (false, false) => ClockOrdering::Concurrent,
    }
}

fn merged(a: &VectorClock, b: &VectorClock) -> VectorClock {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(
        a in small_clock(), b in small_clock(), c in small_clock()
    ) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    #[test]
    fn merge_is_the_pointwise_max_and_least_upper_bound(
        a in small_clock(), b in small_clock(), c in small_clock()
    ) {
        let m = merged(&a, &b);
        for k in keys(&a, &b) {
            prop_assert_eq!(m.get(&k), a.get(&k).max(b.get(&k)));
        }
        prop_assert!(a <= m && b <= m);
        if a <= c && b <= c {
            prop_assert!(m <= c, "any common upper bound is above the merge");
        }
    }

    #[test]
    fn compare_is_antisymmetric_and_matches_definition_and_partial_ord(
        a in small_clock(), b in small_clock()
    ) {
        let ab = a.compare(&b);
        prop_assert_eq!(ab, naive_compare(&a, &b));
        prop_assert_eq!(b.compare(&a), ab.reverse());
        prop_assert_eq!(ab == ClockOrdering::Equal, a == b);
        prop_assert_eq!(a.partial_cmp(&b), ab.to_partial_ordering());
        prop_assert_eq!(a < b, ab == ClockOrdering::Before);
        prop_assert_eq!(a.happened_before(&b), ab == ClockOrdering::Before);
        prop_assert_eq!(a.concurrent_with(&b), ab == ClockOrdering::Concurrent);
        prop_assert_eq!(a.concurrent_with(&b), b.concurrent_with(&a));
    }

    #[test]
    fn compare_is_transitive(a in small_clock(), b in small_clock(), c in small_clock()) {
        if a <= b && b <= c {
            prop_assert!(a <= c);
        }
        if a < b && b <= c {
            prop_assert!(a < c);
        }
    }

    #[test]
    fn increment_and_observe_move_strictly_forward(
        a in small_clock(), w in small_clock(), k in prop::sample::select(NAMES.to_vec())
    ) {
        let mut inc = a.clone();
        let v = inc.increment(k);
        prop_assert_eq!(v, a.get(k) + 1);
        prop_assert!(a < inc);
        for other in NAMES.iter().filter(|&&n| n != k) {
            prop_assert_eq!(inc.get(other), a.get(other), "only the owner's entry grows");
        }
        let mut obs = a.clone();
        obs.observe(k, &w);
        prop_assert!(a < obs);
        prop_assert!(w < obs, "a receive comes after the send it observes");
    }

    #[test]
    fn can_deliver_matches_its_definition(
        r in small_clock(), m in small_clock(), from in prop::sample::select(NAMES.to_vec())
    ) {
        let expected = m.get(from) == r.get(from) + 1
            && keys(&r, &m).iter().all(|k| k == from || m.get(k) <= r.get(k));
        prop_assert_eq!(r.can_deliver(from, &m), expected);
    }

    #[test]
    fn lamport_is_monotonic_and_follows_the_receive_rule(
        ops in prop::collection::vec(prop::option::of(0..1_000u64), 0..60)
    ) {
        let mut c = LamportClock::new(1u32);
        for op in ops {
            let before = c.now();
            let after = match op {
                None => {
                    let t = c.tick();
                    prop_assert_eq!(t, before + 1);
                    t
                }
                Some(received) => {
                    let t = c.observe(received);
                    prop_assert_eq!(t, before.max(received) + 1);
                    prop_assert!(t > received);
                    t
                }
            };
            prop_assert!(after > before);
            prop_assert_eq!(c.now(), after);
            prop_assert_eq!(c.stamp(), LamportStamp::new(after, 1u32));
        }
    }

    #[test]
    fn vector_clock_msgpack_round_trip(
        m in prop::collection::btree_map(".{0,12}", any::<u64>(), 0..8)
    ) {
        let c: VectorClock = m.into_iter().collect();
        let bytes = rmp_serde::to_vec(&c).expect("serialize");
        let back: VectorClock = rmp_serde::from_slice(&bytes).expect("deserialize");
        prop_assert_eq!(back, c);
    }

    #[test]
    fn lamport_msgpack_round_trip(
        time in any::<u64>(), name in "[a-z0-9-]{1,16}", inc in any::<u128>(), ticks in 0..20usize
    ) {
        let stamp = LamportStamp::new(time, NodeId::with_incarnation(name.clone(), inc));
        let bytes = rmp_serde::to_vec(&stamp).expect("serialize");
        let back: LamportStamp = rmp_serde::from_slice(&bytes).expect("deserialize");
        prop_assert_eq!(back, stamp);

        let mut clock = LamportClock::new(name);
        clock.observe(time / 2);
        for _ in 0..ticks {
            clock.tick();
        }
        let bytes = rmp_serde::to_vec(&clock).expect("serialize");
        let back: LamportClock<String> = rmp_serde::from_slice(&bytes).expect("deserialize");
        prop_assert_eq!(back, clock);
    }
}

// ---------------------------------------------------------------------------
// Random executions, checked against happens-before built from the trace.

/// One recorded event of an execution.
struct Event {
    process: usize,
    lamport: LamportStamp,
    vector: VectorClock,
}

/// A message in flight: its destination, the stamps it carries, and the
/// index of its send event.
struct InFlight {
    to: usize,
    lamport: u64,
    vector: VectorClock,
    send: usize,
}

/// The execution described by `steps` on `n` processes, plus `before`,
/// where `before[b][a]` says `a -> b` (computed from the trace alone).
///
/// Each step is `(process, kind, choice)`: kind 0 is a local event, 1 a send
/// to another process chosen by `choice`, 2 the receipt of one of the
/// messages in flight to the process (chosen by `choice`; a local event if
/// there is none). Messages may be received in any order, or never.
fn run(n: usize, steps: &[(usize, u8, u16)]) -> (Vec<Event>, Vec<Vec<bool>>) {
    let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let mut lamport: Vec<LamportClock> = (0..n)
        .map(|i| LamportClock::new(NodeId::with_incarnation(names[i].clone(), i as u128)))
        .collect();
    let mut vector = vec![VectorClock::new(); n];
    let mut last: Vec<Option<usize>> = vec![None; n];
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut before: Vec<Vec<bool>> = Vec::new();

    for &(p, kind, choice) in steps {
        let p = p % n;
        let me = events.len();
        // Immediate predecessors: the previous event of p, and for a receive the send.
        let mut preds: Vec<usize> = last[p].into_iter().collect();
        let inbox: Vec<usize> = (0..in_flight.len())
            .filter(|&i| in_flight[i].to == p)
            .collect();
        if kind % 3 == 2 && !inbox.is_empty() {
            let msg = in_flight.remove(inbox[choice as usize % inbox.len()]);
            lamport[p].observe(msg.lamport);
            vector[p].observe(&names[p], &msg.vector);
            preds.push(msg.send);
        } else {
            lamport[p].tick();
            vector[p].increment(&names[p]);
            if kind % 3 == 1 && n > 1 {
                let to = (p + 1 + choice as usize % (n - 1)) % n;
                in_flight.push(InFlight {
                    to,
                    lamport: lamport[p].now(),
                    vector: vector[p].clone(),
                    send: me,
                });
            }
        }
        // Transitive closure, in trace order (every edge points backwards).
        let mut row = vec![false; me + 1];
        for &q in &preds {
            row[q] = true;
            for (a, &hb) in before[q].iter().enumerate() {
                row[a] |= hb;
            }
        }
        before.push(row);
        events.push(Event {
            process: p,
            lamport: lamport[p].stamp(),
            vector: vector[p].clone(),
        });
        last[p] = Some(me);
    }
    // Square the matrix: `before[b][a]` for every pair.
    let total = events.len();
    for row in &mut before {
        row.resize(total, false);
    }
    (events, before)
}

fn execution() -> impl Strategy<Value = (usize, Vec<(usize, u8, u16)>)> {
    (1..=5usize).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0..n, 0..3u8, any::<u16>()), 0..120),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn clocks_agree_with_happens_before_of_random_traces((n, steps) in execution()) {
        let (events, before) = run(n, &steps);
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();

        // V(e)[q] is the number of events of q that happen before or equal e
        // (so V[q] grows only on q's own events).
        for (e, ev) in events.iter().enumerate() {
            for (q, name) in names.iter().enumerate() {
                let count = (0..events.len())
                    .filter(|&x| events[x].process == q && (x == e || before[e][x]))
                    .count() as u64;
                prop_assert_eq!(ev.vector.get(name), count, "V(e{})[{}]", e, name);
            }
        }

        for b in 0..events.len() {
            for a in 0..events.len() {
                if a == b {
                    continue;
                }
                let (va, vb) = (&events[a].vector, &events[b].vector);
                let expected = if before[b][a] {
                    ClockOrdering::Before
                } else if before[a][b] {
                    ClockOrdering::After
                } else {
                    ClockOrdering::Concurrent
                };
                // Vector: a -> b iff V(a) < V(b); a || b iff incomparable.
                prop_assert_eq!(va.compare(vb), expected, "events {} and {}", a, b);
                prop_assert_eq!(va.partial_cmp(vb), expected.to_partial_ordering());
                // Lamport: a -> b implies C(a) < C(b), and the (C, id) order agrees.
                let (la, lb) = (&events[a].lamport, &events[b].lamport);
                if before[b][a] {
                    prop_assert!(la.time < lb.time, "C(e{}) < C(e{})", a, b);
                    prop_assert!(la < lb);
                }
                // (C, id) is a strict total order: distinct events, distinct stamps.
                prop_assert_ne!(la, lb);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Causal broadcast driven by `can_deliver`.

/// A broadcast message: its sender, its timestamp, and (tracked without any
/// clock) the ids of the messages in its causal past.
struct Broadcast {
    from: usize,
    ts: VectorClock,
    deps: BTreeSet<usize>,
}

/// One group member of the causal broadcast.
struct Member {
    delivered: VectorClock,
    delivered_ids: BTreeSet<usize>,
    /// Messages delivered or sent here, and everything they depended on.
    causal_past: BTreeSet<usize>,
    holdback: Vec<usize>,
}

/// Deliver every held-back message that has become deliverable, checking
/// that its causal past was delivered first.
fn drain(
    q: usize,
    member: &mut Member,
    msgs: &[Broadcast],
    names: &[String],
) -> Result<(), TestCaseError> {
    while let Some(pos) = member.holdback.iter().position(|&m| {
        member
            .delivered
            .can_deliver(&names[msgs[m].from], &msgs[m].ts)
    }) {
        let m = member.holdback.remove(pos);
        prop_assert!(
            msgs[m].deps.is_subset(&member.delivered_ids),
            "p{} delivered message {} before its causal past",
            q,
            m
        );
        member.delivered.increment(&names[msgs[m].from]);
        member.delivered_ids.insert(m);
        member.causal_past.insert(m);
        member.causal_past.extend(msgs[m].deps.iter().copied());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn can_deliver_gives_causal_order_and_delivers_everything(
        (n, steps) in (2..=4usize).prop_flat_map(|n| {
            (Just(n), prop::collection::vec((0..n, any::<bool>(), any::<u16>()), 0..80))
        })
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let mut members: Vec<Member> = (0..n)
            .map(|_| Member {
                delivered: VectorClock::new(),
                delivered_ids: BTreeSet::new(),
                causal_past: BTreeSet::new(),
                holdback: Vec::new(),
            })
            .collect();
        let mut msgs: Vec<Broadcast> = Vec::new();
        // (receiver, message) pairs still on the network, received in any order.
        let mut network: Vec<(usize, usize)> = Vec::new();

        for (p, broadcast, choice) in steps {
            if broadcast {
                let m = msgs.len();
                let member = &mut members[p];
                member.delivered.increment(&names[p]);
                msgs.push(Broadcast {
                    from: p,
                    ts: member.delivered.clone(),
                    deps: member.causal_past.clone(),
                });
                member.delivered_ids.insert(m);
                member.causal_past.insert(m);
                network.extend((0..n).filter(|&q| q != p).map(|q| (q, m)));
            } else {
                let inbox: Vec<usize> = (0..network.len()).filter(|&i| network[i].0 == p).collect();
                if !inbox.is_empty() {
                    let (q, m) = network.remove(inbox[choice as usize % inbox.len()]);
                    members[q].holdback.push(m);
                    drain(q, &mut members[q], &msgs, &names)?;
                }
            }
        }
        // The network hands over everything still in flight; nothing may stay held back.
        for (q, m) in std::mem::take(&mut network) {
            members[q].holdback.push(m);
            drain(q, &mut members[q], &msgs, &names)?;
        }
        let per_sender: BTreeMap<&str, u64> = msgs.iter().fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(names[m.from].as_str()).or_default() += 1;
            acc
        });
        let everything: VectorClock = per_sender.into_iter().collect();
        for (q, member) in members.iter().enumerate() {
            prop_assert!(member.holdback.is_empty(), "p{} is stuck with {:?}", q, member.holdback);
            prop_assert_eq!(member.delivered_ids.len(), msgs.len());
            prop_assert_eq!(&member.delivered, &everything);
        }
    }
}
