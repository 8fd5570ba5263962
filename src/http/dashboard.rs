//! The dashboard's routes (see [`crate::dashboard`]): the page at `/`, one
//! cluster snapshot, and a stream of them as server-sent events.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;

use super::{ApiError, HttpContext};
use crate::dashboard::{cluster_snapshot, ClusterSnapshot, DEFAULT_EVERY, PAGE};

/// Fastest push accepted (`every_ms`).
const MIN_EVERY: Duration = Duration::from_millis(100);

/// `GET /`: the page, or 404 with `[http] dashboard = false`.
pub(super) async fn page(ctx: web::Data<HttpContext>) -> Result<HttpResponse, ApiError> {
    if !ctx.shared.dashboard {
        return Err(ApiError::not_found(
            "this node serves no dashboard page ([http] dashboard = false): \
             run `troupe dashboard --node <this node's URL>` to see it",
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE.as_str()))
}

/// `GET /v1/dashboard/snapshot`.
pub(super) async fn snapshot(ctx: web::Data<HttpContext>) -> web::Json<ClusterSnapshot> {
    web::Json(
        cluster_snapshot(
            ctx.node(),
            ctx.failure_detector(),
            &ctx.panels,
            &BTreeMap::new(),
        )
        .await,
    )
}

/// The query of `/v1/dashboard/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Milliseconds between pushes.
    every_ms: Option<u64>,
}

/// Where a stream is: per node, its incarnation and the last event sent.
#[derive(Default)]
struct Cursor {
    seen: BTreeMap<String, (String, u64)>,
}

impl Cursor {
    fn after(&self) -> BTreeMap<String, u64> {
        self.seen
            .iter()
            .map(|(n, (_, id))| (n.clone(), *id))
            .collect()
    }

    /// Move past what `s` carried; a node with a new incarnation starts
    /// again from its first event (the ids of its tap restarted).
    fn advance(&mut self, s: &mut ClusterSnapshot) {
        for v in &mut s.nodes {
            let Some(snap) = &mut v.snapshot else {
                continue;
            };
            let restarted = self
                .seen
                .get(&v.name)
                .is_some_and(|(inc, _)| *inc != snap.incarnation);
            if restarted {
                // Asked with the old life's cursor: what it got may have
                // skipped the new life's first events; they come next time.
                snap.events.clear();
                self.seen
                    .insert(v.name.clone(), (snap.incarnation.clone(), 0));
                continue;
            }
            let last = snap.next_event.saturating_sub(1);
            self.seen
                .insert(v.name.clone(), (snap.incarnation.clone(), last));
        }
    }
}

/// `GET /v1/dashboard/events?every_ms=N`: a [`ClusterSnapshot`] as a
/// server-sent event at once and then every `every_ms` (default 500, at
/// least 100), each with the traffic events new since the previous one,
/// until the client goes away or the node stops.
pub(super) async fn events(
    ctx: web::Data<HttpContext>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let every = query.every_ms.map_or(DEFAULT_EVERY, Duration::from_millis);
    if every < MIN_EVERY {
        return Err(ApiError::bad_request(format!(
            "every_ms = {}: at least {} ms between pushes",
            every.as_millis(),
            MIN_EVERY.as_millis()
        )));
    }
    let ctx = ctx.into_inner();
    let stream = futures::stream::unfold(
        (ctx, Cursor::default(), true),
        move |(ctx, mut cursor, first)| async move {
            if !first {
                tokio::time::sleep(every).await;
            }
            if ctx.node().is_stopped() {
                return None;
            }
            let mut s = cluster_snapshot(
                ctx.node(),
                ctx.failure_detector(),
                &ctx.panels,
                &cursor.after(),
            )
            .await;
            cursor.advance(&mut s);
            let json = serde_json::to_string(&s).unwrap_or_else(|e| {
                format!("{{\"error\":\"the snapshot did not serialize: {e}\"}}")
            });
            let event = Bytes::from(format!("data: {json}\n\n"));
            Some((Ok::<_, actix_web::Error>(event), (ctx, cursor, false)))
        },
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream))
}
