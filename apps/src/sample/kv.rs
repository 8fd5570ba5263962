//! The `kv` app: a replicated key-value store on Raft ([`troupe::raft`],
//! the state machine [`KvStore`]), served by every node's HTTP endpoint.
//!
//! ```toml
//! [apps.kv]
//! members = ["n1", "n2", "n3"]  # optional; default: this node and all its peers
//! read_mode = "read-index"      # or "lease" (default read-index; see below)
//! election_min_ms = 300         # Raft's election timeout, drawn in [min, max) (default 300..600)
//! election_max_ms = 600
//! heartbeat_ms = 50             # the leader's heartbeat (default 50; under election_min_ms)
//! snapshot_after = 10000        # entries applied between snapshots (default 10000)
//! request_timeout_ms = 5000     # how long a request waits for its outcome (default 5000)
//! ```
//!
//! The replica group is named after the app (`[apps.NAME]`: Raft actor
//! `raft.NAME`); every member must run the app with the same name and
//! `members`, which must include the node itself. Raft's term, vote, log
//! and snapshots live in the node's durable store (`data_dir`), so a
//! killed node restarts with its replica.
//!
//! **Tree** (rest-for-one, below `apps/NAME`): the Raft driver `raft.NAME`,
//! then `kv`, the gateway: it answers the routes of its node and the
//! requests other nodes' gateways forward to it (so a node runs at most
//! one kv app).
//!
//! **Routes** on the node's HTTP endpoint (`/v1/<app>/...`):
//!
//! | route | answer |
//! |---|---|
//! | `PUT /v1/kv/{key}` `{"value":"v"}` | 200 `{"revision":N}` |
//! | `GET /v1/kv/{key}` | 200 `{"value":"v","revision":N}`, 404 when absent; linearizable (on the leader); `?consistency=stale` reads this node's replica |
//! | `POST /v1/kv/{key}/cas` `{"expected":"v" or null,"value":"w"}` | 200 `{"revision":N}` when the value was `expected` (null: absent), else 409 `{"error":"mismatch","value":<current or null>}` |
//! | `DELETE /v1/kv/{key}` | 200 `{"revision":N}` |
//! | `GET /v1/kv/_cluster` | the leader's view: `leader`, `term`, `commit`, `applied`, `answered_by`, and `members` (name, role, `match`: its match index) |
//!
//! A revision is the index of the log entry that wrote the value (for a
//! delete, of the deleting entry). A key is one path segment
//! (percent-encoded), at most [`MAX_KEY_BYTES`] bytes; `_cluster` is not a
//! key.
//!
//! **Any node serves any request.** The gateway tries its own replica; if
//! it does not lead, it forwards the request to the leader's gateway over
//! Troupe's remote asks (one hop; the leader answers from its replica),
//! and when no leader is known it waits for one, all within
//! `request_timeout_ms`. Writes are forwarded with a single send, never
//! re-sent: a re-sent copy reaching a leader that restarted in between
//! could be applied twice.
//!
//! **What an error means.**
//! - **503** (with `Retry-After: 1`): the operation was certainly **not**
//!   applied: no leader was found in time, the leader could not be asked
//!   (the request never left), the entry was replaced by another leader's,
//!   or this node's replica does not run. Send it again.
//! - **504** `{"error":"outcome unknown: ...","outcome":"unknown"}`: no
//!   outcome within the timeout (the leader was asked and did not answer,
//!   or lost track of the entry, or this node learned that the leader it
//!   forwarded to was replaced, which ends the wait at once): the write
//!   **may or may not** have been
//!   applied, and may still be. A read that timed out answers 504 too (a
//!   read changes nothing, so it can always be sent again).
//! - 400: a malformed body (naming the field), key or `Idempotency-Key`;
//!   422: an `Idempotency-Key` older than its client's last applied one.
//!
//! **`Idempotency-Key: <client>:<seq>`** on a write makes it a command of
//! Raft client session `client` with sequence number `seq`
//! ([`troupe::protocols::raft::Session`]): a write sent again with the
//! same key after an unknown outcome is applied at most once, and answers
//! what the first one did. A client numbers its writes in increasing `seq`
//! and sends the next only once the previous one has an answer; a `seq`
//! older than the client's last applied one is refused (422: its answer is
//! no longer kept). Sessions are part of the replicated state (in every
//! snapshot); the least recently used beyond 10,000 clients are forgotten.
//! The header is ignored on reads.
//!
//! **Reads.** A linearizable read (the default) runs on the leader with
//! ReadIndex: the leader confirms with a quorum that it still leads, then
//! answers once it has applied everything committed when the read began.
//! `read_mode = "lease"` skips that round trip while the leader holds a
//! lease, which is safe only while the nodes' clocks run at rates within
//! 10 % of each other (see `troupe_protocols::raft`). A stale read answers
//! from this node's replica as applied so far, with no round trip: it may
//! miss recent writes, and a node cut off from the leader serves old
//! values.
//!
//! Known limits: the members are fixed by the config (no membership change
//! over HTTP); a node runs at most one kv app.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use troupe::app::{check_members, AppContext, AppKind, AppSpec, ClusterInfo};
use troupe::dashboard::{AppPanel, Panel};
use troupe::framework::codec::RemoteError;
use troupe::framework::{AskError, RetryPolicy};
use troupe::http::actix_web::http::StatusCode;
use troupe::http::actix_web::{web, HttpRequest, HttpResponse};
use troupe::http::{ApiError, AppRoutes, HttpContext, Json};
use troupe::prelude::*;
use troupe::protocols::raft::kv::{KvCommand, KvReply, KvStore, Versioned};
use troupe::protocols::raft::{CommandError, RaftConfig, RaftStatus, ReadMode, Role, Session};
use troupe::raft::{prepare_raft, ProposeError, ReadError};

