//! A live tap on a node's traffic: the last few thousand frames it sent,
//! received and dropped, kept in memory for the dashboard's space-time
//! view (`troupe::dashboard`).
//!
//! Off unless someone watches: each frame costs one relaxed atomic load
//! while no [`LiveWatch`] is held. While one is, every frame event the node
//! would write to a trace (see [`crate::trace::FrameEvent`]) is also kept
//! here, stamped with wall-clock microseconds since the Unix epoch (so that
//! the taps of several nodes can be drawn together), under a short lock.
//!
//! Guarantees: at most [`LiveTraffic::CAPACITY`] events are kept (the
//! oldest go first); each event gets an id, increasing by one per event
//! kept, so a reader asking [`LiveTraffic::since`] its last id sees every
//! event exactly once as long as it reads before [`LiveTraffic::CAPACITY`]
//! newer ones arrive (it can tell when it did not: the first id it gets is
//! more than one past its last). Frames sent or received while nobody
//! watched are not kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::trace::FrameEvent;

/// What happened to a frame, as the tap keeps it. Every field is written,
/// `null` when it does not apply: snapshots of the tap travel between nodes
/// in msgpack, which writes a struct as an array of its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// Position in the tap: one more than the event kept before it.
    pub id: u64,
    /// Wall-clock time, microseconds since the Unix epoch.
    pub t_us: u64,
    /// `send`, `deliver` or `drop`.
    pub ev: String,
    /// The other node: the destination of a send or of a drop at the
    /// sender, the sender of a delivery or of a drop here.
    pub peer: String,
    /// The sender's Lamport stamp of the frame (its `seq` in traces): a
    /// send on one node and a delivery on another match when
    /// `(sender, seq)` match.
    pub seq: u64,
    /// `tell`, `ask`, `reply` or `error` (sends only).
    #[serde(default)]
    pub kind: Option<String>,
    /// The message type's tag (sends of tells and asks only).
    #[serde(default)]
    pub tag: Option<String>,
    /// Frame bytes (sends only).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// For a reply: the ask it answers, as `(asker, ask seq)`.
    #[serde(default)]
    pub cause: Option<(String, u64)>,
    /// Why a frame was dropped (drops only).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The tap of one node (see the module docs). Every
/// [`Node`](crate::Node) has one: [`Node::live_traffic`](crate::Node::live_traffic).
#[derive(Debug, Default)]
pub struct LiveTraffic {
    watchers: AtomicUsize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<LiveEvent>,
    /// The id of the last event kept (0: none yet; the first is 1).
    last_id: u64,
}

/// While held, the node keeps its traffic in its [`LiveTraffic`]; dropped,
/// it stops (once every watch is dropped).
#[derive(Debug)]
pub struct LiveWatch {
    tap: Arc<LiveTraffic>,
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        if self.tap.watchers.fetch_sub(1, Ordering::Relaxed) == 1 {
            // Nobody watches: what was kept goes stale; free it.
            let mut ring = self.tap.lock();
            ring.events.clear();
            ring.events.shrink_to_fit();
        }
    }
}

impl LiveTraffic {
    /// Events kept at most.
    pub const CAPACITY: usize = 4096;

