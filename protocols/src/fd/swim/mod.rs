//! SWIM membership and failure detection (Das, Gupta, Motivala 2002) with the
//! Lifeguard extensions (Dadgar, Phillips, Currey 2018), as in memberlist.
//!
//! Each protocol period a node probes one member, chosen in a randomized
//! round-robin order (reshuffled every round, seeded RNG): a direct `Ping`,
//! and if no `Ack` arrives within the probe timeout, `PingReq`s to `k` other
//! members who ping the target on its behalf and relay its `Ack` (or send a
//! `Nack` if they get none), plus one more direct `Ping` (memberlist's TCP
//! fallback ping plays this role). If the period ends without an ack the target is
//! *suspected*. Suspicion carries the member's incarnation number; a
//! suspected member that hears of it *refutes* by bumping its incarnation
//! and disseminating `Alive`. A suspicion that is not refuted within the
//! suspicion timeout turns into `Dead` (reported `Down`).
//!
//! Membership updates (alive / suspect / dead / left) spread
//! infection-style, piggybacked on pings, acks and ping-reqs, and by
//! periodic gossip as in memberlist: every `gossip_interval` (200 ms) a node
//! with pending updates sends them, in a gossip-only `Gossip` message, to
//! `gossip_nodes` (3) random members that are live or were declared `Down`
//! less than `gossip_to_the_dead` (30 s) ago, so that one declared dead by
//! mistake hears it and refutes (`gossip_nodes = 0` turns gossip off).
//! Each update is sent `retransmit_mult * ceil(log10(N+1))` times in all
//! (piggyback and gossip together), fewest-sent first (newest first among
//! equals), at most `max_piggyback` per message. Bad news about the
//! destination itself is always included first so it can refute quickly
//! (Lifeguard's buddy system). With gossip a death reaches every member in well under one
//! protocol period (p50 0.2-0.6 periods at N = 8..1024, loss 0 %, in `fd_quality`),
//! against 1-4.5 periods on probe traffic alone.
//!
//! Bounded gossip (unlike memberlist): a gossip round sends only while a
//! pending update is *fresh*: a suspicion or death that has been sent
//! (piggybacked or gossiped) fewer than `gossip_transmits` (6) times, or
//! any alive/left update (a refutation). A gossip message goes out only
//! if one is still fresh (or it carries bad news about its destination),
//! and then carries the usual selection. A suspicion's or death's later
//! sends, up to its retransmit limit, ride only on pings, acks and
//! ping-reqs, which go out anyway. Why: with a fixed amount of churn,
//! memberlist's rule (gossip while anything is pending) makes every update
//! cost about `retransmit_mult * log10 N` gossip-only messages per member,
//! so the per-member load grows like log N (measured at loss 0 %: 0.03 /
//! 0.41 / 0.68 / 0.81 gossip msgs/member/s at N = 8 / 64 / 256 / 1024);
//! with the bound a suspicion or death costs at most `gossip_transmits`
//! gossip-only messages per member whatever N (0.03 / 0.33 / 0.35 / 0.35;
//! total 1.75 / 2.36 / 2.52 / 2.55 msgs/member/s, 2.6 per live member at
//! N >= 64), while the first rounds, which do the fast part of the
//! epidemic, stay. The few members the gossip rounds miss (in a push
//! epidemic where each member sends `G` copies, roughly `e^-G` of them)
//! get the update from the remaining piggybacked sends. Refutations are
//! exempt because a member that misses one in time turns a false
//! suspicion into a false `Down` (measured at N = 64, 20 % loss, 64
//! seeds: bounding them too at `gossip_transmits = 4` gave 50 false deaths
//! against 19 without the bound; 17 with the exemption, 13 at 6), while a
//! member that misses a death only learns it a little later; without
//! false suspicions (loss 0 %) no refutation is sent.
//! `gossip_transmits = 4` also slowed dissemination (first to last `Down`
//! p99 1.0-1.4 periods at N = 1024, against 0.7-0.8 without the bound);
//! 6 keeps it close to that. A `gossip_transmits` at or above the
//! retransmit limit is memberlist's rule (so nothing changes at N <= 9,
//! where the limit is 4).
//!
//! Lifeguard: (1) a local-health score (0..multiplier-1) that rises on
//! missed acks/nacks and on refuting a suspicion of oneself, falls on
//! successful probes (acked directly in time, see (f) below), and scales the probe interval and timeout by
//! `score+1`, so a slow or overloaded node probes less aggressively instead
//! of spreading false suspicions; (2) a suspicion timeout that starts at
//! `max = suspicion_max_timeout_mult * min` with
//! `min = suspicion_mult * max(1, log10 N) * probe_interval` and shrinks
//! towards `min` as independent confirmations arrive:
//! `max - (ln(c+1)/ln(K+1)) * (max-min)` with `K = suspicion_mult - 2`
//! expected confirmations (0 when `N - 2 < K`: too few members to supply
//! them), where `c` counts distinct suspecters other than the one whose
//! suspicion started the timer, as in memberlist; confirmations beyond `K`
//! change nothing and, as in memberlist, are not re-broadcast. A member's
//! own failed probe of a member it already suspects is a confirmation too.
//!
//! Deviations from the papers and memberlist, all cheap: (a) the second
//! direct ping above (memberlist's fallback is TCP); (b) a node that
//! receives news older than its own (a suspicion of a member it knows
//! refuted, or of itself, or an alive for one it knows dead) puts the
//! newer state into its reply to that sender (in the ack, or in a gossip
//! message back when the stale news came by gossip; a death at the same
//! incarnation is not stale); (c) a node
//! whose suspicion is about to expire first sends the suspect one last
//! ping (one probe timeout before the deadline) carrying the suspicion;
//! the ack brings back a refutation the node may have missed; (d) a probe
//! without an ack does not raise a suspicion if the target sent this node
//! anything during that protocol period; (e) when more updates wait than
//! fit in a message, alive/left go before dead before suspect (a
//! refutation cancels a suspicion wherever it arrives, so under congestion
//! it must not starve behind new suspicions). A stale suspicion of oneself
//! is answered by re-announcing the current incarnation, not by bumping it
//! again. (f) Only a probe acked directly within the probe timeout lowers
//! the local-health score; one acked later (relayed by a helper, or
//! answering the second direct ping) leaves it unchanged, where Lifeguard
//! and memberlist lower it for every successful probe. Measured with
//! `fd_quality` (seeds 1..k): counting late acks changes no first-detection
//! p50 at N = 8 / 64 / 256 (64 / 24 / 6 seeds), and at N = 1024, 20 % loss
//! (4 seeds), where dissemination is saturated, it raises first / all
//! detection p50 from 13.9 / 21.5 to 14.8 / 23.0 s and false positives from
//! 1.7 to 3.6 per node-hour: the slightly higher score there throttles
//! probing, and with it the false suspicions that congest the queue.
//!
//! Joining goes through seed nodes (`Join`, answered with a membership
//! snapshot); a graceful `leave` disseminates `Left`; a restarted node (same
//! name, new identity, see [`super::MemberIdentity`]) replaces its old life.
//!
//! Initial view (the same as the heartbeat detectors'): every configured
//! peer is reported `Joining` from the start until it is *heard of*: a
//! message from it, news of it alive (a join snapshot, gossip, a
//! refutation), or an ack to a probe of it; then it is reported as its
//! SWIM state says (`Up`, or `Suspect` if a suspicion of it is pending).
//! A configured peer is either a seed or a member added with
//! [`FailureDetector::add_member`]:
//! - a seed not heard of is a *placeholder*, outside the member table (a
//!   node knows its seeds by name only; their identity comes with their
//!   first message or news): it is neither probed nor gossiped, and is
//!   reported `Down` when [`Swim::first_contact_deadline`] passes — the
//!   time in which every member of a cluster of the configured size would
//!   have probed a silent member once and their confirmed suspicion would
//!   have expired (a round of `n - 1` periods plus the minimum suspicion
//!   timeout). A life of the same node admitted later replaces it (`Up`).
//! - an added member (whose identity is known) is in the member table from
//!   the start and probed like any other; only its report differs until it
//!   is heard of, and if it never is, SWIM itself suspects it and declares
//!   it dead: `Joining -> Down`, with no `Suspect` reported for a member
//!   never up. Nothing else changes: a cluster whose members are all added
//!   and started together probes, suspects and disseminates exactly as
//!   when added members were reported `Up` at once.
//!
//! Partitions heal because a node periodically pings one member it thinks is
//! `Down` and tells it so; a live one refutes, and the refutation spreads.
//!
//! Guarantees: strong completeness (a crashed member is eventually declared
//! dead by all), expected first detection about `e/(e-1)` protocol periods
//! after a crash plus the suspicion timeout, dissemination in O(log N)
//! periods, and per-member message load independent of N (the `log10 N`
//! retransmissions of each update add bytes to messages sent anyway, not
//! messages; refutations are the exception, see above). Accuracy is probabilistic: a
//! member unreachable or paused for longer than the suspicion timeout is
//! declared dead and comes back `Up` when its refutation arrives. Under
//! heavy uniform loss in a large cluster (20 % at N = 1024) false
//! suspicions arrive faster than their refutations can be retransmitted
//! `retransmit_mult * log10 N` times by every member; updates then queue
//! (refutations first) and dissemination slows to several periods.
//!
//! Layout, by concern: this file holds the parameters, the [`Swim`] core
//! and its [`Protocol`] impl, which dispatches each input to the concern
//! that handles it; `messages` has the wire messages, updates and timers;
//! `members` the member table (states, incarnations, details) with
//! admission and state changes; `updates` the handling of received
//! updates (which news overrides which, refutation, corrections);
//! `broadcast` the piggyback queue and the gossip rounds; `probe` the
//! probes, indirect probes, Lifeguard's local health and suspicion
//! timeouts, and the partition-healing pings; `tests` the unit tests.

