//! The node's HTTP endpoint (actix-web), configured by `[http]`
//! ([`HttpConfig`]) and started by [`crate::runtime::start_node`].
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the live dashboard page ([`crate::dashboard`]), unless `[http] dashboard = false` |
//! | `GET /v1/dashboard/snapshot` | what every node of the cluster knows, gathered by this one: [`crate::dashboard::ClusterSnapshot`] |
//! | `GET /v1/dashboard/events` | the same as server-sent events, every `every_ms` (default 500) |
//! | `GET /v1/status` | node name, incarnation, uptime, detector, membership as this node sees it (status, incarnation and phi per member), apps, leaders it knows, node and HTTP counters: [`StatusReport`] |
//! | `GET /v1/tree` | the node's supervision tree |
//! | `GET /v1/commit/in-doubt` | transactions in doubt on this node, in every commit instance: [`InDoubtReport`] (see [`crate::commit`]) |
//! | `GET /metrics` | the node's metrics in the Prometheus text format 0.0.4 (`Content-Type: text/plain; version=0.0.4; charset=utf-8`): traffic per peer and message type, ask latencies and failures, membership and phi, apps, protocol instances; every metric is listed in [`crate::metrics`]. Outside `/v1/`, where Prometheus looks by default, so no application name is reserved for it |
//! | `/v1/<app>/...` | routes an application mounted ([`AppRouteRegistry`]) |
//!
//! Guarantees:
//!
//! - Every response that is not a success is JSON,
//!   `{"error": "<what went wrong>", "status": <code>, ...}`, with the
//!   proper code: 400 for a body that does not parse (naming the field,
//!   with [`Json`] or `web::Json`), 401 for a missing or wrong token, 404
//!   for an unknown route, 405 for a wrong method, 413 for a body over
//!   `[http] max_body_bytes`, 415 for a JSON body sent without
//!   `Content-Type: application/json`. Each such response is counted by kind
//!   ([`HttpCounters`], shown in `/v1/status` under `http`); none of them
//!   stops the endpoint or the node. Malformed HTTP below the routing layer
//!   (a request line that does not parse, a header section over actix-web's
//!   limit) is answered by actix-web itself and not counted.
//! - With `[http] token` set, every route (the applications' and
//!   `/metrics` included) answers 401 unless the request carries
//!   `Authorization: Bearer <token>`; the token is compared in constant
//!   time (its length is not secret). A Prometheus server sends it with
//!   `authorization: {type: Bearer, credentials: <token>}` in its scrape
//!   config (and, with `client_certs`, `scheme: https` and a `tls_config`
//!   naming a client certificate from the cluster CA).
//! - With `[http] client_certs = true`, the endpoint speaks HTTPS only (no
//!   plain HTTP on that port), presents the node's own `[tls]` certificate
//!   and requires a client certificate that chains to the cluster CA
//!   (`[tls] ca`): a client without one, or with one from another CA, is
//!   refused in the TLS handshake, before any HTTP is read (so such a
//!   refusal is not counted). TLS 1.3 or 1.2, ALPN `http/1.1`, the QUIC
//!   transport's aws-lc-rs provider; see [`tls`]. Refused at start-up with
//!   `[tls] insecure_dev_mode`.
//! - With both, a request needs both. A non-loopback `listen` with neither
//!   is refused at start-up ([`HttpConfig::validate`]), the error naming
//!   both ways.
//! - The server runs one worker thread (an arbiter of the node's actix
//!   system; handlers reach the node's actors by message, like any other
//!   thread), ignores signals (the node handles them) and stops with
//!   [`crate::runtime::RunningNode::shutdown`], finishing requests in flight
//!   for up to 2 s.
//!
//! Applications mount routes with an [`AppRoutes`] closure registered under
//! their name before the node starts; their handlers read the node through
//! `web::Data<HttpContext>` and answer errors with [`ApiError`]:
//!
//! ```ignore
//! let mut routes = AppRouteRegistry::new();
//! routes.mount("counter", Arc::new(|cfg: &mut web::ServiceConfig| {
//!     cfg.service(web::resource("").get(read_counter));   // GET /v1/counter
//! }))?;
//! let options = StartOptions { app_routes: routes, ..StartOptions::default() };
//! let running = start_node_with(config, options).await?;
//! ```

