//! The consumer side of a reliable channel as a sans-IO state machine: per
//! producer session, the next sequence number to deliver, a reorder buffer
//! bounded by the granted window, duplicate discarding, what was delivered
//! but not yet confirmed by the consumer (kept to deliver again if the
//! consumer actor restarts), and when to acknowledge. It never touches a
//! socket or a clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::sender::Frame;
use super::wire::Grant;

/// Flow control and acknowledgement policy of the consumer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverSettings {
    /// Messages a producer may have beyond the last confirmed one (the
    /// demand the consumer grants).
    pub window: u64,
    /// Acknowledge at once when this many more messages were confirmed
    /// since the last acknowledgement (others go at the next tick).
    pub ack_every: u64,
    /// A session with nothing unconfirmed that heard nothing for this long
    /// is forgotten (its producer is taken to be gone).
    pub idle_after: Duration,
    /// How often the receiver's actor looks for confirmations to
    /// acknowledge and retries a consumer that was not running (the
    /// core itself does not use it).
    pub ack_delay: Duration,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        Self {
            window: 2048,
            ack_every: 256,
            idle_after: Duration::from_secs(600),
            ack_delay: Duration::from_millis(5),
        }
    }
}

/// A message to hand to the consumer, in order within its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The producer's session id.
    pub producer: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The encoded message.
    pub payload: Bytes,
}

/// Why a frame was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// The session was closed or expired; late frames of it are ignored.
    #[error("frame of closed session {producer:016x} ignored")]
    Retired {
        /// The session.
        producer: u64,
    },
    /// The session belongs to another node.
    #[error("session {producer:016x} belongs to node {owner:?}, not {from:?}")]
    WrongNode {
        /// The session.
        producer: u64,
        /// The node that opened it.
        owner: String,
        /// The node this frame came from.
        from: String,
    },
}

/// What a frame did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataOutcome {
    /// Messages now ready for the consumer (pushed to `out`).
    pub delivered: u64,
    /// Items already delivered or already buffered: discarded.
    pub duplicates: u64,
    /// Acknowledge now (a duplicate, a gap, a probe, a new session).
    pub ack_now: bool,
}

/// Counters of one receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Messages handed to the consumer (again after a consumer restart
    /// included).
    pub delivered: u64,
    /// Messages confirmed by the consumer.
    pub confirmed: u64,
    /// Duplicate items discarded.
    pub duplicates: u64,
    /// Items that arrived ahead of a gap and waited in the reorder buffer.
    pub reordered: u64,
    /// Items beyond the granted window, discarded.
    pub out_of_window: u64,
    /// Frames refused ([`ReceiveError`]).
    pub refused_frames: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Messages delivered again after the consumer actor restarted.
    pub redelivered: u64,
}

#[derive(Debug)]
struct Session {
    node: String,
    /// The next sequence number to deliver.
    expected: u64,
    /// Every sequence number up to this one was handled by the consumer.
    confirmed: u64,
    /// What the last acknowledgement said.
    acked_sent: u64,
    /// Items ahead of a gap.
    pending: BTreeMap<u64, Bytes>,
    /// Delivered, not confirmed: `confirmed + 1 .. expected`.
    unconfirmed: VecDeque<Bytes>,
    last_heard: Duration,
}

/// Sessions remembered as closed, so their late frames are not taken for
/// a new session.
const RETIRED_KEEP: usize = 1024;

/// The consumer side of one channel (see the module docs).
#[derive(Debug)]
pub struct ReceiverCore {
    consumer: u64,
    settings: ReceiverSettings,
    sessions: HashMap<u64, Session>,
    retired: VecDeque<u64>,
    stats: ReceiverStats,
}