mod broadcast;
mod members;
mod messages;
mod probe;
#[cfg(test)]
mod tests;
mod updates;

pub use messages::{SwimMessage, SwimTimer, Update};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
use troupe_framework::sansio::Protocol;

use super::{FdId, FdMessage, FdOutputs, FdTimer};
use broadcast::BroadcastQueue;
use members::MemberTable;
use probe::Probe;

/// Parameters of [`Swim`] (see [`super::config::SwimConfig`] for defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct SwimParams {
    /// Protocol period (before local-health scaling).
    pub probe_interval: Duration,
    /// Direct-ack timeout (before local-health scaling).
    pub probe_timeout: Duration,
    /// Indirect probes `k`.
    pub indirect_checks: usize,
    /// Retransmit multiplier.
    pub retransmit_mult: u32,
    /// Suspicion multiplier.
    pub suspicion_mult: u32,
    /// max suspicion timeout = this * min.
    pub suspicion_max_timeout_mult: u32,
    /// Local-health multiplier cap.
    pub awareness_max_multiplier: u32,
    /// Updates piggybacked per message, at most.
    pub max_piggyback: usize,
    /// Period of pings to `Down` members (partition healing).
    pub reconnect_interval: Duration,
    /// Period of gossip rounds.
    pub gossip_interval: Duration,
    /// Members gossiped to per round (0 = no periodic gossip).
    pub gossip_nodes: usize,
    /// How long a member declared `Down` remains a gossip target.
    pub gossip_to_the_dead: Duration,
    /// A gossip-only message is sent only while some pending suspicion or
    /// death has been sent (piggybacked or gossiped) fewer than this many
    /// times, or an alive/left update is pending (see the module doc).
    pub gossip_transmits: u32,
}

