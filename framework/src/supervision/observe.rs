//! What supervision lets the outside see: why a child exited
//! ([`ExitReason`]), the stream of [`SupervisionEvent`]s a node publishes,
//! and [`TreeNode`] snapshots of its supervision tree.
//!
//! Guarantees:
//! - every start, unexpected exit, restart and give-up seen by a supervisor
//!   of a node is published on that node's broadcast channel
//!   (`Node::supervision_events`), in the order that supervisor saw them, and
//!   recorded in the node's trace when it has one. A receiver more than 1024
//!   events behind loses the oldest and is told so (`RecvError::Lagged`);
//! - a child's exit reason tells a panic (with its message when the panic
//!   hook Troupe installs could capture it, otherwise `"panic"`) from an
//!   error passed to [`OrFail::or_fail`](super::OrFail::or_fail) (with the
//!   error's text) and from a plain stop. A panic is recognised while the
//!   actor's context is dropped during unwinding (`std::thread::panicking`);
//!   an `or_fail` error is noted under the actor's tokio task id and read
//!   back when the same task drops the actor, so concurrent actors on one
//!   thread do not mix up their reasons.
//!
//! Paths name a child by the names of the supervisors above it, from the
//! node's root supervisor down, without the root: `apps/counter/counter`.
//! The root supervisor itself has the empty path `""`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{GiveUp, Strategy};
use crate::trace::{TraceEvent, TraceSink};

/// Why a supervised child exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ExitReason {
    /// It stopped by itself (`ctx.stop()`, or its last address was dropped)
    /// without reporting an error.
    Stopped,
    /// A handler failed: the error it passed to
    /// [`OrFail::or_fail`](super::OrFail::or_fail).
    Failed {
        /// The error's text.
        error: String,
    },
    /// It panicked.
    Panicked {
        /// The panic message and where it was raised, or `"panic"` when it
        /// could not be captured (another panic hook replaced Troupe's).
        message: String,
    },
    /// A nested supervisor gave up: its children failed more often than its
    /// policy allows, and its policy escalates.
    GaveUp,
    /// Its supervisor stopped it: a sibling's restart under one-for-all or
    /// rest-for-one, a give-up, or a removal. Not a failure.
    Shutdown,
}

impl ExitReason {
    /// True for a failure (failed, panicked, gave up); false for a stop.
    /// A [`Restart::Transient`](super::Restart::Transient) child is
    /// restarted only after an abnormal exit.
    pub fn is_abnormal(&self) -> bool {
        matches!(
            self,
            ExitReason::Failed { .. } | ExitReason::Panicked { .. } | ExitReason::GaveUp
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Stopped => f.write_str("stopped by itself"),
            ExitReason::Failed { error } => write!(f, "failed: {error}"),
            ExitReason::Panicked { message } => write!(f, "panicked: {message}"),
            ExitReason::GaveUp => f.write_str("gave up (restart limit hit)"),
            ExitReason::Shutdown => f.write_str("stopped by its supervisor"),
        }
    }
}

/// One thing that happened in a node's supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionEvent {
    /// The child's path below the node's root supervisor, such as
    /// `apps/counter/counter`; `""` is the root supervisor itself.
    pub path: String,
    /// When, as time since the node started (virtual time in simulations).
    pub at: Duration,
    /// What happened.
    pub kind: SupervisionEventKind,
}

/// What a [`SupervisionEvent`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum SupervisionEventKind {
    /// The child was started by a supervisor that had not run it before
    /// (first start, or the first start by a fresh or wholly restarted
    /// supervisor).
    Started,
    /// The child exited. Reported for every exit its supervisor did not ask
    /// for, and with [`ExitReason::Shutdown`] when its supervisor stops it.
    Exited {
        /// Why.
        reason: ExitReason,
    },
    /// The child was started again by its supervisor, `delay` after the
    /// failure that caused it. For a supervisor that restarts its whole
    /// subtree after giving up ([`GiveUp::Restart`]), `attempt` counts those
    /// whole restarts.
    Restarted {
        /// The restart's number within the supervisor's intensity window.
        attempt: u32,
        /// The back-off waited before the restart.
        delay: Duration,
    },
    /// A supervisor hit its restart limit and gave up; `then` is what it did.
    GaveUp {
        /// Its policy's `on_give_up`.
        then: GiveUp,
    },
}

impl fmt::Display for SupervisionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.kind)
    }
}

