//! Plumtree: epidemic broadcast trees (Leitão, Pereira, Rodrigues, SRDS
//! 2007), backed by a slow anti-entropy pass.
//!
//! Each member has a small random view of neighbours
//! ([`super::epidemic::random_view`]: its [`GossipConfig::fanout`] picks
//! and the members that picked it; a random graph that is connected with
//! high probability), split into **eager** peers (at first all of them) and
//! **lazy** peers. On the first receipt of a message a member delivers it,
//! sends it (`Gossip`) to its live eager peers but the sender, and
//! announces it (`IHave`, batched per [`GossipConfig::period`]) to its
//! lazy peers that are not known to hold it; the sender becomes an eager
//! peer. A duplicate `Gossip` makes the receiver `Prune` its sender (both
//! move the link to lazy), so the eager links shrink to a spanning tree
//! after the first broadcasts, shared by every sender: then a broadcast
//! costs `N-1` payload messages plus the announcements. An announced
//! message that does not arrive within [`GossipConfig::graft_timeout`] is
//! asked for with a `Graft` to the first announcer (which becomes an eager
//! peer: the tree is repaired through it), then to the next announcer after
//! each further timeout. A member reported down leaves both sets (and the
//! announcers), one reported up again becomes eager; a broken link (a
//! partition of one eager edge, a crash) is repaired the same way, through
//! an announcement and a graft.
//!
//! Plumtree's own repair needs an announcement to arrive; a lost one (or
//! a lost graft whose announcers are all used up, or a restart that forgot
//! pending grafts) is made up for by a slow **anti-entropy pass**
//! ([`GossipConfig::anti_entropy_period`], push-pull with one random live
//! peer, see [`super::epidemic`]; it offers only messages older than its
//! period, so that it does not race the tree). A message learned through
//! it is announced to every neighbour, eager ones included, rather than
//! pushed (its copy may be on its way along the tree: pushing it, or
//! pruning the tree link that brings that copy, would break the tree); a
//! neighbour that lacks it grafts.
//!
//! Guarantees (see the [family docs](super)): integrity (no duplication,
//! across restarts too; no creation). Without the pass: a message reaches
//! every member with high probability (every lost payload is recovered by
//! a graft as long as one announcement arrives). With the pass: **every
//! member that stays connected eventually delivers** every message a member
//! delivered (uniform: the holders' buffers are durable), provided no
//! member misses a message for longer than the history
//! ([`GossipConfig::history_rounds`] rounds). No order. Crash and restart:
//! the delivered sets and the buffer are durable; the eager/lazy split and
//! pending grafts are not (a restarted member starts with every neighbour
//! eager, and duplicates prune the tree again). Partitions: the tree on
//! each side is repaired by grafts; after healing, links to the other side
//! come back eager when reported up, and the pass fills what is missing. A
//! false suspicion removes a neighbour until it is reported up: it only
//! costs a repair.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::epidemic::{
    backing_pass, random_view, Cx, Epidemic, GossipConfig, GossipMsg, GossipTimer, Out, Pass,
    Spread, Store,
};
use super::MsgId;
use crate::group::Change;
use crate::MemberId;

/// An announced message this member lacks.
#[derive(Debug, Clone)]
struct Missing<Id> {
    /// Its timer's number.
    token: u64,
    /// Who announced it, in order (the next graft goes to the first).
    announcers: VecDeque<Id>,
    /// When it was first announced.
    since: Duration,
}

/// Plumtree's own state: the view split into eager and lazy peers, the
/// announcements to send, and the announced messages missing here.
#[derive(Debug, Clone)]
pub struct Tree<Id> {
    view: BTreeSet<Id>,
    eager: BTreeSet<Id>,
    lazy: BTreeSet<Id>,
    /// Messages to announce at the next flush, with the member each came
    /// from (not told), and whether to announce it to the eager peers too
    /// (a message learned through the anti-entropy pass).
    queue: Vec<(MsgId<Id>, Option<Id>, bool)>,
    /// Messages learned through the anti-entropy pass: a later copy along
    /// the tree is no reason to prune it.
    via_pass: BTreeSet<MsgId<Id>>,
    flush_armed: bool,
    missing: BTreeMap<MsgId<Id>, Missing<Id>>,
    tokens: BTreeMap<u64, MsgId<Id>>,
    next_token: u64,
}