mod commit;
mod dashboard;
mod errors;
mod metrics;
mod status;
pub mod tls;

/// The actix-web the endpoint runs, for applications' routes.
pub use actix_web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use troupe_framework::Node;
use troupe_transports::certs::NodeTls;

pub use crate::config::HttpConfig;
use crate::dashboard::AppPanelRegistry;
use crate::failure_detector::FailureDetectorHandle;
use crate::Error;
pub use commit::InDoubtReport;
pub use errors::{ApiError, Json};
pub use status::{
    member_reports, AppState, HttpCountersSnapshot, LeaderReport, MemberReport, Rejected,
    StatusReport, StoreReport,
};
pub use troupe_framework::node::NodeStatsSnapshot;

/// Routes an application mounts under `/v1/<app>/`: called once per worker
/// with a `ServiceConfig` scoped to that prefix (a resource `""` is
/// `/v1/<app>` itself, `"/add"` is `/v1/<app>/add`). Declare them as
/// `web::resource(path).get(handler)`: a resource answers other methods
/// with 405, where actix-web's `cfg.route(path, web::get()...)` shorthand
/// makes them 404.
pub type AppRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Path prefixes the endpoint keeps for itself: no application may be
/// mounted under these names.
pub const RESERVED: [&str; 4] = ["status", "tree", "commit", "dashboard"];

/// The applications' routes, by application name, mounted by the endpoint
/// under `/v1/<name>/`.
#[derive(Clone, Default)]
pub struct AppRouteRegistry {
    routes: BTreeMap<String, AppRoutes>,
}

impl AppRouteRegistry {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mount `routes` under `/v1/<app>/`. Refuses a name that is not a valid
    /// actor name, one the endpoint keeps ([`RESERVED`]), or one mounted
    /// already.
    pub fn mount(&mut self, app: &str, routes: AppRoutes) -> Result<(), Error> {
        troupe_framework::ids::validate_name(app)
            .map_err(|e| Error::Config(format!("HTTP routes of app {app:?}: {e}")))?;
        if RESERVED.contains(&app) {
            return Err(Error::Config(format!(
                "HTTP routes of app {app:?}: /v1/{app} is the endpoint's own route"
            )));
        }
        if self.routes.contains_key(app) {
            return Err(Error::Config(format!(
                "HTTP routes of app {app:?} are mounted twice"
            )));
        }
        self.routes.insert(app.to_string(), routes);
        Ok(())
    }

    /// The names of the applications with routes, sorted.
    pub fn apps(&self) -> Vec<String> {
        self.routes.keys().cloned().collect()
    }
}

/// Counters of the endpoint's requests and refusals (see the module docs).
#[derive(Debug, Default)]
pub struct HttpCounters {
    requests: AtomicU64,
    bad_request: AtomicU64,
    unauthorized: AtomicU64,
    not_found: AtomicU64,
    method_not_allowed: AtomicU64,
    payload_too_large: AtomicU64,
    unsupported_media_type: AtomicU64,
    other_4xx: AtomicU64,
    server_errors: AtomicU64,
}

