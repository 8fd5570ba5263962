//! The live cluster dashboard: what each node knows, gathered from every
//! node of the cluster, pushed to a browser page.
//!
//! Every node started by [`crate::runtime::start_node`] runs an actor
//! [`DASHBOARD_ACTOR`] that answers [`GetNodeSnapshot`] over the node's
//! ordinary remote messages (QUIC, mutual TLS) with a [`NodeSnapshot`]:
//! membership as the node sees it (status, incarnation, phi), the
//! elections it takes part in (term, leader), its locks (held with which
//! fencing token, or waited for), its supervision tree with restart counts,
//! messages and bytes per peer (counters: the page turns them into rates),
//! the frames it sent and received lately (its [`LiveTraffic`] tap, on while
//! someone asked within [`WATCH_LEASE`]), and one panel per application that
//! contributes one ([`AppPanel`], declared by an app kind:
//! [`crate::app::AppKind::panel`]).
//!
//! The node's HTTP endpoint serves (see [`crate::http`]):
//!
//! - `GET /`: the dashboard page (one self-contained HTML file: no network
//!   beyond the node), unless `[http] dashboard = false`;
//! - `GET /v1/dashboard/snapshot`: one [`ClusterSnapshot`]: this node's
//!   snapshot and, asked in parallel over QUIC, every other member's that
//!   is not `Down` or `Left` (a member that does not answer within
//!   [`PEER_TIMEOUT`] is listed with the error);
//! - `GET /v1/dashboard/events`: the same, pushed as server-sent events
//!   (`data: <ClusterSnapshot JSON>`) every `every_ms` (query parameter,
//!   default [`DEFAULT_EVERY`], 100 ms at least), each carrying only the
//!   traffic events that are new since the previous one of the stream.
//!
//! `troupe dashboard --node URL` serves the same page from the operator's
//! machine for nodes that serve no page, reading their JSON.
//!
//! Guarantees: the dashboard only reads; asking for a snapshot changes
//! nothing in the protocols (its own asks are ordinary traffic, tagged
//! `troupe.dashboard.*`, and the page hides them). A node that is down,
//! slow or partitioned away shows as such and never stalls the others'
//! columns for more than [`PEER_TIMEOUT`]. Cost while nobody looks:
//! nothing but the idle actor; while someone looks: one snapshot per node
//! per push, and the live tap (see [`troupe_framework::live`]).

mod page;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::actix::prelude::*;
use troupe_framework::live::{wall_us, LiveEvent, LiveTraffic, LiveWatch};
use troupe_framework::membership::MemberStatus;
use troupe_framework::node::NodeStatsSnapshot;
use troupe_framework::{remote_message, ActorSpec, Node, TreeNode};

use crate::failure_detector::FailureDetectorHandle;
use crate::http::{LeaderReport, MemberReport};
use crate::Error;

pub use page::PAGE;

/// The name of every node's dashboard actor.
pub const DASHBOARD_ACTOR: &str = "troupe.dashboard";
/// How long a node keeps its live tap on after the last snapshot asked of it.
pub const WATCH_LEASE: Duration = Duration::from_secs(5);
/// How long a snapshot waits for another node's.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(800);
/// How often `/v1/dashboard/events` pushes by default.
pub const DEFAULT_EVERY: Duration = Duration::from_millis(500);
/// Traffic events one snapshot carries at most, per node.
pub const MAX_EVENTS: usize = 2000;

/// A panel an application shows on the dashboard: a title, label / value
/// pairs and an optional table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Panel {
    /// The panel's title (e.g. `kv: Raft`).
    pub title: String,
    /// Label / value pairs, shown in order.
    #[serde(default)]
    pub fields: Vec<(String, String)>,
    /// A table, if any.
    #[serde(default)]
    pub table: Option<PanelTable>,
}

/// A table in a [`Panel`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelTable {
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows, each as many cells as there are columns.
    pub rows: Vec<Vec<String>>,
}

impl Panel {
    /// A panel titled `title`, empty.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Add a label / value pair.
    pub fn field(mut self, label: impl Into<String>, value: impl ToString) -> Self {
        self.fields.push((label.into(), value.to_string()));
        self
    }

    /// Set the table.
    pub fn table(mut self, columns: &[&str], rows: Vec<Vec<String>>) -> Self {
        self.table = Some(PanelTable {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        });
        self
    }
}

