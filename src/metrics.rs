//! A node's metrics in the Prometheus text exposition format (version
//! 0.0.4), served at `GET /metrics` by the node's HTTP endpoint
//! ([`crate::http`], same token and client-certificate rules as every
//! other route) and gathered by [`gather`].
//!
//! Each node has its own registry ([`troupe_framework::metrics`]): several
//! nodes in one process (tests, the simulator) never mix their numbers.
//! Names follow Prometheus' conventions: the `troupe_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters. Most of it is read from
//! the node's state when scraped; only what must be counted as it happens
//! is pushed (per-message counters, the ask histogram, membership
//! transitions, protocol events).
//!
//! # Every metric
//!
//! Traffic and asks (counted as they happen; left out with
//! `[runtime] message_metrics = false`):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `troupe_messages_sent_total` | counter | `peer`, `type`, `kind` | remote messages handed to the transport, by target node, message type (registered tag) and kind (`tell`, `ask`, `reply`); an ask's re-sends count; a reply carries its ask's type |
//! | `troupe_sent_bytes_total` | counter | `peer`, `type`, `kind` | bytes of those frames (envelope included) |
//! | `troupe_messages_received_total` | counter | `peer`, `type`, `kind` | remote messages from the authenticated `peer` handed to an actor (tells, asks, retried copies of asks) or to the ask waiting for them (replies) |
//! | `troupe_received_bytes_total` | counter | `peer`, `type`, `kind` | bytes of those frames |
//! | `troupe_ask_duration_seconds` | histogram | `peer`, `type` | from a remote ask's first send to its answer (a reply or an error answer); buckets 50 us to 10 s |
//! | `troupe_asks_failed_total` | counter | `peer`, `type`, `reason` | remote asks that ended without a reply: `timeout`, `unreachable` (not sent: target `Down`/`Left`, or refused by the transport), `refused` (the target answered with an error: unknown actor or type, bad payload, actor stopped, overloaded, refused), `codec`, `node_stopped` |
//!
//! The node (read when scraped, except the transitions):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `troupe_node_info` | gauge | `node`, `incarnation`, `detector` | always 1: who answers |
//! | `troupe_node_uptime_seconds` | gauge | | time since the node started |
//! | `troupe_frames_received_total` | counter | | frames received from the transport |
//! | `troupe_bad_frames_total` | counter | | frames that did not decode |
//! | `troupe_spoofed_frames_total` | counter | | frames whose claimed sender was not the authenticated peer |
//! | `troupe_undeliverable_messages_total` | counter | | messages for an unknown actor or with an unknown type |
//! | `troupe_asks_deduplicated_total` | counter | | retried copies of asks not executed again |
//! | `troupe_mailbox_full_total` | counter | | times a remote message found its actor's inbox full |
//! | `troupe_dropped_tells_total` | counter | | tells not sent because the target was `Down` or `Left` |
//! | `troupe_asks_in_flight` | gauge | | this node's remote asks waiting for their answer |
//! | `troupe_asks_executing` | gauge | | asks from other nodes handed to this node's actors, not answered yet |
//! | `troupe_inbound_in_flight` | gauge | | what the inbound dispatcher counts against its limit (deliveries waiting for inbox room, parked messages, unanswered asks) |
//! | `troupe_inbound_in_flight_limit` | gauge | | `[runtime] max_inflight_deliveries` |
//! | `troupe_member_status` | gauge | `member`, `status` | 1 for the member's status in the membership view (`Joining`, `Up`, `Suspect`, `Down`, `Left`), 0 for the others |
//! | `troupe_member_transitions_total` | counter | `member`, `status` | changes of the membership view, by the status moved to (counted as published) |
//! | `troupe_member_phi` | gauge | `member` | the phi-accrual detector's phi for the member as of its last check (every `check_interval`, or the last heartbeat): the value that goes with the status, as in `/v1/status` (phi-accrual only; `+Inf` once silent far past the threshold) |
//! | `troupe_app_state` | gauge | `app`, `state` | 1 for the application's state (`running`, `restarting`, `stopped`, `gave-up`), 0 for the others |
//! | `troupe_app_restarts_total` | counter | `app` | times the application was restarted as a whole |
//! | `troupe_restarts_total` | counter | `child` | restarts of each child of the node's root supervisor (protocol instances, the failure detector, `apps`...) |
//! | `troupe_store_submissions_total` | counter | | submissions the durable store acknowledged |
//! | `troupe_store_written_bytes_total` | counter | | payload bytes it acknowledged |
//! | `troupe_store_syncs_total` | counter | | its syncs (an fsync each on disk) |
//! | `troupe_store_failed_total` | counter | | submissions it refused or failed |
//! | `troupe_http_requests_total` | counter | | requests the HTTP endpoint received (this scrape included) |
//! | `troupe_http_rejected_total` | counter | `code` | requests it refused, by status code (`400`, `401`, `404`, `405`, `413`, `415`, `4xx` for others) |
//! | `troupe_http_server_errors_total` | counter | | requests it answered with a 5xx |
//!
//! Protocol instances (label `protocol`: the instance's actor name, e.g.
//! `election`, `mutex.ledger`, `raft.kv`; see
//! [`troupe_protocols::family::Family::view_metrics`] and
//! [`troupe_protocols::family::Family::event_metric`]):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `troupe_election_term` | gauge | `protocol` | the election term this node is in |
//! | `troupe_election_leader_known` | gauge | `protocol` | 1 while it knows its term's leader |
//! | `troupe_elections_total` | counter | `protocol` | elections it saw end (leader changes naming a leader) |
//! | `troupe_lock_held` | gauge | `protocol` | 1 while this node holds the lock |
//! | `troupe_lock_waiting` | gauge | `protocol` | 1 while it has a request outstanding |
//! | `troupe_lock_grants_total` | counter | `protocol` | grants of the lock to this node |
//! | `troupe_lock_releases_total` | counter | `protocol` | releases by this node |
//! | `troupe_broadcast_delivered_total` | counter | `protocol` | messages delivered here (in this life of the instance) |
//! | `troupe_broadcast_held_back` | gauge | `protocol` | messages held back, waiting for their order |
//! | `troupe_commit_pending` | gauge | `protocol` | transactions known here and not decided yet |
//! | `troupe_commit_decisions_total` | counter | `protocol`, `decision` | transactions decided here, `commit` or `abort` |
//! | `troupe_raft_term` | gauge | `protocol` | the server's Raft term |
//! | `troupe_raft_commit_index` | gauge | `protocol` | the highest index it knows committed |
//! | `troupe_raft_applied_index` | gauge | `protocol` | the highest index applied to its state machine |
//! | `troupe_raft_leader` | gauge | `protocol` | 1 while it leads its term |
//!
//! An application can add its own metrics to the node's registry
//! ([`troupe_framework::metrics::NodeMetrics::registry`]); they are served
//! with the rest.
//!
//! # Cardinality
//!
//! Bounded by what the cluster is, not by its traffic: `peer` and `member`
//! are cluster members (authenticated senders, or nodes the transport
//! knows: a send to an unknown name is refused before it is counted);
//! `type` is a registered message tag (an inbound message is counted only
//! once its tag resolved to a handler; a reply takes its ask's tag);
//! `app`, `child` and `protocol` are what the node runs; `kind`, `reason`,
//! `status`, `state`, `decision` and `code` are fixed sets. A 5-node
//! cluster with 20 message types stays in the low thousands of series.
//!
//! # Cost
//!
//! Per remote message, two relaxed atomic increments on each side (the
//! counters are cached per handle and per dispatcher, no lock or map
//! lookup on the fast path); per ask also a clock read and a histogram
//! observation. Measured on remote tell throughput, on and off in the same
//! run: see BENCHMARKS.md ("Metrics on the hot path").

