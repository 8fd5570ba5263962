//! `GET /metrics`: the node's metrics in the Prometheus text format
//! (see [`crate::metrics`] for every metric), plus the endpoint's own
//! request counters.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::{ApiError, HttpContext};

/// `GET /metrics`. 503 (JSON, like every refusal) when the node's failure
/// detector or supervisors do not answer: a node that is stopping.
pub(super) async fn metrics(ctx: web::Data<HttpContext>) -> Result<HttpResponse, ApiError> {
    let mut f = crate::metrics::gather(ctx.node(), ctx.failure_detector())
        .await
        .map_err(|e| ApiError::unavailable(format!("the node's metrics are not available: {e}")))?;
    let http = ctx.shared.counters.snapshot();
    f.counter(
        "troupe_http_requests_total",
        "Requests the node's HTTP endpoint received (routed or refused).",
        &[],
        http.requests as f64,
    );
    let r = http.rejected;
    for (code, n) in [
        ("400", r.bad_request),
        ("401", r.unauthorized),
        ("404", r.not_found),
        ("405", r.method_not_allowed),
        ("413", r.payload_too_large),
        ("415", r.unsupported_media_type),
        ("4xx", r.other),
    ] {
        f.counter(
            "troupe_http_rejected_total",
            "Requests the node's HTTP endpoint refused, by status code (4xx: any other).",
            &[("code", code)],
            n as f64,
        );
    }
    f.counter(
        "troupe_http_server_errors_total",
        "Requests the node's HTTP endpoint answered with a 5xx.",
        &[],
        http.server_errors as f64,
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE))
        .body(f.encode_text()))
}
