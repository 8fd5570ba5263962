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
//! **Tree optimisation** (the paper's "optimization"): `Gossip` and `IHave`
//! carry a hop count, the receiver's distance from the origin along that
//! path. A member that got a message over a tree link and sees it
//! announced by a lazy peer through which it would be at least
//! [`GossipConfig::optimization_threshold`] hops closer to the origin
//! swaps the two links: an empty `Graft` makes the announcer a tree link,
//! a `Prune` makes the old one lazy (also when the announcement came first
//! and the tree's copy arrived before the graft timeout). So the tree gets
//! shallower for the origins that broadcast. It is off by default (0): the
//! tree is shared by every origin, and with many origins the swaps for one
//! undo those for another (more messages, no shallower tree); with one or
//! a few origins it shortens the time to reach everyone (see
//! BENCHMARKS.md, "Epidemic broadcast at scale"). One swap on a spanning
//! tree leaves a spanning tree (the announcer is closer to the origin, so
//! it is not below this member); concurrent swaps for messages of
//! different origins may leave it split or with a cycle for a while, which
//! the announcements (a graft) and the duplicates (a prune) repair as any
//! broken link. Swaps move links only: no message depends on one.
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
//! the delivered sets and the buffer are durable; the eager/lazy split,
//! pending grafts and hop counts are not (a restarted member starts with
//! every neighbour eager, and duplicates prune the tree again; it
//! announces what it held before with an unknown distance, which no
//! member swaps towards). Partitions: the tree on
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
    /// The announcer through which this member would be closest to the
    /// origin, with that distance (for the tree optimisation).
    best: (Id, u32),
}

/// How this member got a message it holds (for the tree optimisation).
#[derive(Debug, Clone)]
struct Got<Id> {
    /// Its distance from the origin in hops: 0 if broadcast here,
    /// [`u32::MAX`] if unknown (learned through the pass).
    hops: u32,
    /// The tree link it came over (none: broadcast here, or learned
    /// through the pass).
    parent: Option<Id>,
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
    /// How each buffered message got here (not durable: a restarted
    /// member knows no distances).
    got: BTreeMap<MsgId<Id>, Got<Id>>,
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

    /// This member's distance from the origin of `id` (see [`Got`]).
    fn hops(&self, id: &MsgId<Id>) -> u32 {
        self.got.get(id).map_or(u32::MAX, |g| g.hops)
    }