impl ReceiverCore {
    /// A receiver incarnation named `consumer` (a fresh id per instance:
    /// producers tell a restarted receiver by it).
    pub fn new(consumer: u64, settings: ReceiverSettings) -> Self {
        Self {
            consumer,
            settings: ReceiverSettings {
                window: settings.window.max(1),
                ack_every: settings.ack_every.clamp(1, settings.window.max(1)),
                ..settings
            },
            sessions: HashMap::new(),
            retired: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// This incarnation's id.
    pub fn consumer(&self) -> u64 {
        self.consumer
    }

    /// The counters.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The settings in force.
    pub fn settings(&self) -> ReceiverSettings {
        self.settings
    }

    /// Sessions currently known.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The node that owns session `producer`.
    pub fn node_of(&self, producer: u64) -> Option<&str> {
        self.sessions.get(&producer).map(|s| s.node.as_str())
    }

    fn session(
        &mut self,
        now: Duration,
        node: &str,
        producer: u64,
    ) -> Result<(&mut Session, bool), ReceiveError> {
        if self.retired.contains(&producer) {
            self.stats.refused_frames += 1;
            return Err(ReceiveError::Retired { producer });
        }
        let mut new = false;
        let s = self.sessions.entry(producer).or_insert_with(|| {
            new = true;
            Session {
                node: node.to_string(),
                expected: 1,
                confirmed: 0,
                acked_sent: 0,
                pending: BTreeMap::new(),
                unconfirmed: VecDeque::new(),
                last_heard: now,
            }
        });
        if s.node != node {
            let owner = s.node.clone();
            self.stats.refused_frames += 1;
            return Err(ReceiveError::WrongNode {
                producer,
                owner,
                from: node.to_string(),
            });
        }
        if new {
            self.stats.sessions += 1;
        }
        s.last_heard = now;
        Ok((s, new))
    }

    /// A producer opens (or re-opens) session `producer`: its grant.
    pub fn open(
        &mut self,
        now: Duration,
        node: &str,
        producer: u64,
    ) -> Result<Grant, ReceiveError> {
        let (consumer, window) = (self.consumer, self.settings.window);
        let (s, _) = self.session(now, node, producer)?;
        s.acked_sent = s.confirmed;
        Ok(grant_of(consumer, window, s))
    }

    /// A data frame of session `producer` from `node`: messages ready for
    /// the consumer, in order, go into `out`.
    pub fn on_data(
        &mut self,
        now: Duration,
        node: &str,
        producer: u64,
        frame: Frame,
        out: &mut Vec<Delivery>,
    ) -> Result<DataOutcome, ReceiveError> {
        let Frame { base, first, items } = frame;
        let window = self.settings.window;
        let (s, new) = self.session(now, node, producer)?;
        let mut o = DataOutcome {
            ack_now: new || items.is_empty(),
            ..DataOutcome::default()
        };
        let mut reordered = 0;
        let mut beyond = 0;
        if base > s.expected {
            // Everything below `base` was confirmed, by an earlier
            // incarnation of this receiver (this one cannot have confirmed
            // what it never delivered): start at `base`.
            s.pending = s.pending.split_off(&base);
            s.unconfirmed.clear();
            s.confirmed = base - 1;
            s.acked_sent = s.acked_sent.min(s.confirmed);
            s.expected = base;
        }
        let limit = s.confirmed + window;
        for (i, payload) in items.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq < s.expected {
                o.duplicates += 1;
            } else if seq > limit {
                beyond += 1;
            } else if seq == s.expected {
                s.unconfirmed.push_back(payload.clone());
                out.push(Delivery {
                    producer,
                    seq,
                    payload,
                });
                s.expected += 1;
                o.delivered += 1;
                while let Some(p) = s.pending.remove(&s.expected) {
                    s.unconfirmed.push_back(p.clone());
                    out.push(Delivery {
                        producer,
                        seq: s.expected,
                        payload: p,
                    });
                    s.expected += 1;
                    o.delivered += 1;
                }
            } else if s.pending.insert(seq, payload).is_some() {
                o.duplicates += 1;
            } else {
                reordered += 1;
            }
        }
        o.ack_now |= o.duplicates > 0 || beyond > 0 || !s.pending.is_empty();
        self.stats.delivered += o.delivered;
        self.stats.duplicates += o.duplicates;
        self.stats.reordered += reordered;
        self.stats.out_of_window += beyond;
        Ok(o)
    }

    /// The consumer handled session `producer`'s messages up to `upto`.
    /// True when that confirmed something new.
    pub fn confirm(&mut self, producer: u64, upto: u64) -> bool {
        let Some(s) = self.sessions.get_mut(&producer) else {
            return false;
        };
        let upto = upto.min(s.expected - 1);
        if upto <= s.confirmed {
            return false;
        }
        let n = upto - s.confirmed;
        s.unconfirmed.drain(..n as usize);
        s.confirmed = upto;
        self.stats.confirmed += n;
        true
    }

    /// The acknowledgement to send for session `producer` now: when
    /// `force`, or when enough was confirmed since the last one, or (with
    /// `any`) when anything was. `None`: nothing to say.
    pub fn ack(&mut self, producer: u64, force: bool, any: bool) -> Option<Grant> {
        let (consumer, window, every) =
            (self.consumer, self.settings.window, self.settings.ack_every);
        let s = self.sessions.get_mut(&producer)?;
        let due =
            force || s.confirmed >= s.acked_sent + every || (any && s.confirmed > s.acked_sent);
        if !due {
            return None;
        }
        s.acked_sent = s.confirmed;
        Some(grant_of(consumer, window, s))
    }

    /// Session ids, for a periodic sweep of acknowledgements.
    pub fn producers(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// The consumer actor restarted: everything delivered and not
    /// confirmed is to be delivered again, in order per session.
    pub fn redeliver(&mut self, out: &mut Vec<Delivery>) {
        let mut producers = self.producers();
        producers.sort_unstable();
        for producer in producers {
            let s = &self.sessions[&producer];
            for (i, p) in s.unconfirmed.iter().enumerate() {
                out.push(Delivery {
                    producer,
                    seq: s.confirmed + 1 + i as u64,
                    payload: p.clone(),
                });
                self.stats.redelivered += 1;
            }
        }
    }

    /// Forget session `producer` (its producer closed it); later frames of
    /// it are refused.
    pub fn close(&mut self, producer: u64) -> bool {
        let known = self.sessions.remove(&producer).is_some();
        self.retire(producer);
        known
    }

    fn retire(&mut self, producer: u64) {
        if !self.retired.contains(&producer) {
            self.retired.push_back(producer);
            if self.retired.len() > RETIRED_KEEP {
                self.retired.pop_front();
            }
        }
    }

    /// Forget sessions idle for longer than `idle_after` with nothing
    /// unconfirmed. Returns how many.
    pub fn expire_idle(&mut self, now: Duration) -> usize {
        let idle = self.settings.idle_after;
        let gone: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.unconfirmed.is_empty() && now.saturating_sub(s.last_heard) >= idle)
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.close(*p);
        }
        gone.len()
    }
}

