//! The producer side of a reliable channel as a sans-IO state machine:
//! sequence numbers, the resend buffer, cumulative acknowledgements, the
//! flow-control window, resends after a timeout with exponential back-off,
//! and the consumer's incarnation. It never touches a socket or a clock:
//! it is fed `now` and answers with the [`Frame`]s to transmit, so tests
//! drive it deterministically.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::wire::Grant;

/// Timing of the producer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderSettings {
    /// Resend what is unacknowledged when no acknowledgement made progress
    /// for this long (doubled after each resend without progress).
    pub resend_after: Duration,
    /// The back-off's ceiling.
    pub max_resend_after: Duration,
    /// Most messages per frame (resends and queued messages are batched).
    pub max_batch: usize,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            resend_after: Duration::from_millis(300),
            max_resend_after: Duration::from_secs(5),
            max_batch: 64,
        }
    }
}

/// Consecutive messages to transmit: `items[i]` has sequence number
/// `first + i`; everything below `base` is acknowledged. No items: a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The producer's oldest unacknowledged sequence number.
    pub base: u64,
    /// Sequence number of `items[0]`.
    pub first: u64,
    /// The encoded messages.
    pub items: Vec<Bytes>,
}

/// Why an acknowledgement was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// It acknowledges a sequence number that was never sent.
    #[error("acknowledgement of seq {acked}, but only up to {sent} was ever sent")]
    NeverSent {
        /// What it acknowledged.
        acked: u64,
        /// The highest sequence number sent.
        sent: u64,
    },
    /// Its limit is below its own acknowledgement.
    #[error("malformed acknowledgement: limit {limit} below acked {acked}")]
    Malformed {
        /// What it acknowledged.
        acked: u64,
        /// The limit it granted.
        limit: u64,
    },
}

/// What an accepted acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Accepted (it may or may not have acknowledged anything new).
    Accepted {
        /// Messages newly acknowledged.
        newly_acked: u64,
    },
    /// From a consumer incarnation that was replaced: ignored.
    Stale,
    /// From a new consumer incarnation: the receiver restarted and lost
    /// its volatile state. Everything unacknowledged is sent again; the
    /// old incarnation may already have handled `maybe_redelivered`.
    ConsumerRestarted {
        /// The sequence numbers the old incarnation may have handled
        /// without acknowledging them (they are delivered again).
        maybe_redelivered: std::ops::RangeInclusive<u64>,
    },
}

/// Counters of one producer session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Messages accepted by `push` (sequence numbers handed out).
    pub sent: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages transmitted again (timeouts, a restarted consumer).
    pub resent: u64,
    /// Times the producer transmitted again after a timeout.
    pub timeouts: u64,
    /// Acknowledgements refused as invalid ([`AckError`]).
    pub rejected_acks: u64,
    /// Acknowledgements ignored as coming from a replaced consumer.
    pub stale_acks: u64,
    /// New consumer incarnations seen after the first.
    pub consumer_restarts: u64,
}

/// Consumer incarnations remembered as replaced.
const RETIRED_KEEP: usize = 16;

/// The producer side of one session (see the module docs).
#[derive(Debug)]
pub struct SenderCore {
    settings: SenderSettings,
    consumer: Option<u64>,
    retired: VecDeque<u64>,
    /// Every sequence number up to this one is acknowledged.
    acked: u64,
    /// The highest sequence number the consumer granted.
    limit: u64,
    /// The next sequence number to hand out.
    next: u64,
    /// The highest sequence number transmitted at least once.
    sent_upto: u64,
    /// Messages `acked + 1 .. next`, oldest first.
    buffer: VecDeque<Bytes>,
    backoff: Duration,
    deadline: Option<Duration>,
    stats: SenderStats,
}

impl SenderCore {
    /// A session that has sent nothing and may send nothing until a
    /// [`Grant`] arrives ([`on_ack`](Self::on_ack)).
    pub fn new(settings: SenderSettings) -> Self {
        Self {
            settings,
            consumer: None,
            retired: VecDeque::new(),
            acked: 0,
            limit: 0,
            next: 1,
            sent_upto: 0,
            buffer: VecDeque::new(),
            backoff: settings.resend_after,
            deadline: None,
            stats: SenderStats::default(),
        }
    }

    /// True when the window has room for one more message.
    pub fn has_room(&self) -> bool {
        self.next <= self.limit
    }

    /// True when every message handed out is acknowledged.
    pub fn all_acked(&self) -> bool {
        self.acked + 1 == self.next
    }

    /// The cumulative acknowledgement.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The highest sequence number the consumer granted.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The consumer incarnation acknowledgements are taken from.
    pub fn consumer(&self) -> Option<u64> {
        self.consumer
    }

