//! Cluster singleton: one instance of an actor in the cluster, on the
//! leader of an election, moved when the leader fails (Akka's cluster
//! singleton, Erlang's global registration with failover).
//!
//! ```ignore
//! let election = start_election(&node, ElectionAlgorithm::Bully, &members).await?;
//! let singleton = start_singleton(&node, &election, "ledger", |term| {
//!     ActorSpec::new("ledger", move || Ledger::new(term)).handles::<Deposit>()
//! })
//! .await?;
//! let ledger: SingletonProxy<Deposit> = singleton.proxy();
//! let balance = ledger.ask(Deposit { cents: 500 }, Duration::from_secs(1)).await?;
//! ```
//!
//! Every member runs the same [`start_singleton`] call. It starts a
//! **singleton manager** actor (`troupe.singleton.<name>`) on the node. The
//! manager watches the node's [`LeaderElection`]: when the election says
//! this node leads, it builds the child with the leader's term
//! (`build(term)`, so the instance can use the term as a fencing token) and
//! starts it under the node's [`SINGLETON_SUPERVISOR`]; as soon as the
//! election says anything else (another leader, or no leader while an
//! election runs) it stops the instance. The instance keeps running while
//! this node stays leader, across new terms it wins itself. A crashed
//! instance is restarted by its supervisor like any actor; a crashed
//! *node* takes its instance with it, and the next leader starts a fresh
//! one: **state is not carried over** (persist it, or rebuild it from the
//! other members, if it matters).
//!
//! A [`SingletonProxy<M>`] routes to `<leader>/<name>`, the leader being
//! the one the proxy's own node knows, i.e. the leader of the highest term
//! that node has heard of. While no leader is known:
//!
//! - [`SingletonProxy::tell`] **fails fast** with [`SingletonError::NoLeader`]
//!   (nothing is buffered: a tell is fire-and-forget and a silent buffer
//!   would hide the outage);
//! - [`SingletonProxy::ask`] **waits** within its own timeout for a leader
//!   and for the instance to be up there, then fails with
//!   [`SingletonError::NoLeader`] or [`SingletonError::Timeout`]. It re-sends
//!   only when the request cannot have run: the leader answered that no
//!   such actor runs there (not started yet, or already moved), or the
//!   request could not be handed to the network. If the leadership moves
//!   away from the node the request went to before it answers, the ask
//!   ends at once with [`SingletonError::LeaderChanged`]; after that, or
//!   after a timeout, the request may or may not have run, as for every
//!   ask, and the caller decides whether to ask again.
//!
//! # What "exactly one" means
//!
//! Honestly: **at most one instance per term, and at most one among the
//! nodes that agree on the term**, because the election elects at most one
//! leader per term and a manager runs the instance only while its node
//! believes it leads in the current term. It is *not* one instance in the
//! whole cluster at every instant:
//!
//! - Under a partition, bully and ring elections elect one leader per side
//!   (with different terms), so **two instances run**, one per side, until
//!   the partition heals; then the older term's leader hears of the newer
//!   term, steps down, and its instance is stopped.
//! - During a hand-over, the old leader may still run its instance for a
//!   moment after the new one started (until it hears of the new term);
//!   the two have different terms.
//! - A proxy routes to the leader of the highest term *its* node knows, so
//!   proxies on the majority side reach the newest instance, and a proxy
//!   cut off with a stale leader reaches the stale one. Work that must not
//!   be done twice should be fenced with the term the instance was built
//!   with (a resource that remembers the largest term it saw refuses the
//!   stale instance).
//! - Between the old leader's failure and the new election there is no
//!   instance at all (the time the failure detector and the election take).

use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use troupe_framework::actix::prelude::*;
use troupe_framework::codec::RemoteError;
use troupe_framework::supervision::ChildFactory;
use troupe_framework::{
    ActorSpec, AskError, GiveUp, Node, NodeError, RemoteMessage, SupervisorPolicy, SupervisorRef,
    SupervisorSpec, TellError,
};
pub use troupe_protocols::election::Leadership;

use crate::leader::LeaderElection;
use crate::Error;