    /// Start keeping events until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> LiveWatch {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        LiveWatch { tap: self.clone() }
    }

    /// True while at least one [`LiveWatch`] is held.
    #[inline]
    pub fn watching(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// The events kept with an id above `after`, oldest first, at most
    /// `max` of them (the newest `max` when there are more).
    pub fn since(&self, after: u64, max: usize) -> Vec<LiveEvent> {
        let ring = self.lock();
        let newer = ring.events.iter().filter(|e| e.id > after);
        let n = newer.clone().count();
        newer.skip(n.saturating_sub(max)).cloned().collect()
    }

    /// The id the next event will get (every event kept so far has a
    /// smaller one).
    pub fn next_id(&self) -> u64 {
        self.lock().last_id + 1
    }

    /// Keep `event`, seen at `node` (nothing while nobody watches).
    #[inline]
    pub(crate) fn record(&self, node: &str, event: &FrameEvent<'_>) {
        if self.watching() {
            self.keep(node, event);
        }
    }

    /// [`Self::record`] while someone watches (kept out of the callers'
    /// paths: they run for every frame).
    #[cold]
    #[inline(never)]
    fn keep(&self, node: &str, event: &FrameEvent<'_>) {
        let mut e = LiveEvent {
            id: 0,
            t_us: wall_us(),
            ev: String::new(),
            peer: String::new(),
            seq: 0,
            kind: None,
            tag: None,
            bytes: None,
            cause: None,
            reason: None,
        };
        match *event {
            FrameEvent::Send {
                to,
                seq,
                bytes,
                kind,
                tag,
                cause,
                ..
            } => {
                e.ev = "send".into();
                e.peer = to.into();
                e.seq = seq;
                e.kind = Some(kind.into());
                e.tag = (!tag.is_empty()).then(|| tag.into());
                e.bytes = Some(bytes as u64);
                e.cause = cause.map(|(n, s)| (n.into(), s));
            }
            FrameEvent::Deliver { from, seq } => {
                e.ev = "deliver".into();
                e.peer = from.into();
                e.seq = seq;
            }
            FrameEvent::Drop {
                from,
                to,
                seq,
                reason,
            } => {
                e.ev = "drop".into();
                // Dropped at the sender (this node): the peer is the
                // destination; dropped here: the sender.
                e.peer = match to {
                    Some(to) if from == node => to.into(),
                    _ => from.into(),
                };
                e.seq = seq;
                e.reason = Some(reason.into());
            }
        }
        let mut ring = self.lock();
        ring.last_id += 1;
        e.id = ring.last_id;
        if ring.events.len() == Self::CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock time now, microseconds since the Unix epoch (0 for a clock
/// set before it): the time base of the tap and of dashboard snapshots.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(seq: u64) -> FrameEvent<'static> {
        FrameEvent::Send {
            to: "b",
            seq,
            bytes: 10,
            kind: "tell",
            tag: "t",
            lamport: Some(seq),
            cause: None,
        }
    }

    #[test]
    fn keeps_nothing_unless_watched() {
        let tap = Arc::new(LiveTraffic::default());
        tap.record("a", &send(1));
        assert!(tap.since(0, 100).is_empty());
        let w = tap.watch();
        tap.record("a", &send(2));
        tap.record("a", &FrameEvent::Deliver { from: "b", seq: 9 });
        let got = tap.since(0, 100);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, 1, "ids start at 1, so `since(0)` reads all");
        assert_eq!((got[0].ev.as_str(), got[0].seq), ("send", 2));
        assert_eq!(got[0].tag.as_deref(), Some("t"));
        assert_eq!((got[1].ev.as_str(), got[1].peer.as_str()), ("deliver", "b"));
        drop(w);
        assert!(!tap.watching());
        tap.record("a", &send(3));
        assert!(tap.since(0, 100).is_empty());
    }

    #[test]
    fn ids_increase_and_the_ring_is_bounded() {
        let tap = Arc::new(LiveTraffic::default());
        let _w = tap.watch();
        for s in 0..(LiveTraffic::CAPACITY as u64 + 10) {
            tap.record("a", &send(s));
        }
        let all = tap.since(0, usize::MAX);
        assert_eq!(all.len(), LiveTraffic::CAPACITY);
        assert!(all.windows(2).all(|w| w[1].id == w[0].id + 1));
        assert_eq!(tap.next_id(), all.last().map_or(0, |e| e.id) + 1);
        assert_eq!(
            all.last().map(|e| e.seq),
            Some(LiveTraffic::CAPACITY as u64 + 9)
        );
        // A reader that fell behind sees a gap in the ids.
        assert!(all[0].id > 1);
        let last = all.last().map(|e| e.id).unwrap_or(0);
        assert!(tap.since(last, 10).is_empty());
        let tail = tap.since(0, 5);
        assert_eq!(tail.len(), 5);
        assert_eq!(tail.last().map(|e| e.id), Some(last));
    }

    #[test]
    fn a_drop_names_the_other_node() {
        let tap = Arc::new(LiveTraffic::default());
        let _w = tap.watch();
        let at_sender = FrameEvent::Drop {
            from: "a",
            to: Some("b"),
            seq: 1,
            reason: "peer down",
        };
        let here = FrameEvent::Drop {
            from: "c",
            to: None,
            seq: 2,
            reason: "undeliverable",
        };
        tap.record("a", &at_sender);
        tap.record("a", &here);
        let got = tap.since(0, 10);
        assert_eq!(got[0].peer, "b");
        assert_eq!(got[1].peer, "c");
        assert_eq!(got[1].reason.as_deref(), Some("undeliverable"));
    }
}
