//! Rumor mongering (Demers et al., 1987), the **feedback + coin** variant,
//! backed by a slow anti-entropy pass.
//!
//! A member that learns a new message (broadcasts it, or receives it in any
//! way) makes it a *hot rumor*: it pushes it at once to
//! [`GossipConfig::fanout`] random live peers (not the one it got it from),
//! then every round ([`GossipConfig::period`]) to `fanout` random live
//! peers (all its hot rumors in one message per peer). A peer that already
//! had a rumor says so (feedback); each time that happens the pusher stops
//! spreading that rumor with probability [`GossipConfig::stop_probability`]
//! (`1/k`, a coin per useless contact). With `k = 1/p`, the fraction of
//! members a rumor never reaches satisfies `s = e^{-(k+1)(1-s)}` for large
//! groups (about 0.7 % for `k = 4`), and the rumor costs about
//! `(k+1)(1-s)` pushes per member, plus one feedback per useless push.
//!
//! Rumor mongering alone is probabilistic: a message reaches every member
//! only **with high probability** (the residue `s` above, and loss). So
//! every member also runs a slow **anti-entropy pass**
//! ([`GossipConfig::anti_entropy_period`], push-pull with one random live
//! peer, see [`super::epidemic`]) while it holds a message not known to be
//! stable or knows of one it lacks: with it, **every member that stays
//! connected eventually delivers** every message a member delivered. A
//! message learned through the pass is a new hot rumor.
//!
//! Guarantees (see the [family docs](super)): integrity (no duplication,
//! across restarts too; no creation); with the anti-entropy pass, validity
//! and uniform agreement for every member that stays connected, provided
//! no member misses a message for longer than the history
//! ([`GossipConfig::history_rounds`] rounds, then a message not known to
//! be stable is dropped). No order. Crash and restart: the delivered sets
//! and the buffer are durable, hot rumors are not (a restarted member stops
//! spreading them; the pass makes up for it). Partitions: each side
//! spreads what it has; the pass crosses once healed (rumors already cold
//! do not). Membership reports only decide whom to contact: a false
//! suspicion delays; a member reported down is not pushed to, so a rumor
//! may go cold without it (the pass still reaches it once it is up).

use std::collections::BTreeSet;

use rand::Rng;

use super::epidemic::{
    backing_pass, Cx, Epidemic, GossipConfig, GossipMsg, GossipTimer, Out, Pass, Spread, Store,
};
use super::MsgId;
use crate::MemberId;

/// Rumor mongering's own state: the hot rumors.
#[derive(Debug, Clone)]
pub struct Rumors<Id> {
    hot: BTreeSet<MsgId<Id>>,
    armed: bool,
}

impl<Id: MemberId> Rumors<Id> {
    /// The rumors this member is spreading.
    pub fn hot(&self) -> impl Iterator<Item = &MsgId<Id>> {
        self.hot.iter()
    }

    fn arm(&mut self, st: &Store<Id>, out: &mut Out<Id>) {
        if !self.armed && !self.hot.is_empty() {
            self.armed = true;
            out.set_timer(st.config().period, GossipTimer::Spread);
        }
    }
}

impl<Id: MemberId> Spread<Id> for Rumors<Id> {
    fn pass(config: &GossipConfig) -> Option<Pass> {
        backing_pass(config)
    }

    fn new(_: &Store<Id>) -> Self {
        Self {
            hot: BTreeSet::new(),
            armed: false,
        }
    }

    fn on_new(&mut self, cx: Cx<'_, Id>, id: &MsgId<Id>, from: Option<&Id>) {
        let Cx { st, out, .. } = cx;
        let Some(item) = st.item(id) else { return };
        self.hot.insert(id.clone());
        let fanout = st.config().fanout;
        for p in st.random_peers(fanout, from) {
            out.send(
                p,
                GossipMsg::Rumor {
                    items: vec![item.clone()],
                },
            );
        }
        self.arm(st, out);
    }

    fn on_message(&mut self, cx: Cx<'_, Id>, from: Id, msg: GossipMsg<Id>) {
        let Cx { st, now, out } = cx;
        match msg {
            GossipMsg::Rumor { items } => {
                let mut had = Vec::new();
                for item in items {
                    let id = item.id.clone();
                    if st.accept(item, Some(&from), now, out) {
                        let cx = Cx {
                            st: &mut *st,
                            now,
                            out: &mut *out,
                        };
                        self.on_new(cx, &id, Some(&from));
                    } else {
                        had.push(id);
                    }
                }
                if !had.is_empty() {
                    out.send(from, GossipMsg::Feedback { had });
                }
            }
            GossipMsg::Feedback { had } => {
                let p = st.config().stop_probability.clamp(0.0, 1.0);
                for id in had {
                    st.mark_known(&from, &id);
                    if self.hot.contains(&id) && st.rng().gen_bool(p) {
                        self.hot.remove(&id);
                        st.gossip_stats_mut().rumors_stopped += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: Cx<'_, Id>, timer: GossipTimer) {
        let Cx { st, out, .. } = cx;
        if timer != GossipTimer::Spread {
            return;
        }
        self.armed = false;
        // A rumor dropped from the buffer (stable, or too old) is cold.
        self.hot.retain(|id| st.item_exists(id));
        let items: Vec<_> = self.hot.iter().filter_map(|id| st.item(id)).collect();
        if items.is_empty() {
            return;
        }
        let fanout = st.config().fanout;
        for p in st.random_peers(fanout, None) {
            out.send(
                p,
                GossipMsg::Rumor {
                    items: items.clone(),
                },
            );
        }
        self.arm(st, out);
    }
}

/// Rumor mongering backed by anti-entropy (see the module docs).
pub type RumorMongering<Id> = Epidemic<Id, Rumors<Id>>;
