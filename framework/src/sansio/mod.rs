//! The sans-IO shape every Troupe protocol follows.
//!
//! A protocol (a failure detector, a lock, an election, a replicated log...)
//! is written as a plain state machine that never touches a socket, a clock,
//! a disk or an actor. It is *fed* inputs — a message from a peer, a timer
//! that fired, a membership change — each together with the current time,
//! and it answers by pushing *outputs* into an [`Outputs`] buffer:
//!
//! - **messages** to send;
//! - **timers** to set or cancel, by key ([`Outputs::set_timer`] replaces a
//!   pending timer equal to the new one, [`Outputs::cancel_timer`] removes
//!   it), so a core never needs round counters to ignore stale timers;
//! - **durable writes** ([`Write`]: put a key, append records to a named log,
//!   truncate a log's tail or head), which whoever drives the core makes
//!   durable *before* any message or event of the same input — or of any
//!   later input — leaves (see [`durable`]);
//! - **events** for the local user.
//!
//! Whoever drives it (the generic protocol driver actor in production, a
//! discrete-event simulator in tests and benchmarks) carries those outputs
//! out. A core that restarts is rebuilt from what was made durable, and only
//! from that ([`Recovered`]).
//!
//! Guarantees this shape gives: a protocol core is deterministic (same inputs
//! and times give the same outputs), so a seeded simulation replays exactly;
//! the same core runs unchanged on the simulated network and on QUIC; and
//! the durability contract (writes synced before dependent messages leave)
//! is enforced by the drivers, not by each algorithm.
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the driver (the
//! node's start, or the start of a simulation); a core only compares and adds
//! times, it never reads a clock.

pub mod durable;
pub mod timers;

pub use durable::{
    bounds_after, check_writes, DurableError, LogBounds, Recovered, Snapshot, SnapshotCore, Write,
    STATE_KEY,
};
pub use timers::{TimerOp, TimerTable};

use std::fmt::Debug;
use std::time::Duration;

use serde::Serialize;

/// What a protocol core asks its driver to do, collected during one input.
#[derive(Debug)]
pub struct Outputs<Id, Msg, Timer, Event> {
    /// Messages to send: `(destination, message)`, in the order they were produced.
    pub sends: Vec<(Id, Msg)>,
    /// Timer operations, in the order they were produced (see [`TimerOp`]).
    pub timers: Vec<TimerOp<Timer>>,
    /// Notifications for the local user (a lock granted, a leader elected,
    /// a member declared down...).
    pub events: Vec<Event>,
    /// Durable writes, in order. They are made durable before any of this
    /// input's sends and events are carried out.
    pub writes: Vec<Write>,
    /// Set when the core asked for a durable write that cannot be made (a
    /// value that does not encode): the driver stops the protocol instead of
    /// sending anything, exactly as for a failed disk write.
    pub write_error: Option<DurableError>,
}

thread_local! {
    /// Where durable values are encoded before they are copied out at
    /// their exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `value` as msgpack (named fields), in a buffer of exactly its size:
/// encoded into a reused per-thread buffer, then copied once, rather than
/// grown from empty by doubling (a realloc chain per durable write).
fn encode_exact<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            rmp_serde::encode::write_named(&mut *buf, value)?;
            let bytes = buf.to_vec();
            if buf.capacity() > 1 << 20 {
                // A one-off large value: do not keep its buffer.
                *buf = Vec::new();
            }
            Ok(bytes)
        }
        // Encoding re-entered (a value's Serialize emitting a write): no
        // scratch for the inner one.
        Err(_) => rmp_serde::to_vec_named(value),
    })
}

impl<Id, Msg, Timer, Event> Default for Outputs<Id, Msg, Timer, Event> {
    fn default() -> Self {
        Self {
            sends: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
            writes: Vec::new(),
            write_error: None,
        }
    }
}

