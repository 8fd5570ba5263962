//! The node's HTTP endpoint, served for real by `start_node_with` on
//! 127.0.0.1 and spoken to over plain TCP: `/v1/status`, the applications'
//! routes, every refusal as JSON with its code and its counter, the bearer
//! token, the start-up refusals, and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe::config::Config;
use troupe::http::{ApiError, AppRouteRegistry, HttpContext, Json, StatusReport};
use troupe::prelude::{start_node_with, RunningNode, StartOptions};
use troupe::runtime::start_node;

const TOKEN: &str = "test-token-0123456789";

/// A one-node config (with a peer that never answers) and `[http]` on a
/// free loopback port, plus `http_extra` in the `[http]` table.
fn config(http_extra: &str) -> Config {
    Config::from_toml(
        &format!(
            "name = \"solo\"\nlisten = \"127.0.0.1:0\"\n[tls]\ninsecure_dev_mode = true\n\
             [[peers]]\nname = \"ghost\"\naddr = \"127.0.0.1:9\"\n\
             [failure_detector]\nkind = \"phi-accrual\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 1024\n{http_extra}"
        ),
        Path::new("."),
    )
    .expect("config")
}

#[derive(Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

/// Two test apps: `echo` with the endpoint's `Json` extractor, `plain`
/// with actix-web's own `web::Json`.
fn routes() -> AppRouteRegistry {
    use actix_web::web;
    async fn sum(body: Json<Sum>) -> web::Json<Value> {
        web::Json(json!({ "sum": body.0.a + body.0.b }))
    }
    async fn plain_sum(body: web::Json<Sum>) -> web::Json<Value> {
        web::Json(json!({ "sum": body.a + body.b }))
    }
    async fn who(ctx: web::Data<HttpContext>) -> web::Json<Value> {
        web::Json(json!({ "node": ctx.node().name() }))
    }
    async fn teapot() -> Result<web::Json<Value>, ApiError> {
        Err(
            ApiError::new(actix_web::http::StatusCode::IM_A_TEAPOT, "short and stout")
                .with("spout", true),
        )
    }
    let mut r = AppRouteRegistry::new();
    r.mount(
        "echo",
        Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.service(web::resource("").get(who))
                .service(web::resource("/sum").post(sum))
                .service(web::resource("/teapot").get(teapot));
        }),
    )
    .expect("mount echo");
    r.mount(
        "plain",
        Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.service(web::resource("/sum").post(plain_sum));
        }),
    )
    .expect("mount plain");
    r
}

async fn start(http_extra: &str) -> RunningNode {
    start_node_with(
        config(http_extra),
        StartOptions {
            app_routes: routes(),
            ..StartOptions::default()
        },
    )
    .await
    .expect("node starts")
}

/// One HTTP/1.1 request on its own connection: the status code and the
/// body as JSON (`Value::Null` if it is not JSON).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write head");
    // A server refusing the body early may close before reading it all.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("response within 20 s");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    request(addr, "GET", path, headers, b"").await
}

async fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

async fn status(addr: SocketAddr, headers: &[(&str, &str)]) -> StatusReport {
    let (code, body) = get(addr, "/v1/status", headers).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_value(body).expect("a StatusReport")
}

/// `body` is a JSON error with `code` whose `error` text contains `says`.
fn is_error(code: u16, body: &Value, want: u16, says: &str) {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["status"], want, "{body}");
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.contains(says),
        "{want}: {text:?} does not say {says:?}"
    );
}