/// Actor name of the kv app's gateway (one per node).
pub const KV: &str = "kv";

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The header that makes a write a command of a Raft client session.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What a 503 asks the client to wait before sending again, in seconds.
const RETRY_AFTER_S: u32 = 1;

/// What a forwarded request leaves its origin to get the leader's answer
/// back before the origin's own deadline.
const FORWARD_MARGIN: Duration = Duration::from_millis(250);

/// The `[apps.kv]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSettings {
    /// The replica group (default: this node and all its peers).
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// How linearizable reads are served (default read-index).
    #[serde(default)]
    pub read_mode: ReadMode,
    /// The shortest election timeout, ms (default 300).
    #[serde(default = "default_election_min")]
    pub election_min_ms: u64,
    /// The longest election timeout (exclusive), ms (default 600).
    #[serde(default = "default_election_max")]
    pub election_max_ms: u64,
    /// The leader's heartbeat interval, ms (default 50).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Entries applied between two snapshots (default 10000).
    #[serde(default = "default_snapshot_after")]
    pub snapshot_after: u64,
    /// How long a request waits for its outcome, ms (default 5000).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
}

fn default_election_min() -> u64 {
    RaftConfig::default().election_min.as_millis() as u64
}
fn default_election_max() -> u64 {
    RaftConfig::default().election_max.as_millis() as u64
}
fn default_heartbeat() -> u64 {
    RaftConfig::default().heartbeat.as_millis() as u64
}
fn default_snapshot_after() -> u64 {
    RaftConfig::default().snapshot_after
}
fn default_request_timeout() -> u64 {
    troupe::raft::DEFAULT_TIMEOUT.as_millis() as u64
}

impl Default for KvSettings {
    fn default() -> Self {
        Self {
            members: None,
            read_mode: ReadMode::default(),
            election_min_ms: default_election_min(),
            election_max_ms: default_election_max(),
            heartbeat_ms: default_heartbeat(),
            snapshot_after: default_snapshot_after(),
            request_timeout_ms: default_request_timeout(),
        }
    }
}