/// What builds an app's [`Panel`] on a node, each time a snapshot is asked:
/// it reads the app's actors (asks them) and must not change anything.
pub type AppPanel =
    Arc<dyn Fn(Node) -> Pin<Box<dyn Future<Output = Result<Panel, String>>>> + Send + Sync>;

/// The applications' panels, by application name.
#[derive(Clone, Default)]
pub struct AppPanelRegistry {
    panels: BTreeMap<String, AppPanel>,
}

impl AppPanelRegistry {
    /// No panels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Show `panel` for app `app` (a second panel for the same app replaces
    /// the first).
    pub fn add(&mut self, app: &str, panel: AppPanel) {
        self.panels.insert(app.to_string(), panel);
    }

    /// The names of the apps with a panel, sorted.
    pub fn apps(&self) -> Vec<String> {
        self.panels.keys().cloned().collect()
    }
}

/// A lock as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    /// The locked resource.
    pub resource: String,
    /// The fencing token of the grant this node holds, if it holds it.
    pub holding: Option<u64>,
    /// True while this node waits for it.
    pub waiting: bool,
}

/// Messages and bytes exchanged with one peer since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// The peer's name.
    pub peer: String,
    /// Messages sent to it (tells, asks, replies).
    pub msgs_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Messages received from it.
    pub msgs_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
}

/// An application's panel on one node, or why it could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelReport {
    /// The application.
    pub app: String,
    /// Its panel.
    #[serde(default)]
    pub panel: Option<Panel>,
    /// Why there is none.
    #[serde(default)]
    pub error: Option<String>,
}

/// What one node knows (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The node's name.
    pub node: String,
    /// Its incarnation (32 hex digits).
    pub incarnation: String,
    /// Time since it started, ms.
    pub uptime_ms: u64,
    /// Its wall clock when it answered, µs since the Unix epoch.
    pub t_us: u64,
    /// Its failure detector.
    pub detector: String,
    /// The group as it sees it (itself not included).
    pub members: Vec<MemberReport>,
    /// The elections it takes part in.
    pub leaders: Vec<LeaderReport>,
    /// Its locks.
    pub locks: Vec<LockReport>,
    /// Its supervision tree (none if the root did not answer).
    pub tree: Option<TreeNode>,
    /// Messages and bytes per peer (counters since start).
    pub traffic: Vec<PeerTraffic>,
    /// Its frame counters.
    pub stats: NodeStatsSnapshot,
    /// Its live tap's events after the id asked for.
    pub events: Vec<LiveEvent>,
    /// The id the tap gives its next event (ask for events after
    /// `next_event - 1` next time).
    pub next_event: u64,
    /// Its applications' panels.
    pub panels: Vec<PanelReport>,
}

/// A node in a [`ClusterSnapshot`]: its snapshot, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// Its snapshot.
    #[serde(default)]
    pub snapshot: Option<NodeSnapshot>,
    /// Why there is none (`Down` in the view, no answer in time...).
    #[serde(default)]
    pub error: Option<String>,
}

/// The body of `GET /v1/dashboard/snapshot` and of each event of
/// `/v1/dashboard/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// The node that gathered it.
    pub gathered_by: String,
    /// Its wall clock then, µs since the Unix epoch.
    pub t_us: u64,
    /// Every node it knows of, itself first, then by name.
    pub nodes: Vec<NodeView>,
}

/// Ask a node's dashboard actor for its [`NodeSnapshot`], with its live
/// tap's events after `after` (an id; 0 for all it keeps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetNodeSnapshot {
    /// Events with a larger id only.
    pub after: u64,
}
remote_message!(
    GetNodeSnapshot,
    "troupe.dashboard.snapshot",
    Result<NodeSnapshot, String>
);

/// The dashboard actor of a node (see the module docs).
pub struct DashboardActor {
    node: Node,
    fd: FailureDetectorHandle,
    panels: AppPanelRegistry,
    watch: Option<(LiveWatch, tokio::time::Instant)>,
}

impl Actor for DashboardActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |this, _| {
            if this
                .watch
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > WATCH_LEASE)
            {
                this.watch = None;
            }
        });
    }
}

