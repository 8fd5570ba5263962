//! The resource manager and the task that calls it.
//!
//! The worker (one local task per commit instance and node) listens to the
//! core's events: on [`CommitEvent::Prepare`] it runs
//! [`ResourceManager::prepare`] in a task of its own and answers the core
//! with the vote ([`CommitCore::vote`]); on [`CommitEvent::Decided`] of a
//! transaction this node takes part in it runs
//! [`ResourceManager::commit`] or [`ResourceManager::abort`]. Nothing the
//! manager does blocks the driver or the other transactions. A manager
//! whose `prepare` fails or panics votes no (the reason goes to the
//! coordinator, see `notes`).
//!
//! On start and whenever it fell behind the event stream, the worker reads
//! the core's transactions and catches up: it asks for the votes the core
//! still waits for, and hands the manager every decision of a participant
//! transaction it has not handed yet — after a restart, every decision in
//! the node's log again (at least once delivery). Once the manager's
//! `commit` / `abort` returned, the worker tells the core
//! ([`CommitCore::applied`]): only then may the core forget the decision
//! and drop it from its log (see "Forgetting" in
//! `troupe_protocols::commit`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::rc::Rc;

use tokio::sync::broadcast::error::RecvError;
use troupe_protocols::commit::{CommitCore, CommitEvent, CommitFamily, Decision, Phase, TxId};

use super::notes;
use crate::family::Instance;

/// What a participant node runs for the transactions it takes part in: the
/// local half of a transaction's work (a database, a ledger, an actor that
/// owns the data), identified by the transaction id the coordinator's
/// application handed it along with the work.
///
/// The calls run on the node's actix arbiter, each in a task of its own: a
/// slow manager delays only its own transaction's vote. To drive an actor,
/// forward the call: `async move { addr.send(Prepare(tx)).await... }`.
///
/// Contract:
/// - `prepare` answers `Ok(())` only if the manager can commit `tx` later
///   whatever happens (the transaction's effects are durable but not
///   visible, locks held); `Err(reason)` votes no and aborts the
///   transaction, `reason` reaching the coordinator's
///   [`super::Outcome::Aborted`]. A panic votes no too.
/// - `commit` / `abort` apply the decision. They may be called more than
///   once for a transaction (after a restart of the node every decision in
///   its log is handed over again), and `abort` may come for a transaction
///   never prepared here or while `prepare` still runs (the coordinator
///   gave up waiting): make both idempotent.
pub trait ResourceManager: 'static {
    /// Vote on `tx`: `Ok(())` yes, `Err(reason)` no.
    fn prepare(&self, tx: TxId) -> impl Future<Output = Result<(), String>>;
    /// `tx` committed: make its effects visible and durable.
    fn commit(&self, tx: TxId) -> impl Future<Output = ()>;
    /// `tx` aborted: undo whatever `prepare` kept.
    fn abort(&self, tx: TxId) -> impl Future<Output = ()>;
}

/// The worker's bookkeeping (one task, one thread).
#[derive(Default)]
struct Seen {
    preparing: HashSet<TxId>,
    delivered: HashSet<TxId>,
    /// Applied by the manager, not yet told to the core.
    applied: Vec<TxId>,
}

pub(crate) struct Worker<R> {
    pub(crate) instance: Instance<CommitFamily>,
    pub(crate) rm: Rc<R>,
    pub(crate) name: String,
    pub(crate) members: Vec<String>,
}

impl<R: ResourceManager> Worker<R> {
    /// Run until the node stops.
    pub(crate) fn spawn(self) {
        let node = self.instance.node().clone();
        let mut events = self.instance.subscribe();
        let this = Rc::new(self);
        let seen = Rc::new(RefCell::new(Seen::default()));
        actix_rt::spawn(async move {
            let run = async {
                this.catch_up(&seen).await;
                loop {
                    match events.recv().await {
                        Ok(CommitEvent::Prepare { tx }) => this.prepare(tx, &seen),
                        Ok(CommitEvent::Decided { tx, decision }) => {
                            this.decided(tx, decision, &seen)
                        }
                        Err(RecvError::Lagged(_)) => this.catch_up(&seen).await,
                        Err(RecvError::Closed) => return,
                    }
                }
            };
            tokio::select! {
                _ = run => {}
                _ = node.stopped() => {}
            }
        });
    }

