//! `troupe dashboard --node URL [--node URL]...`: the live dashboard
//! ([`troupe::dashboard`]) served from the operator's machine, for a
//! cluster whose nodes serve no page (`[http] dashboard = false`) or that
//! the browser cannot reach directly (HTTPS with client certificates, a
//! token the browser does not have).
//!
//! It serves the same page on `--listen` (default `127.0.0.1:8090`) and
//! answers its `/v1/dashboard/events` stream by asking a node for
//! `/v1/dashboard/snapshot` every `every_ms`, with the node's token or
//! client certificate. The first `--node` that answers is used; when it
//! stops answering, the next one (so killing the node being read from does
//! not blank the page). Each push carries only the traffic events not
//! pushed before, per node and incarnation (the snapshot route returns all
//! that a node keeps).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use troupe::dashboard::{ClusterSnapshot, DEFAULT_EVERY, PAGE};
use troupe::http::actix_web::http::header;
use troupe::http::actix_web::{web, App, HttpResponse, HttpServer};

use crate::cli::{CliError, ClientAuthArgs, EndpointArgs};
use crate::http_client::NodeClient;

/// The options of `troupe dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// A node's HTTP endpoint (http://HOST:PORT, or https://HOST:PORT with
    /// --ca, --cert and --key); repeat it to fall back on other nodes.
    #[arg(long = "node", required = true)]
    pub nodes: Vec<String>,
    /// Where to serve the page.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The nodes' credentials (the same for every --node).
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

impl DashboardArgs {
    /// A client per `--node`, in order; an error names the bad option.
    pub fn clients(&self) -> Result<Vec<NodeClient>, CliError> {
        self.nodes
            .iter()
            .map(|url| {
                crate::inspect::client(&EndpointArgs {
                    node: url.clone(),
                    auth: self.auth.clone(),
                })
            })
            .collect()
    }
}

/// Where a stream is: per node, its incarnation and the last event pushed.
#[derive(Default)]
struct Pushed {
    seen: BTreeMap<String, (String, u64)>,
}

impl Pushed {
    /// Drop from `s` the events pushed before; remember the rest.
    fn filter(&mut self, s: &mut ClusterSnapshot) {
        for v in &mut s.nodes {
            let Some(snap) = &mut v.snapshot else {
                continue;
            };
            let last = match self.seen.get(&v.name) {
                Some((inc, last)) if *inc == snap.incarnation => *last,
                _ => 0,
            };
            snap.events.retain(|e| e.id > last);
            let newest = snap.events.last().map_or(last, |e| e.id);
            self.seen
                .insert(v.name.clone(), (snap.incarnation.clone(), newest));
        }
    }
}

