//! `GET /v1/status`: what the node knows about itself and its group, as
//! [`StatusReport`] (serialized to JSON; the same types deserialize it, for
//! `troupe status` and tests).

use actix_web::web;
use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberStatus;
use troupe_framework::node::NodeStatsSnapshot;
use troupe_framework::storage::StoreStats;
use troupe_framework::{ChildState, TreeNode};

use super::{ApiError, HttpContext};
use crate::failure_detector::current_lives;

/// The body of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's name.
    pub node: String,
    /// Its incarnation: 32 hex digits, new at every start of the process.
    pub incarnation: String,
    /// Time since the node started, in ms.
    pub uptime_ms: u64,
    /// The failure detector that feeds membership (`heartbeat`,
    /// `phi-accrual`, `swim`).
    pub detector: String,
    /// The group as this node sees it, by name (this node not included).
    pub members: Vec<MemberReport>,
    /// The node's applications (`crate::app`), in start order, with their
    /// state; empty when it runs none.
    pub apps: Vec<AppState>,
    /// The elections this node takes part in (actors `election` and
    /// `election.<name>`), with the term and leader it knows; empty when it
    /// runs none.
    pub leaders: Vec<LeaderReport>,
    /// The node's traffic and bad-input counters.
    pub stats: NodeStatsSnapshot,
    /// The node's durable store: where it is (a file, or `memory`) and its
    /// counters (syncs, and submissions per sync: the group commit).
    #[serde(default)]
    pub store: StoreReport,
    /// The endpoint's own counters (this request included).
    pub http: HttpCountersSnapshot,
}

/// One member of the group as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The member's node name.
    pub name: String,
    /// Its status in the node's membership view (what protocols act on):
    /// `Joining` (configured, not heard from yet), `Up`, `Suspect` (SWIM's
    /// and the heartbeat detectors' suspicion), `Down` or `Left`.
    pub status: MemberStatus,
    /// The incarnation the detector last heard from (32 hex digits), or
    /// null before first contact.
    pub incarnation: Option<String>,
    /// Its phi now (phi-accrual only, null with the other detectors): a
    /// number, or the string `"inf"` once the member has been silent far
    /// past the threshold.
    #[serde(with = "phi_json")]
    pub phi: Option<f64>,
}

/// An application and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// The application's name.
    pub name: String,
    /// Its state (`running`, `restarting`, `stopped`, `gave-up`).
    pub state: ChildState,
    /// Times it was restarted as a whole.
    pub restarts: u64,
}

/// An election and what this node knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReport {
    /// The election's name.
    pub election: String,
    /// The term this node is in.
    pub term: u64,
    /// The leader of that term, if this node knows one.
    pub leader: Option<String>,
}

/// The node's durable store.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoreReport {
    /// The database file, or `memory`.
    pub location: String,
    /// Its counters.
    pub stats: StoreStats,
}

/// The endpoint's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpCountersSnapshot {
    /// Requests received (routed or refused).
    pub requests: u64,
    /// Requests refused with a 4xx, by kind.
    pub rejected: Rejected,
    /// Requests answered with a 5xx.
    pub server_errors: u64,
}

/// Requests refused, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rejected {
    /// 400: a body that does not parse or fit.
    pub bad_request: u64,
    /// 401: a missing or wrong bearer token.
    pub unauthorized: u64,
    /// 404: no such route.
    pub not_found: u64,
    /// 405: the route does not take that method.
    pub method_not_allowed: u64,
    /// 413: a body over `[http] max_body_bytes`.
    pub payload_too_large: u64,
    /// 415: a JSON body without `Content-Type: application/json`.
    pub unsupported_media_type: u64,
    /// Any other 4xx.
    pub other: u64,
}

impl Rejected {
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.bad_request
            + self.unauthorized
            + self.not_found
            + self.method_not_allowed
            + self.payload_too_large
            + self.unsupported_media_type
            + self.other
    }
}