impl<Id, Msg, Timer, Event> Outputs<Id, Msg, Timer, Event> {
    /// An empty output buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Queue `msg` for `to`.
    pub fn send(&mut self, to: Id, msg: Msg) {
        self.sends.push((to, msg));
    }
    /// Ask for `timer` to fire after `after`. The timer is its own key: a
    /// pending timer equal to `timer` is replaced (it will not fire).
    pub fn set_timer(&mut self, after: Duration, timer: Timer) {
        self.timers.push(TimerOp::Set { after, timer });
    }
    /// Remove the pending timer equal to `timer`, if any.
    pub fn cancel_timer(&mut self, timer: Timer) {
        self.timers.push(TimerOp::Cancel(timer));
    }
    /// Report `event` to the local user.
    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
    /// Durably store `value` (msgpack) under `key` in this protocol's
    /// namespace. A value that does not encode is recorded as a failed write
    /// ([`Outputs::write_error`]), never as an empty one.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        match encode_exact(value) {
            Ok(bytes) => self.put_bytes(key, bytes),
            Err(e) => self.fail_write(DurableError::Encode {
                key: key.to_string(),
                message: e.to_string(),
            }),
        }
    }
    /// Durably store raw bytes under `key`.
    pub fn put_bytes(&mut self, key: &str, value: Vec<u8>) {
        self.writes.push(Write::Put {
            key: key.to_string(),
            value,
        });
    }
    /// Durably remove `key`.
    pub fn delete(&mut self, key: &str) {
        self.writes.push(Write::Delete {
            key: key.to_string(),
        });
    }
    /// Durably append `records` (msgpack each) to log `log`, the first at
    /// index `first`, which must follow the log's last index (any index
    /// when the log is empty). A record that does not encode fails the write.
    pub fn append<T: Serialize>(&mut self, log: &str, first: u64, records: &[T]) {
        let mut encoded = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match encode_exact(r) {
                Ok(b) => encoded.push(b),
                Err(e) => {
                    return self.fail_write(DurableError::Encode {
                        key: format!("{log}[{}]", first + i as u64),
                        message: e.to_string(),
                    })
                }
            }
        }
        self.append_bytes(log, first, encoded);
    }
    /// Durably append raw records to `log`, the first at index `first`.
    /// Appends that continue the previous write's append to the same log
    /// join it (one write, the same records in the same order).
    pub fn append_bytes(&mut self, log: &str, first: u64, mut records: Vec<Vec<u8>>) {
        if records.is_empty() {
            return;
        }
        match self.continued_append(log, first) {
            Some(r) => r.append(&mut records),
            None => self.writes.push(Write::Append {
                log: log.to_string(),
                first,
                records,
            }),
        }
    }
    /// Durably append one raw record to `log` at index `index` (joining
    /// the previous write when it is an append to `log` ending just before).
    pub fn append_record(&mut self, log: &str, index: u64, record: Vec<u8>) {
        match self.continued_append(log, index) {
            Some(r) => r.push(record),
            None => self.writes.push(Write::Append {
                log: log.to_string(),
                first: index,
                records: vec![record],
            }),
        }
    }
    /// The records of the last write when it is an append to `log` that
    /// `next` continues.
    fn continued_append(&mut self, log: &str, next: u64) -> Option<&mut Vec<Vec<u8>>> {
        match self.writes.last_mut() {
            Some(Write::Append {
                log: l,
                first,
                records,
            }) if l == log && *first + records.len() as u64 == next => Some(records),
            _ => None,
        }
    }
    /// Durably remove the records of `log` at `index` and after (a log's
    /// conflicting tail).
    pub fn truncate_from(&mut self, log: &str, index: u64) {
        self.writes.push(Write::TruncateFrom {
            log: log.to_string(),
            index,
        });
    }
    /// Durably remove the records of `log` before `index` (compaction).
    pub fn truncate_before(&mut self, log: &str, index: u64) {
        self.writes.push(Write::TruncateBefore {
            log: log.to_string(),
            index,
        });
    }
    fn fail_write(&mut self, e: DurableError) {
        if self.write_error.is_none() {
            self.write_error = Some(e);
        }
    }
    /// True when nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.timers.is_empty()
            && self.events.is_empty()
            && self.writes.is_empty()
            && self.write_error.is_none()
    }
    /// Take everything out, leaving the buffer empty for the next input.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// Run `f` against a fresh buffer of an inner core's message and timer
    /// types, then move what it produced into `self`, wrapping messages and
    /// timers: how a composite core (an `Any*` run-time choice, a layered
    /// protocol) relays its inner core's outputs.
    pub fn relay<M, T>(
        &mut self,
        wrap_msg: impl Fn(M) -> Msg,
        wrap_timer: impl Fn(T) -> Timer,
        f: impl FnOnce(&mut Outputs<Id, M, T, Event>),
    ) {
        let mut inner = Outputs::new();
        f(&mut inner);
        self.sends
            .extend(inner.sends.into_iter().map(|(to, m)| (to, wrap_msg(m))));
        self.timers
            .extend(inner.timers.into_iter().map(|op| op.map(&wrap_timer)));
        self.events.extend(inner.events);
        self.writes.extend(inner.writes);
        if let Some(e) = inner.write_error {
            self.fail_write(e);
        }
    }
}

/// A sans-IO protocol core: the inputs every protocol accepts.
///
/// Protocol-specific commands from the local user (acquire a lock, release it,
/// leave the group...) are ordinary methods of the concrete type that take
/// `now` and `&mut Outputs` the same way.
pub trait Protocol {
    /// How members are named (a node name, or a [`crate::NodeId`]).
    type Id: Clone + Ord + Debug;
    /// The protocol's wire messages.
    type Msg: Clone + Debug;
    /// The protocol's timers. A timer is its own key: setting a timer equal
    /// to a pending one replaces it.
    type Timer: Clone + Debug + PartialEq;
    /// What the protocol tells its local user.
    type Event: Clone + Debug;

    /// Called once when the driver starts the core. Default: nothing to do.
    fn on_start(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    ) {
        let _ = (now, out);
    }

    /// A message arrived from `from`.
    fn on_message(
        &mut self,
        now: Duration,
        from: Self::Id,
        msg: Self::Msg,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );

