//! The sans-IO shape every Troupe protocol follows.
//!
//! A protocol (a failure detector, a lock, an election...) is written as a
//! plain state machine that never touches a socket, a clock or an actor. It is
//! *fed* inputs — a message from a peer, a timer that fired, a membership
//! change — each together with the current time, and it answers by pushing
//! *outputs* into an [`Outputs`] buffer: messages to send, timers to set, and
//! events for the local user. Whoever drives it (an actix actor in production,
//! a discrete-event simulator in tests and benchmarks) carries those outputs
//! out.
//!
//! Guarantees this shape gives: a protocol core is deterministic (same inputs
//! and times give the same outputs), so a seeded simulation replays exactly;
//! and the same core runs unchanged on the simulated network and on QUIC.
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the driver (the
//! node's start, or the start of a simulation); a core only compares and adds
//! times, it never reads a clock.

use std::fmt::Debug;
use std::time::Duration;

/// What a protocol core asks its driver to do, collected during one input.
#[derive(Debug)]
pub struct Outputs<Id, Msg, Timer, Event> {
    /// Messages to send: `(destination, message)`, in the order they were produced.
    pub sends: Vec<(Id, Msg)>,
    /// Timers to set: `(delay from now, timer)`. A timer fires once; cores
    /// must tolerate stale timers (check a generation or deadline when it fires).
    pub timers: Vec<(Duration, Timer)>,
    /// Notifications for the local user (a lock granted, a leader elected,
    /// a member declared down...).
    pub events: Vec<Event>,
}

impl<Id, Msg, Timer, Event> Default for Outputs<Id, Msg, Timer, Event> {
    fn default() -> Self {
        Self {
            sends: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
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
    /// Ask for `timer` to fire after `after`.
    pub fn set_timer(&mut self, after: Duration, timer: Timer) {
        self.timers.push((after, timer));
    }
    /// Report `event` to the local user.
    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
    /// True when nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.timers.is_empty() && self.events.is_empty()
    }
    /// Take everything out, leaving the buffer empty for the next input.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
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
    /// The protocol's timers.
    type Timer: Clone + Debug;
    /// What the protocol tells its local user.
    type Event: Clone + Debug;

    /// Called once when the driver starts the core.
    fn on_start(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );

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
}
