//! Failure detection: the protocol period's probe (direct ping, then
//! `k` indirect ping-reqs plus a second direct ping), the helper side
//! (relaying pings, acks and nacks), Lifeguard's local-health score
//! that scales the probe interval and timeout, suspicions with their
//! shrinking timeout and last-chance ping, and the partition-healing
//! pings to `Down` members. Each round probes the live members (taken in
//! id order) in a seeded shuffle, a newly admitted member at a seeded
//! random place, so a run is reproducible from its seed.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::seq::SliceRandom;

use super::members::State;
use super::{Swim, SwimMessage, SwimTimer, Update};
use crate::fd::{FdId, FdOutputs, FdTimer};

#[derive(Debug, Clone)]
pub(super) struct Suspicion<Id> {
    pub(super) start: Duration,
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) k: u32,
    pub(super) confirmers: BTreeSet<Id>,
    pub(super) verified: bool,
}

impl<Id> Suspicion<Id> {
    /// Lifeguard's remaining-time formula, as a total timeout from `start`.
    pub(super) fn timeout(&self) -> Duration {
        let c = self.confirmers.len().saturating_sub(1) as f64;
        if self.k == 0 {
            return self.min;
        }
        let frac = (c + 1.0).ln() / (self.k as f64 + 1.0).ln();
        let (min, max) = (self.min.as_secs_f64(), self.max.as_secs_f64());
        let raw = max - frac * (max - min);
        let t = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64);
        t.max(self.min)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Probe<Id> {
    seq: u64,
    pub(super) start: Duration,
    pub(super) target: Id,
    acked: bool,
    indirect: bool,
    expected_nacks: u32,
    nacks: u32,
    /// The target sent us something after `start` (deviation (d)).
    pub(super) heard: bool,
}

impl<Id: FdId> Swim<Id> {
    fn scale(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    pub(super) fn adjust_awareness(&mut self, delta: i32) {
        let max = self.params.awareness_max_multiplier.saturating_sub(1) as i64;
        self.awareness = (self.awareness as i64 + delta as i64).clamp(0, max) as u32;
    }

    pub(super) fn new_suspicion(&self, now: Duration, from: Id) -> Suspicion<Id> {
        let n = self.cluster_size();
        let mult = self.params.suspicion_mult;
        let mut k = mult.saturating_sub(2);
        if (n as u32).saturating_sub(2) < k {
            k = 0;
        }
        let scale = (n as f64).log10().max(1.0);
        let min = self.params.probe_interval.mul_f64(mult as f64 * scale);
        let max = min * self.params.suspicion_max_timeout_mult;
        let mut confirmers = BTreeSet::new();
        confirmers.insert(from);
        Suspicion {
            start: now,
            min,
            max,
            k,
            confirmers,
            verified: false,
        }
    }

    fn next_target(&mut self) -> Option<Id> {
        for _ in 0..2 {
            while self.probe_idx < self.probe_order.len() {
                let id = self.probe_order[self.probe_idx].clone();
                self.probe_idx += 1;
                if self.members.get(&id).is_some_and(|m| m.state.live()) {
                    return Some(id);
                }
            }
            // Round over: reshuffle the live members.
            self.probe_order = self.sorted_ids(|m| m.state.live());
            self.probe_order.shuffle(&mut self.rng);
            self.probe_idx = 0;
        }
        None
    }

    /// End of a protocol period: a probe without any ack suspects its target.
    fn conclude_probe(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        if p.heard && self.members.contains_key(&p.target) {
            // No ack, but the target did talk to us during this period:
            // it is alive, and the loss was on the probe's path.
            return;
        }
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks) as i32
        } else {
            1
        };
        self.adjust_awareness(delta);
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        if m.state.live() {
            let inc = m.inc;
            let from = self.me.clone();
            self.apply(
                now,
                Update::Suspect {
                    member: p.target,
                    inc,
                    from,
                },
                out,
            );
        }
    }

    pub(super) fn probe_tick(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        self.conclude_probe(now, out);
        if let Some(target) = self.next_target() {
            self.seq += 1;
            let seq = self.seq;
            self.probe = Some(Probe {
                seq,
                start: now,
                target: target.clone(),
                acked: false,
                indirect: false,
                expected_nacks: 0,
                nacks: 0,
                heard: false,
            });
            let updates = self.piggyback(&target);
            self.send(target, SwimMessage::Ping { seq, updates }, out);
            out.set_timer(
                self.scale(self.params.probe_timeout),
                FdTimer::Swim(SwimTimer::ProbeTimeout { seq }),
            );
        }
        out.set_timer(
            self.scale(self.params.probe_interval),
            FdTimer::Swim(SwimTimer::Probe),
        );
    }

    pub(super) fn probe_timeout(&mut self, seq: u64, out: &mut FdOutputs<Id>) {
        let target = match &self.probe {
            Some(p) if p.seq == seq && !p.acked && !p.indirect => p.target.clone(),
            _ => return,
        };
        let helpers = self.random_members(self.params.indirect_checks, |id, m, _| {
            m.state == State::Alive && *id != target
        });
        // A second direct ping alongside the indirect ones (memberlist sends
        // a TCP ping here): a lost ping or ack no longer needs all k
        // indirect paths to fail too before the target is suspected.
        let updates = self.piggyback(&target);
        self.send(target.clone(), SwimMessage::Ping { seq, updates }, out);
        for h in &helpers {
            let updates = self.piggyback(h);
            self.send(
                h.clone(),
                SwimMessage::PingReq {
                    seq,
                    target: target.clone(),
                    updates,
                },
                out,
            );
        }
        if let Some(p) = &mut self.probe {
            p.indirect = true;
            p.expected_nacks = helpers.len() as u32;
        }
    }