impl KvSettings {
    /// Errors name the key, relative to the app's table.
    fn check(&self, cluster: &ClusterInfo) -> Result<(), String> {
        let at_least_1 = [
            ("election_min_ms", self.election_min_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("snapshot_after", self.snapshot_after),
            ("request_timeout_ms", self.request_timeout_ms),
        ];
        if let Some((key, _)) = at_least_1.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key}: must be at least 1"));
        }
        if self.election_max_ms <= self.election_min_ms {
            return Err(format!(
                "election_max_ms: must be greater than election_min_ms ({})",
                self.election_min_ms
            ));
        }
        if self.heartbeat_ms >= self.election_min_ms {
            return Err(format!(
                "heartbeat_ms: must be less than election_min_ms ({}): followers would \
                 start elections between two heartbeats",
                self.election_min_ms
            ));
        }
        if let Some(members) = &self.members {
            check_members(members, cluster)?;
            if !members.contains(&cluster.node) {
                return Err(format!(
                    "members: must include this node, {:?} (every member starts the group \
                     with the same members)",
                    cluster.node
                ));
            }
        }
        Ok(())
    }

    /// Raft's settings on `node`.
    fn raft_config(&self) -> RaftConfig {
        let ms = Duration::from_millis;
        RaftConfig {
            election_min: ms(self.election_min_ms),
            election_max: ms(self.election_max_ms),
            heartbeat: ms(self.heartbeat_ms),
            snapshot_after: self.snapshot_after,
            read_mode: self.read_mode,
            ..RaftConfig::default()
        }
    }
}

/// What a request asks of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAction {
    /// A linearizable read of a key (on the leader).
    Get {
        /// The key.
        key: String,
    },
    /// A read of this node's replica as applied so far (never forwarded).
    GetStale {
        /// The key.
        key: String,
    },
    /// A change, under a client session if any.
    Write {
        /// The change.
        command: KvCommand,
        /// The client session (`Idempotency-Key`).
        session: Option<Session>,
    },
}

/// A request to a node's gateway: from its routes, or forwarded by
/// another node's gateway (`hops` 1: then it is served here or refused,
/// never forwarded again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// What to do.
    pub action: KvAction,
    /// Times it was forwarded.
    pub hops: u8,
    /// How long it may take, ms.
    pub budget_ms: u64,
}
remote_message!(KvRequest, "troupe.kv.request", KvAnswer);

/// A gateway's answer (see the module docs for the HTTP status of each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAnswer {
    /// A read's value and revision (`None`: absent).
    Value(Option<Versioned>),
    /// A write was applied; its revision.
    Done {
        /// The revision.
        revision: u64,
    },
    /// A compare-and-set found another value; nothing changed.
    Mismatch {
        /// The current value (`None`: absent).
        current: Option<String>,
    },
    /// Certainly not applied (503).
    NotApplied {
        /// Why.
        reason: String,
        /// The leader, if one is known.
        leader: Option<String>,
    },
    /// May or may not have been applied (504).
    Unknown(String),
    /// The session's sequence number is older than its last applied one
    /// (422).
    StaleSession(String),
    /// The replica could not run the command (500).
    Failed(String),
}

/// This node's replica status, or the leader's when asked here with
/// `hops` 0 and another node leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKvStatus {
    /// Times it was forwarded.
    pub hops: u8,
}
remote_message!(
    GetKvStatus,
    "troupe.kv.status",
    Result<RaftStatus<String>, String>
);

/// One try on this node's replica: an answer, or "not the leader".
enum Try {
    Answer(KvAnswer),
    /// Not the leader (it names the one it knows): certainly not done.
    NotLeader(Option<String>),
    /// Certainly not done, for another reason; may work if tried again.
    Again(String),
}

/// The gateway's work (shared by its restarts).
struct Gateway {
    node: Node,
    replica: Replica<KvStore>,
    timeout: Duration,
}

