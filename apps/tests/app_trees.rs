//! Apps as supervised trees in real `troupe node` processes, seen from
//! outside: `crashtest` apps (app root, a nested supervisor, leaves) started
//! from the config, leaves made to panic over QUIC, and the effect of each
//! strategy and of the escalation boundary read back from the node's
//! supervision tree (the status app's `GetTree`, and the node's HTTP
//! endpoint: `GET /v1/tree` and `troupe tree`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use troupe::config::Config;
use troupe::framework::{ChildState, Node, TreeNode};
use troupe::runtime::start_node;
use troupe_apps::http_client::NodeClient;
use troupe_apps::local_cluster::{fast_detector_toml, tree, wait_up, LocalCluster};
use troupe_apps::sample::{start_status, Add, Crash, CrashHow, COUNTER};

/// Four crashtest apps (and the default status and counter apps):
/// `oo`, `oa`, `rf` with a one-for-one, one-for-all and rest-for-one inner
/// supervisor; `esc` whose inner supervisor escalates at the first failure
/// to an app root that restarts (rest-for-one) once, then gives up and
/// restarts the whole app. The node's root allows no restart: a failure
/// that got past an app's root would stop the node.
const APPS: &str = r#"
[supervision]
max_restarts = 0

[apps.oo]
kind = "crashtest"

[apps.oa]
kind = "crashtest"
[apps.oa.inner]
strategy = "one-for-all"

[apps.rf]
kind = "crashtest"
[apps.rf.inner]
strategy = "rest-for-one"

[apps.esc]
kind = "crashtest"
[apps.esc.inner]
max_restarts = 0
[apps.esc.supervision]
strategy = "rest-for-one"
max_restarts = 1
within = 60000
backoff_max = 200
"#;

/// On `node-2` only: a `vital` app that escalates to the node, whose root
/// allows no restart.
const VITAL: &str = r#"
[supervision]
max_restarts = 0

[apps.vital]
kind = "crashtest"
leaves = 1
[apps.vital.inner]
max_restarts = 0
[apps.vital.supervision]
max_restarts = 0
on_give_up = "escalate"
"#;

fn cluster() -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("troupe-test-trees-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let c = LocalCluster::create(
        &dir,
        PathBuf::from(env!("CARGO_BIN_EXE_troupe")),
        &[("node-1", localhost), ("node-2", localhost)],
        Some(("ctl", localhost)),
        &fast_detector_toml("heartbeat"),
        "",
    )
    .expect("cluster files");
    let append = |name: &str, text: &str| {
        let path = c.config_path(name);
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(text);
        std::fs::write(&path, config).expect("config");
    };
    append("node-1", APPS);
    append("node-2", VITAL);
    c
}

/// Give `node` an HTTP endpoint on a free loopback port; its URL.
fn with_http(c: &LocalCluster, node: &str) -> String {
    let port = troupe::transports::ports::unused_tcp_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .expect("a free TCP port");
    let path = c.config_path(node);
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&path, config).expect("config");
    format!("http://127.0.0.1:{port}")
}

/// The tree as the node's HTTP endpoint serves it, parsed.
fn http_tree(url: &str) -> TreeNode {
    let client = NodeClient::new(url, None, Duration::from_secs(10)).expect("client");
    client.get_as("/v1/tree").expect("GET /v1/tree")
}

async fn crash(ctl: &Node, node: &str, leaf: &str) {
    ctl.lookup::<Crash>(&format!("{node}/{leaf}"))
        .expect("path")
        .tell(Crash(CrashHow::Panic))
        .expect("tell");
}

/// Restart counts of the children of `path`, in order.
fn counts(tree: &TreeNode, path: &str) -> Vec<u64> {
    match tree.find(path) {
        Some(n) => n.children.iter().map(|c| c.restarts).collect(),
        None => Vec::new(),
    }
}