fn grant_of(consumer: u64, window: u64, s: &Session) -> Grant {
    Grant {
        consumer,
        acked: s.confirmed,
        limit: s.confirmed + window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window: u64) -> ReceiverSettings {
        ReceiverSettings {
            window,
            ack_every: 2,
            idle_after: Duration::from_secs(10),
            ack_delay: Duration::from_millis(5),
        }
    }

    fn items(range: std::ops::RangeInclusive<u64>) -> Vec<Bytes> {
        range.map(|i| Bytes::from(vec![i as u8])).collect()
    }

    fn frame(base: u64, first: u64, items: Vec<Bytes>) -> Frame {
        Frame { base, first, items }
    }

    fn seqs(out: &[Delivery]) -> Vec<u64> {
        out.iter().map(|d| d.seq).collect()
    }

    const T: Duration = Duration::ZERO;

    #[test]
    fn in_order_frames_are_delivered_and_duplicates_discarded() {
        let mut r = ReceiverCore::new(9, settings(10));
        let mut out = Vec::new();
        assert_eq!(
            r.open(T, "a", 1).unwrap(),
            Grant {
                consumer: 9,
                acked: 0,
                limit: 10
            }
        );
        let o = r
            .on_data(T, "a", 1, frame(1, 1, items(1..=3)), &mut out)
            .unwrap();
        assert_eq!((o.delivered, o.duplicates, o.ack_now), (3, 0, false));
        let o = r
            .on_data(T, "a", 1, frame(1, 2, items(2..=4)), &mut out)
            .unwrap();
        assert_eq!((o.delivered, o.duplicates, o.ack_now), (1, 2, true));
        assert_eq!(seqs(&out), vec![1, 2, 3, 4]);
        assert_eq!(out[3].payload, Bytes::from(vec![4u8]));
        assert_eq!(r.stats().duplicates, 2);
    }

    #[test]
    fn a_gap_holds_later_items_back_until_it_is_filled() {
        let mut r = ReceiverCore::new(9, settings(10));
        let mut out = Vec::new();
        r.open(T, "a", 1).unwrap();
        let o = r
            .on_data(T, "a", 1, frame(1, 3, items(3..=4)), &mut out)
            .unwrap();
        assert_eq!(o.delivered, 0);
        assert!(o.ack_now, "a gap is acknowledged at once");
        r.on_data(T, "a", 1, frame(1, 4, items(4..=5)), &mut out)
            .unwrap();
        assert!(out.is_empty());
        r.on_data(T, "a", 1, frame(1, 1, items(1..=2)), &mut out)
            .unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5]);
        assert_eq!(r.stats().duplicates, 1, "4 was buffered twice");
    }

    #[test]
    fn items_beyond_the_window_are_dropped_until_confirmations_open_it() {
        let mut r = ReceiverCore::new(9, settings(3));
        let mut out = Vec::new();
        r.open(T, "a", 1).unwrap();
        let o = r
            .on_data(T, "a", 1, frame(1, 1, items(1..=5)), &mut out)
            .unwrap();
        assert_eq!(o.delivered, 3);
        assert!(o.ack_now);
        assert_eq!(r.stats().out_of_window, 2);
        // Nothing confirmed: nothing to acknowledge yet.
        assert_eq!(r.ack(1, false, true), None);
        assert!(r.confirm(1, 2));
        assert!(!r.confirm(1, 2), "already confirmed");
        assert_eq!(
            r.ack(1, false, false),
            Some(Grant {
                consumer: 9,
                acked: 2,
                limit: 5
            })
        );
        assert_eq!(r.ack(1, false, true), None, "nothing new");
        r.on_data(T, "a", 1, frame(1, 4, items(4..=5)), &mut out)
            .unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5]);
        // Confirming beyond what was delivered is capped.
        r.confirm(1, 99);
        assert_eq!(r.ack(1, true, false).unwrap().acked, 5);
    }

    #[test]
    fn a_restarted_receiver_starts_at_the_producers_base() {
        // A fresh incarnation sees a frame of a session it never heard of.
        let mut r = ReceiverCore::new(10, settings(10));
        let mut out = Vec::new();
        let o = r
            .on_data(T, "a", 1, frame(6, 7, items(7..=8)), &mut out)
            .unwrap();
        assert!(o.ack_now, "a new session is acknowledged at once");
        assert!(out.is_empty(), "6 is missing");
        assert_eq!(
            r.ack(1, true, false).unwrap(),
            Grant {
                consumer: 10,
                acked: 5,
                limit: 15
            }
        );
        r.on_data(T, "a", 1, frame(6, 6, items(6..=6)), &mut out)
            .unwrap();
        assert_eq!(seqs(&out), vec![6, 7, 8]);
    }

    #[test]
    fn unconfirmed_deliveries_are_handed_out_again_after_a_consumer_restart() {
        let mut r = ReceiverCore::new(9, settings(10));
        let mut out = Vec::new();
        r.open(T, "a", 1).unwrap();
        r.on_data(T, "a", 1, frame(1, 1, items(1..=4)), &mut out)
            .unwrap();
        r.confirm(1, 2);
        out.clear();
        r.redeliver(&mut out);
        assert_eq!(seqs(&out), vec![3, 4]);
        assert_eq!(r.stats().redelivered, 2);
    }

    #[test]
    fn closed_sessions_and_foreign_nodes_are_refused() {
        let mut r = ReceiverCore::new(9, settings(10));
        let mut out = Vec::new();
        r.open(T, "a", 1).unwrap();
        let e = r
            .on_data(T, "b", 1, frame(1, 1, items(1..=1)), &mut out)
            .unwrap_err();
        assert!(matches!(e, ReceiveError::WrongNode { .. }), "{e}");
        assert!(r.close(1));
        let e = r
            .on_data(T, "a", 1, frame(1, 1, items(1..=1)), &mut out)
            .unwrap_err();
        assert_eq!(e, ReceiveError::Retired { producer: 1 });
        assert!(out.is_empty());
        assert_eq!(r.stats().refused_frames, 2);
    }

    #[test]
    fn idle_sessions_expire_but_not_with_unconfirmed_messages() {
        let mut r = ReceiverCore::new(9, settings(10));
        let mut out = Vec::new();
        r.open(T, "a", 1).unwrap();
        r.open(T, "a", 2).unwrap();
        r.on_data(T, "a", 2, frame(1, 1, items(1..=1)), &mut out)
            .unwrap();
        assert_eq!(r.expire_idle(Duration::from_secs(11)), 1);
        assert_eq!(r.sessions(), 1);
        r.confirm(2, 1);
        assert_eq!(r.expire_idle(Duration::from_secs(11)), 1);
        assert_eq!(r.sessions(), 0);
    }
}