impl Gateway {
    /// Serve `req` (see the module docs).
    async fn serve(&self, req: KvRequest) -> KvAnswer {
        let budget = Duration::from_millis(req.budget_ms).min(self.timeout);
        let deadline = Instant::now() + budget;
        let me = self.node.name().to_string();
        let mut why = String::from("no time left to serve it");
        let mut leader = None;
        // The leader a forwarded-to node named, which this node may not
        // know yet.
        let mut named: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return not_applied(why, leader);
            }
            let next = match self.here(&req.action, left).await {
                Try::Answer(a) => return a,
                Try::Again(reason) => {
                    why = reason;
                    None
                }
                Try::NotLeader(l) => {
                    why = match &l {
                        Some(l) => format!("{me} does not lead ({l} does)"),
                        None => format!("{me} knows no leader"),
                    };
                    leader = named.take().or(l);
                    leader.clone().filter(|l| *l != me)
                }
            };
            if req.hops > 0 {
                // Forwarded here: the origin decides what to do next.
                return not_applied(why, leader);
            }
            match next {
                Some(l) => match self.forward(&l, &req, deadline).await {
                    Ok(KvAnswer::NotApplied {
                        reason,
                        leader: hint,
                    }) => {
                        why = format!("{l}: {reason}");
                        named = hint.filter(|h| *h != l);
                    }
                    Ok(answer) => return answer,
                    Err(reason) => why = reason,
                },
                None if leader.is_none() => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let wait = left.min(Duration::from_secs(1));
                    let _ = self.replica.wait_leader(wait).await;
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(20))).await;
        }
    }

    /// One try on this node's replica, within `left`.
    async fn here(&self, action: &KvAction, left: Duration) -> Try {
        match action.clone() {
            KvAction::GetStale { key } => {
                match self.replica.read_local(move |s| s.get(&key).cloned()).await {
                    Ok(v) => Try::Answer(KvAnswer::Value(v)),
                    Err(e) => Try::Answer(not_applied(
                        format!("this node's replica does not answer: {e}"),
                        None,
                    )),
                }
            }
            KvAction::Get { key } => {
                let read = self
                    .replica
                    .read_within(move |s| s.get(&key).cloned(), left);
                match read.await {
                    Ok(v) => Try::Answer(KvAnswer::Value(v)),
                    Err(ReadError::NotLeader { leader }) => Try::NotLeader(leader),
                    Err(ReadError::LeadershipLost) => {
                        Try::Again("leadership was lost before the read was confirmed".into())
                    }
                    Err(ReadError::Failed(e)) => Try::Answer(KvAnswer::Unknown(e)),
                }
            }
            KvAction::Write { command, session } => {
                let proposed = self.replica.propose_within(command, session, left);
                match proposed.await {
                    Ok(KvReply::Done { revision }) => Try::Answer(KvAnswer::Done { revision }),
                    Ok(KvReply::Mismatch { current }) => {
                        Try::Answer(KvAnswer::Mismatch { current })
                    }
                    Err(ProposeError::NotLeader { leader }) => Try::NotLeader(leader),
                    Err(ProposeError::NotApplied(e)) => Try::Again(e),
                    Err(ProposeError::Unknown(e)) => Try::Answer(KvAnswer::Unknown(e)),
                    Err(ProposeError::Command(e @ CommandError::StaleSequence { .. })) => {
                        Try::Answer(KvAnswer::StaleSession(e.to_string()))
                    }
                    Err(ProposeError::Command(e)) => Try::Answer(KvAnswer::Failed(e.to_string())),
                }
            }
        }
    }

    /// Ask `leader`'s gateway to serve `req` before `deadline`: its answer
    /// (an unknown outcome when the ask may have reached it and got no
    /// answer), or why it certainly did not serve it.
    async fn forward(
        &self,
        leader: &str,
        req: &KvRequest,
        deadline: Instant,
    ) -> Result<KvAnswer, String> {
        let gateway = self
            .node
            .lookup::<KvRequest>(&format!("{leader}/{KV}"))
            .map_err(|e| format!("cannot address {leader}: {e}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let budget = left.saturating_sub(FORWARD_MARGIN);
        if budget.is_zero() {
            return Err(format!("no time left to ask the leader {leader}"));
        }
        let write = matches!(req.action, KvAction::Write { .. });
        let ask = gateway
            .ask(KvRequest {
                action: req.action.clone(),
                hops: req.hops + 1,
                budget_ms: budget.as_millis() as u64,
            })
            .timeout(left);
        // A write is sent once (see the module docs); a read may be re-sent.
        let ask = if write {
            ask.retry(RetryPolicy::none())
        } else {
            ask
        };
        // This replica learning of a newer term with another leader (or
        // none) means `leader` was deposed or is gone: waiting out the ask
        // would only hold the client until the timeout.
        let term = self.replica.view().term;
        let replaced = self.replica.wait_view(
            |v| v.term > term && v.leader.as_deref() != Some(leader),
            Duration::MAX,
        );
        let answer = tokio::select! {
            answer = ask => answer,
            Ok(v) = replaced => {
                let why = format!(
                    "the leader {leader} was replaced in term {} while the request was forwarded to it",
                    v.term
                );
                // A read is not a change: asking the new leader is safe.
                return if write {
                    Ok(KvAnswer::Unknown(why))
                } else {
                    Err(why)
                };
            }
        };
        match answer {
            Ok(answer) => Ok(answer),
            // The request never reached the leader's gateway.
            Err(
                e @ (AskError::Unreachable(_)
                | AskError::Remote(
                    RemoteError::UnknownActor(_)
                    | RemoteError::UnknownMessage(_)
                    | RemoteError::BadPayload(_)
                    | RemoteError::Overloaded(_)
                    | RemoteError::Refused(_),
                )),
            ) => Err(format!("the leader {leader} could not be asked: {e}")),
            // It may have: a timeout, a gateway that stopped while serving
            // it, a reply that does not decode, this node stopping.
            Err(e) => Ok(KvAnswer::Unknown(format!(
                "forwarded to the leader {leader}: {e}"
            ))),
        }
    }

    /// This replica's status, or the leader's (see [`GetKvStatus`]).
    async fn status(&self, hops: u8) -> Result<RaftStatus<String>, String> {
        let mine = self.replica.status().await.map_err(|e| e.to_string())?;
        if hops > 0 || mine.role == Role::Leader {
            return Ok(mine);
        }
        let Some(leader) = mine.leader.clone().filter(|l| *l != mine.id) else {
            return Ok(mine);
        };
        let asked = async {
            let gateway = self
                .node
                .lookup::<GetKvStatus>(&format!("{leader}/{KV}"))
                .map_err(|e| e.to_string())?;
            gateway
                .ask(GetKvStatus { hops: 1 })
                .timeout(self.timeout.min(Duration::from_secs(2)))
                .await
                .map_err(|e| e.to_string())?
        };
        // The leader's view when it answers; this node's otherwise.
        Ok(asked.await.unwrap_or(mine))
    }
}

fn not_applied(reason: String, leader: Option<String>) -> KvAnswer {
    KvAnswer::NotApplied { reason, leader }
}

/// The gateway actor.
struct GatewayActor(Arc<Gateway>);

impl Actor for GatewayActor {
    type Context = Context<Self>;
}

impl Handler<KvRequest> for GatewayActor {
    type Result = ResponseFuture<KvAnswer>;
    fn handle(&mut self, m: KvRequest, _: &mut Context<Self>) -> Self::Result {
        let gateway = self.0.clone();
        Box::pin(async move { gateway.serve(m).await })
    }
}

impl Handler<GetKvStatus> for GatewayActor {
    type Result = ResponseFuture<Result<RaftStatus<String>, String>>;
    fn handle(&mut self, m: GetKvStatus, _: &mut Context<Self>) -> Self::Result {
        let gateway = self.0.clone();
        Box::pin(async move { gateway.status(m.hops).await })
    }
}

/// The `kv` app kind.
pub struct KvKind;

impl KvKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "kv";
}