impl<Id: MemberId> Tree<Id> {
    /// The eager peers (the tree links of this member).
    pub fn eager(&self) -> &BTreeSet<Id> {
        &self.eager
    }

    /// The lazy peers.
    pub fn lazy(&self) -> &BTreeSet<Id> {
        &self.lazy
    }

    /// The view: every neighbour.
    pub fn view(&self) -> &BTreeSet<Id> {
        &self.view
    }

    fn make_eager(&mut self, p: &Id) {
        self.view.insert(p.clone());
        self.lazy.remove(p);
        self.eager.insert(p.clone());
    }

    fn make_lazy(&mut self, p: &Id) {
        self.view.insert(p.clone());
        self.eager.remove(p);
        self.lazy.insert(p.clone());
    }

    /// Deliver-time work for a message new here, from `from` (`via_tree`:
    /// in a `Gossip`).
    fn spread_new(
        &mut self,
        st: &mut Store<Id>,
        id: &MsgId<Id>,
        from: Option<&Id>,
        via_tree: bool,
        out: &mut Out<Id>,
    ) {
        if let Some(m) = self.missing.remove(id) {
            self.tokens.remove(&m.token);
            out.cancel_timer(GossipTimer::Graft(m.token));
        }
        let Some(item) = st.item(id) else { return };
        // A message learned through the pass is only announced: its copy
        // may be on its way along the tree, and pushing it eagerly would
        // prune tree links (a member that lacks it grafts this one).
        let by_pass = from.is_some() && !via_tree;
        if by_pass {
            self.via_pass.insert(id.clone());
        } else {
            for p in &self.eager {
                if Some(p) != from && st.group().is_live(p) {
                    out.send(p.clone(), GossipMsg::Gossip { item: item.clone() });
                }
            }
        }
        self.queue.push((id.clone(), from.cloned(), by_pass));
        if !self.flush_armed {
            self.flush_armed = true;
            out.set_timer(st.config().period, GossipTimer::Spread);
        }
        if let (Some(f), true) = (from, via_tree) {
            self.make_eager(f);
        }
    }

    fn graft(&mut self, st: &mut Store<Id>, token: u64, now: Duration, out: &mut Out<Id>) {
        let Some(id) = self.tokens.get(&token).cloned() else {
            return;
        };
        let history = st.config().history();
        let timeout = st.config().graft_timeout;
        let give_up = |m: &Missing<Id>| now.saturating_sub(m.since) >= history;
        let done = st.is_delivered(&id)
            || self
                .missing
                .get(&id)
                .is_none_or(|m| m.announcers.is_empty() || give_up(m));
        if done {
            self.missing.remove(&id);
            self.tokens.remove(&token);
            return;
        }
        let Some(m) = self.missing.get_mut(&id) else {
            return;
        };
        // Graft the first announcer, and keep it last for another try.
        let Some(q) = m.announcers.pop_front() else {
            return;
        };
        m.announcers.push_back(q.clone());
        self.make_eager(&q);
        st.gossip_stats_mut().grafts += 1;
        out.send(q, GossipMsg::Graft { ids: vec![id] });
        out.set_timer(timeout, GossipTimer::Graft(token));
    }

