//! `troupe status`, `troupe tree` and `troupe commit in-doubt`: a node's
//! `/v1/status` as a table, its supervision tree (`/v1/tree`) as a
//! pstree-like drawing, and its transactions in doubt
//! (`/v1/commit/in-doubt`) as a table.
//!
//! The formatting is pure (data in, text out) and tested on fixtures; the
//! commands fetch the data with [`NodeClient`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::http::{InDoubtReport, StatusReport};

use crate::cli::{CliError, EndpointArgs};
use crate::http_client::NodeClient;

/// One node of a supervision tree, as `GET /v1/tree` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The supervisor's or actor's name.
    pub name: String,
    /// `supervisor` or `actor`.
    pub kind: String,
    /// A supervisor's strategy (`one-for-one`, `one-for-all`,
    /// `rest-for-one`); null for an actor.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Times it was restarted.
    #[serde(default)]
    pub restarts: u64,
    /// `running`, `restarting`, `stopped` or `gave-up`.
    pub state: String,
    /// A supervisor's children, in start order.
    #[serde(default)]
    pub children: Vec<TreeNode>,
}

/// `troupe status --node URL`: the status table.
pub fn status_command(endpoint: &EndpointArgs) -> Result<String, CliError> {
    Ok(format_status(&client(endpoint)?.status()?))
}

/// The client `troupe status|tree` use.
pub(crate) fn client(endpoint: &EndpointArgs) -> Result<NodeClient, CliError> {
    NodeClient::with_tls(
        &endpoint.node,
        endpoint.auth.token.clone(),
        endpoint.auth.client_tls()?,
        Duration::from_secs(10),
    )
}

/// `troupe tree --node URL`: the tree drawing.
pub fn tree_command(endpoint: &EndpointArgs) -> Result<String, CliError> {
    let client = client(endpoint)?;
    let a = client.get("/v1/tree")?;
    if a.status == 404 {
        return Err(CliError::Other(format!(
            "{} has no /v1/tree route: this node's troupe does not serve its supervision tree yet",
            client.url()
        )));
    }
    if a.status != 200 {
        return Err(client.refused("/v1/tree", &a));
    }
    let tree: TreeNode = serde_json::from_value(a.body).map_err(|e| {
        CliError::Other(format!(
            "{}/v1/tree answered something else than a tree: {e}",
            client.url()
        ))
    })?;
    Ok(format_tree(&tree))
}

/// `troupe commit in-doubt --node URL`: the in-doubt table.
pub fn in_doubt_command(endpoint: &EndpointArgs) -> Result<String, CliError> {
    let client = client(endpoint)?;
    let path = "/v1/commit/in-doubt";
    let a = client.get(path)?;
    if a.status == 404 {
        return Err(CliError::Other(format!(
            "{} has no {path} route: this node's troupe does not serve commit yet",
            client.url()
        )));
    }
    if a.status != 200 {
        return Err(client.refused(path, &a));
    }
    let report: InDoubtReport = serde_json::from_value(a.body).map_err(|e| {
        CliError::Other(format!(
            "{}{path} answered something else than a report: {e}",
            client.url()
        ))
    })?;
    Ok(format_in_doubt(&report))
}

/// The in-doubt table: one line per transaction.
pub fn format_in_doubt(r: &InDoubtReport) -> String {
    if r.transactions.is_empty() {
        return format!("{}: no transaction in doubt\n", r.node);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}: {} in doubt\n", r.node, r.transactions.len());
    let rows: Vec<[String; 5]> = r
        .transactions
        .iter()
        .map(|t| {
            [
                t.instance.clone(),
                format!("{:#x}", t.tx),
                if t.coordinator {
                    "coordinator"
                } else {
                    "participant"
                }
                .to_string(),
                format!("{:?}", t.phase),
                if t.active { "" } else { "recovered, asking" }.to_string(),
            ]
        })
        .collect();
    let head = ["INSTANCE", "TX", "ROLE", "PHASE", "NOTE"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..4).map(width).collect();
    let line = |c: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
        .trim_end()
        .to_string()
    };
    let _ = writeln!(out, "{}", line(head));
    for r in &rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}