impl AppKind for KvKind {
    type Settings = KvSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &KvSettings, cluster: &ClusterInfo) -> Result<(), String> {
        s.check(cluster)
    }
    fn build(&self, ctx: &AppContext, s: KvSettings) -> Result<AppSpec, troupe::Error> {
        let members = s.members.clone().unwrap_or_else(|| ctx.members());
        let config = s.raft_config();
        let (driver, replica) = prepare_raft::<KvStore>(ctx.node(), ctx.name(), &members, config)?;
        let gateway = Arc::new(Gateway {
            node: ctx.node().clone(),
            replica,
            timeout: Duration::from_millis(s.request_timeout_ms),
        });
        Ok(AppSpec::new(ctx.name())
            .strategy(Strategy::RestForOne)
            .child(driver)
            .child(
                ActorSpec::new(KV, move || GatewayActor(gateway.clone()))
                    .handles::<KvRequest>()
                    .handles::<GetKvStatus>(),
            ))
    }
    fn routes(&self, s: &KvSettings) -> Option<AppRoutes> {
        Some(kv_routes(Duration::from_millis(s.request_timeout_ms)))
    }
    fn panel(&self, _: &KvSettings) -> Option<AppPanel> {
        Some(Arc::new(|node: Node| Box::pin(kv_panel(node))))
    }
}

