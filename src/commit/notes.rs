//! Why a participant voted no: the core's vote carries only yes or no, so
//! a participant whose resource manager refuses also tells the reason to
//! the instance's notes actor (`commit-notes.<instance>`) on every other
//! member; the coordinator keeps the notes of the transactions it is
//! committing, for [`super::Transaction::commit`] to report.
//!
//! The note and the vote travel separately: the coordinator may decide
//! before the note arrives, so the waiter gives it a short grace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use troupe_framework::{remote_message, ActorSpec, Node, Sender};
use troupe_protocols::commit::TxId;

/// A participant's no vote on `tx`, with its resource manager's reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoVote {
    /// The transaction.
    pub tx: TxId,
    /// The resource manager's reason.
    pub reason: String,
}
remote_message!(NoVote, "troupe.commit.no-vote", ());

/// The notes actor's name for commit instance `instance`.
pub(crate) fn actor_name(instance: &str) -> String {
    format!("commit-notes.{instance}")
}

#[derive(Default)]
struct Inner {
    /// Transactions this node coordinates and waits for.
    waiting: BTreeSet<TxId>,
    /// The first no vote heard for each of them: (participant, reason).
    notes: BTreeMap<TxId, (String, String)>,
}

/// The notes of one instance on one node, shared by its actor and handles.
#[derive(Clone, Default)]
pub(crate) struct Notes {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl Notes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the notes about `tx` until [`Notes::forget`].
    pub(crate) fn watch(&self, tx: TxId) {
        self.lock().waiting.insert(tx);
    }

    /// Stop keeping notes about `tx`.
    pub(crate) fn forget(&self, tx: TxId) {
        let mut g = self.lock();
        g.waiting.remove(&tx);
        g.notes.remove(&tx);
    }

    fn record(&self, tx: TxId, participant: String, reason: String) {
        let mut g = self.lock();
        if g.waiting.contains(&tx) {
            g.notes.entry(tx).or_insert((participant, reason));
            drop(g);
            self.changed.notify_waiters();
        }
    }

    /// The no vote heard about `tx`, waiting for it at most `grace`.
    pub(crate) async fn no_vote(&self, tx: TxId, grace: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = self.changed.notified();
            if let Some(n) = self.lock().notes.get(&tx) {
                return Some(n.clone());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.lock().notes.get(&tx).cloned();
            }
        }
    }
}

/// The actor that receives [`NoVote`]s.
struct NotesActor {
    notes: Notes,
}

impl Actor for NotesActor {
    type Context = Context<Self>;
}

impl Handler<Sender<NoVote>> for NotesActor {
    type Result = ();
    fn handle(&mut self, m: Sender<NoVote>, _: &mut Context<Self>) {
        // The participant is the authenticated sender, not a payload field.
        self.notes
            .record(m.msg.tx, m.from.name.to_string(), m.msg.reason);
    }
}

/// Spawn the notes actor of `instance` on `node`, supervised under the node.
pub(crate) async fn spawn(node: &Node, instance: &str, notes: Notes) -> Result<(), crate::Error> {
    let spec = ActorSpec::new(actor_name(instance), move || NotesActor {
        notes: notes.clone(),
    })
    .handles_from::<NoVote>();
    node.spawn(spec).await?;
    Ok(())
}

/// Tell every member but this node that this node voted no on `tx`.
pub(crate) fn tell_no_vote(
    node: &Node,
    instance: &str,
    members: &[String],
    tx: TxId,
    reason: &str,
) {
    for m in members.iter().filter(|m| m.as_str() != node.name()) {
        let path = format!("{m}/{}", actor_name(instance));
        match node.lookup::<NoVote>(&path) {
            Ok(r) => {
                let _ = r.tell(NoVote {
                    tx,
                    reason: reason.to_string(),
                });
            }
            Err(e) => tracing::warn!(error = %e, "no-vote note to {path}"),
        }
    }
}
