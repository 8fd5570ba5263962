//! Received membership updates: SWIM's incarnation rules (which news
//! overrides which), a member's refutation of news about itself,
//! Lifeguard's suspicion confirmations, and the corrections sent back
//! to a holder of stale news (deviation (b) of the module doc). An
//! update that changes this node's view (or adds a suspicion
//! confirmation) is queued for dissemination; one this node already
//! knows (the common case) costs one lookup and is not queued again.

use std::time::Duration;

use super::members::State;
use super::{Swim, SwimTimer, Update};
use crate::fd::{FdId, FdOutputs, FdTimer};

impl<Id: FdId> Swim<Id> {
    fn refute(&mut self, inc: u64) {
        self.inc = self.inc.max(inc) + 1;
        self.enqueue(Update::Alive {
            member: self.me.clone(),
            inc: self.inc,
        });
        self.adjust_awareness(1);
    }

    /// Bad news about this node: refute it if it is about the current
    /// incarnation; if it is stale (already refuted), re-announce the
    /// current `Alive` so that the holder of the stale news catches up
    /// (it rides on the reply to that very holder) without bumping the
    /// incarnation again.
    pub(super) fn refute_if_current(&mut self, inc: u64) {
        if self.left {
            return;
        }
        if inc >= self.inc {
            self.refute(inc);
        } else {
            self.enqueue(Update::Alive {
                member: self.me.clone(),
                inc: self.inc,
            });
        }
    }

    /// Incoming news older than ours: remember what we know, to put it in
    /// the reply to the sender (targeted anti-entropy, so a member that
    /// missed a refutation or a death does not act on stale news).
    fn correct(&mut self, member: &Id, inc: u64, incoming_dead: bool) {
        if *member == self.me {
            if inc < self.inc {
                self.corrections.push(Update::Alive {
                    member: member.clone(),
                    inc: self.inc,
                });
            }
            return;
        }
        let Some(m) = self.members.get(member) else {
            return;
        };
        let (member, from) = (member.clone(), self.me.clone());
        let fix = match m.state {
            State::Alive if m.inc > inc => Update::Alive { member, inc: m.inc },
            // A death at the same incarnation is the same news, not stale
            // (answering it would make two holders bounce it forever).
            State::Dead if m.inc > inc || (m.inc == inc && !incoming_dead) => Update::Dead {
                member,
                inc: m.inc,
                from,
            },
            State::Left if m.inc >= inc => Update::Left { member, inc: m.inc },
            _ => return,
        };
        if self.corrections.len() < self.params.max_piggyback {
            self.corrections.push(fix);
        }
    }

    /// True if `update` is exactly what this node already knows and needs
    /// no correction: the common case under load (each update is received
    /// about `retransmit_limit` times), answered with one lookup.
    fn is_duplicate(&self, update: &Update<Id>) -> bool {
        let Some(p) = self.members.pos(update.member()) else {
            return false;
        };
        let m = &self.members.entries[p].1;
        match update {
            Update::Alive { inc, .. } => m.state.live() && *inc <= m.inc,
            Update::Suspect { inc, from, .. } => {
                m.state == State::Suspect
                    && *inc == m.inc
                    && self.members.details[p].suspicion.as_ref().is_none_or(|s| {
                        s.confirmers.len() > s.k as usize || s.confirmers.contains(from)
                    })
            }
            Update::Dead { inc, .. } => m.state == State::Dead && *inc == m.inc,
            Update::Left { inc, .. } => m.state == State::Left && *inc <= m.inc,
        }
    }