    fn flush(&mut self, st: &mut Store<Id>, out: &mut Out<Id>) {
        self.flush_armed = false;
        let queue = std::mem::take(&mut self.queue);
        self.via_pass.retain(|id| st.item_exists(id));
        for q in &self.view {
            if !st.group().is_live(q) {
                continue;
            }
            let lazy = self.lazy.contains(q);
            let ids: Vec<MsgId<Id>> = queue
                .iter()
                .filter(|(id, from, all)| {
                    (lazy || *all) && from.as_ref() != Some(q) && !st.knows(q, id)
                })
                .map(|(id, _, _)| id.clone())
                .collect();
            if !ids.is_empty() {
                out.send(q.clone(), GossipMsg::IHave { ids });
            }
        }
    }
}

impl<Id: MemberId> Spread<Id> for Tree<Id> {
    fn pass(config: &GossipConfig) -> Option<Pass> {
        backing_pass(config)
    }

    fn new(st: &Store<Id>) -> Self {
        let g = st.group();
        let view = random_view(g.me(), g.members(), st.config().fanout.max(1));
        Self {
            eager: view.clone(),
            view,
            lazy: BTreeSet::new(),
            queue: Vec::new(),
            via_pass: BTreeSet::new(),
            flush_armed: false,
            missing: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_token: 0,
        }
    }

    fn on_new(&mut self, cx: Cx<'_, Id>, id: &MsgId<Id>, from: Option<&Id>) {
        self.spread_new(cx.st, id, from, false, cx.out);
    }

    fn on_message(&mut self, cx: Cx<'_, Id>, from: Id, msg: GossipMsg<Id>) {
        let Cx { st, now, out } = cx;
        match msg {
            GossipMsg::Gossip { item } => {
                let id = item.id.clone();
                if st.accept(item, Some(&from), now, out) {
                    self.spread_new(st, &id, Some(&from), true, out);
                } else if st.first_from(&id) != Some(&from) && !self.via_pass.contains(&id) {
                    // A redundant tree link (a copy the network duplicated
                    // from the same sender is not one).
                    self.make_lazy(&from);
                    st.gossip_stats_mut().prunes += 1;
                    out.send(from, GossipMsg::Prune);
                }
            }
            GossipMsg::Prune => self.make_lazy(&from),
            GossipMsg::IHave { ids } => {
                if !self.eager.contains(&from) {
                    self.make_lazy(&from);
                }
                let timeout = st.config().graft_timeout;
                for id in ids {
                    st.mark_known(&from, &id);
                    if st.is_delivered(&id) {
                        continue;
                    }
                    st.note_lacking(&id, now);
                    if let Some(m) = self.missing.get_mut(&id) {
                        if !m.announcers.contains(&from) {
                            m.announcers.push_back(from.clone());
                        }
                        continue;
                    }
                    let token = self.next_token;
                    self.next_token += 1;
                    self.tokens.insert(token, id.clone());
                    let announcers = [from.clone()].into();
                    let m = Missing {
                        token,
                        announcers,
                        since: now,
                    };
                    self.missing.insert(id, m);
                    out.set_timer(timeout, GossipTimer::Graft(token));
                }
            }
            GossipMsg::Graft { ids } => {
                self.make_eager(&from);
                for id in ids {
                    if let Some(item) = st.item(&id) {
                        out.send(from.clone(), GossipMsg::Gossip { item });
                    }
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: Cx<'_, Id>, timer: GossipTimer) {
        match timer {
            GossipTimer::Spread => self.flush(cx.st, cx.out),
            GossipTimer::Graft(token) => self.graft(cx.st, token, cx.now, cx.out),
            GossipTimer::Round => {}
        }
    }

    fn on_change(&mut self, _cx: Cx<'_, Id>, change: Change<Id>) {
        match change {
            Change::Gone(p) => {
                self.eager.remove(&p);
                self.lazy.remove(&p);
                for m in self.missing.values_mut() {
                    m.announcers.retain(|a| *a != p);
                }
            }
            Change::Back(p) if self.view.contains(&p) => self.make_eager(&p),
            _ => {}
        }
    }
}

/// Plumtree backed by anti-entropy (see the module docs).
pub type Plumtree<Id> = Epidemic<Id, Tree<Id>>;