    /// A timer set earlier fired.
    fn on_timer(
        &mut self,
        now: Duration,
        timer: Self::Timer,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );

    /// The membership view changed (from the failure detector). Default: ignore.
    fn on_membership(
        &mut self,
        now: Duration,
        change: crate::membership::MemberEvent<Self::Id>,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    ) {
        let _ = (now, change, out);
    }

    /// Called by the driver after every input (start, message, timer,
    /// membership change, local command), before that input's outputs are
    /// carried out: the place for a core whose durable state is one small
    /// value to emit it when it changed (see [`Snapshot`]). Cores that emit
    /// their writes where they change state (a log) leave the default,
    /// which does nothing.
    fn persist(&mut self, out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>) {
        let _ = out;
    }
}

/// A core that settles some requests of its local user later than the
/// input that made them: a proposal once its entry is applied (or known
/// lost), a read once it is confirmed. The user names such a request by a
/// [`Settles::Token`] the core hands out (and marks as awaited) when it
/// takes the request; the core queues `(token, outcome)` when the request
/// settles, and whoever drives it takes the queue when it carries out the
/// outputs of the inputs that settled them (the protocol driver: once per
/// actor turn; the pull shape of raft-rs's `Ready` and quinn-proto's
/// `poll_*`).
///
/// The protocol driver routes each settled token to the future waiting
/// for it: one command and one wake-up per request, instead of a waiter
/// that polls the core whenever a view changes. The outcome is answered
/// with the outputs of the input that settled it, so after that input's
/// writes are durable. A simulator may take the queue whenever it likes;
/// nothing is settled twice, and a core keeps only the settlements not
/// taken yet.
pub trait Settles: Protocol {
    /// Names one awaited request.
    type Token: Clone + Eq + std::hash::Hash + Debug;
    /// What the request came to.
    type Settled;
    /// Move every settlement queued since the last call into `into`, in
    /// the order they were settled.
    fn take_settled(&mut self, into: &mut Vec<(Self::Token, Self::Settled)>);
}

#[cfg(test)]
mod tests {
    use super::*;

    type O = Outputs<u8, u8, u8, u8>;

    #[test]
    fn relay_wraps_messages_and_timers_and_keeps_writes_and_errors() {
        let mut out: Outputs<u8, u16, u32, u8> = Outputs::new();
        out.relay(
            |m: u8| m as u16 + 1000,
            |t: u8| t as u32 + 2000,
            |o: &mut O| {
                o.send(1, 2);
                o.set_timer(Duration::from_millis(5), 3);
                o.cancel_timer(4);
                o.emit(9);
                o.put("k", &7u8);
                o.write_error = Some(DurableError::Encode {
                    key: "x".into(),
                    message: "no".into(),
                });
            },
        );
        assert_eq!(out.sends, vec![(1, 1002)]);
        assert_eq!(
            out.timers,
            vec![
                TimerOp::Set {
                    after: Duration::from_millis(5),
                    timer: 2003
                },
                TimerOp::Cancel(2004)
            ]
        );
        assert_eq!(out.events, vec![9]);
        assert_eq!(out.writes.len(), 1);
        assert!(out.write_error.is_some());
    }

    #[test]
    fn appends_that_continue_the_last_write_join_it_others_do_not() {
        let mut out = O::new();
        out.append_record("l", 5, vec![5]);
        out.append_bytes("l", 6, vec![vec![6], vec![7]]);
        out.append_record("l", 8, vec![8]);
        // Not contiguous, another log, or after another write: new writes.
        out.append_record("l", 10, vec![10]);
        out.append_record("m", 11, vec![11]);
        out.put("k", &1u8);
        out.append_record("m", 12, vec![12]);
        let logs: Vec<(String, u64, usize)> = out
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Append {
                    log,
                    first,
                    records,
                } => Some((log.clone(), *first, records.len())),
                _ => None,
            })
            .collect();
        assert_eq!(
            logs,
            vec![
                ("l".into(), 5, 4),
                ("l".into(), 10, 1),
                ("m".into(), 11, 1),
                ("m".into(), 12, 1)
            ]
        );
        let mut r = Recovered::empty();
        assert!(r.apply(&out.writes[..2]).is_err(), "the gap is kept");
        r.apply(&out.writes[..1]).unwrap();
        assert_eq!(
            r.log("l").map(|(i, b)| (i, b[0])).collect::<Vec<_>>(),
            vec![(5, 5), (6, 6), (7, 7), (8, 8)]
        );
    }

    #[test]
    fn a_value_that_does_not_encode_is_a_failed_write_not_an_empty_one() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("refuses to encode"))
            }
        }
        let mut out = O::new();
        out.put("term", &Bad);
        assert!(out.writes.is_empty(), "nothing written");
        let e = out.write_error.expect("recorded as failed");
        assert!(e.to_string().contains("term"), "{e}");
        assert!(e.to_string().contains("refuses to encode"), "{e}");
        let mut out = O::new();
        out.append("log", 1, &[Bad]);
        assert!(out.writes.is_empty());
        assert!(out.write_error.unwrap().to_string().contains("log[1]"));
    }
}