/// The supervisor (under the node's root) that singleton instances run under.
pub const SINGLETON_SUPERVISOR: &str = "singletons";
/// How often a waiting [`SingletonProxy::ask`] looks again for the instance.
pub const PROXY_RETRY: Duration = Duration::from_millis(20);

/// The manager actor's name for singleton `name`.
pub fn manager_name(name: &str) -> String {
    format!("troupe.singleton.{name}")
}

/// Why a [`SingletonProxy`] could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SingletonError {
    /// No leader is known (an election is running, or nobody can be
    /// elected), so there is no instance to route to.
    #[error("singleton {name:?}: no leader known, so no instance to route to")]
    NoLeader {
        /// The singleton.
        name: String,
    },
    /// No answer within the timeout: the request may or may not have run.
    #[error(
        "singleton {name:?}: no answer within {after:?} (the request may or may not have run)"
    )]
    Timeout {
        /// The singleton.
        name: String,
        /// The timeout.
        after: Duration,
    },
    /// The leadership moved away from the node the ask was sent to before
    /// it answered (that node failed, or lost an election): the request
    /// may or may not have run there. Asking again reaches the new leader's
    /// instance (a fresh one, when the old node failed); whether that is
    /// safe is the caller's call (it is for idempotent messages).
    #[error("singleton {name:?}: the leadership moved from {from:?} (now {now:?}) before it answered (the request may or may not have run)")]
    LeaderChanged {
        /// The singleton.
        name: String,
        /// Where the request went.
        from: String,
        /// The leadership now.
        now: Leadership,
    },
    /// The tell could not be sent to the instance's node.
    #[error("singleton {name:?} on {node:?}: {error}")]
    Tell {
        /// The singleton.
        name: String,
        /// Where it was believed to run.
        node: String,
        /// Why.
        error: TellError,
    },
    /// The ask failed otherwise (the instance answered an error...).
    #[error("singleton {name:?} on {node:?}: {error}")]
    Ask {
        /// The singleton.
        name: String,
        /// Where it was believed to run.
        node: String,
        /// Why.
        error: AskError,
    },
}

type Build = Arc<dyn Fn(u64) -> Arc<dyn ChildFactory> + Send + Sync>;

/// A singleton started on this node by [`start_singleton`]. Cheap to clone.
#[derive(Clone)]
pub struct Singleton {
    node: Node,
    election: LeaderElection,
    name: String,
    running: watch::Receiver<Option<u64>>,
}

/// Start the manager of singleton `name` on `node`, driven by `election`
/// (an election this node takes part in). Call it on every member, with
/// the same `name` and `build`. `build(term)` makes the child to start
/// when this node leads in `term`: an [`ActorSpec`] (or a
/// [`SupervisorSpec`]) whose name is `name`.
pub async fn start_singleton<C, F>(
    node: &Node,
    election: &LeaderElection,
    name: &str,
    build: F,
) -> Result<Singleton, Error>
where
    C: ChildFactory,
    F: Fn(u64) -> C + Send + Sync + 'static,
{
    troupe_framework::ids::validate_name(name).map_err(NodeError::from)?;
    let check = build(0);
    if check.name() != name {
        return Err(Error::Config(format!(
            "singleton {name:?}: its builder made a child named {:?}; it must be named {name:?}",
            check.name()
        )));
    }
    drop(check);
    let build: Build = Arc::new(move |term| Arc::new(build(term)) as Arc<dyn ChildFactory>);
    let (tx, rx) = watch::channel(None);
    let tx = Arc::new(tx);
    let (n, e, s) = (node.clone(), election.clone(), name.to_string());
    node.spawn(ActorSpec::new(manager_name(name), move || Manager {
        node: n.clone(),
        election: e.clone(),
        name: s.clone(),
        build: build.clone(),
        running: tx.clone(),
    }))
    .await?;
    Ok(Singleton {
        node: node.clone(),
        election: election.clone(),
        name: name.to_string(),
        running: rx,
    })
}

impl Singleton {
    /// The singleton's name (its actor name on the leader).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The term the instance on *this* node was started in, if one runs here.
    pub fn running_here(&self) -> Option<u64> {
        *self.running.borrow()
    }

    /// A receiver that sees the instance on this node start (`Some(term)`)
    /// and stop (`None`).
    pub fn watch_here(&self) -> watch::Receiver<Option<u64>> {
        self.running.clone()
    }

