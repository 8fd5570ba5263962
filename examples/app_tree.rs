//! Apps as supervised trees: an app kind declared in code, started from a
//! config table through a registry, a worker made to panic, and the
//! restarts watched through the supervision events and the tree snapshot.
//!
//! ```sh
//! cargo run --example app_tree
//! cargo run --example app_tree -- --trace tree.jsonl   # and write the run's trace
//! ```
//!
//! It runs one simulated node under virtual time (no network, a fraction
//! of a second). The part between the `README` markers is the README's
//! "Apps as supervised trees" example (a test keeps them the same). At the
//! end it checks what it showed, and fails if it did not happen (the suite
//! runs the same check, `tests/examples.rs`): both workers were restarted
//! once, together, and run again, while the rest of the app (its election)
//! and the app itself were left alone.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::app::{AppContext, AppKind, AppRegistry, AppSpec, ClusterInfo};
use troupe::config::Config;
use troupe::prelude::*;

#[path = "common/trace_arg.rs"]
mod trace_arg;

// README: apps as supervised trees (begin)
/// Tell a worker to panic.
#[derive(Debug, Serialize, Deserialize)]
struct Boom;
remote_message!(Boom, "example.boom", ());

struct Worker;
impl Actor for Worker {
    type Context = Context<Self>;
}
impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom");
    }
}

/// An app kind: `[apps.NAME]` tables with `kind = "pipeline"`.
struct Pipeline;

/// Its settings: unknown keys are refused, naming the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSettings {
    workers: u32,
}

impl AppKind for Pipeline {
    type Settings = PipelineSettings;
    fn kind(&self) -> &'static str {
        "pipeline"
    }
    fn build(&self, ctx: &AppContext, s: PipelineSettings) -> Result<AppSpec, troupe::Error> {
        let name = ctx.name();
        // A nested supervisor: its workers restart together.
        let policy = SupervisorPolicy {
            strategy: Strategy::OneForAll,
            ..Default::default()
        };
        let mut workers = SupervisorSpec::new("workers", policy);
        for i in 1..=s.workers {
            let worker = ActorSpec::new(format!("{name}.worker-{i}"), || Worker).handles::<Boom>();
            workers = workers.child(worker);
        }
        let members = ctx.members(); // this node and its peers
        Ok(AppSpec::new(name)
            .strategy(Strategy::RestForOne) // the workers depend on the election
            // Protocols started here run inside the app's tree.
            .start(move |app| async move {
                start_election(app.node(), ElectionAlgorithm::Bully, &members).await?;
                Ok(())
            })
            .supervisor(workers))
    }
}

/// The apps of a node's config file.
const APPS: &str = r#"
[apps.ingest]
kind = "pipeline"
workers = 2

[apps.ingest.supervision]    # optional: the app's root supervisor
max_restarts = 3
on_give_up = "restart"       # the default: restart the app as a whole; the node runs on
"#;

async fn start_apps(node: &Node, config: &Config) -> Result<(), troupe::Error> {
    let mut registry = AppRegistry::new();
    registry.register(Pipeline);
    let plan = registry.plan(&config.apps, &ClusterInfo::of(config))?; // checks every key
    plan.start(node, &config.peer_names(), None).await?;
    Ok(())
}
// README: apps as supervised trees (end)

fn print_tree(out: &mut String, node: &troupe::framework::TreeNode, depth: usize) {
    let strategy = node.strategy.map(|s| format!(" {s:?}")).unwrap_or_default();
    out.push_str(&format!(
        "{:indent$}{} ({:?}{strategy}) {:?}, {} restarts\n",
        "",
        node.name,
        node.kind,
        node.state,
        node.restarts,
        indent = depth * 2
    ));
    for child in &node.children {
        print_tree(out, child, depth + 1);
    }
}

/// Expect the child at `path` of `tree` to run, restarted `restarts` times.
fn expect(tree: &troupe::framework::TreeNode, path: &str, restarts: u64) -> Result<(), String> {
    let child = tree
        .find(path)
        .ok_or_else(|| format!("{path} is not in the tree"))?;
    if child.restarts != restarts || child.state != troupe::framework::ChildState::Running {
        return Err(format!(
            "{path}: {:?} after {} restarts, expected running after {restarts}",
            child.state, child.restarts
        ));
    }
    Ok(())
}

/// Run the example, printing what happens when `verbose`; `Err` says what
/// did not happen as shown.
pub fn run(verbose: bool) -> Result<(), String> {
    run_traced(verbose, None)
}

/// [`run`], writing the run's trace (its supervision events among them) to
/// `trace` when given (before the checks).
pub fn run_traced(verbose: bool, trace: Option<std::path::PathBuf>) -> Result<(), String> {
    let say = move |text: &str| {
        if verbose {
            println!("{text}");
        }
    };
    let text = format!("name = \"node-a\"\n[tls]\ninsecure_dev_mode = true\n{APPS}");
    let config = Config::from_toml(&text, Path::new(".")).map_err(|e| e.to_string())?;
    run_virtual(|| async move {
        let mut cluster = SimCluster::new(1, FaultPlan::reliable());
        let node = cluster
            .add_node("node-a")
            .await
            .map_err(|e| e.to_string())?;
        let mut events = node.supervision_events();
        start_apps(&node, &config)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = node.supervision_tree().await.map_err(|e| e.to_string())?;
        let mut shown = String::new();
        print_tree(&mut shown, &before, 1);
        say(&format!("The tree:\n{shown}"));
        for worker in ["ingest.worker-1", "ingest.worker-2"] {
            expect(&before, &format!("apps/ingest/workers/{worker}"), 0)?;
        }

        say("Making ingest.worker-2 panic (its siblings restart with it: one-for-all).");
        say("The panic message printed next is expected:");
        node.lookup::<Boom>("node-a/ingest.worker-2")
            .map_err(|e| e.to_string())?
            .tell(Boom)
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        while let Ok(e) = events.try_recv() {
            if !matches!(e.kind, troupe::framework::SupervisionEventKind::Started) {
                say(&format!("  {:>6.3}s  {e}", e.at.as_secs_f64()));
            }
        }
        let after = node.supervision_tree().await.map_err(|e| e.to_string())?;
        if let Some(path) = &trace {
            trace_arg::write(path, &cluster.net().trace());
        }
        let mut shown = String::new();
        print_tree(&mut shown, &after, 1);
        say(&format!("\nThe tree after:\n{shown}"));
        // One-for-all: both workers restarted once; nothing above them.
        for worker in ["ingest.worker-1", "ingest.worker-2"] {
            expect(&after, &format!("apps/ingest/workers/{worker}"), 1)?;
        }
        for untouched in ["apps/ingest/workers", "apps/ingest/election", "apps/ingest"] {
            expect(&after, untouched, 0)?;
        }
        say("OK: both workers restarted together, once; the rest of the app ran on.");
        Ok(())
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace = trace_arg::take(&mut args);
    if let Err(e) = run_traced(true, trace) {
        eprintln!("FAILED: {e}");
        std::process::exit(1);
    }
}
