//! Lamport's scalar logical clock (Lamport, "Time, Clocks, and the Ordering
//! of Events in a Distributed System", 1978).
//!
//! Rules, for the clock `C` of one process:
//!
//! 1. before each local or send event: `C := C + 1` ([`LamportClock::tick`]);
//!    a send carries the new `C`;
//! 2. on receiving a message stamped `t`: `C := max(C, t) + 1`
//!    ([`LamportClock::observe`]); the receive event is stamped with the new `C`.
//!
//! Guarantees: `C` strictly increases at every event of a process, and
//! `a -> b` implies `C(a) < C(b)`. Pairing the time with the node id
//! ([`LamportStamp`], ordered by `(time, node)`) makes stamps of distinct
//! events distinct, so they form a strict total order consistent with
//! happens-before. The converse does not hold: `C(a) < C(b)` does not imply
//! `a -> b` (use a [`VectorClock`](super::VectorClock) to detect that).
//! Times saturate at `u64::MAX` (see the [module docs](super)).

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A Lamport time paired with the node whose event it stamps.
///
/// Ordered by `time` first, then by `node` (the field order is the order of
/// comparison). Within one process times strictly increase, so two distinct
/// events never share a stamp and stamps are a strict total order that
/// extends happens-before. Ricart-Agrawala and Lamport's mutual exclusion
/// grant the request with the smallest stamp.
///
/// On the wire (msgpack) it is the two-element array `[time, node]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LamportStamp<N = NodeId> {
    /// The Lamport time of the event.
    pub time: u64,
    /// The node on which the event happened; breaks ties between equal times.
    pub node: N,
}

impl<N> LamportStamp<N> {
    /// A stamp for an event at `time` on `node`.
    pub fn new(time: u64, node: N) -> Self {
        Self { time, node }
    }
}

/// The Lamport clock of one process (node), identified by `N`.
///
/// `N` is whatever the protocol uses to name processes: a [`NodeId`] (the
/// default), a node name, or an index in a simulation. It only needs `Ord`
/// for [`LamportStamp`] comparisons.
///
/// ```
/// use troupe_framework::clock::LamportClock;
///
/// let mut a = LamportClock::new("a");
/// let mut b = LamportClock::new("b");
/// let sent = a.tick(); // a sends a message stamped 1
/// b.tick();
/// b.tick(); // b is at 2
/// assert_eq!(b.observe(sent), 3); // receive: max(2, 1) + 1
/// assert!(a.stamp() < b.stamp());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LamportClock<N = NodeId> {
    node: N,
    time: u64,
}

impl<N> LamportClock<N> {
    /// A clock for `node`, at time 0 (no event has happened yet).
    pub fn new(node: N) -> Self {
        Self { node, time: 0 }
    }

    /// The node this clock belongs to.
    pub fn node(&self) -> &N {
        &self.node
    }

    /// The time of the latest event of this node (0 before the first event).
    pub fn now(&self) -> u64 {
        self.time
    }

    /// Record a local or send event: advance by one and return the event's
    /// time. A message sent at this event carries the returned time.
    pub fn tick(&mut self) -> u64 {
        self.time = self.time.saturating_add(1);
        self.time
    }

    /// Record the receipt of a message stamped `received`: set the clock to
    /// `max(now, received) + 1` and return that, the receive event's time.
    /// The result is greater than both the previous time and `received`
    /// (unless it saturated at `u64::MAX`).
    pub fn observe(&mut self, received: u64) -> u64 {
        self.time = self.time.max(received).saturating_add(1);
        self.time
    }
}

impl<N: Clone> LamportClock<N> {
    /// The stamp `(now, node)` of the latest event, for messages and request
    /// queues that need the total order. Call it after [`tick`](Self::tick).
    pub fn stamp(&self) -> LamportStamp<N> {
        LamportStamp::new(self.time, self.node.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_advances_by_one_from_zero() {
        let mut c = LamportClock::new(7u32);
        assert_eq!(c.now(), 0);
        assert_eq!(c.tick(), 1);
        assert_eq!(c.tick(), 2);
        assert_eq!(c.now(), 2);
        assert_eq!(c.stamp(), LamportStamp::new(2, 7));
    }

    #[test]
    fn observe_takes_max_plus_one() {
        let mut c = LamportClock::new("a");
        c.tick();
        c.tick();
        c.tick();
        assert_eq!(c.observe(10), 11, "received ahead: jump past it");
        assert_eq!(c.observe(4), 12, "received behind: still advance");
        assert_eq!(c.observe(12), 13, "received equal: advance past it");
    }

    #[test]
    fn stamps_order_by_time_then_node() {
        let a = |t, n| LamportStamp::new(t, n);
        assert!(a(1, "z") < a(2, "a"), "time decides first");
        assert!(a(2, "a") < a(2, "b"), "node breaks ties");
        assert_eq!(a(2, "a").cmp(&a(2, "a")), std::cmp::Ordering::Equal);
        let x = LamportStamp::new(5, NodeId::with_incarnation("a", 2));
        let y = LamportStamp::new(5, NodeId::with_incarnation("b", 1));
        assert!(x < y);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut c = LamportClock::new(0u8);
        assert_eq!(c.observe(u64::MAX - 1), u64::MAX);
        assert_eq!(c.observe(u64::MAX), u64::MAX);
        assert_eq!(c.tick(), u64::MAX);
    }
}