    /// A proxy for messages of type `M` (which the singleton must handle).
    pub fn proxy<M: RemoteMessage>(&self) -> SingletonProxy<M> {
        SingletonProxy::new(&self.node, &self.election, &self.name)
    }
}

/// Re-evaluate: start or stop the local instance.
#[derive(Message)]
#[rtype(result = "()")]
struct Reconcile;

/// The singleton manager of one node (see the module docs).
struct Manager {
    node: Node,
    election: LeaderElection,
    name: String,
    build: Build,
    /// The term the local instance was started in; kept across restarts of
    /// the manager (the instance is not the manager's child).
    running: Arc<watch::Sender<Option<u64>>>,
}

impl Manager {
    fn supervisor(&self) -> SupervisorRef {
        self.node.root_supervisor().child(SINGLETON_SUPERVISOR)
    }
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A restarted manager keeps what it knew (`running` outlives it):
        // the next reconcile stops an instance that must not run (stopping
        // one that is gone is harmless) and adopts one that already runs
        // under the singleton supervisor.
        let mut changes = self.election.watch();
        let me = ctx.address();
        ctx.spawn(
            async move {
                me.do_send(Reconcile);
                while changes.changed().await.is_ok() {
                    me.do_send(Reconcile);
                }
            }
            .into_actor(self),
        );
        // A safety net for a start or stop that failed (a supervisor
        // restarting, a name not yet released).
        ctx.run_interval(Duration::from_secs(1), |_, ctx| {
            ctx.notify(Reconcile);
        });
    }
}

impl Handler<Reconcile> for Manager {
    type Result = ();
    fn handle(&mut self, _: Reconcile, ctx: &mut Context<Self>) {
        // Read the newest leadership here, not the one of the message:
        // queued notifications then cost nothing.
        let now = self.election.current();
        let leads = now.leader.as_deref() == Some(self.node.name());
        let running = *self.running.borrow();
        let (node, name, sup) = (self.node.clone(), self.name.clone(), self.supervisor());
        match (leads, running) {
            (true, None) => {
                let child = (self.build)(now.term);
                let policy = SupervisorPolicy {
                    on_give_up: GiveUp::Restart,
                    ..SupervisorPolicy::default()
                };
                let fut = async move {
                    let sup = node
                        .root_supervisor()
                        .ensure_supervisor(SupervisorSpec::new(SINGLETON_SUPERVISOR, policy))
                        .await?;
                    match sup.spawn_arc(child).await {
                        // Ours already, under the singleton supervisor (a
                        // restarted manager): adopt it.
                        Err(NodeError::NameTaken(taken))
                            if sup.tree().await?.children.iter().any(|c| c.name == taken) =>
                        {
                            Ok(())
                        }
                        other => other,
                    }
                };
                // `wait`: nothing else is handled until the start is done.
                ctx.wait(fut.into_actor(self).map(move |r, this, _| match r {
                    Ok(()) => {
                        tracing::info!(node = %this.node.name(), singleton = %this.name, term = now.term, "singleton started here (this node leads)");
                        this.running.send_replace(Some(now.term));
                    }
                    Err(e) => {
                        tracing::warn!(node = %this.node.name(), singleton = %this.name, error = %e, "singleton not started; will try again");
                    }
                }));
            }
            (false, Some(term)) => {
                let fut = async move { sup.stop_child(&name).await };
                ctx.wait(fut.into_actor(self).map(move |r, this, _| match r {
                    Ok(_) => {
                        tracing::info!(node = %this.node.name(), singleton = %this.name, started_in = term, now = ?now, "singleton stopped here (this node no longer leads)");
                        this.running.send_replace(None);
                    }
                    Err(e) => {
                        tracing::warn!(node = %this.node.name(), singleton = %this.name, error = %e, "singleton not stopped; will try again");
                    }
                }));
            }
            _ => {}
        }
    }
}

/// A handle that routes messages of type `M` to wherever the singleton
/// runs (see the module docs for what happens while there is no leader).
/// Cheap to clone.
pub struct SingletonProxy<M> {
    node: Node,
    election: LeaderElection,
    name: String,
    _m: PhantomData<fn(M)>,
}