    pub(super) fn apply(&mut self, now: Duration, update: Update<Id>, out: &mut FdOutputs<Id>) {
        if self.is_duplicate(&update) {
            return;
        }
        match &update {
            Update::Alive { member, inc } => {
                if self
                    .members
                    .get(member)
                    .is_some_and(|m| matches!(m.state, State::Dead | State::Left))
                {
                    self.correct(member, *inc, false);
                }
            }
            Update::Suspect { member, inc, .. } => self.correct(member, *inc, false),
            Update::Dead { member, inc, .. } => self.correct(member, *inc, true),
            Update::Left { .. } => {}
        }
        match update {
            Update::Alive { member, inc } => {
                if member == self.me || member.same_node(&self.me) {
                    return;
                }
                if !self.members.contains_key(&member) {
                    if self.admit(now, &member, inc, true, out) {
                        self.enqueue(Update::Alive { member, inc });
                    }
                    return;
                }
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc > m.inc {
                    // News of it alive: heard of (a refutation, or a
                    // restart of the same life's numbering).
                    self.change(now, &member, State::Alive, inc, true, out);
                    self.enqueue(Update::Alive { member, inc });
                }
            }
            Update::Suspect { member, inc, from } => {
                if member == self.me {
                    self.refute_if_current(inc);
                    return;
                }
                let Some((m, detail)) = self.members.get_full_mut(&member) else {
                    return;
                };
                if inc < m.inc {
                    return;
                }
                match m.state {
                    State::Dead | State::Left => {}
                    State::Suspect => {
                        if inc > m.inc {
                            m.inc = inc;
                        }
                        // memberlist: confirmations beyond the k expected
                        // ones change nothing and are not re-broadcast.
                        let suspicion = &mut detail.suspicion;
                        let new = match suspicion {
                            Some(s) if s.confirmers.len() <= s.k as usize => {
                                s.confirmers.insert(from.clone())
                            }
                            _ => false,
                        };
                        if new {
                            let deadline = suspicion
                                .as_ref()
                                .map(|s| s.start + s.timeout())
                                .unwrap_or(now)
                                .saturating_sub(self.params.probe_timeout);
                            let inc = m.inc;
                            out.set_timer(
                                deadline.saturating_sub(now),
                                FdTimer::Swim(SwimTimer::Suspicion {
                                    member: member.clone(),
                                }),
                            );
                            self.enqueue(Update::Suspect { member, inc, from });
                        }
                    }
                    State::Alive => {
                        let s = self.new_suspicion(now, from.clone());
                        let after = s.timeout().saturating_sub(self.params.probe_timeout);
                        self.set_state(now, &member, State::Suspect, inc, out);
                        if let Some(d) = self.members.detail_mut(&member) {
                            d.suspicion = Some(Box::new(s));
                        }
                        out.set_timer(
                            after,
                            FdTimer::Swim(SwimTimer::Suspicion {
                                member: member.clone(),
                            }),
                        );
                        self.enqueue(Update::Suspect { member, inc, from });
                    }
                }
            }
            Update::Dead { member, inc, from } => {
                if member == self.me {
                    self.refute_if_current(inc);
                    return;
                }
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc < m.inc || !m.state.live() {
                    return;
                }
                self.set_state(now, &member, State::Dead, inc, out);
                self.enqueue(Update::Dead { member, inc, from });
            }
            Update::Left { member, inc } => {
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc < m.inc || m.state == State::Left {
                    return;
                }
                self.set_state(now, &member, State::Left, inc, out);
                self.enqueue(Update::Left { member, inc });
            }
        }
    }

    /// Look up `from` and the members of `updates` (reads only) before
    /// handling a message: the lookups are independent, so the CPU
    /// overlaps their cache misses (a node's tables are usually cold when
    /// its message arrives in a large simulation), and the handling then
    /// finds the entries in cache.
    pub(super) fn touch(&self, from: &Id, updates: &[Update<Id>]) {
        let mut touched = self.members.get(from).map_or(0, |m| m.inc);
        for u in updates {
            if let Some(m) = self.members.get(u.member()) {
                touched = touched.wrapping_add(m.inc);
            }
        }
        std::hint::black_box(touched);
    }

    pub(super) fn apply_all(
        &mut self,
        now: Duration,
        updates: Vec<Update<Id>>,
        out: &mut FdOutputs<Id>,
    ) {
        for u in updates {
            self.apply(now, u, out);
        }
    }
}