impl Handler<GetNodeSnapshot> for DashboardActor {
    type Result = ResponseFuture<Result<NodeSnapshot, String>>;
    fn handle(&mut self, m: GetNodeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let now = tokio::time::Instant::now();
        match &mut self.watch {
            Some((_, at)) => *at = now,
            None => self.watch = Some((self.node.live_traffic().watch(), now)),
        }
        let (node, fd, panels) = (self.node.clone(), self.fd.clone(), self.panels.clone());
        Box::pin(async move { Ok(node_snapshot(&node, &fd, &panels, m.after).await) })
    }
}

/// Start the dashboard actor [`DASHBOARD_ACTOR`] on `node`, under its root
/// supervisor, showing `panels`.
pub async fn start_dashboard(
    node: &Node,
    fd: FailureDetectorHandle,
    panels: AppPanelRegistry,
) -> Result<(), Error> {
    let n = node.clone();
    node.spawn(
        ActorSpec::new(DASHBOARD_ACTOR, move || DashboardActor {
            node: n.clone(),
            fd: fd.clone(),
            panels: panels.clone(),
            watch: None,
        })
        .handles::<GetNodeSnapshot>(),
    )
    .await?;
    Ok(())
}

/// What `node` knows now, with its tap's events after `after`.
pub async fn node_snapshot(
    node: &Node,
    fd: &FailureDetectorHandle,
    panels: &AppPanelRegistry,
    after: u64,
) -> NodeSnapshot {
    let members = crate::http::member_reports(node, fd)
        .await
        .unwrap_or_default();
    let leaders = crate::leader::running_elections(node)
        .await
        .into_iter()
        .map(|(election, l)| LeaderReport {
            election,
            term: l.term,
            leader: l.leader,
        })
        .collect();
    let locks = crate::lock::running_locks(node)
        .await
        .into_iter()
        .map(|(resource, v)| LockReport {
            resource,
            holding: v.holding,
            waiting: v.waiting,
        })
        .collect();
    let tree = node.supervision_tree().await.ok();
    let mut panel_reports = Vec::new();
    for (app, panel) in &panels.panels {
        let built = tokio::time::timeout(PEER_TIMEOUT, panel(node.clone())).await;
        let (panel, error) = match built {
            Ok(Ok(p)) => (Some(p), None),
            Ok(Err(e)) => (None, Some(e)),
            Err(_) => (None, Some(format!("no panel within {PEER_TIMEOUT:?}"))),
        };
        panel_reports.push(PanelReport {
            app: app.clone(),
            panel,
            error,
        });
    }
    let tap: &Arc<LiveTraffic> = node.live_traffic();
    let next_event = tap.next_id();
    NodeSnapshot {
        node: node.name().to_string(),
        incarnation: node.id().incarnation.simple().to_string(),
        uptime_ms: node.now().as_millis() as u64,
        t_us: wall_us(),
        detector: fd.kind().to_string(),
        members,
        leaders,
        locks,
        tree,
        traffic: peer_traffic(node),
        stats: node.stats(),
        events: tap.since(after, MAX_EVENTS),
        next_event,
        panels: panel_reports,
    }
}

/// Messages and bytes per peer, from the node's metrics (empty with
/// `[runtime] message_metrics = false`).
fn peer_traffic(node: &Node) -> Vec<PeerTraffic> {
    let mut by_peer: BTreeMap<String, PeerTraffic> = BTreeMap::new();
    for family in node.gather_metrics().into_vec() {
        let name = family.name();
        let slot: fn(&mut PeerTraffic) -> &mut u64 = match name {
            "troupe_messages_sent_total" => |t| &mut t.msgs_out,
            "troupe_sent_bytes_total" => |t| &mut t.bytes_out,
            "troupe_messages_received_total" => |t| &mut t.msgs_in,
            "troupe_received_bytes_total" => |t| &mut t.bytes_in,
            _ => continue,
        };
        for m in family.get_metric() {
            let Some(peer) = m
                .get_label()
                .iter()
                .find(|l| l.name() == "peer")
                .map(|l| l.value().to_string())
            else {
                continue;
            };
            let t = by_peer.entry(peer.clone()).or_insert_with(|| PeerTraffic {
                peer,
                ..PeerTraffic::default()
            });
            *slot(t) += m.get_counter().get_value() as u64;
        }
    }
    by_peer.into_values().collect()
}

