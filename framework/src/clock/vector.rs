//! Vector clocks (Fidge 1988, Mattern 1988): one counter per node, compared
//! pointwise, so that `a -> b` iff `V(a) < V(b)`.
//!
//! Rules, for the vector `V` of node `i`:
//!
//! 1. before each local or send event: `V[i] += 1`
//!    ([`VectorClock::increment`]); a send carries the new `V`;
//! 2. on receiving a message stamped `W`: `V := max(V, W)` pointwise, then
//!    `V[i] += 1` ([`VectorClock::observe`]).
//!
//! Guarantees: `V(e)[q]` is the number of events of node `q` that happen
//! before or equal `e`; hence `a -> b` iff `V(a) < V(b)` (`<=` everywhere,
//! `<` somewhere), and `a || b` iff the vectors are incomparable. `V[i]`
//! only grows on node `i`'s own events. Entries are keyed by node name in a
//! `BTreeMap`, so iteration and serialization are deterministic; a missing
//! entry means 0 and zero entries are never stored, so two clocks are `==`
//! exactly when they agree on every node. Counters saturate at `u64::MAX`
//! (see the [module docs](super)).
//!
//! The same vector, counting *broadcasts* instead of events, is the
//! delivery condition of causal broadcast ([`VectorClock::can_deliver`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How two vector clocks (and so the events they stamp) relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockOrdering {
    /// `self < other`: the event of `self` happened before the event of `other`.
    Before,
    /// `self > other`: the event of `other` happened before the event of `self`.
    After,
    /// Incomparable: the events are concurrent (neither saw the other).
    Concurrent,
    /// Identical vectors: the same event (or no event at all, for two new clocks).
    Equal,
}

impl ClockOrdering {
    /// The ordering seen from the other side: `a.compare(b).reverse() == b.compare(a)`.
    pub fn reverse(self) -> Self {
        match self {
            Self::Before => Self::After,
            Self::After => Self::Before,
            other => other,
        }
    }

    /// The same relation as a [`PartialOrd`] result (`None` for `Concurrent`).
    pub fn to_partial_ordering(self) -> Option<Ordering> {
        match self {
            Self::Before => Some(Ordering::Less),
            Self::After => Some(Ordering::Greater),
            Self::Equal => Some(Ordering::Equal),
            Self::Concurrent => None,
        }
    }
}

/// A vector clock keyed by node name.
///
/// ```
/// use troupe_framework::clock::{ClockOrdering, VectorClock};
///
/// let mut a = VectorClock::new();
/// let mut b = VectorClock::new();
/// a.increment("a"); // a sends m, stamped {a: 1}
/// let m = a.clone();
/// b.increment("b"); // an event on b concurrent with a's send
/// assert_eq!(m.compare(&b), ClockOrdering::Concurrent);
/// b.observe("b", &m); // b receives m: {a: 1, b: 2}
/// assert!(m.happened_before(&b));
/// assert!(m < b);
/// ```
///
/// On the wire it is a msgpack map from node name to counter, holding only
/// the non-zero entries (`{"a": 1, "b": 2}` is 7 bytes). Deserializing drops
/// zero entries, so the "no zero entries" invariant holds for clocks that
/// came from the network too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VectorClock {
    /// Invariant: every stored counter is greater than zero.
    entries: BTreeMap<String, u64>,
}

impl VectorClock {
    /// The zero clock (every entry 0): before any event.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `node` (0 if it has none).
    pub fn get(&self, node: &str) -> u64 {
        self.entries.get(node).copied().unwrap_or(0)
    }

    /// The non-zero entries, in node-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// How many nodes have a non-zero entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for the zero clock.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record a local or send event of `node` (which must be the owner of
    /// this clock): add one to its entry and return the new value.
    pub fn increment(&mut self, node: &str) -> u64 {
        match self.entries.get_mut(node) {
            Some(v) => {
                *v = v.saturating_add(1);
                *v
            }
            None => {
                self.entries.insert(node.to_owned(), 1);
                1
            }
        }
    }

    /// Pointwise maximum with `other` (the least upper bound of the two).
    /// Commutative, associative and idempotent; does not count as an event.
    pub fn merge(&mut self, other: &VectorClock) {
        for (node, &theirs) in &other.entries {
            match self.entries.get_mut(node.as_str()) {
                Some(ours) => *ours = (*ours).max(theirs),
                None => {
                    self.entries.insert(node.clone(), theirs);
                }
            }
        }
    }