impl HttpCounters {
    fn count_response(&self, status: actix_web::http::StatusCode) {
        let counter = match status.as_u16() {
            400 => &self.bad_request,
            401 => &self.unauthorized,
            404 => &self.not_found,
            405 => &self.method_not_allowed,
            413 => &self.payload_too_large,
            415 => &self.unsupported_media_type,
            402..=499 => &self.other_4xx,
            500..=599 => &self.server_errors,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> HttpCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HttpCountersSnapshot {
            requests: get(&self.requests),
            rejected: Rejected {
                bad_request: get(&self.bad_request),
                unauthorized: get(&self.unauthorized),
                not_found: get(&self.not_found),
                method_not_allowed: get(&self.method_not_allowed),
                payload_too_large: get(&self.payload_too_large),
                unsupported_media_type: get(&self.unsupported_media_type),
                other: get(&self.other_4xx),
            },
            server_errors: get(&self.server_errors),
        }
    }
}

/// What the endpoint shares between its worker and its owner.
struct Shared {
    counters: HttpCounters,
    token: Option<Box<[u8]>>,
    max_body_bytes: usize,
    /// `[http] dashboard`: serve the page at `/`.
    dashboard: bool,
}

/// What handlers, the applications' included, can read:
/// `web::Data<HttpContext>` in a handler's arguments.
#[derive(Clone)]
pub struct HttpContext {
    node: Node,
    fd: FailureDetectorHandle,
    panels: AppPanelRegistry,
    shared: Arc<Shared>,
}

impl HttpContext {
    /// The node this endpoint serves.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node's failure detector.
    pub fn failure_detector(&self) -> &FailureDetectorHandle {
        &self.fd
    }
}

/// The running endpoint, owned by [`crate::runtime::RunningNode`].
pub struct HttpEndpoint {
    addr: SocketAddr,
    scheme: &'static str,
    handle: actix_web::dev::ServerHandle,
    ctx: HttpContext,
}

impl HttpEndpoint {
    /// The TCP address it serves on (useful when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` with `[http] client_certs`, else `http://ADDR`
    /// (ADDR: [`HttpEndpoint::local_addr`]).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The request and refusal counters now.
    pub fn counters(&self) -> HttpCountersSnapshot {
        self.ctx.shared.counters.snapshot()
    }

    /// Stop serving: no new connections; requests in flight get up to 2 s.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// Start the endpoint `config` describes for `node`, with the applications'
/// `routes` and dashboard `panels`. With `[http] client_certs`, `tls` is the node's TLS material
/// (its certificate, key and cluster CA: [`tls::server_config`]); it is
/// not used otherwise. Call inside the node's actix system; the server runs
/// until [`HttpEndpoint::stop`] (or the system stops).
///
/// A TLS setup that cannot work is an [`Error::Config`] starting with
/// `http.client_certs`; an address that cannot be bound is [`Error::Http`].
pub fn start(
    config: &HttpConfig,
    tls: Option<&NodeTls>,
    node: Node,
    fd: FailureDetectorHandle,
    routes: AppRouteRegistry,
    panels: AppPanelRegistry,
) -> Result<HttpEndpoint, Error> {
    config.validate()?;
    let shared = Arc::new(Shared {
        counters: HttpCounters::default(),
        token: config
            .token
            .as_ref()
            .map(|t| t.as_bytes().to_vec().into_boxed_slice()),
        max_body_bytes: config.max_body_bytes,
        dashboard: config.dashboard,
    });
    let ctx = HttpContext {
        node,
        fd,
        panels,
        shared,
    };
    let app_ctx = ctx.clone();
    let server = HttpServer::new(move || {
        let ctx = app_ctx.clone();
        let limit = ctx.shared.max_body_bytes;
        let mut app = App::new()
            .app_data(web::Data::new(ctx))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(errors::json_config(limit))
            .app_data(errors::query_config())
            .wrap(from_fn(guard))
            .service(web::resource("/").get(dashboard::page))
            .service(web::resource("/v1/dashboard/snapshot").get(dashboard::snapshot))
            .service(web::resource("/v1/dashboard/events").get(dashboard::events))
            .service(web::resource("/v1/status").get(status::status))
            .service(web::resource("/v1/tree").get(status::tree))
            .service(web::resource("/v1/commit/in-doubt").get(commit::in_doubt))
            .service(web::resource("/metrics").get(metrics::metrics));
        for (name, routes) in &routes.routes {
            let routes = routes.clone();
            app = app.service(web::scope(&format!("/v1/{name}")).configure(move |c| routes(c)));
        }
        app
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2);
    let server = if config.client_certs {
        let tls = tls.ok_or_else(|| {
            Error::Config(
                "http.client_certs = true needs the node's [tls] ca, cert and key".to_string(),
            )
        })?;
        let tls = tls::server_config(tls)
            .map_err(|e| Error::Config(format!("http.client_certs: {e}")))?;
        server.bind_rustls_0_23(config.listen, tls)
    } else {
        server.bind(config.listen)
    }
    .map_err(|e| Error::Http(format!("cannot serve [http] listen {}: {e}", config.listen)))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Http(format!("[http] listen {} bound nothing", config.listen)))?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    let scheme = config.scheme();
    tracing::info!(node = %ctx.node.id(), http = %format!("{scheme}://{addr}"), "HTTP endpoint up");
    Ok(HttpEndpoint {
        addr,
        scheme,
        handle,
        ctx,
    })
}

/// True if `given` is `expected`, in time that depends on their lengths
/// only, not on where they differ.
fn token_matches(expected: &[u8], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    expected.ct_eq(given).into()
}

/// Every request passes here: counted, checked for the token, and its
/// refusal (whoever refused it) turned into a JSON error and counted.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(ctx) = req.app_data::<web::Data<HttpContext>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "the endpoint's context is missing",
        ));
    };
    let shared = &ctx.shared;
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let res = match refuse_without_token(shared, &req) {
        Some(refusal) => req.into_response(refusal.error_response_json()),
        // Routing and handler errors arrive as responses; an `Err` could
        // only come from a middleware inside this one (there is none).
        None => match next.call(req).await {
            Ok(res) => res.map_into_boxed_body(),
            Err(e) => {
                let status = e.as_response_error().status_code();
                shared.counters.count_response(status);
                return Err(e);
            }
        },
    };
    let status = res.status();
    shared.counters.count_response(status);
    if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
        return Ok(res);
    }
    let error = errors::describe(&res, shared.max_body_bytes);
    Ok(res.into_response(error.error_response_json()))
}