    /// Messages handed out and not acknowledged.
    pub fn unacked(&self) -> u64 {
        self.next - 1 - self.acked
    }

    /// The counters.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// When [`on_tick`](Self::on_tick) next has something to do.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Take `payload` as the next message if the window has room, and
    /// return its sequence number (pushing its frame into `out`); give it
    /// back when the window is full.
    pub fn push(
        &mut self,
        now: Duration,
        payload: Bytes,
        out: &mut Vec<Frame>,
    ) -> Result<u64, Bytes> {
        if !self.has_room() {
            return Err(payload);
        }
        let seq = self.next;
        self.next += 1;
        self.stats.sent += 1;
        self.buffer.push_back(payload.clone());
        if seq == self.sent_upto + 1 {
            out.push(Frame {
                base: self.acked + 1,
                first: seq,
                items: vec![payload],
            });
            self.sent_upto = seq;
        }
        self.arm(now);
        Ok(seq)
    }

    /// Take `payload` as the next message if the window has room, without
    /// transmitting it yet: it waits, with the others queued so, for
    /// [`flush`](Self::flush), which sends them in batches. Gives the
    /// payload back when the window is full.
    pub fn push_queued(&mut self, now: Duration, payload: Bytes) -> Result<u64, Bytes> {
        if !self.has_room() {
            return Err(payload);
        }
        let seq = self.next;
        self.next += 1;
        self.stats.sent += 1;
        self.buffer.push_back(payload);
        self.arm(now);
        Ok(seq)
    }

    /// Messages taken and never transmitted (within the window).
    pub fn unsent(&self) -> u64 {
        (self.next - 1)
            .min(self.limit)
            .saturating_sub(self.sent_upto)
    }

    /// Frames, of at most `max_batch` messages, for every message taken
    /// and not transmitted yet.
    pub fn flush(&mut self, out: &mut Vec<Frame>) {
        if self.unsent() > 0 {
            self.transmit(self.sent_upto + 1, out, false);
        }
    }

    /// An acknowledgement (or the grant that answered the opening ask)
    /// arrived. Frames to send at once (after a consumer restart, or newly
    /// granted messages that were held back) go into `out`.
    pub fn on_ack(
        &mut self,
        now: Duration,
        grant: Grant,
        out: &mut Vec<Frame>,
    ) -> Result<AckOutcome, AckError> {
        if grant.limit < grant.acked {
            self.stats.rejected_acks += 1;
            return Err(AckError::Malformed {
                acked: grant.acked,
                limit: grant.limit,
            });
        }
        if self.retired.contains(&grant.consumer) {
            self.stats.stale_acks += 1;
            return Ok(AckOutcome::Stale);
        }
        if grant.acked > self.sent_upto {
            self.stats.rejected_acks += 1;
            return Err(AckError::NeverSent {
                acked: grant.acked,
                sent: self.sent_upto,
            });
        }
        let restarted = match self.consumer {
            Some(c) if c != grant.consumer => {
                self.retired.push_back(c);
                if self.retired.len() > RETIRED_KEEP {
                    self.retired.pop_front();
                }
                self.stats.consumer_restarts += 1;
                true
            }
            _ => false,
        };
        self.consumer = Some(grant.consumer);
        let newly_acked = grant.acked.saturating_sub(self.acked);
        if newly_acked > 0 {
            self.buffer.drain(..newly_acked as usize);
            self.acked = grant.acked;
            self.stats.acked += newly_acked;
            self.backoff = self.settings.resend_after;
            self.deadline = None;
        }
        let outcome = if restarted {
            // The new incarnation's window replaces the old one's, and all
            // that is unacknowledged goes again now rather than at the
            // next timeout.
            self.limit = grant.limit.max(self.acked);
            let maybe = (self.acked + 1)..=self.sent_upto;
            self.backoff = self.settings.resend_after;
            // Beyond the new window counts as not sent to this incarnation.
            self.sent_upto = self.sent_upto.min(self.limit);
            self.transmit(self.acked + 1, out, true);
            AckOutcome::ConsumerRestarted {
                maybe_redelivered: maybe,
            }
        } else {
            self.limit = self.limit.max(grant.limit);
            AckOutcome::Accepted { newly_acked }
        };
        // Messages held back by a smaller window go now.
        if self.sent_upto + 1 < self.next && self.sent_upto < self.limit {
            self.transmit(self.sent_upto + 1, out, false);
        }
        self.arm(now);
        Ok(outcome)
    }