#[actix_rt::test]
async fn status_reports_the_node_its_members_and_counters() {
    let node = start("").await;
    let addr = node.http_addr().expect("[http] runs");
    assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
    let s = status(addr, &[]).await;
    assert_eq!(s.node, "solo");
    assert_eq!(
        s.incarnation,
        node.node.id().incarnation.simple().to_string()
    );
    assert_eq!(s.detector, "phi-accrual");
    let ghost = s
        .members
        .iter()
        .find(|m| m.name == "ghost")
        .expect("the peer");
    assert_eq!(ghost.incarnation, None, "never heard from");
    assert!(s.apps.is_empty() && s.leaders.is_empty(), "{s:?}");
    assert_eq!(s.http.requests, 1, "this request");
    assert_eq!(s.http.rejected.total(), 0);
    let (code, body) = get(addr, "/v1/echo", &[]).await;
    assert_eq!(
        (code, body),
        (200, json!({"node": "solo"})),
        "app data reaches app routes"
    );
    let (code, body) = post_json(addr, "/v1/echo/sum", r#"{"a": 2, "b": 40}"#).await;
    assert_eq!((code, body), (200, json!({"sum": 42})));
    node.shutdown().await;
}

#[actix_rt::test]
async fn every_refusal_is_json_with_its_code_and_counted_and_the_node_keeps_serving() {
    let node = start("").await;
    let addr = node.http_addr().expect("[http] runs");

    let (code, body) = get(addr, "/v1/nowhere", &[]).await;
    is_error(code, &body, 404, "no route for GET /v1/nowhere");
    let (code, body) = get(addr, "/v1/echo/nowhere", &[]).await;
    is_error(code, &body, 404, "no route for GET /v1/echo/nowhere");

    let (code, body) = request(addr, "DELETE", "/v1/status", &[], b"").await;
    is_error(code, &body, 405, "/v1/status does not take DELETE");
    let (code, body) = get(addr, "/v1/echo/sum", &[]).await;
    is_error(code, &body, 405, "/v1/echo/sum does not take GET");

    // Malformed, and well-formed but wrong: 400 naming the field.
    let (code, body) = post_json(addr, "/v1/echo/sum", r#"{"a": 1, "b": "#).await;
    is_error(code, &body, 400, "not valid JSON");
    let (code, body) = post_json(addr, "/v1/echo/sum", r#"{"a": 1, "b": "two"}"#).await;
    is_error(code, &body, 400, "field `b`");
    assert_eq!(body["field"], "b", "{body}");
    let (code, body) = post_json(addr, "/v1/plain/sum", r#"{"a": 1}"#).await;
    is_error(code, &body, 400, "missing field `b`");
    assert_eq!(
        body["field"], "b",
        "web::Json goes through the same handler: {body}"
    );

    // Over max_body_bytes (1024 here), with either extractor.
    let big = format!(r#"{{"a": 1, "b": 2, "pad": "{}"}}"#, "x".repeat(1100));
    for path in ["/v1/echo/sum", "/v1/plain/sum"] {
        let (code, body) = post_json(addr, path, &big).await;
        is_error(
            code,
            &body,
            413,
            "limit of 1024 bytes ([http] max_body_bytes)",
        );
        assert_eq!(body["limit_bytes"], 1024, "{body}");
    }

    // A JSON body without its content type.
    let (code, body) = request(addr, "POST", "/v1/echo/sum", &[], br#"{"a": 1, "b": 2}"#).await;
    is_error(code, &body, 415, "Content-Type: application/json");

    // An application's own error keeps its body.
    let (code, body) = get(addr, "/v1/echo/teapot", &[]).await;
    is_error(code, &body, 418, "short and stout");
    assert_eq!(body["spout"], true, "{body}");

    let s = status(addr, &[]).await;
    let r = s.http.rejected;
    assert_eq!(
        (
            r.not_found,
            r.method_not_allowed,
            r.bad_request,
            r.payload_too_large,
            r.unsupported_media_type,
            r.other,
            r.unauthorized
        ),
        (2, 2, 3, 2, 1, 1, 0),
        "{r:?}"
    );
    assert_eq!(s.http.requests, 12, "every request, refused or not");
    let (code, body) = post_json(addr, "/v1/echo/sum", r#"{"a": 1, "b": 2}"#).await;
    assert_eq!((code, body), (200, json!({"sum": 3})), "still serving");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_token_is_required_on_every_route_when_configured() {
    let node = start(&format!("token = \"{TOKEN}\"\n")).await;
    let addr = node.http_addr().expect("[http] runs");
    let right = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    for path in ["/v1/status", "/v1/echo", "/v1/nowhere"] {
        let (code, body) = get(addr, path, &[]).await;
        is_error(code, &body, 401, "missing bearer token");
        let (code, body) = get(addr, path, &[("Authorization", &wrong)]).await;
        is_error(code, &body, 401, "does not match");
        let (code, body) = get(addr, path, &[("Authorization", TOKEN)]).await;
        is_error(code, &body, 401, "missing bearer token");
    }
    let (code, _) = get(addr, "/v1/echo", &[("Authorization", &right)]).await;
    assert_eq!(code, 200);
    let s = status(addr, &[("Authorization", &right)]).await;
    assert_eq!(s.http.rejected.unauthorized, 9, "{:?}", s.http);
    assert_eq!(s.http.rejected.not_found, 0, "refused before routing");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_non_loopback_endpoint_without_a_token_is_refused_at_start() {
    let mut c = config("");
    if let Some(http) = c.http.as_mut() {
        http.listen = "0.0.0.0:0".parse().expect("addr");
    }
    let err = start_node(c).await.err().expect("refused").to_string();
    assert!(
        err.contains("[http]") && err.contains("set [http] token"),
        "{err}"
    );

    let mut c = config(&format!("token = \"{TOKEN}\"\n"));
    if let Some(http) = c.http.as_mut() {
        http.listen = "0.0.0.0:0".parse().expect("addr");
    }
    let node = start_node(c).await.expect("with a token it starts");
    let port = node.http_addr().expect("[http] runs").port();
    let (code, _) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/v1/status", &[]).await;
    assert_eq!(code, 401);
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_port_in_use_is_a_start_up_error_naming_http_listen() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let mut c = config("");
    if let Some(http) = c.http.as_mut() {
        http.listen = SocketAddr::from(([127, 0, 0, 1], port));
    }
    let err = start_node(c).await.err().expect("refused").to_string();
    assert!(
        err.contains(&format!("[http] listen 127.0.0.1:{port}")),
        "{err}"
    );
}

#[actix_rt::test]
async fn shutdown_stops_the_endpoint() {
    let node = start("").await;
    let addr = node.http_addr().expect("[http] runs");
    assert_eq!(get(addr, "/v1/status", &[]).await.0, 200);
    node.shutdown().await;
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "{addr} still accepts connections after shutdown"
    );
}