    /// A `Ping`: apply its updates and answer with an `Ack` (corrections
    /// of stale news first).
    pub(super) fn answer_ping(
        &mut self,
        now: Duration,
        from: Id,
        seq: u64,
        updates: Vec<Update<Id>>,
        out: &mut FdOutputs<Id>,
    ) {
        self.apply_all(now, updates, out);
        let mut updates = std::mem::take(&mut self.corrections);
        if updates.is_empty() {
            updates = self.piggyback(&from);
        } else {
            let room = self.params.max_piggyback.saturating_sub(updates.len());
            updates.extend(self.piggyback(&from).into_iter().take(room));
        }
        self.send(from, SwimMessage::Ack { seq, updates }, out);
    }

    /// An `Ack`: to this node's current probe, or to a ping it relays
    /// (then passed on to the requester).
    pub(super) fn handle_ack(
        &mut self,
        now: Duration,
        seq: u64,
        updates: Vec<Update<Id>>,
        out: &mut FdOutputs<Id>,
    ) {
        self.apply_all(now, updates, out);
        let mut mine = None;
        if let Some(p) = &mut self.probe {
            if p.seq == seq && !p.acked {
                p.acked = true;
                mine = Some(p.target.clone());
                // Deviation (f): only a direct ack in time
                // lowers the local-health score.
                if !p.indirect {
                    self.adjust_awareness(-1);
                }
            }
        }
        if let Some(target) = mine {
            // Our probe succeeded (perhaps relayed by a helper): the
            // target is heard of; nothing to relay.
            self.hear(now, &target, out);
        } else if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
            let updates = self.piggyback(&origin);
            self.send(
                origin,
                SwimMessage::Ack {
                    seq: origin_seq,
                    updates,
                },
                out,
            );
        }
    }

    /// A `PingReq`: ping `target` on the requester's behalf (answered
    /// directly when this node is the target).
    pub(super) fn relay_ping_req(
        &mut self,
        now: Duration,
        from: Id,
        seq: u64,
        target: Id,
        updates: Vec<Update<Id>>,
        out: &mut FdOutputs<Id>,
    ) {
        self.apply_all(now, updates, out);
        if target == self.me {
            let updates = self.piggyback(&from);
            self.send(from, SwimMessage::Ack { seq, updates }, out);
            return;
        }
        self.seq += 1;
        let relay = self.seq;
        self.relays.insert(relay, (from.clone(), seq));
        let updates = self.piggyback(&target);
        self.send(
            target,
            SwimMessage::Ping {
                seq: relay,
                updates,
            },
            out,
        );
        out.set_timer(
            self.params.probe_timeout.mul_f64(0.8),
            FdTimer::Swim(SwimTimer::RelayTimeout { seq: relay }),
        );
    }

    /// A helper's `Nack` for the current probe (Lifeguard).
    pub(super) fn handle_nack(&mut self, seq: u64) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq {
                p.nacks += 1;
            }
        }
    }

    /// A relayed ping got no ack in time: `Nack` the requester.
    pub(super) fn relay_timeout(&mut self, seq: u64, out: &mut FdOutputs<Id>) {
        if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
            self.send(origin, SwimMessage::Nack { seq: origin_seq }, out);
        }
    }

    /// Re-check a suspicion of `member`: declare it dead at the
    /// deadline, send the last-chance ping (deviation (c)) one probe
    /// timeout before it, or re-arm the timer.
    pub(super) fn check_suspicion(&mut self, now: Duration, member: Id, out: &mut FdOutputs<Id>) {
        let Some(p) = self.members.pos(&member) else {
            return;
        };
        let m = &self.members.entries[p].1;
        let Some(s) = (m.state == State::Suspect)
            .then_some(self.members.details[p].suspicion.as_ref())
            .flatten()
        else {
            return;
        };
        let deadline = s.start + s.timeout();
        let verify_at = deadline.saturating_sub(self.params.probe_timeout);
        let verified = s.verified;
        if now >= deadline {
            let inc = m.inc;
            self.set_state(now, &member, State::Dead, inc, out);
            let from = self.me.clone();
            self.enqueue(Update::Dead { member, inc, from });
        } else if now >= verify_at && !verified {
            // Last-chance ping, one probe timeout before the
            // deadline: it carries the suspicion to the member,
            // whose ack carries its refutation (or the refutation
            // we missed) back.
            if let Some(s) = self
                .members
                .detail_mut(&member)
                .and_then(|d| d.suspicion.as_mut())
            {
                s.verified = true;
            }
            self.seq += 1;
            let seq = self.seq;
            let updates = self.piggyback(&member);
            self.send(member.clone(), SwimMessage::Ping { seq, updates }, out);
            out.set_timer(
                deadline - now,
                FdTimer::Swim(SwimTimer::Suspicion { member }),
            );
        } else {
            let at = if verified { deadline } else { verify_at };
            out.set_timer(at - now, FdTimer::Swim(SwimTimer::Suspicion { member }));
        }
    }

    /// Partition healing: ping one random `Down` member and re-arm.
    pub(super) fn reconnect_tick(&mut self, out: &mut FdOutputs<Id>) {
        let dead: Vec<Id> = self.dead.iter().cloned().collect();
        if let Some(target) = dead.choose(&mut self.rng).cloned() {
            self.seq += 1;
            let seq = self.seq;
            let updates = self.piggyback(&target);
            self.send(target, SwimMessage::Ping { seq, updates }, out);
        }
        out.set_timer(
            self.params.reconnect_interval,
            FdTimer::Swim(SwimTimer::Reconnect),
        );
    }
}