/// `3f2a9c1e` from a 32-hex-digit incarnation.
fn short(incarnation: &str) -> &str {
    incarnation.get(..8).unwrap_or(incarnation)
}

fn format_uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn format_phi(phi: Option<f64>) -> String {
    match phi {
        None => "-".into(),
        Some(p) if p.is_infinite() => "inf".into(),
        // `+ 0.0` prints a -0.0 as 0.00.
        Some(p) => format!("{:.2}", p.max(0.0) + 0.0),
    }
}

/// The status table of one node.
pub fn format_status(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  incarnation {}  up {}  detector {}",
        s.node,
        short(&s.incarnation),
        format_uptime(s.uptime_ms),
        s.detector
    );
    let width = s
        .members
        .iter()
        .map(|m| m.name.len())
        .chain(["MEMBER".len()])
        .max()
        .unwrap_or(6);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<8} {:>6}  INCARNATION",
        "MEMBER", "STATUS", "PHI"
    );
    if s.members.is_empty() {
        let _ = writeln!(out, "(no members known)");
    }
    for m in &s.members {
        let _ = writeln!(
            out,
            "{:<width$}  {:<8} {:>6}  {}",
            m.name,
            format!("{:?}", m.status),
            format_phi(m.phi),
            m.incarnation.as_deref().map(short).unwrap_or("-")
        );
    }
    let apps = s.apps.iter().map(|a| format!("{} {}", a.name, a.state));
    let _ = writeln!(out, "\napps     {}", listed(apps, ", ", "none reported"));
    let leaders = s.leaders.iter().map(|l| {
        let leader = l.leader.as_deref().unwrap_or("unknown");
        format!("{}: term {}, leader {leader}", l.election, l.term)
    });
    let _ = writeln!(
        out,
        "leaders  {}",
        listed(leaders, "; ", "no election on this node")
    );
    let r = &s.http.rejected;
    let refused = [
        ("bad request", r.bad_request),
        ("unauthorized", r.unauthorized),
        ("not found", r.not_found),
        ("method not allowed", r.method_not_allowed),
        ("too large", r.payload_too_large),
        ("unsupported media type", r.unsupported_media_type),
        ("other", r.other),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"));
    let refused = listed(refused, ", ", "");
    let _ = writeln!(
        out,
        "http     {} requests, {} refused{}, {} server errors",
        s.http.requests,
        r.total(),
        if refused.is_empty() {
            refused
        } else {
            format!(" ({refused})")
        },
        s.http.server_errors
    );
    let t = &s.stats;
    let _ = writeln!(
        out,
        "traffic  {} frames in, {} bad, {} spoofed, {} undeliverable, {} deduplicated, {} inbox full, {} tells to down nodes dropped",
        t.frames_in,
        t.bad_frames,
        t.spoofed_frames,
        t.undeliverable,
        t.deduplicated,
        t.mailbox_full,
        t.dropped_tells
    );
    out
}

/// `items` joined by `sep`, or `none` if there are none.
fn listed(items: impl Iterator<Item = String>, sep: &str, none: &str) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        none.to_string()
    } else {
        items.join(sep)
    }
}

/// A supervision tree drawn like pstree, one line per node:
/// `name (kind, strategy, state, N restarts)`.
pub fn format_tree(root: &TreeNode) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", tree_line(root));
    draw_children(&root.children, "", &mut out);
    out
}

fn draw_children(children: &[TreeNode], prefix: &str, out: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if last { "└── " } else { "├── " },
            tree_line(child)
        );
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        draw_children(&child.children, &deeper, out);
    }
}

