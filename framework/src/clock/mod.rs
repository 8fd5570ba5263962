//! Logical clocks: [`LamportClock`] and [`VectorClock`].
//!
//! In a distributed system there is no shared clock, but there is a causal
//! order. Event `a` *happens before* `b` (`a -> b`, Lamport 1978) when
//!
//! - `a` and `b` are on the same process and `a` comes first, or
//! - `a` sends a message and `b` receives that message, or
//! - `a -> c` and `c -> b` for some event `c` (transitivity).
//!
//! Two distinct events with neither `a -> b` nor `b -> a` are *concurrent*
//! (`a || b`): no message chain connects them, so no process could have
//! seen one before the other happened.
//!
//! # What the clocks guarantee
//!
//! | | Lamport `C` | Vector `V` |
//! |---|---|---|
//! | `a -> b` implies | `C(a) < C(b)` | `V(a) < V(b)` |
//! | the converse | **no**: `C(a) < C(b)` says nothing | **yes**: `V(a) < V(b)` implies `a -> b` |
//! | detects concurrency | no | `a \|\| b` iff `V(a)` and `V(b)` are incomparable |
//! | total order | `(C, node id)` ([`LamportStamp`]) | no (a partial order) |
//! | size | one `u64` | one `u64` per node that has had events |
//!
//! - A **Lamport clock** is one counter per process: `tick` on every local or
//!   send event, and on receive `observe`: `max(local, received) + 1`. Its
//!   stamps, tie-broken by node id ([`LamportStamp`]), give a strict total
//!   order that extends happens-before: the order every process agrees on in
//!   Lamport's mutual exclusion and Ricart-Agrawala, and the delivery order
//!   of timestamp-based total-order multicast.
//! - A **vector clock** (Fidge, Mattern 1988) keeps a counter per node;
//!   entry `V(e)[q]` is the number of events of node `q` that happen before
//!   or equal `e`. Comparing two vectors tells exactly whether the events are
//!   causally ordered or concurrent, which is what causal multicast
//!   ([`VectorClock::can_deliver`]), conflict detection in replicated data and
//!   causal-consistency checkers need.
//!
//! # What they do not guarantee
//!
//! - Neither is related to real time. A later `C` or a greater `V` does not
//!   mean "later on the wall clock", and concurrent events may have happened
//!   hours apart. Do not use them for leases or timeouts.
//! - Lamport's total order is *one* linear extension of happens-before,
//!   chosen arbitrarily among concurrent events; it is fair to no one (low
//!   node ids win ties) and `C(a) < C(b)` does not mean `a` influenced `b`.
//! - They only see causality carried by messages that carry the stamp. Any
//!   side channel (a shared database, a phone call) creates dependencies the
//!   clocks do not know about.
//! - A vector clock keyed by node *name* treats a restarted node as the same
//!   process. If a node loses its clock in a crash and restarts from zero it
//!   reuses counter values and breaks the guarantees; persist the clock, or
//!   key the vector by an incarnation-unique id.
//! - Counters are `u64` and **saturate** at `u64::MAX` instead of wrapping
//!   (counting one event per nanosecond takes 584 years to get there). A clock
//!   can only reach it by observing a corrupt or hostile stamp; from then on
//!   it stops advancing and the strict inequalities above no longer hold.
//!   Protocols that cannot trust their peers must validate stamps before
//!   observing them.
//! - Clocks are not synchronised by themselves: they are correct only if
//!   every send carries the sender's stamp and every receive observes it.

mod lamport;
mod vector;

pub use lamport::{LamportClock, LamportStamp};
pub use vector::{ClockOrdering, VectorClock};