/// Poll `of`'s tree until `done` holds for it; the last tree seen if not
/// within 20 s.
async fn tree_until(
    ctl: &Node,
    of: &str,
    done: impl Fn(&TreeNode) -> bool,
) -> Result<TreeNode, Option<TreeNode>> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(t) = tree(ctl, of, Duration::from_secs(2)).await {
            if done(&t) {
                return Ok(t);
            }
            last = Some(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[test]
fn strategies_and_the_escalation_boundary_seen_from_outside_a_node() {
    let mut c = cluster();
    let http = with_http(&c, "node-1");
    let dir = c.dir().to_path_buf();
    c.spawn("node-1").expect("spawn node-1");
    c.spawn("node-2").expect("spawn node-2");
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let ctl = start_node(Config::from_file(c.config_path("ctl")).unwrap())
            .await
            .unwrap();
        start_status(&ctl.node, None).await.unwrap();
        let node = ctl.node.clone();
        for n in ["node-1", "node-2"] {
            wait_up(&node, n, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
        }
        let logs = || format!("logs in {}", dir.display());

        // The three-level tree, as configured.
        let t = tree_until(&node, "node-1", |t| t.find("apps/esc").is_some())
            .await
            .unwrap_or_else(|t| panic!("no apps: {t:#?}; {}", logs()));
        let oa = t.find("apps/oa").expect("oa");
        let names: Vec<&str> = oa.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["oa.first", "inner", "oa.last"]);
        assert_eq!(counts(&t, "apps/oa/inner"), vec![0, 0, 0]);

        // One leaf panics in each: each strategy restarts what it should.
        for app in ["oo", "oa", "rf"] {
            crash(&node, "node-1", &format!("{app}.leaf-2")).await;
        }
        let want = |t: &TreeNode| {
            counts(t, "apps/oo/inner") == vec![0, 1, 0]
                && counts(t, "apps/oa/inner") == vec![1, 1, 1]
                && counts(t, "apps/rf/inner") == vec![0, 1, 1]
        };
        let t = tree_until(&node, "node-1", want).await.unwrap_or_else(|t| {
            panic!("strategies: {t:#?}; {}", logs());
        });
        for app in ["oo", "oa", "rf"] {
            assert_eq!(
                counts(&t, &format!("apps/{app}")),
                vec![0, 0, 0],
                "{app}: {t:#?}"
            );
        }

        // The node's HTTP endpoint serves the same tree, restart counts
        // included, and `troupe tree` draws it.
        let h = http_tree(&http);
        for path in ["apps/oo/inner", "apps/oa/inner", "apps/rf/inner", "apps/oa"] {
            assert_eq!(
                counts(&h, path),
                counts(&t, path),
                "{path} over HTTP: {h:#?}"
            );
        }
        let drawn = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args(["tree", "--node", &http])
            .output()
            .expect("troupe tree");
        let drawn = String::from_utf8_lossy(&drawn.stdout);
        assert!(drawn.starts_with("node-1 (supervisor, "), "{drawn}");
        for line in [
            "inner (supervisor, rest-for-one, running)",
            "rf.leaf-2 (actor, running, 1 restart)",
            "rf.leaf-3 (actor, running, 1 restart)",
        ] {
            assert!(drawn.contains(line), "{line:?} not in:\n{drawn}");
        }

        // esc: the inner supervisor escalates; the app root restarts it and
        // what follows it (rest-for-one)...
        crash(&node, "node-1", "esc.leaf-2").await;
        tree_until(&node, "node-1", |t| counts(t, "apps/esc") == vec![0, 1, 1])
            .await
            .unwrap_or_else(|t| panic!("esc, once: {t:#?}; {}", logs()));
        // ...and the second time gives up and restarts the whole app, which
        // the rest of the node never notices.
        crash(&node, "node-1", "esc.leaf-1").await;
        let t = tree_until(&node, "node-1", |t| {
            t.find("apps/esc")
                .is_some_and(|a| a.restarts == 1 && a.state == ChildState::Running)
        })
        .await
        .unwrap_or_else(|t| panic!("esc, twice: {t:#?}; {}", logs()));
        assert_eq!(counts(&t, "apps/esc"), vec![0, 0, 0], "a fresh app: {t:#?}");
        assert_eq!(
            counts(&t, "apps/oo/inner"),
            vec![0, 1, 0],
            "another app changed"
        );
        assert_eq!(t.find("apps").map(|a| a.restarts), Some(0));
        assert_eq!(
            t.find("apps/esc/inner/esc.leaf-3").map(|l| l.state),
            Some(ChildState::Running)
        );
        assert!(c.is_running("node-1"), "node-1 exited; {}", logs());
        let log = std::fs::read_to_string(c.log_path("node-1")).unwrap_or_default();
        assert!(log.contains("apps/esc: gave up, then restart"), "{log}");
        let counter = node
            .lookup::<Add>(&format!("node-1/{COUNTER}"))
            .unwrap()
            .ask(Add(2))
            .timeout(Duration::from_secs(5))
            .await;
        assert_eq!(counter.ok(), Some(2), "the counter app is not answering");

        // node-2: an app that escalates reaches a root that allows no
        // restart, and the node process exits 1.
        let t = tree_until(&node, "node-2", |t| t.find("apps/vital").is_some())
            .await
            .unwrap_or_else(|t| panic!("no vital app: {t:#?}; {}", logs()));
        assert_eq!(
            t.find("apps/vital/inner").map(|i| i.children.len()),
            Some(1)
        );
        crash(&node, "node-2", "vital.leaf-1").await;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = c.exit_status("node-2") {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node-2 still runs; {}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.code(), Some(1), "{}", logs());
        let log = std::fs::read_to_string(c.log_path("node-2")).unwrap_or_default();
        assert!(
            log.contains("apps/vital: gave up") && log.contains("stopped: a supervisor gave up"),
            "{log}"
        );
        assert!(
            c.is_running("node-1"),
            "node-1 exited with node-2; {}",
            logs()
        );
        ctl.shutdown().await;
    });
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