/// A [`ClusterSnapshot`] gathered by `node`: its own snapshot and every
/// other member's that is not `Down` or `Left`, asked in parallel; events
/// after `after[name]` for each (0 when absent).
pub async fn cluster_snapshot(
    node: &Node,
    fd: &FailureDetectorHandle,
    panels: &AppPanelRegistry,
    after: &BTreeMap<String, u64>,
) -> ClusterSnapshot {
    let me = node.name().to_string();
    let mine = {
        // Through the actor when it runs, so its lease keeps the tap on.
        let after_me = after.get(&me).copied().unwrap_or(0);
        match ask_node(node, &me, after_me).await {
            Ok(s) => s,
            Err(_) => node_snapshot(node, fd, panels, after_me).await,
        }
    };
    let others: Vec<(String, MemberStatus)> = node
        .membership()
        .iter()
        .map(|(n, s)| (n.clone(), s))
        .collect();
    let asks = others.iter().map(|(name, status)| {
        let after = after.get(name).copied().unwrap_or(0);
        async move {
            let result = match status {
                MemberStatus::Down | MemberStatus::Left => {
                    Err(format!("{status:?} in {}'s view", node.name()))
                }
                _ => ask_node(node, name, after).await,
            };
            match result {
                Ok(s) => NodeView {
                    name: name.clone(),
                    snapshot: Some(s),
                    error: None,
                },
                Err(e) => NodeView {
                    name: name.clone(),
                    snapshot: None,
                    error: Some(e),
                },
            }
        }
    });
    let mut nodes = vec![NodeView {
        name: me.clone(),
        snapshot: Some(mine),
        error: None,
    }];
    nodes.extend(futures::future::join_all(asks).await);
    ClusterSnapshot {
        gathered_by: me,
        t_us: wall_us(),
        nodes,
    }
}

async fn ask_node(node: &Node, name: &str, after: u64) -> Result<NodeSnapshot, String> {
    let r = node
        .lookup::<GetNodeSnapshot>(&format!("{name}/{DASHBOARD_ACTOR}"))
        .map_err(|e| e.to_string())?;
    r.ask(GetNodeSnapshot { after })
        .timeout(PEER_TIMEOUT)
        .await
        .map_err(|e| format!("no snapshot: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_through_json() {
        let s = ClusterSnapshot {
            gathered_by: "a".into(),
            t_us: 5,
            nodes: vec![
                NodeView {
                    name: "a".into(),
                    snapshot: Some(NodeSnapshot {
                        node: "a".into(),
                        incarnation: "00".into(),
                        uptime_ms: 1,
                        t_us: 2,
                        detector: "swim".into(),
                        members: vec![],
                        leaders: vec![],
                        locks: vec![LockReport {
                            resource: "r".into(),
                            holding: Some(3),
                            waiting: false,
                        }],
                        tree: None,
                        traffic: vec![PeerTraffic {
                            peer: "b".into(),
                            msgs_out: 1,
                            ..PeerTraffic::default()
                        }],
                        stats: NodeStatsSnapshot::default(),
                        events: vec![],
                        next_event: 0,
                        panels: vec![PanelReport {
                            app: "kv".into(),
                            panel: Some(
                                Panel::new("kv")
                                    .field("leader", "a")
                                    .table(&["k"], vec![vec!["v".into()]]),
                            ),
                            error: None,
                        }],
                    }),
                    error: None,
                },
                NodeView {
                    name: "b".into(),
                    snapshot: None,
                    error: Some("Down".into()),
                },
            ],
        };
        let text = serde_json::to_string(&s).unwrap();
        let back: ClusterSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        // Between nodes, as the wire codec writes it (structs as arrays:
        // no field may be left out).
        let mut node = s.nodes[0].snapshot.clone().expect("built with one");
        node.members.push(MemberReport {
            name: "b".into(),
            status: MemberStatus::Down,
            incarnation: None,
            phi: Some(f64::INFINITY),
        });
        node.events.push(LiveEvent {
            id: 1,
            t_us: 2,
            ev: "deliver".into(),
            peer: "b".into(),
            seq: 3,
            kind: None,
            tag: None,
            bytes: None,
            cause: None,
            reason: None,
        });
        let bytes = rmp_serde::to_vec(&node).unwrap();
        let back: NodeSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, node);
    }
}