/// The kv app's dashboard panel: this node's replica (role, term, leader,
/// commit and applied index) and, on the leader, each member's match index.
async fn kv_panel(node: Node) -> Result<Panel, String> {
    // `hops: 1`: this replica's own status, never forwarded.
    let s = super::ask_local(&node, KV, GetKvStatus { hops: 1 }, super::PANEL_TIMEOUT).await??;
    let rows = s
        .membership
        .members()
        .into_iter()
        .map(|m| {
            let role = if s.membership.is_voter(&m) {
                "voter"
            } else {
                "learner"
            };
            let matched = s.matched.get(&m).map_or("–".to_string(), u64::to_string);
            vec![m, role.to_string(), matched]
        })
        .collect();
    Ok(Panel::new("kv: Raft replica")
        .field("role", format!("{:?}", s.role))
        .field("term", s.term)
        .field("leader", s.leader.as_deref().unwrap_or("none known"))
        .field("commit index", s.commit)
        .field("applied", s.applied)
        .field("last log index", s.last_index)
        .field("snapshot index", s.snapshot_index)
        .table(&["member", "role", "match (leader only)"], rows))
}

/// The body of `PUT /v1/kv/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The new value.
    pub value: String,
}

/// The body of `POST /v1/kv/{key}/cas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasBody {
    /// The value the key must have, or null for absent (required).
    #[serde(deserialize_with = "Option::deserialize")]
    pub expected: Option<String>,
    /// The new value.
    pub value: String,
}

/// How a `GET` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// On the leader, after every write completed before the read began.
    #[default]
    Linearizable,
    /// This node's replica as applied so far.
    Stale,
}

/// The query of `GET /v1/kv/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// `linearizable` (default) or `stale`.
    #[serde(default)]
    pub consistency: Consistency,
}

/// How long a route waits for its gateway (the request's own timeout).
#[derive(Debug, Clone, Copy)]
struct RouteTimeout(Duration);

/// The kv app's routes (see the module docs); a request waits up to
/// `timeout` for its outcome.
pub fn kv_routes(timeout: Duration) -> AppRoutes {
    Arc::new(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(RouteTimeout(timeout)))
            .service(web::resource("/_cluster").get(cluster_route))
            .service(web::resource("/{key}/cas").post(body_route::<CasBody>))
            .service(
                web::resource("/{key}")
                    .get(get_route)
                    .put(body_route::<PutBody>)
                    .delete(delete_route),
            );
    })
}

/// The client session an `Idempotency-Key: <client>:<seq>` header names,
/// if there is one; a malformed one is a 400 naming the header.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<Session>, ApiError> {
    let Some(v) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("\u{fffd}");
    parse_session(text).map(Some).map_err(|why| {
        ApiError::bad_request(format!(
            "header {IDEMPOTENCY_KEY}: {why} (expected <client>:<seq>, e.g. app-7:42)"
        ))
        .with("header", IDEMPOTENCY_KEY)
    })
}