    /// Record the receipt, on `node` (the owner of this clock), of a message
    /// stamped `received`: merge, then increment `node`'s entry. Returns the
    /// new value of that entry.
    pub fn observe(&mut self, node: &str, received: &VectorClock) -> u64 {
        self.merge(received);
        self.increment(node)
    }

    /// Compare two clocks pointwise, in one pass over both (`O(n + m)`).
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        // `less`: some entry of self is below other's; `greater`: some above.
        // Missing entries are 0 and stored ones are > 0, so a key present on
        // one side only makes that side greater at that key.
        let (mut less, mut greater) = (false, false);
        let mut ours = self.entries.iter().peekable();
        let mut theirs = other.entries.iter().peekable();
        loop {
            match (ours.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    greater = true;
                    break;
                }
                (None, Some(_)) => {
                    less = true;
                    break;
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    Ordering::Less => {
                        greater = true;
                        ours.next();
                    }
                    Ordering::Greater => {
                        less = true;
                        theirs.next();
                    }
                    Ordering::Equal => {
                        match va.cmp(vb) {
                            Ordering::Less => less = true,
                            Ordering::Greater => greater = true,
                            Ordering::Equal => {}
                        }
                        ours.next();
                        theirs.next();
                    }
                },
            }
            if less && greater {
                return ClockOrdering::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (true, true) => ClockOrdering::Concurrent,
        }
    }

    /// True if `self < other`: the event stamped `self` happened before the
    /// one stamped `other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self.compare(other) == ClockOrdering::Before
    }

    /// True if the clocks are incomparable: their events are concurrent.
    /// (Equal clocks are not concurrent; they stamp the same event.)
    pub fn concurrent_with(&self, other: &VectorClock) -> bool {
        self.compare(other) == ClockOrdering::Concurrent
    }

    /// The delivery test of causal broadcast (Birman, Schiper and Stephenson
    /// 1991): may a message broadcast by `from` and stamped `msg_ts` be
    /// delivered now?
    ///
    /// In causal broadcast the vector counts *broadcasts*, not events:
    ///
    /// - `self` is the receiver's delivered vector: `self[k]` is how many of
    ///   `k`'s broadcasts it has delivered (its own included);
    /// - a sender stamps a broadcast with its delivered vector after counting
    ///   the broadcast itself (`increment(own name)`), so `msg_ts[from]` is the
    ///   message's sequence number among `from`'s broadcasts and `msg_ts[k]`
    ///   (`k != from`) is how many of `k`'s broadcasts `from` had delivered
    ///   before sending it.
    ///
    /// The message is deliverable iff
    ///
    /// 1. `msg_ts[from] == self[from] + 1`: it is the next message from
    ///    `from` (none of `from`'s earlier broadcasts is missing), and
    /// 2. `msg_ts[k] <= self[k]` for every `k != from`: everything `from` had
    ///    delivered before broadcasting it has been delivered here too.
    ///
    /// After delivering, the receiver does `self.increment(from)` (which here
    /// equals `self.merge(msg_ts)`). A message that fails the test is held
    /// back and retried after each delivery; one with
    /// `msg_ts[from] <= self[from]` is a duplicate and can be dropped. Delivering
    /// only deliverable messages delivers every message after all messages
    /// that causally precede it, and a receiver that eventually gets every
    /// message delivers them all (nothing waits forever for a message that
    /// exists nowhere).
    pub fn can_deliver(&self, from: &str, msg_ts: &VectorClock) -> bool {
        let next_from_sender = match self.get(from).checked_add(1) {
            Some(next) => msg_ts.get(from) == next,
            None => false,
        };
        next_from_sender
            && msg_ts
                .entries
                .iter()
                .all(|(k, &v)| k == from || v <= self.get(k))
    }
}

impl PartialOrd for VectorClock {
    /// The causal partial order: `Some(Less)` iff [`VectorClock::happened_before`],
    /// `None` iff [`VectorClock::concurrent_with`].
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.compare(other).to_partial_ordering()
    }
}

impl<K: Into<String>> FromIterator<(K, u64)> for VectorClock {
    /// Build a clock from `(node, counter)` pairs; zero counters are dropped
    /// and a node listed twice keeps its larger counter.
    fn from_iter<I: IntoIterator<Item = (K, u64)>>(iter: I) -> Self {
        let mut entries = BTreeMap::new();
        for (node, count) in iter {
            if count > 0 {
                let e: &mut u64 = entries.entry(node.into()).or_default();
                *e = (*e).max(count);
            }
        }
        Self { entries }
    }
}