impl Default for SwimParams {
    fn default() -> Self {
        super::config::SwimConfig::default().params()
    }
}

/// The SWIM + Lifeguard detector core.
#[derive(Debug)]
pub struct Swim<Id: FdId> {
    me: Id,
    params: SwimParams,
    inc: u64,
    members: MemberTable<Id>,
    /// The members in state `Dead`, in id order (partition-healing pings).
    dead: BTreeSet<Id>,
    retired: BTreeSet<Id>,
    live: usize,
    probe_order: Vec<Id>,
    probe_idx: usize,
    probe: Option<Probe<Id>>,
    relays: BTreeMap<u64, (Id, u64)>,
    seq: u64,
    awareness: u32,
    queue: BroadcastQueue<Id>,
    seeds: Vec<Id>,
    /// Seeds not heard of yet (no life of theirs in `members`), reported
    /// `Joining`, then `Down` after the first-contact deadline; dropped
    /// when a life of the same node is admitted. In id order.
    placeholders: Vec<(Id, MemberStatus)>,
    corrections: Vec<Update<Id>>,
    joined: bool,
    left: bool,
    rng: ChaCha8Rng,
}

impl<Id: FdId> Swim<Id> {
    /// A SWIM node `me` that joins through `seeds` (may be empty when
    /// members are added with [`FailureDetector::add_member`]); `rng_seed`
    /// drives every random choice.
    pub fn new(me: Id, params: SwimParams, seeds: Vec<Id>, rng_seed: u64) -> Self {
        let seeds: Vec<Id> = seeds
            .into_iter()
            .filter(|s| *s != me && !s.same_node(&me))
            .collect();
        let mut placeholders: Vec<(Id, MemberStatus)> = seeds
            .iter()
            .map(|s| (s.clone(), MemberStatus::Joining))
            .collect();
        placeholders.sort_by(|a, b| a.0.cmp(&b.0));
        placeholders.dedup_by(|a, b| a.0 == b.0);
        let fresh_below = params.gossip_transmits;
        Self {
            me,
            params,
            inc: 0,
            members: MemberTable::new(),
            dead: BTreeSet::new(),
            retired: BTreeSet::new(),
            live: 0,
            probe_order: Vec::new(),
            probe_idx: 0,
            probe: None,
            relays: BTreeMap::new(),
            seq: 0,
            awareness: 0,
            queue: BroadcastQueue::new(fresh_below),
            seeds,
            placeholders,
            corrections: Vec::new(),
            joined: false,
            left: false,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &Id {
        &self.me
    }

    /// This node's SWIM incarnation number (bumped on each refutation).
    pub fn incarnation(&self) -> u64 {
        self.inc
    }

    /// Lifeguard local-health score (0 = healthy; timeouts scale by score+1).
    pub fn local_health(&self) -> u32 {
        self.awareness
    }

    /// Estimated cluster size: live members plus this node.
    pub fn cluster_size(&self) -> usize {
        self.live + 1
    }

    /// The SWIM incarnation number this node knows for `member`.
    pub fn incarnation_of(&self, member: &Id) -> Option<u64> {
        self.members.get(member).map(|m| m.inc)
    }

    /// Updates waiting to be piggybacked.
    pub fn pending_updates(&self) -> usize {
        self.queue.len()
    }

    /// Leave gracefully: disseminate `Left` to a few members directly and stop.
    pub fn leave(&mut self, _now: Duration, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        let left = Update::Left {
            member: self.me.clone(),
            inc: self.inc,
        };
        self.enqueue(left.clone());
        let mut targets = self.sorted_ids(|m| m.state.live());
        targets.shuffle(&mut self.rng);
        targets.truncate(self.params.indirect_checks.max(3));
        for t in targets {
            self.seq += 1;
            let mut updates = vec![left.clone()];
            updates.extend(
                self.piggyback(&t)
                    .into_iter()
                    .filter(|u| *u != left)
                    .take(self.params.max_piggyback.saturating_sub(1)),
            );
            out.send(
                t,
                FdMessage::Swim(SwimMessage::Ping {
                    seq: self.seq,
                    updates,
                }),
            );
        }
        self.left = true;
    }

    fn send(&mut self, to: Id, msg: SwimMessage<Id>, out: &mut FdOutputs<Id>) {
        out.send(to, FdMessage::Swim(msg));
    }

    /// How long a seed may stay unheard of before it is reported `Down`:
    /// the time in which every member of a cluster of the configured size
    /// `n` (the seeds and this node) would have probed a silent member once
    /// (a round of `n - 1` protocol periods) and their suspicion, confirmed
    /// by all of them, would have expired (the minimum suspicion timeout,
    /// `suspicion_mult * max(1, log10 n)` periods). With the defaults and
    /// three nodes: 2 + 4 = 6 s.
    pub fn first_contact_deadline(&self) -> Duration {
        let n = self.seeds.len() + 1;
        let round = self.params.probe_interval * (n as u32).saturating_sub(1);
        let scale = (n as f64).log10().max(1.0);
        let suspicion = self
            .params
            .probe_interval
            .mul_f64(self.params.suspicion_mult as f64 * scale);
        round + suspicion
    }

    /// A life of `id`'s node was admitted: its placeholder, if any, goes
    /// (without a report: the admitted life's own report replaces it).
    pub(super) fn drop_placeholder(&mut self, id: &Id) {
        if !self.placeholders.is_empty() {
            self.placeholders.retain(|(p, _)| !p.same_node(id));
        }
    }

    /// The first-contact deadline passed: seeds still unheard of are `Down`.
    fn first_contact_passed(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        for (id, status) in &mut self.placeholders {
            if *status == MemberStatus::Joining {
                *status = MemberStatus::Down;
                out.emit(MemberEvent {
                    member: id.clone(),
                    status: MemberStatus::Down,
                    at: now,
                });
            }
        }
    }

    fn send_joins(&mut self, out: &mut FdOutputs<Id>) {
        for s in self.seeds.clone() {
            self.send(s, SwimMessage::Join { inc: self.inc }, out);
        }
        out.set_timer(
            self.params.probe_interval * 2,
            FdTimer::Swim(SwimTimer::JoinRetry),
        );
    }
}

impl<Id: FdId> Protocol for Swim<Id> {
    type Id = Id;
    type Msg = FdMessage<Id>;
    type Timer = FdTimer<Id>;
    type Event = MemberEvent<Id>;

    fn on_start(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        if !self.placeholders.is_empty() {
            for (id, status) in &self.placeholders {
                out.emit(MemberEvent {
                    member: id.clone(),
                    status: *status,
                    at: now,
                });
            }
            out.set_timer(
                self.first_contact_deadline(),
                FdTimer::Swim(SwimTimer::FirstContact),
            );
        }
        if !self.seeds.is_empty() && !self.joined {
            // Announce ourselves through gossip as well as to the seeds.
            self.enqueue(Update::Alive {
                member: self.me.clone(),
                inc: self.inc,
            });
            self.send_joins(out);
        }
        // Random phase so that nodes started together do not probe in lockstep.
        let interval_ms = self.params.probe_interval.as_millis().max(1) as u64;
        let phase = Duration::from_millis(self.rng.gen_range(0..interval_ms));
        out.set_timer(phase, FdTimer::Swim(SwimTimer::Probe));
        out.set_timer(
            self.params.reconnect_interval,
            FdTimer::Swim(SwimTimer::Reconnect),
        );
        if self.params.gossip_nodes > 0 && !self.params.gossip_interval.is_zero() {
            let gi = self.params.gossip_interval.as_millis().max(1) as u64;
            let phase = Duration::from_millis(self.rng.gen_range(0..gi));
            out.set_timer(phase, FdTimer::Swim(SwimTimer::Gossip));
        }
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        let FdMessage::Swim(msg) = msg else {
            return;
        };
        if self.left || from == self.me || self.retired.contains(&from) {
            return;
        }
        match &msg {
            SwimMessage::Ping { updates, .. } | SwimMessage::PingReq { updates, .. } => {
                // These are answered (an ack, a relayed ping) with updates
                // from the queue.
                self.queue.touch(self.params.max_piggyback);
                self.touch(&from, updates);
            }
            SwimMessage::Ack { updates, .. } | SwimMessage::Gossip { updates } => {
                self.touch(&from, updates)
            }
            _ => {}
        }
        self.corrections.clear();
        // Only the current probe's target needs "heard from" (deviation
        // (d)); a retired target's messages were dropped above.
        if let Some(p) = &mut self.probe {
            if p.target == from && now > p.start {
                p.heard = true;
            }
        }
        // A probe from a member we never heard of (a joiner whose Alive has
        // not reached us yet): it is evidently alive, learn it.
        if matches!(
            msg,
            SwimMessage::Ping { .. } | SwimMessage::Ack { .. } | SwimMessage::PingReq { .. }
        ) && !self.members.contains_key(&from)
            && self.admit(now, &from, 0, true, out)
        {
            self.enqueue(Update::Alive {
                member: from.clone(),
                inc: 0,
            });
        }
        // Any message from a configured member not heard of yet: heard.
        self.hear(now, &from, out);
        match msg {
            SwimMessage::Ping { seq, updates } => self.answer_ping(now, from, seq, updates, out),
            SwimMessage::Ack { seq, updates } => self.handle_ack(now, seq, updates, out),
            SwimMessage::PingReq {
                seq,
                target,
                updates,
            } => self.relay_ping_req(now, from, seq, target, updates, out),
            SwimMessage::Nack { seq } => self.handle_nack(seq),
            SwimMessage::Join { inc } => {
                self.apply(
                    now,
                    Update::Alive {
                        member: from.clone(),
                        inc,
                    },
                    out,
                );
                let members = self.snapshot();
                self.send(from, SwimMessage::JoinReply { members }, out);
            }
            SwimMessage::JoinReply { members } => {
                self.joined = true;
                self.apply_all(now, members, out);
            }
            SwimMessage::Gossip { updates } => {
                self.apply_all(now, updates, out);
                if !self.corrections.is_empty() {
                    let updates = std::mem::take(&mut self.corrections);
                    self.send(from, SwimMessage::Gossip { updates }, out);
                }
            }
        }
    }

    fn on_timer(&mut self, now: Duration, timer: FdTimer<Id>, out: &mut FdOutputs<Id>) {
        let FdTimer::Swim(timer) = timer else {
            return;
        };
        if self.left {
            return;
        }
        match timer {
            SwimTimer::Probe => self.probe_tick(now, out),
            SwimTimer::ProbeTimeout { seq } => self.probe_timeout(seq, out),
            SwimTimer::RelayTimeout { seq } => self.relay_timeout(seq, out),
            SwimTimer::Suspicion { member } => self.check_suspicion(now, member, out),
            SwimTimer::Reconnect => self.reconnect_tick(out),
            SwimTimer::JoinRetry => {
                if !self.joined {
                    self.send_joins(out);
                }
            }
            SwimTimer::FirstContact => self.first_contact_passed(now, out),
            SwimTimer::Gossip => {
                self.gossip_round(now, out);
                out.set_timer(
                    self.params.gossip_interval,
                    FdTimer::Swim(SwimTimer::Gossip),
                );
            }
        }
    }
}

impl<Id: FdId> FailureDetector for Swim<Id> {
    fn kind(&self) -> &'static str {
        "swim"
    }

    /// Every member and every seed not heard of yet, in id order.
    fn view(&self) -> Vec<(Id, MemberStatus)> {
        let mut view: Vec<(Id, MemberStatus)> = self
            .sorted_ids(|_| true)
            .into_iter()
            .filter_map(|id| {
                let status = self.members.get(&id)?.status();
                Some((id, status))
            })
            .collect();
        if !self.placeholders.is_empty() {
            view.extend(self.placeholders.iter().cloned());
            view.sort_by(|a, b| a.0.cmp(&b.0));
        }
        view
    }

    /// A configured peer: known alive at incarnation 0 without gossiping it
    /// (every node is expected to be configured with it too), and probed
    /// like any member, but reported `Joining` until heard of.
    fn add_member(&mut self, now: Duration, id: Id, out: &mut FdOutputs<Id>) {
        self.admit(now, &id, 0, false, out);
        self.joined = true;
    }
}