    /// Ask for every vote the core waits for and hand over every decision
    /// not handed yet.
    async fn catch_up(self: &Rc<Self>, seen: &Rc<RefCell<Seen>>) {
        let txs = match self.instance.invoke(|c, _, _| c.transactions()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "commit worker cannot read the core");
                return;
            }
        };
        for (tx, s) in txs {
            if s.coordinator {
                continue;
            }
            match s.phase {
                Phase::Voting => self.prepare(tx, seen),
                Phase::Decided(d) => self.deliver(tx, d, seen),
                _ => {}
            }
        }
    }

    fn prepare(self: &Rc<Self>, tx: TxId, seen: &Rc<RefCell<Seen>>) {
        if !seen.borrow_mut().preparing.insert(tx) {
            return;
        }
        let this = self.clone();
        let seen = seen.clone();
        actix_rt::spawn(async move {
            let rm = this.rm.clone();
            let vote = match actix_rt::spawn(async move { rm.prepare(tx).await }).await {
                Ok(v) => v,
                Err(_) => Err("the resource manager panicked in prepare".to_string()),
            };
            if let Err(reason) = &vote {
                notes::tell_no_vote(this.instance.node(), &this.name, &this.members, tx, reason);
            }
            let yes = vote.is_ok();
            if let Err(e) = this
                .instance
                .invoke(move |c, now, out| c.vote(tx, yes, now, out))
                .await
            {
                tracing::warn!(tx, error = %e, "commit vote not delivered");
            }
            seen.borrow_mut().preparing.remove(&tx);
        });
    }

    /// A decision event: hand it over if this node is a participant (not
    /// its coordinator, which the id names: see `ids`).
    fn decided(self: &Rc<Self>, tx: TxId, d: Decision, seen: &Rc<RefCell<Seen>>) {
        let me = self.instance.node().name();
        if self
            .members
            .get(super::ids::coordinator_index(tx))
            .map(String::as_str)
            != Some(me)
        {
            self.deliver(tx, d, seen);
        }
    }

    /// Tell the core, in one command per batch, that the manager applied
    /// the decisions on `tx` (and those that finished meanwhile).
    fn applied(self: &Rc<Self>, tx: TxId, seen: &Rc<RefCell<Seen>>) {
        let first = {
            let mut s = seen.borrow_mut();
            s.applied.push(tx);
            s.applied.len() == 1
        };
        if !first {
            return;
        }
        let this = self.clone();
        let seen = seen.clone();
        actix_rt::spawn(async move {
            // Let the managers that finish in this turn join the batch.
            tokio::task::yield_now().await;
            let txs = {
                let mut s = seen.borrow_mut();
                let txs = std::mem::take(&mut s.applied);
                for tx in &txs {
                    // The core forgets it in time, and so does this.
                    s.delivered.remove(tx);
                }
                txs
            };
            let sent = this.instance.invoke_detached(move |c, now, out| {
                for tx in txs {
                    c.applied(tx, now, out);
                }
            });
            if let Err(e) = sent {
                // The core keeps the decisions (a restart hands them over
                // again).
                tracing::warn!(error = %e, "commit: applied not delivered");
            }
        });
    }

    /// Hand decision `d` on `tx` to the manager; once it applied it, tell
    /// the core (which may then forget it).
    fn deliver(self: &Rc<Self>, tx: TxId, d: Decision, seen: &Rc<RefCell<Seen>>) {
        if !seen.borrow_mut().delivered.insert(tx) {
            return;
        }
        let rm = self.rm.clone();
        let this = self.clone();
        let seen = seen.clone();
        actix_rt::spawn(async move {
            let applied = actix_rt::spawn(async move {
                match d {
                    Decision::Commit => rm.commit(tx).await,
                    Decision::Abort => rm.abort(tx).await,
                }
            })
            .await;
            if applied.is_err() {
                // Not applied: the core keeps the decision (a restart
                // hands it over again).
                tracing::error!(tx, ?d, "the resource manager panicked applying a decision");
                return;
            }
            this.applied(tx, &seen);
        });
    }
}