/// 401 unless the request carries the configured token (when there is one).
fn refuse_without_token(shared: &Shared, req: &ServiceRequest) -> Option<ApiError> {
    let expected = shared.token.as_deref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        None => Some(ApiError::unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` with the node's [http] token",
        )),
        Some(given) if !token_matches(expected, given) => Some(ApiError::unauthorized(
            "the bearer token does not match the node's [http] token",
        )),
        Some(_) => None,
    }
}

fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        let t = b"0123456789abcdef";
        assert!(token_matches(t, b"0123456789abcdef"));
        assert!(!token_matches(t, b"0123456789abcdeF"));
        assert!(!token_matches(t, b"0123456789abcde"));
        assert!(!token_matches(t, b"0123456789abcdef0"));
        assert!(!token_matches(t, b""));
    }

    /// The comparison takes as long when the first byte differs as when
    /// the last one does (a plain `==` returns at the first difference,
    /// which lets a client guess a token byte by byte from the timing).
    /// Medians of interleaved rounds on 256 KiB tokens: with `==` the
    /// early mismatch is ~1000x faster; constant time keeps the ratio near 1.
    #[test]
    fn token_comparison_time_does_not_depend_on_where_it_differs() {
        let n = 256 * 1024;
        let expected = vec![b'a'; n];
        let mut early = expected.clone();
        early[0] = b'b';
        let mut late = expected.clone();
        late[n - 1] = b'b';
        let time = |given: &[u8]| {
            let t = std::time::Instant::now();
            assert!(!token_matches(&expected, std::hint::black_box(given)));
            t.elapsed().as_nanos() as f64
        };
        let (mut e, mut l) = (Vec::new(), Vec::new());
        for _ in 0..41 {
            e.push(time(&early));
            l.push(time(&late));
        }
        e.sort_by(f64::total_cmp);
        l.sort_by(f64::total_cmp);
        let ratio = e[20] / l[20];
        assert!(
            ratio > 0.25,
            "early mismatch {:.0} ns vs late {:.0} ns: not constant time",
            e[20],
            l[20]
        );
    }

    #[test]
    fn app_names_are_checked_when_mounted() {
        let mut r = AppRouteRegistry::new();
        let noop: AppRoutes = Arc::new(|_| {});
        r.mount("counter", noop.clone()).expect("a fresh name");
        for (name, says) in [
            ("counter", "twice"),
            ("status", "endpoint's own"),
            ("tree", "endpoint's own"),
            ("a/b", "name"),
            ("", "name"),
        ] {
            let err = r.mount(name, noop.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{name:?}: {err}");
        }
        assert_eq!(r.apps(), vec!["counter".to_string()]);
    }
}