fn tree_line(n: &TreeNode) -> String {
    let mut parts = vec![n.kind.clone()];
    parts.extend(n.strategy.clone());
    parts.push(n.state.clone());
    match n.restarts {
        0 => {}
        1 => parts.push("1 restart".into()),
        r => parts.push(format!("{r} restarts")),
    }
    format!("{} ({})", n.name, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = r#"{
      "name": "node-1", "kind": "supervisor", "strategy": "one-for-one", "restarts": 0, "state": "running",
      "children": [
        {"name": "fd", "kind": "actor", "strategy": null, "restarts": 0, "state": "running", "children": []},
        {"name": "counter", "kind": "supervisor", "strategy": "rest-for-one", "restarts": 2, "state": "running",
         "children": [
           {"name": "store", "kind": "actor", "strategy": null, "restarts": 1, "state": "running", "children": []},
           {"name": "api", "kind": "actor", "strategy": null, "restarts": 0, "state": "restarting", "children": []}
         ]},
        {"name": "lock", "kind": "supervisor", "strategy": "one-for-all", "restarts": 5, "state": "gave-up",
         "children": [
           {"name": "worker", "kind": "actor", "strategy": null, "restarts": 0, "state": "stopped", "children": []}
         ]}
      ]
    }"#;

    #[test]
    fn a_tree_is_drawn_like_pstree() {
        let tree: TreeNode = serde_json::from_str(TREE).expect("fixture");
        let want = "\
node-1 (supervisor, one-for-one, running)
├── fd (actor, running)
├── counter (supervisor, rest-for-one, running, 2 restarts)
│   ├── store (actor, running, 1 restart)
│   └── api (actor, restarting)
└── lock (supervisor, one-for-all, gave-up, 5 restarts)
    └── worker (actor, stopped)
";
        assert_eq!(format_tree(&tree), want);
    }

    const STATUS: &str = r#"{
      "node": "node-1", "incarnation": "3f2a9c1e00000000000000000000abcd", "uptime_ms": 72500,
      "detector": "phi-accrual",
      "members": [
        {"name": "node-2", "status": "Up", "incarnation": "7c1e0d2a11111111111111111111ffff", "phi": 0.41},
        {"name": "node-3", "status": "Down", "incarnation": "9a8b7c6d22222222222222222222eeee", "phi": "inf"},
        {"name": "node-4", "status": "Joining", "incarnation": null, "phi": null}
      ],
      "apps": [{"name": "counter", "state": "running", "restarts": 0}],
      "leaders": [{"election": "election", "term": 3, "leader": "node-2"}],
      "stats": {"frames_in": 1234, "bad_frames": 0, "spoofed_frames": 0, "undeliverable": 1, "deduplicated": 0, "mailbox_full": 0},
      "http": {"requests": 12, "rejected": {"bad_request": 0, "unauthorized": 2, "not_found": 1,
               "method_not_allowed": 0, "payload_too_large": 0, "unsupported_media_type": 0, "other": 0},
               "server_errors": 0}
    }"#;

    #[test]
    fn the_status_table_shows_members_apps_leaders_and_counters() {
        let s: StatusReport = serde_json::from_str(STATUS).expect("fixture");
        let want = "\
node-1  incarnation 3f2a9c1e  up 1m 12s  detector phi-accrual

MEMBER  STATUS      PHI  INCARNATION
node-2  Up         0.41  7c1e0d2a
node-3  Down        inf  9a8b7c6d
node-4  Joining       -  -

apps     counter running
leaders  election: term 3, leader node-2
http     12 requests, 3 refused (unauthorized 2, not found 1), 0 server errors
traffic  1234 frames in, 0 bad, 0 spoofed, 1 undeliverable, 0 deduplicated, 0 inbox full, 0 tells to down nodes dropped
";
        assert_eq!(format_status(&s), want);
    }

    #[test]
    fn the_in_doubt_table_names_role_phase_and_recovery() {
        let r: InDoubtReport = serde_json::from_str(
            r#"{"node": "b", "transactions": [
                {"instance": "commit.orders", "tx": 281474976710657, "coordinator": false, "phase": "Ready", "active": true},
                {"instance": "commit.orders", "tx": 7, "coordinator": true, "phase": "Collecting", "active": false}
            ]}"#,
        )
        .expect("fixture");
        let want = "\
b: 2 in doubt

INSTANCE       TX               ROLE         PHASE       NOTE
commit.orders  0x1000000000001  participant  Ready
commit.orders  0x7              coordinator  Collecting  recovered, asking
";
        assert_eq!(format_in_doubt(&r), want);
        let none = InDoubtReport {
            node: "c".into(),
            transactions: vec![],
        };
        assert_eq!(format_in_doubt(&none), "c: no transaction in doubt\n");
    }
}