impl<M> Clone for SingletonProxy<M> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            election: self.election.clone(),
            name: self.name.clone(),
            _m: PhantomData,
        }
    }
}

impl<M: RemoteMessage> SingletonProxy<M> {
    /// A proxy from `node` to singleton `name`, routed by `election` (the
    /// node's election that the singleton's managers follow).
    pub fn new(node: &Node, election: &LeaderElection, name: &str) -> Self {
        Self {
            node: node.clone(),
            election: election.clone(),
            name: name.to_string(),
            _m: PhantomData,
        }
    }

    /// The current leadership as this proxy's node knows it: where messages go.
    pub fn leadership(&self) -> Leadership {
        self.election.current()
    }

    /// Send `msg` to the instance on the current leader. Fails fast with
    /// [`SingletonError::NoLeader`] while no leader is known. Like every
    /// tell, success means handed to the network, not delivered (the
    /// instance may be moving).
    pub fn tell(&self, msg: M) -> Result<(), SingletonError> {
        let leader = self
            .election
            .current()
            .leader
            .ok_or_else(|| SingletonError::NoLeader {
                name: self.name.clone(),
            })?;
        let tell_err = |error: TellError| SingletonError::Tell {
            name: self.name.clone(),
            node: leader.clone(),
            error,
        };
        let target = self
            .node
            .lookup::<M>(&format!("{leader}/{}", self.name))
            .map_err(|e| tell_err(TellError::Local(RemoteError::Refused(e.to_string()))))?;
        target.tell(msg).map_err(tell_err)
    }

    /// Ask the instance on the current leader, waiting at most `timeout`
    /// in all (for a leader, for the instance to start there, and for the
    /// answer). See the module docs for when it re-sends.
    pub async fn ask(&self, msg: M, timeout: Duration) -> Result<M::Reply, SingletonError>
    where
        M: Clone,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.election.watch();
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(match self.election.current().leader {
                    None => SingletonError::NoLeader {
                        name: self.name.clone(),
                    },
                    Some(_) => SingletonError::Timeout {
                        name: self.name.clone(),
                        after: timeout,
                    },
                });
            }
            let remaining = deadline - now;
            let Some(leader) = self.election.current().leader else {
                // Wait for a leader (or the deadline).
                wait_change(&mut changes, remaining).await;
                continue;
            };
            let ask_err = |error: AskError| SingletonError::Ask {
                name: self.name.clone(),
                node: leader.clone(),
                error,
            };
            let target = self
                .node
                .lookup::<M>(&format!("{leader}/{}", self.name))
                .map_err(|e| ask_err(AskError::Remote(RemoteError::Refused(e.to_string()))))?;
            // Sent to `leader`; if the election moves on to another leader
            // meanwhile, that instance is gone or stale: say so now rather
            // than at the deadline.
            let asked = target.ask(msg.clone()).timeout(remaining).into_future();
            let moved = async {
                loop {
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let l = self.election.current();
                    if l.leader.as_deref() != Some(leader.as_str()) {
                        return l;
                    }
                }
            };
            let answer = tokio::select! {
                answer = asked => answer,
                now = moved => {
                    return Err(SingletonError::LeaderChanged {
                        name: self.name.clone(),
                        from: leader.clone(),
                        now,
                    })
                }
            };
            match answer {
                Ok(reply) => return Ok(reply),
                // Not run: the instance is not (or no longer) there, or the
                // request never left. Look again shortly.
                Err(AskError::Remote(RemoteError::UnknownActor(_)) | AskError::Unreachable(_)) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    wait_change(&mut changes, PROXY_RETRY.min(left)).await;
                }
                Err(AskError::Timeout(_)) => {
                    return Err(SingletonError::Timeout {
                        name: self.name.clone(),
                        after: timeout,
                    })
                }
                Err(e) => return Err(ask_err(e)),
            }
        }
    }
}

/// Wait for a change of leadership, at most `at_most`.
async fn wait_change(changes: &mut watch::Receiver<Leadership>, at_most: Duration) {
    if let Ok(Err(_)) = tokio::time::timeout(at_most, changes.changed()).await {
        // The election is gone: no change will come; do not spin.
        tokio::time::sleep(at_most.min(PROXY_RETRY)).await;
    }
}