/// The group as `node` sees it: each member's status in the membership
/// view, with the incarnation and phi of the life its failure detector
/// `fd` counts as current. An error (for a 503) when the detector does not
/// answer.
pub async fn member_reports(
    node: &troupe_framework::Node,
    fd: &crate::failure_detector::FailureDetectorHandle,
) -> Result<Vec<MemberReport>, String> {
    let detected = fd
        .members()
        .await
        .map_err(|e| format!("the failure detector does not answer: {e}"))?;
    let lives = current_lives(detected);
    Ok(node
        .membership()
        .iter()
        .map(|(name, status)| {
            let life = lives.get(name);
            MemberReport {
                name: name.clone(),
                status,
                incarnation: life
                    .filter(|l| !l.id.incarnation.is_nil())
                    .map(|l| l.id.incarnation.simple().to_string()),
                phi: life.and_then(|l| l.phi),
            }
        })
        .collect())
}

/// `GET /v1/status`.
pub(super) async fn status(
    ctx: web::Data<HttpContext>,
) -> Result<web::Json<StatusReport>, ApiError> {
    let node = ctx.node();
    let members = member_reports(node, ctx.failure_detector())
        .await
        .map_err(ApiError::unavailable)?;
    let shared = &ctx.shared;
    let apps = crate::app::list_apps(node)
        .await
        .map_err(|e| ApiError::unavailable(format!("the apps supervisor does not answer: {e}")))?
        .into_iter()
        .map(|a| AppState {
            name: a.name,
            state: a.state,
            restarts: a.restarts,
        })
        .collect();
    let leaders = crate::leader::running_elections(node)
        .await
        .into_iter()
        .map(|(election, l)| LeaderReport {
            election,
            term: l.term,
            leader: l.leader,
        })
        .collect();
    Ok(web::Json(StatusReport {
        node: node.name().to_string(),
        incarnation: node.id().incarnation.simple().to_string(),
        uptime_ms: node.now().as_millis() as u64,
        detector: ctx.failure_detector().kind().to_string(),
        members,
        apps,
        leaders,
        stats: node.stats(),
        store: StoreReport {
            location: node.store().location(),
            stats: node.store().stats(),
        },
        http: shared.counters.snapshot(),
    }))
}

/// `GET /v1/tree`: the node's supervision tree (see
/// [`troupe_framework::supervision::TreeNode`]).
pub(super) async fn tree(ctx: web::Data<HttpContext>) -> Result<web::Json<TreeNode>, ApiError> {
    ctx.node()
        .supervision_tree()
        .await
        .map(web::Json)
        .map_err(|e| ApiError::unavailable(format!("the supervision tree is not available: {e}")))
}

/// `phi` in JSON: a number, `"inf"` for infinity (JSON has none), or null.
mod phi_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Phi {
        Number(f64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(phi: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match phi {
            Some(p) if p.is_finite() => Phi::Number(*p).serialize(s),
            Some(p) if *p > 0.0 => Phi::Text("inf".into()).serialize(s),
            _ => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Phi>::deserialize(d)? {
            None => Ok(None),
            Some(Phi::Number(p)) => Ok(Some(p)),
            Some(Phi::Text(t)) if t == "inf" => Ok(Some(f64::INFINITY)),
            Some(Phi::Text(t)) => Err(serde::de::Error::custom(format!(
                "phi {t:?} is neither a number nor \"inf\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_round_trips_through_json_infinity_included() {
        for phi in [None, Some(0.0), Some(3.25), Some(f64::INFINITY)] {
            let m = MemberReport {
                name: "n".into(),
                status: MemberStatus::Up,
                incarnation: None,
                phi,
            };
            let text = serde_json::to_string(&m).unwrap();
            let back: MemberReport = serde_json::from_str(&text).unwrap();
            assert_eq!(back, m, "{text}");
        }
        let text = serde_json::to_string(&MemberReport {
            name: "n".into(),
            status: MemberStatus::Down,
            incarnation: None,
            phi: Some(f64::INFINITY),
        })
        .unwrap();
        assert!(text.contains(r#""phi":"inf""#), "{text}");
        assert!(text.contains(r#""status":"Down""#), "{text}");
    }
}