/// One snapshot from the first node that answers, starting with the one
/// that answered last; its index.
fn fetch(clients: &[NodeClient], start: usize) -> Result<(ClusterSnapshot, usize), String> {
    let mut errors = Vec::new();
    for k in 0..clients.len() {
        let i = (start + k) % clients.len();
        match clients[i].get_as::<ClusterSnapshot>("/v1/dashboard/snapshot") {
            Ok(s) => return Ok((s, i)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    every_ms: Option<u64>,
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE.as_str())
}

async fn events(
    clients: web::Data<Arc<Vec<NodeClient>>>,
    query: web::Query<EventsQuery>,
) -> HttpResponse {
    let every = query
        .every_ms
        .map_or(DEFAULT_EVERY, Duration::from_millis)
        .max(Duration::from_millis(100));
    let clients = clients.get_ref().clone();
    let stream = futures::stream::unfold(
        (clients, Pushed::default(), 0usize, true),
        move |(clients, mut pushed, at, first)| async move {
            if !first {
                tokio::time::sleep(every).await;
            }
            let c = clients.clone();
            let got = web::block(move || fetch(&c, at))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let (chunk, at) = match got {
                Ok((mut s, i)) => {
                    pushed.filter(&mut s);
                    let json = serde_json::to_string(&s).unwrap_or_default();
                    (format!("data: {json}\n\n"), i)
                }
                // A comment line: the page keeps its last picture.
                Err(e) => (
                    format!(": no node answers: {}\n\n", e.replace('\n', " ")),
                    at,
                ),
            };
            Some((
                Ok::<_, troupe::http::actix_web::Error>(bytes::Bytes::from(chunk)),
                (clients, pushed, at, false),
            ))
        },
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream)
}

/// Run `troupe dashboard` until interrupted. `ready` is told the address
/// it serves on (for tests: `--listen 127.0.0.1:0`).
pub fn run(args: &DashboardArgs, ready: impl FnOnce(SocketAddr)) -> Result<(), CliError> {
    let clients = Arc::new(args.clients()?);
    // Say at once when no node answers (the page would only show that).
    if let Err(e) = fetch(&clients, 0) {
        eprintln!("troupe dashboard: no node answers yet ({e}); serving the page anyway");
    }
    let system = actix_rt::System::new();
    system.block_on(async move {
        let data = web::Data::new(clients);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .service(web::resource("/").get(page))
                .service(web::resource("/v1/dashboard/events").get(events))
        })
        .workers(1)
        .shutdown_timeout(1)
        .bind(args.listen)
        .map_err(|e| CliError::Other(format!("--listen {}: {e}", args.listen)))?;
        let addr =
            server.addrs().first().copied().ok_or_else(|| {
                CliError::Other(format!("--listen {} bound nothing", args.listen))
            })?;
        println!(
            "troupe dashboard: http://{addr}/ (reading {})",
            args.nodes.join(", ")
        );
        ready(addr);
        server
            .run()
            .await
            .map_err(|e| CliError::Other(format!("the dashboard server stopped: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::dashboard::{NodeSnapshot, NodeView};
    use troupe::framework::live::LiveEvent;

    fn snap(incarnation: &str, ids: &[u64]) -> ClusterSnapshot {
        let events = ids
            .iter()
            .map(|&id| LiveEvent {
                id,
                t_us: id,
                ev: "send".into(),
                peer: "b".into(),
                seq: id,
                kind: None,
                tag: None,
                bytes: None,
                cause: None,
                reason: None,
            })
            .collect();
        ClusterSnapshot {
            gathered_by: "a".into(),
            t_us: 0,
            nodes: vec![NodeView {
                name: "a".into(),
                snapshot: Some(NodeSnapshot {
                    node: "a".into(),
                    incarnation: incarnation.into(),
                    uptime_ms: 0,
                    t_us: 0,
                    detector: "swim".into(),
                    members: vec![],
                    leaders: vec![],
                    locks: vec![],
                    tree: None,
                    traffic: vec![],
                    stats: Default::default(),
                    events,
                    next_event: ids.last().map_or(1, |l| l + 1),
                    panels: vec![],
                }),
                error: None,
            }],
        }
    }

    fn ids(s: &ClusterSnapshot) -> Vec<u64> {
        s.nodes[0]
            .snapshot
            .as_ref()
            .map(|n| n.events.iter().map(|e| e.id).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_event_is_pushed_once_per_incarnation() {
        let mut p = Pushed::default();
        let mut s = snap("x", &[1, 2, 3]);
        p.filter(&mut s);
        assert_eq!(ids(&s), vec![1, 2, 3]);
        let mut s = snap("x", &[2, 3, 4, 5]);
        p.filter(&mut s);
        assert_eq!(ids(&s), vec![4, 5]);
        let mut s = snap("x", &[2, 3, 4, 5]);
        p.filter(&mut s);
        assert!(ids(&s).is_empty());
        // A restarted node's tap counts from 1 again.
        let mut s = snap("y", &[1, 2]);
        p.filter(&mut s);
        assert_eq!(ids(&s), vec![1, 2]);
    }
}