/// `<client>:<seq>`: a client id of 1 to 128 visible ASCII characters
/// and a sequence number (the part after the last `:`).
pub fn parse_session(text: &str) -> Result<Session, String> {
    let Some((client, seq)) = text.trim().rsplit_once(':') else {
        return Err(format!("{text:?} has no ':'"));
    };
    if client.is_empty() || client.len() > 128 || !client.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "client {client:?}: 1 to 128 visible ASCII characters"
        ));
    }
    let seq = seq
        .parse::<u64>()
        .map_err(|_| format!("sequence number {seq:?}: not a whole number"))?;
    Ok(Session {
        client: client.to_string(),
        seq,
    })
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "key: longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Ask this node's gateway to serve `action`.
async fn serve(
    ctx: &HttpContext,
    timeout: &RouteTimeout,
    action: KvAction,
) -> Result<KvAnswer, ApiError> {
    let node = ctx.node();
    let gateway = node
        .lookup::<KvRequest>(&format!("{}/{KV}", node.name()))
        .map_err(|e| kv_not_running(e.to_string()))?;
    let req = KvRequest {
        action,
        hops: 0,
        budget_ms: timeout.0.as_millis() as u64,
    };
    // The gateway answers within the budget; the margin is for a gateway
    // that hangs.
    gateway
        .ask(req)
        .timeout(timeout.0 + Duration::from_secs(2))
        .await
        .map_err(|e| match e {
            AskError::Remote(RemoteError::UnknownActor(_) | RemoteError::UnknownMessage(_)) => {
                kv_not_running(e.to_string())
            }
            other => unknown(format!("this node's kv gateway: {other}")),
        })
}

fn kv_not_running(e: String) -> ApiError {
    ApiError::unavailable(format!(
        "not applied: the kv app does not run on this node ({e})"
    ))
    .retry_after(RETRY_AFTER_S)
}

fn unknown(e: String) -> ApiError {
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, format!("outcome unknown: {e}"))
        .with("outcome", "unknown")
}

/// The HTTP answer for a gateway's answer about `key`.
pub fn respond(key: &str, answer: KvAnswer) -> Result<HttpResponse, ApiError> {
    match answer {
        KvAnswer::Value(Some(v)) => {
            Ok(HttpResponse::Ok().json(json!({ "value": v.value, "revision": v.revision })))
        }
        KvAnswer::Value(None) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, format!("no key {key:?}")).with("key", key))
        }
        KvAnswer::Done { revision } => Ok(HttpResponse::Ok().json(json!({ "revision": revision }))),
        KvAnswer::Mismatch { current } => {
            Err(ApiError::new(StatusCode::CONFLICT, "mismatch").with("value", current))
        }
        KvAnswer::NotApplied { reason, leader } => {
            Err(ApiError::unavailable(format!("not applied: {reason}"))
                .with("leader", leader)
                .retry_after(RETRY_AFTER_S))
        }
        KvAnswer::Unknown(e) => Err(unknown(e)),
        KvAnswer::StaleSession(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("header {IDEMPOTENCY_KEY}: {e}"),
        )
        .with("header", IDEMPOTENCY_KEY)),
        KvAnswer::Failed(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

async fn write(
    ctx: web::Data<HttpContext>,
    timeout: web::Data<RouteTimeout>,
    req: HttpRequest,
    key: String,
    command: impl FnOnce(String) -> KvCommand,
) -> Result<HttpResponse, ApiError> {
    check_key(&key)?;
    let session = idempotency_key(&req)?;
    let action = KvAction::Write {
        command: command(key.clone()),
        session,
    };
    respond(&key, serve(&ctx, &timeout, action).await?)
}

/// The JSON body of a write route, and the change it asks for.
trait WriteBody: serde::de::DeserializeOwned + 'static {
    fn command(self, key: String) -> KvCommand;
}

impl WriteBody for PutBody {
    fn command(self, key: String) -> KvCommand {
        KvCommand::Put {
            key,
            value: self.value,
        }
    }
}

impl WriteBody for CasBody {
    fn command(self, key: String) -> KvCommand {
        KvCommand::Cas {
            key,
            expected: self.expected,
            value: self.value,
        }
    }
}

/// `PUT /v1/kv/{key}` and `POST /v1/kv/{key}/cas`.
async fn body_route<B: WriteBody>(
    ctx: web::Data<HttpContext>,
    timeout: web::Data<RouteTimeout>,
    req: HttpRequest,
    key: web::Path<String>,
    body: Json<B>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    write(ctx, timeout, req, key.into_inner(), |key| body.command(key)).await
}

async fn delete_route(
    ctx: web::Data<HttpContext>,
    timeout: web::Data<RouteTimeout>,
    req: HttpRequest,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    write(ctx, timeout, req, key.into_inner(), |key| {
        KvCommand::Delete { key }
    })
    .await
}