impl fmt::Display for SupervisionEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisionEventKind::Started => f.write_str("started"),
            SupervisionEventKind::Exited { reason } => write!(f, "exited, {reason}"),
            SupervisionEventKind::Restarted { attempt, delay } => {
                write!(f, "restarted (attempt {attempt}, after {delay:?})")
            }
            SupervisionEventKind::GaveUp { then } => write!(f, "gave up, then {then}"),
        }
    }
}

/// Whether a [`TreeNode`] is a supervisor or an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TreeKind {
    /// A supervisor (it has children).
    Supervisor,
    /// A named actor.
    Actor,
}

/// The state of a child in a [`TreeNode`] snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildState {
    /// Started and running.
    Running,
    /// Exited; its supervisor restarts it after a back-off.
    Restarting,
    /// Not running, and its supervisor will not restart it on its own (it
    /// stopped normally as a transient child, or its supervisor gave up).
    Stopped,
    /// A supervisor that hit its restart limit and stays stopped
    /// ([`GiveUp::Stop`]).
    GaveUp,
}

impl std::fmt::Display for ChildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChildState::Running => "running",
            ChildState::Restarting => "restarting",
            ChildState::Stopped => "stopped",
            ChildState::GaveUp => "gave-up",
        })
    }
}

/// A snapshot of one node of a supervision tree (serializable, for the
/// node's HTTP endpoint and the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The child's name (the node's name for the root).
    pub name: String,
    /// Supervisor or actor.
    pub kind: TreeKind,
    /// A supervisor's strategy; `None` for an actor.
    pub strategy: Option<Strategy>,
    /// Times this child was restarted by its supervisor (plus, for a
    /// supervisor, the times it restarted its whole subtree after giving
    /// up). Counted since its supervisor started.
    pub restarts: u64,
    /// Running, restarting, stopped or gave up.
    pub state: ChildState,
    /// A supervisor's children, in start order (empty for an actor, and for
    /// a supervisor that is not running).
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The descendant at `path` (child names joined by `/`, relative to this
    /// node; `""` is this node).
    pub fn find(&self, path: &str) -> Option<&TreeNode> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |node, name| {
                node.children.iter().find(|c| c.name == name)
            })
    }
}

thread_local! {
    /// The message of the last panic raised on this thread (set by the hook).
    static LAST_PANIC: Cell<Option<String>> = const { Cell::new(None) };
    /// Exit reasons noted by actors before stopping, by tokio task id.
    static NOTED: RefCell<VecDeque<(tokio::task::Id, ExitReason)>> = const { RefCell::new(VecDeque::new()) };
}

/// Most noted reasons kept per thread: a reason noted by an actor that is
/// not supervised is never read back, and must not pile up.
const NOTED_MAX: usize = 64;

/// Install, once per process, a panic hook that remembers each panic's
/// message on its thread before calling the hook that was there before.
pub(crate) fn install_panic_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            let text = match info.location() {
                Some(at) => format!("{text} (at {at})"),
                None => text,
            };
            let _ = LAST_PANIC.try_with(|c| c.set(Some(text)));
            previous(info);
        }));
    });
}

/// Note why the actor running in the current task is about to stop; read
/// back by its exit guard.
pub(crate) fn note_exit(reason: ExitReason) {
    let Some(id) = tokio::task::try_id() else {
        return;
    };
    let _ = NOTED.try_with(|n| {
        let mut n = n.borrow_mut();
        n.retain(|(i, _)| *i != id);
        n.push_back((id, reason));
        while n.len() > NOTED_MAX {
            n.pop_front();
        }
    });
}

/// Why the actor whose context is being dropped right now exits.
pub(crate) fn exit_reason_now() -> ExitReason {
    let noted = tokio::task::try_id().and_then(|id| {
        NOTED
            .try_with(|n| {
                let mut n = n.borrow_mut();
                let at = n.iter().position(|(i, _)| *i == id)?;
                n.remove(at).map(|(_, r)| r)
            })
            .ok()
            .flatten()
    });
    if std::thread::panicking() {
        let message = LAST_PANIC
            .try_with(|c| c.take())
            .ok()
            .flatten()
            .unwrap_or_else(|| "panic".to_string());
        return ExitReason::Panicked { message };
    }
    noted.unwrap_or(ExitReason::Stopped)
}

/// Asks the node actor to stop because a subtree gave up with
/// [`GiveUp::StopNode`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct StopNode {
    /// The path of the supervisor that gave up.
    pub(crate) path: String,
}