    /// Deliver-time work for a message new here, from `from` (`tree_hops`:
    /// in a `Gossip`, with its hop count).
    fn spread_new(
        &mut self,
        st: &mut Store<Id>,
        id: &MsgId<Id>,
        from: Option<&Id>,
        tree_hops: Option<u32>,
        out: &mut Out<Id>,
    ) {
        let missing = self.missing.remove(id);
        if let Some(m) = &missing {
            self.tokens.remove(&m.token);
            out.cancel_timer(GossipTimer::Graft(m.token));
        }
        let Some(item) = st.item(id) else { return };
        let via_tree = tree_hops.is_some();
        let hops = match (from, tree_hops) {
            (None, _) => 0,
            (Some(_), Some(h)) => h,
            (Some(_), None) => u32::MAX,
        };
        let parent = from.filter(|_| via_tree).cloned();
        self.got.insert(id.clone(), Got { hops, parent });
        // A message learned through the pass is only announced: its copy
        // may be on its way along the tree, and pushing it eagerly would
        // prune tree links (a member that lacks it grafts this one).
        let by_pass = from.is_some() && !via_tree;
        if by_pass {
            self.via_pass.insert(id.clone());
        } else {
            let next = hops.saturating_add(1);
            for p in &self.eager {
                if Some(p) != from && st.group().is_live(p) {
                    let item = item.clone();
                    out.send(p.clone(), GossipMsg::Gossip { item, hops: next });
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
            // Announced first through a link that is much shorter?
            if let Some(Missing { best: (a, h), .. }) = missing {
                self.optimize(st, id, &a, h, out);
            }
        }
    }

    /// The tree optimisation: `id`, which came here over a tree link, is
    /// announced by the lazy peer `a`, through which this member would be
    /// `h` hops from its origin. If that is at least
    /// [`GossipConfig::optimization_threshold`] hops fewer than the tree
    /// path's, make `a` the tree link (an empty `Graft`) and the old one
    /// lazy (`Prune`).
    fn optimize(&mut self, st: &mut Store<Id>, id: &MsgId<Id>, a: &Id, h: u32, out: &mut Out<Id>) {
        let threshold = st.config().optimization_threshold;
        if threshold == 0 || !self.lazy.contains(a) || !st.group().is_live(a) {
            return;
        }
        let Some(got) = self.got.get_mut(id) else {
            return;
        };
        let Some(parent) = got.parent.clone() else {
            return;
        };
        if parent == *a || !self.eager.contains(&parent) || h.saturating_add(threshold) > got.hops {
            return;
        }
        got.hops = h;
        got.parent = Some(a.clone());
        self.make_eager(a);
        self.make_lazy(&parent);
        st.gossip_stats_mut().swaps += 1;
        out.send(a.clone(), GossipMsg::Graft { ids: Vec::new() });
        out.send(parent, GossipMsg::Prune);
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
        self.got.retain(|id, _| st.item_exists(id));
        for q in &self.view {
            if !st.group().is_live(q) {
                continue;
            }
            let lazy = self.lazy.contains(q);
            let ids: Vec<(MsgId<Id>, u32)> = queue
                .iter()
                .filter(|(id, from, all)| {
                    (lazy || *all) && from.as_ref() != Some(q) && !st.knows(q, id)
                })
                .map(|(id, _, _)| (id.clone(), self.hops(id).saturating_add(1)))
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
            got: BTreeMap::new(),
        }
    }

    fn on_new(&mut self, cx: Cx<'_, Id>, id: &MsgId<Id>, from: Option<&Id>) {
        self.spread_new(cx.st, id, from, None, cx.out);
    }

    fn on_message(&mut self, cx: Cx<'_, Id>, from: Id, msg: GossipMsg<Id>) {
        let Cx { st, now, out } = cx;
        match msg {
            GossipMsg::Gossip { item, hops } => {
                let id = item.id.clone();
                if st.accept(item, Some(&from), now, out) {
                    self.spread_new(st, &id, Some(&from), Some(hops), out);
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
                for (id, hops) in ids {
                    st.mark_known(&from, &id);
                    if st.is_delivered(&id) {
                        self.optimize(st, &id, &from, hops, out);
                        continue;
                    }
                    st.note_lacking(&id, now);
                    if let Some(m) = self.missing.get_mut(&id) {
                        if !m.announcers.contains(&from) {
                            m.announcers.push_back(from.clone());
                        }
                        if hops < m.best.1 {
                            m.best = (from.clone(), hops);
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
                        best: (from.clone(), hops),
                    };
                    self.missing.insert(id, m);
                    out.set_timer(timeout, GossipTimer::Graft(token));
                }
            }
            GossipMsg::Graft { ids } => {
                self.make_eager(&from);
                for id in ids {
                    if let Some(item) = st.item(&id) {
                        let hops = self.hops(&id).saturating_add(1);
                        out.send(from.clone(), GossipMsg::Gossip { item, hops });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::epidemic::Item;
    use crate::broadcast::{BroadcastConfig, Engine, Stamps, Stored};
    use troupe_framework::sansio::Protocol;

    const ME: u32 = 1;
    /// The tree link the message comes over.
    const PARENT: u32 = 2;
    /// A lazy peer that announces it.
    const ANNOUNCER: u32 = 3;
    const ORIGIN: u32 = 8;

    fn core(threshold: u32) -> Plumtree<u32> {
        let mut config = BroadcastConfig::default();
        config.gossip.optimization_threshold = threshold;
        let mut c = Plumtree::new(ME, 1..=8, config, None);
        let mut out = Out::new();
        c.on_start(Duration::ZERO, &mut out);
        // The announcer becomes a lazy peer, the parent an eager one.
        c.on_message(Duration::ZERO, ANNOUNCER, GossipMsg::Prune, &mut out);
        c.on_message(
            Duration::ZERO,
            PARENT,
            GossipMsg::Graft { ids: Vec::new() },
            &mut out,
        );
        assert!(c.spread().lazy().contains(&ANNOUNCER));
        assert!(c.spread().eager().contains(&PARENT));
        c
    }

    fn id() -> MsgId<u32> {
        MsgId {
            origin: ORIGIN,
            seq: 1,
        }
    }

    fn gossip(hops: u32) -> GossipMsg<u32> {
        let stored = Stored {
            stamps: Stamps::default(),
            payload: vec![7],
        };
        let item = Item { id: id(), stored };
        GossipMsg::Gossip { item, hops }
    }

    fn ihave(hops: u32) -> GossipMsg<u32> {
        GossipMsg::IHave {
            ids: vec![(id(), hops)],
        }
    }

    /// Feeds `msgs` in order and returns the grafts and prunes sent.
    fn feed(c: &mut Plumtree<u32>, msgs: Vec<(u32, GossipMsg<u32>)>) -> Vec<(u32, GossipMsg<u32>)> {
        let mut sent = Vec::new();
        for (i, (from, msg)) in msgs.into_iter().enumerate() {
            let mut out = Out::new();
            c.on_message(Duration::from_millis(i as u64), from, msg, &mut out);
            sent.extend(
                out.sends
                    .into_iter()
                    .filter(|(_, m)| matches!(m, GossipMsg::Graft { .. } | GossipMsg::Prune)),
            );
        }
        sent
    }

    fn swapped(c: &Plumtree<u32>, sent: &[(u32, GossipMsg<u32>)]) -> bool {
        let swap = [
            (ANNOUNCER, GossipMsg::Graft { ids: Vec::new() }),
            (PARENT, GossipMsg::Prune),
        ];
        let links = c.spread().eager().contains(&ANNOUNCER)
            && c.spread().lazy().contains(&PARENT)
            && c.gossip_stats().swaps == 1;
        assert_eq!(links, sent == swap, "links and messages agree: {sent:?}");
        links
    }

    #[test]
    fn a_much_shallower_announcement_swaps_the_links() {
        let mut c = core(3);
        let sent = feed(&mut c, vec![(PARENT, gossip(5)), (ANNOUNCER, ihave(2))]);
        assert!(swapped(&c, &sent));
        // The new distance is the announcer's: a second announcement as
        // shallow swaps nothing more.
        let sent = feed(&mut c, vec![(4, GossipMsg::Prune), (4, ihave(2))]);
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(c.gossip_stats().swaps, 1);
    }

    #[test]
    fn an_announcement_below_the_threshold_swaps_nothing() {
        let mut c = core(3);
        let sent = feed(&mut c, vec![(PARENT, gossip(5)), (ANNOUNCER, ihave(3))]);
        assert!(!swapped(&c, &sent));
        assert!(c.spread().eager().contains(&PARENT));
        assert!(c.spread().lazy().contains(&ANNOUNCER));
    }

    #[test]
    fn an_announcement_that_came_first_swaps_when_the_tree_copy_arrives() {
        let mut c = core(3);
        let sent = feed(&mut c, vec![(ANNOUNCER, ihave(1)), (PARENT, gossip(4))]);
        assert!(swapped(&c, &sent));
    }

    #[test]
    fn threshold_zero_turns_the_optimisation_off() {
        let mut c = core(0);
        let sent = feed(&mut c, vec![(PARENT, gossip(50)), (ANNOUNCER, ihave(1))]);
        assert!(!swapped(&c, &sent));
    }

    #[test]
    fn a_message_learned_through_the_pass_is_announced_with_an_unknown_distance() {
        let mut c = core(3);
        let stored = Stored {
            stamps: Stamps::default(),
            payload: vec![7],
        };
        let mut out = Out::new();
        let push = GossipMsg::Push {
            digest: Vec::new(),
            items: vec![Item { id: id(), stored }],
            ask: false,
        };
        c.on_message(Duration::ZERO, PARENT, push, &mut out);
        let mut out = Out::new();
        c.on_timer(Duration::from_millis(50), GossipTimer::Spread, &mut out);
        let hops: Vec<u32> = out
            .sends
            .iter()
            .filter_map(|(_, m)| match m {
                GossipMsg::IHave { ids } => Some(ids.iter().map(|(_, h)| *h)),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!hops.is_empty());
        assert!(hops.iter().all(|h| *h == u32::MAX), "{hops:?}");
        // And a shallow announcement does not swap a link it did not use.
        let sent = feed(&mut c, vec![(ANNOUNCER, ihave(1))]);
        assert!(sent.is_empty(), "{sent:?}");
    }
}