async fn get_route(
    ctx: web::Data<HttpContext>,
    timeout: web::Data<RouteTimeout>,
    key: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    check_key(&key)?;
    let action = match query.consistency {
        Consistency::Linearizable => KvAction::Get { key: key.clone() },
        Consistency::Stale => KvAction::GetStale { key: key.clone() },
    };
    respond(&key, serve(&ctx, &timeout, action).await?)
}

async fn cluster_route(
    ctx: web::Data<HttpContext>,
    timeout: web::Data<RouteTimeout>,
) -> Result<web::Json<Value>, ApiError> {
    let node = ctx.node();
    let gateway = node
        .lookup::<GetKvStatus>(&format!("{}/{KV}", node.name()))
        .map_err(|e| kv_not_running(e.to_string()))?;
    let status = gateway
        .ask(GetKvStatus { hops: 0 })
        .timeout(timeout.0 + Duration::from_secs(2))
        .await
        .map_err(|e| kv_not_running(e.to_string()))?
        .map_err(kv_not_running)?;
    Ok(web::Json(cluster_json(&status)))
}

/// The `_cluster` answer for a replica's status.
pub fn cluster_json(s: &RaftStatus<String>) -> Value {
    let members: Vec<Value> = s
        .membership
        .members()
        .into_iter()
        .map(|m| {
            let role = if s.membership.is_voter(&m) {
                "voter"
            } else {
                "learner"
            };
            json!({ "name": m, "role": role, "match": s.matched.get(&m) })
        })
        .collect();
    json!({
        "leader": s.leader,
        "term": s.term,
        "commit": s.commit,
        "applied": s.applied,
        "answered_by": s.id,
        "role": s.role,
        "members": members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_a_client_and_a_sequence_number() {
        let s = parse_session("app-7:42").unwrap();
        assert_eq!((s.client.as_str(), s.seq), ("app-7", 42));
        // The sequence number follows the last ':'.
        let s = parse_session("host:9000:3").unwrap();
        assert_eq!((s.client.as_str(), s.seq), ("host:9000", 3));
        for (bad, says) in [
            ("nocolon", "has no ':'"),
            (":5", "client \"\""),
            ("a b:5", "client \"a b\""),
            ("app:", "sequence number \"\""),
            ("app:-1", "sequence number \"-1\""),
            ("app:1.5", "sequence number"),
        ] {
            let err = parse_session(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("{}:1", "c".repeat(129));
        assert!(parse_session(&long).is_err());
    }

    /// The status code, body and `Retry-After` of the answer to `a`.
    fn status_of(a: KvAnswer) -> (u16, Value, Option<String>) {
        use troupe::http::actix_web::{body, ResponseError};
        let r = match respond("k", a) {
            Ok(r) => r,
            Err(e) => e.error_response(),
        };
        let code = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(body::to_bytes(r.into_body()))
            .unwrap_or_else(|_| panic!("a body"));
        (code, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[test]
    fn only_certainly_not_applied_is_503_with_retry_after() {
        let v = Versioned {
            value: "x".into(),
            revision: 3,
        };
        assert_eq!(status_of(KvAnswer::Value(Some(v))).0, 200);
        assert_eq!(status_of(KvAnswer::Done { revision: 4 }).0, 200);
        let (code, body, retry) = status_of(KvAnswer::Value(None));
        assert_eq!((code, retry), (404, None), "{body}");
        let (code, body, _) = status_of(KvAnswer::Mismatch { current: None });
        assert_eq!(code, 409);
        assert_eq!(body["error"], "mismatch");
        assert!(body.get("value").is_some_and(Value::is_null), "{body}");
        let (code, body, retry) = status_of(not_applied("no leader".into(), None));
        assert_eq!((code, retry.as_deref()), (503, Some("1")), "{body}");
        assert!(body["error"].as_str().unwrap().starts_with("not applied"));
        let (code, body, retry) = status_of(KvAnswer::Unknown("timeout".into()));
        assert_eq!((code, retry), (504, None), "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .starts_with("outcome unknown"));
        assert_eq!(body["outcome"], "unknown");
        assert_eq!(status_of(KvAnswer::StaleSession("old".into())).0, 422);
        assert_eq!(status_of(KvAnswer::Failed("bug".into())).0, 500);
    }
}