impl Serialize for VectorClock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for VectorClock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut entries = BTreeMap::<String, u64>::deserialize(deserializer)?;
        entries.retain(|_, v| *v > 0);
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(entries: &[(&str, u64)]) -> VectorClock {
        entries.iter().map(|&(k, v)| (k, v)).collect()
    }

    #[test]
    fn missing_entries_are_zero_and_zeros_are_not_stored() {
        let c = vc(&[("a", 2), ("b", 0)]);
        assert_eq!(c.get("a"), 2);
        assert_eq!(c.get("b"), 0);
        assert_eq!(c.get("zz"), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c, vc(&[("a", 2)]));
        assert!(VectorClock::new().is_empty());
    }

    #[test]
    fn increment_merge_observe() {
        let mut a = VectorClock::new();
        assert_eq!(a.increment("a"), 1);
        assert_eq!(a.increment("a"), 2);
        let mut b = vc(&[("b", 3), ("a", 1)]);
        b.merge(&a);
        assert_eq!(b, vc(&[("a", 2), ("b", 3)]));
        let mut c = vc(&[("c", 1)]);
        assert_eq!(c.observe("c", &b), 2);
        assert_eq!(c, vc(&[("a", 2), ("b", 3), ("c", 2)]));
    }

    #[test]
    fn compare_covers_all_four_cases() {
        let base = vc(&[("a", 1), ("b", 2)]);
        assert_eq!(base.compare(&base.clone()), ClockOrdering::Equal);
        assert_eq!(
            base.compare(&vc(&[("a", 1), ("b", 3)])),
            ClockOrdering::Before
        );
        assert_eq!(
            base.compare(&vc(&[("a", 1), ("b", 2), ("c", 1)])),
            ClockOrdering::Before,
            "a key only on the other side"
        );
        assert_eq!(base.compare(&vc(&[("b", 2)])), ClockOrdering::After);
        assert_eq!(
            base.compare(&vc(&[("a", 2), ("b", 1)])),
            ClockOrdering::Concurrent
        );
        assert_eq!(
            base.compare(&vc(&[("b", 2), ("c", 1)])),
            ClockOrdering::Concurrent,
            "disjoint extra keys on both sides"
        );
        assert_eq!(VectorClock::new().compare(&base), ClockOrdering::Before);
        assert!(base.concurrent_with(&vc(&[("c", 1)])));
        assert!(!base.concurrent_with(&base));
        assert_eq!(base.partial_cmp(&vc(&[("c", 1)])), None);
        assert!(vc(&[("a", 1)]) < base);
    }

    #[test]
    fn can_deliver_follows_the_causal_broadcast_rule() {
        // Receiver r has delivered 2 of a's broadcasts and 1 of b's.
        let r = vc(&[("a", 2), ("b", 1)]);
        assert!(
            r.can_deliver("a", &vc(&[("a", 3), ("b", 1)])),
            "next from a"
        );
        assert!(r.can_deliver("a", &vc(&[("a", 3)])), "a saw less of b");
        assert!(!r.can_deliver("a", &vc(&[("a", 4)])), "a's 3rd is missing");
        assert!(!r.can_deliver("a", &vc(&[("a", 2)])), "duplicate");
        assert!(
            !r.can_deliver("a", &vc(&[("a", 3), ("b", 2)])),
            "a had delivered b's 2nd, not delivered here yet"
        );
        assert!(
            !r.can_deliver("a", &vc(&[("a", 3), ("c", 1)])),
            "depends on c's 1st"
        );
        assert!(
            r.can_deliver("c", &vc(&[("c", 1), ("a", 1)])),
            "first from c"
        );
        assert!(!r.can_deliver("c", &vc(&[("a", 1)])), "c's entry missing");
    }

    #[test]
    fn wire_form_is_a_plain_map_of_nonzero_entries() {
        let c = vc(&[("a", 1), ("b", 2)]);
        let bytes = rmp_serde::to_vec(&c).expect("serialize");
        // fixmap(2), fixstr "a", 1, fixstr "b", 2
        assert_eq!(bytes, [0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x02]);
        let with_zero: BTreeMap<String, u64> = [("a".into(), 1), ("b".into(), 2), ("z".into(), 0)]
            .into_iter()
            .collect();
        let bytes = rmp_serde::to_vec(&with_zero).expect("serialize");
        let back: VectorClock = rmp_serde::from_slice(&bytes).expect("deserialize");
        assert_eq!(back, c, "zero entries are dropped on the way in");
        assert_eq!(back.len(), 2);
    }
}