use troupe_framework::metrics::Families;
use troupe_framework::{ChildState, Node};

use crate::failure_detector::{current_lives, FailureDetectorHandle};
use crate::Error;

pub use troupe_framework::metrics::TEXT_CONTENT_TYPE;

/// Every state of an application, for `troupe_app_state`.
const APP_STATES: [ChildState; 4] = [
    ChildState::Running,
    ChildState::Restarting,
    ChildState::Stopped,
    ChildState::GaveUp,
];

/// Everything [`gather`] reports (see the module docs), except the HTTP
/// endpoint's own counters, which the endpoint adds.
///
/// Errors when the failure detector, the supervision tree or the apps'
/// supervisor does not answer (a node that is stopping).
pub async fn gather(node: &Node, fd: &FailureDetectorHandle) -> Result<Families, Error> {
    let mut f = node.gather_metrics();
    let incarnation = node.id().incarnation.simple().to_string();
    f.gauge(
        "troupe_node_info",
        "Always 1: the node's name, incarnation and failure detector.",
        &[
            ("node", node.name()),
            ("incarnation", incarnation.as_str()),
            ("detector", fd.kind()),
        ],
        1.0,
    );
    f.gauge(
        "troupe_node_uptime_seconds",
        "Time since the node started.",
        &[],
        node.now().as_secs_f64(),
    );
    for (name, life) in current_lives(fd.members().await?) {
        if let Some(phi) = life.phi {
            f.gauge(
                "troupe_member_phi",
                "The phi-accrual failure detector's phi for the member, as of its last check.",
                &[("member", name.as_str())],
                phi,
            );
        }
    }
    for app in crate::app::list_apps(node).await? {
        for state in APP_STATES {
            let s = state.to_string();
            f.gauge(
                "troupe_app_state",
                "1 for the application's state, 0 for the others.",
                &[("app", app.name.as_str()), ("state", s.as_str())],
                if state == app.state { 1.0 } else { 0.0 },
            );
        }
        f.counter(
            "troupe_app_restarts_total",
            "Times the application was restarted as a whole.",
            &[("app", app.name.as_str())],
            app.restarts as f64,
        );
    }
    for child in node.supervision_tree().await?.children {
        f.counter(
            "troupe_restarts_total",
            "Restarts of each child of the node's root supervisor.",
            &[("child", child.name.as_str())],
            child.restarts as f64,
        );
    }
    let store = node.store().stats();
    for (name, help, value) in [
        (
            "troupe_store_submissions_total",
            "Submissions the node's durable store acknowledged.",
            store.submissions,
        ),
        (
            "troupe_store_written_bytes_total",
            "Payload bytes the node's durable store acknowledged.",
            store.bytes,
        ),
        (
            "troupe_store_syncs_total",
            "Syncs of the node's durable store.",
            store.syncs,
        ),
        (
            "troupe_store_failed_total",
            "Submissions the node's durable store refused or failed.",
            store.failed,
        ),
    ] {
        f.counter(name, help, &[], value as f64);
    }
    Ok(f)
}
