//! A program that runs its own actors in a Troupe node over QUIC, from a
//! node config file: the `main` an application starts from.
//!
//! ```sh
//! troupe certs init --dir certs                      # once per cluster
//! troupe certs issue --dir certs --node node-a       # once per node
//! cargo run --example embedded_node -- node-a.toml   # a config as in examples/configs/
//! cargo run --example embedded_node -- node-a.toml --trace node-a.jsonl  # and trace it
//! ```
//!
//! It installs logging (`RUST_LOG`, default `info`), starts an actix system
//! and the node the config describes (QUIC with mutual TLS, the failure
//! detector, the durable store, the HTTP endpoint if `[http]` is set),
//! spawns a `greeter` actor that other nodes reach as `<this node>/greeter`,
//! and serves until SIGTERM or SIGINT: then it leaves the group (its peers
//! see it `Left`, not `Down`) and exits 0. A node that stops by itself (a
//! supervisor gave up) exits 1.
//!
//! An application of its own needs, in its `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! troupe = "0.1"                                      # this workspace's root crate
//! actix = "0.13"
//! actix-rt = "2"
//! serde = { version = "1", features = ["derive"] }
//! tracing-subscriber = { version = "0.3", features = ["env-filter", "fmt"] }
//! ```

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use troupe::framework::supervision::ActorSetup;
use troupe::prelude::*;
use troupe::runtime::Stopped;

#[path = "common/trace_arg.rs"]
#[allow(dead_code)] // `write` is for the simulated examples
mod trace_arg;

/// "Hello, I am `name`": answered with a greeting naming this actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Greet {
    /// Who greets.
    pub name: String,
}
remote_message!(Greet, "embedded.greet", String);

/// Answers greetings; knows where it lives from its factory's context.
struct Greeter {
    me: String,
    greeted: u64,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Greet> for Greeter {
    type Result = String;
    fn handle(&mut self, m: Greet, _: &mut Context<Self>) -> String {
        self.greeted += 1;
        format!(
            "hello {}, this is {} (greeting #{})",
            m.name, self.me, self.greeted
        )
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace = trace_arg::take(&mut args);
    let Some(path) = args.first().cloned() else {
        eprintln!("usage: embedded_node NODE_CONFIG.toml [--trace FILE]");
        return ExitCode::from(2);
    };
    let mut config = match Config::from_file(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `--trace FILE`: as `[trace] file = FILE` in the config (appended to,
    // one JSON line per event, wall-clock `t_us`).
    if let Some(file) = trace {
        config.trace = Some(troupe::config::TraceConfig::new(file));
    }
    let system = actix_rt::System::new();
    let outcome = system.block_on(async move {
        let running = start_node(config).await?;
        running
            .node
            .spawn(
                ActorSpec::with_context("greeter", |cx: &ActorSetup| Greeter {
                    me: cx.path().to_string(),
                    greeted: 0,
                })
                .handles::<Greet>(),
            )
            .await?;
        println!(
            "ready: {} on {} (greeter at {}/greeter)",
            running.node.id(),
            running.local_addr(),
            running.node.name()
        );
        Ok::<Stopped, troupe::Error>(running.run_until_signal().await)
    });
    match outcome {
        Ok(Stopped::Signal) => ExitCode::SUCCESS,
        Ok(Stopped::Failure) => {
            eprintln!("the node stopped: a supervisor gave up (see the log)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