    /// Time passed: past the deadline, send everything unacknowledged again
    /// (or a probe when the window is closed with nothing in flight) and
    /// double the back-off.
    pub fn on_tick(&mut self, now: Duration, out: &mut Vec<Frame>) {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return,
        }
        self.stats.timeouts += 1;
        if self.all_acked() || self.limit <= self.acked {
            // Nothing in flight but a closed window: ask for a fresh grant.
            out.push(Frame {
                base: self.acked + 1,
                first: self.next,
                items: Vec::new(),
            });
        } else {
            self.transmit(self.acked + 1, out, true);
        }
        self.backoff = (self.backoff * 2).min(self.settings.max_resend_after);
        self.deadline = Some(now + self.backoff);
    }

    /// Frames for the buffered messages from `from` up to the window's end.
    fn transmit(&mut self, from: u64, out: &mut Vec<Frame>, resend: bool) {
        let to = (self.next - 1).min(self.limit);
        let mut seq = from.max(self.acked + 1);
        while seq <= to {
            let end = (seq + self.settings.max_batch.max(1) as u64 - 1).min(to);
            let items: Vec<Bytes> = (seq..=end)
                .map(|s| self.buffer[(s - self.acked - 1) as usize].clone())
                .collect();
            let again = (seq..=end).filter(|s| *s <= self.sent_upto).count() as u64;
            if resend {
                self.stats.resent += again;
            }
            out.push(Frame {
                base: self.acked + 1,
                first: seq,
                items,
            });
            self.sent_upto = self.sent_upto.max(end);
            seq = end + 1;
        }
    }

    /// Keep a deadline while something is unacknowledged or the window is
    /// closed; none when all is acknowledged and there is room.
    fn arm(&mut self, now: Duration) {
        let waiting = !self.all_acked() || !self.has_room();
        match (waiting, self.deadline) {
            (false, _) => self.deadline = None,
            (true, None) => self.deadline = Some(now + self.backoff),
            (true, Some(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> SenderSettings {
        SenderSettings {
            resend_after: 100 * MS,
            max_resend_after: 400 * MS,
            max_batch: 3,
        }
    }

    fn grant(consumer: u64, acked: u64, limit: u64) -> Grant {
        Grant {
            consumer,
            acked,
            limit,
        }
    }

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn seqs(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .flat_map(|f| (0..f.items.len() as u64).map(move |i| f.first + i))
            .collect()
    }

    #[test]
    fn nothing_goes_before_a_grant_and_the_window_holds_sends_back() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        assert_eq!(s.push(Duration::ZERO, b(1), &mut out), Err(b(1)));
        s.on_ack(Duration::ZERO, grant(7, 0, 2), &mut out).unwrap();
        assert_eq!(s.push(Duration::ZERO, b(1), &mut out), Ok(1));
        assert_eq!(s.push(Duration::ZERO, b(2), &mut out), Ok(2));
        assert_eq!(s.push(Duration::ZERO, b(3), &mut out), Err(b(3)));
        assert_eq!(seqs(&out), vec![1, 2]);
        assert_eq!(out[1].base, 1);
        // Acknowledging 1 and granting up to 3 makes room for one more.
        out.clear();
        let o = s.on_ack(MS, grant(7, 1, 3), &mut out).unwrap();
        assert_eq!(o, AckOutcome::Accepted { newly_acked: 1 });
        assert!(out.is_empty(), "nothing held back: nothing to send");
        assert_eq!(s.push(MS, b(3), &mut out), Ok(3));
        assert_eq!(out[0].base, 2, "frames carry the oldest unacked");
        assert_eq!(s.unacked(), 2);
    }

    #[test]
    fn cumulative_acks_free_the_buffer_and_stale_or_repeated_acks_change_nothing() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 10), &mut out).unwrap();
        for i in 1..=5 {
            s.push(Duration::ZERO, b(i), &mut out).unwrap();
        }
        s.on_ack(MS, grant(1, 4, 14), &mut out).unwrap();
        assert_eq!((s.acked(), s.unacked(), s.limit()), (4, 1, 14));
        // An older acknowledgement arriving late: no change, no error.
        let o = s.on_ack(MS, grant(1, 2, 12), &mut out).unwrap();
        assert_eq!(o, AckOutcome::Accepted { newly_acked: 0 });
        assert_eq!((s.acked(), s.limit()), (4, 14), "limits never shrink");
        s.on_ack(MS, grant(1, 5, 15), &mut out).unwrap();
        assert!(s.all_acked());
        assert_eq!(s.deadline(), None, "nothing in flight, window open");
        assert_eq!(s.stats().acked, 5);
    }

    #[test]
    fn bad_acks_are_refused_and_leave_the_state_alone() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 10), &mut out).unwrap();
        s.push(Duration::ZERO, b(1), &mut out).unwrap();
        let e = s.on_ack(MS, grant(1, 9, 19), &mut out).unwrap_err();
        assert_eq!(e, AckError::NeverSent { acked: 9, sent: 1 });
        assert!(e.to_string().contains("only up to 1 was ever sent"), "{e}");
        let e = s.on_ack(MS, grant(1, 1, 0), &mut out).unwrap_err();
        assert!(matches!(e, AckError::Malformed { .. }), "{e}");
        assert_eq!((s.acked(), s.limit(), s.stats().rejected_acks), (0, 10, 2));
    }

    #[test]
    fn timeouts_resend_everything_unacked_in_batches_with_backoff() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 10), &mut out).unwrap();
        for i in 1..=5 {
            s.push(Duration::ZERO, b(i), &mut out).unwrap();
        }
        s.on_ack(10 * MS, grant(1, 1, 11), &mut out).unwrap();
        out.clear();
        // Progress at 10 ms re-armed the deadline to 110 ms.
        s.on_tick(100 * MS, &mut out);
        assert!(out.is_empty());
        s.on_tick(110 * MS, &mut out);
        assert_eq!(seqs(&out), vec![2, 3, 4, 5]);
        assert_eq!(out.len(), 2, "batches of at most 3");
        assert_eq!(s.stats().resent, 4);
        // Back-off: 200 ms, then 400 ms (the ceiling), then 400 ms.
        out.clear();
        s.on_tick(309 * MS, &mut out);
        assert!(out.is_empty());
        s.on_tick(310 * MS, &mut out);
        assert_eq!(seqs(&out), vec![2, 3, 4, 5]);
        assert_eq!(s.deadline(), Some(710 * MS));
        s.on_tick(710 * MS, &mut out);
        assert_eq!(s.deadline(), Some(1110 * MS));
        // Progress resets the back-off.
        s.on_ack(800 * MS, grant(1, 3, 13), &mut out).unwrap();
        assert_eq!(s.deadline(), Some(900 * MS));
    }

    #[test]
    fn queued_messages_go_in_batches_on_flush_and_timeouts_cover_unflushed_ones() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 6), &mut out).unwrap();
        for i in 1..=7 {
            let r = s.push_queued(Duration::ZERO, b(i));
            assert_eq!(r.is_ok(), i <= 6, "{i}");
        }
        assert_eq!(s.unsent(), 6);
        s.flush(&mut out);
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(out.len(), 2, "two batches of 3");
        assert_eq!(s.stats().resent, 0, "first transmissions");
        assert_eq!(s.unsent(), 0);
        out.clear();
        s.flush(&mut out);
        assert!(out.is_empty());
        // One queued and never flushed goes with the next timeout.
        s.on_ack(MS, grant(1, 6, 12), &mut out).unwrap();
        s.push_queued(MS, b(7)).unwrap();
        s.on_tick(101 * MS, &mut out);
        assert_eq!(seqs(&out), vec![7]);
    }

    #[test]
    fn a_closed_window_with_nothing_in_flight_is_probed() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 1), &mut out).unwrap();
        s.push(Duration::ZERO, b(1), &mut out).unwrap();
        // Acknowledged but no new grant (the grant that follows was lost).
        s.on_ack(MS, grant(1, 1, 1), &mut out).unwrap();
        assert!(!s.has_room());
        out.clear();
        s.on_tick(101 * MS, &mut out);
        assert_eq!(
            out,
            vec![Frame {
                base: 2,
                first: 2,
                items: vec![]
            }]
        );
    }

    #[test]
    fn a_new_consumer_incarnation_gets_everything_unacked_again_and_old_acks_are_stale() {
        let mut s = SenderCore::new(settings());
        let mut out = Vec::new();
        s.on_ack(Duration::ZERO, grant(1, 0, 10), &mut out).unwrap();
        for i in 1..=6 {
            s.push(Duration::ZERO, b(i), &mut out).unwrap();
        }
        s.on_ack(MS, grant(1, 2, 12), &mut out).unwrap();
        out.clear();
        // The restarted receiver adopted base 3 and grants a smaller window.
        let o = s.on_ack(2 * MS, grant(2, 2, 5), &mut out).unwrap();
        assert_eq!(
            o,
            AckOutcome::ConsumerRestarted {
                maybe_redelivered: 3..=6
            }
        );
        assert_eq!(seqs(&out), vec![3, 4, 5], "up to the new limit");
        assert_eq!(s.stats().consumer_restarts, 1);
        // The old incarnation's late acknowledgement is ignored.
        assert_eq!(
            s.on_ack(3 * MS, grant(1, 6, 16), &mut out).unwrap(),
            AckOutcome::Stale
        );
        assert_eq!(s.acked(), 2);
        // The new one's grant releases the held-back message 6.
        out.clear();
        s.on_ack(4 * MS, grant(2, 5, 15), &mut out).unwrap();
        assert_eq!(seqs(&out), vec![6]);
    }
}