/// Where a node's supervisors report: the event channel, the trace, and the
/// node actor (for [`GiveUp::StopNode`]).
pub(crate) struct Hub {
    node: String,
    events: broadcast::Sender<SupervisionEvent>,
    trace: Option<Arc<dyn TraceSink>>,
    epoch: tokio::time::Instant,
    stop_node: Option<Recipient<StopNode>>,
    /// A handle to the node, for actor factories that want it (weak inside:
    /// the node's state holds this hub).
    handle: std::sync::OnceLock<NodeLink>,
}

/// Gives a handle to the node while it lives.
pub(crate) type NodeLink = Box<dyn Fn() -> Option<crate::Node> + Send + Sync>;

impl Hub {
    /// The hub of node `node`, whose clock started at `epoch`.
    pub(crate) fn new(
        node: &str,
        epoch: tokio::time::Instant,
        trace: Option<Arc<dyn TraceSink>>,
        stop_node: Option<Recipient<StopNode>>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            node: node.to_string(),
            events,
            trace,
            epoch,
            stop_node,
            handle: std::sync::OnceLock::new(),
        }
    }

    /// Set once the node exists: how to reach it.
    pub(crate) fn link_node(&self, link: NodeLink) {
        let _ = self.handle.set(link);
    }

    /// The node, if it still runs.
    pub(crate) fn node(&self) -> Option<crate::Node> {
        self.handle.get().and_then(|f| f())
    }

    /// A receiver of every event published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.events.subscribe()
    }

    /// Log, broadcast and trace one event.
    pub(crate) fn publish(&self, path: &str, kind: SupervisionEventKind) {
        let event = SupervisionEvent {
            path: path.to_string(),
            at: self.epoch.elapsed(),
            kind,
        };
        let node = &self.node;
        match &event.kind {
            SupervisionEventKind::Started => tracing::debug!(%node, "{event}"),
            SupervisionEventKind::Exited {
                reason: ExitReason::Shutdown,
            } => tracing::debug!(%node, "{event}"),
            SupervisionEventKind::Exited { .. } => tracing::warn!(%node, "{event}"),
            SupervisionEventKind::Restarted { .. } => tracing::info!(%node, "{event}"),
            SupervisionEventKind::GaveUp { .. } => tracing::error!(%node, "{event}"),
        }
        if let Some(trace) = &self.trace {
            trace.record(
                node,
                TraceEvent::Supervision {
                    path: event.path.clone(),
                    event: event.kind.to_string(),
                },
            );
        }
        let _ = self.events.send(event);
    }

    /// Stop the node (a subtree gave up with [`GiveUp::StopNode`]).
    pub(crate) fn stop_node(&self, path: &str) {
        if let Some(to) = &self.stop_node {
            to.do_send(StopNode {
                path: path.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> TreeNode {
        TreeNode {
            name: name.into(),
            kind: TreeKind::Actor,
            strategy: None,
            restarts: 0,
            state: ChildState::Running,
            children: vec![],
        }
    }

    #[test]
    fn tree_nodes_serialize_in_kebab_case_and_are_found_by_path() {
        let tree = TreeNode {
            name: "node-a".into(),
            kind: TreeKind::Supervisor,
            strategy: Some(Strategy::RestForOne),
            restarts: 2,
            state: ChildState::GaveUp,
            children: vec![leaf("x"), leaf("y")],
        };
        let json = serde_json::to_value(&tree).unwrap();
        assert_eq!(json["kind"], "supervisor");
        assert_eq!(json["strategy"], "rest-for-one");
        assert_eq!(json["state"], "gave-up");
        assert_eq!(json["children"][1]["name"], "y");
        let back: TreeNode = serde_json::from_value(json).unwrap();
        assert_eq!(back, tree);
        assert_eq!(tree.find("").map(|n| n.name.as_str()), Some("node-a"));
        assert_eq!(tree.find("y").map(|n| n.name.as_str()), Some("y"));
        assert!(tree.find("y/z").is_none());
    }

    #[test]
    fn events_say_what_happened() {
        let e = SupervisionEvent {
            path: "apps/counter/counter".into(),
            at: Duration::from_millis(5),
            kind: SupervisionEventKind::Exited {
                reason: ExitReason::Failed {
                    error: "disk full".into(),
                },
            },
        };
        assert_eq!(
            e.to_string(),
            "apps/counter/counter: exited, failed: disk full"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"]["event"], "exited");
        assert_eq!(json["kind"]["reason"]["kind"], "failed");
        assert!(!ExitReason::Shutdown.is_abnormal());
        assert!(!ExitReason::Stopped.is_abnormal());
        assert!(ExitReason::GaveUp.is_abnormal());
    }
}
