//! Restart from the store over real files: a node process appends records
//! through a protocol (16 appends in flight, so syncs group them), printing
//! each acknowledged index; the test kills it with SIGKILL in the middle of
//! its appends, then starts the node again on the same data directory and
//! lets the protocol rebuild itself from the store. Every acknowledged
//! record must be there, intact, in one contiguous log, and appends go on
//! after it. Three kills at random points, on one directory.
//!
//! The node process is this test binary run again with
//! `TROUPE_DURABLE_CHILD=append|verify` (see [`child`]).

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use troupe::config::Config;
use troupe::framework::sansio::{DurableError, Outputs, Protocol, Recovered};
use troupe::framework::Node;
use troupe::protocols::driver::{spawn_driver, DriverHandle, DriverSpec, WireMessage};
use troupe::runtime::start_node;

const TEST: &str = "acknowledged_records_survive_kill_9_and_the_protocol_rebuilds_from_them";

/// The record stored at `index`: long enough to span pages, its content a
/// function of its index (a torn or misplaced record does not check out).
fn record(index: u64) -> Vec<u64> {
    (0..64)
        .map(|k| index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k)
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Never;
impl WireMessage for Never {
    const WIRE_NAME: &'static str = "test.durable-restart";
}

/// Appends records; rebuilt from its log, which it checks.
struct Journal {
    first: u64,
    last: u64,
}

type Out = Outputs<String, Never, (), ()>;

impl Journal {
    fn recover(r: &Recovered) -> Result<Self, DurableError> {
        let log = r.log_as::<Vec<u64>>("log")?;
        let start = log.first().map_or(1, |(i, _)| *i);
        for (expected, (i, rec)) in (start..).zip(log.iter()) {
            if *i != expected || *rec != record(*i) {
                return Err(DurableError::Decode {
                    key: format!("log[{i}]"),
                    message: "a record out of place or not as written".into(),
                });
            }
        }
        Ok(Self {
            first: log.first().map_or(0, |(i, _)| *i),
            last: log.last().map_or(0, |(i, _)| *i),
        })
    }
    fn append(&mut self, out: &mut Out) -> u64 {
        self.last += 1;
        if self.first == 0 {
            self.first = self.last;
        }
        out.append("log", self.last, &[record(self.last)]);
        self.last
    }
}

impl Protocol for Journal {
    type Id = String;
    type Msg = Never;
    type Timer = ();
    type Event = ();
    fn on_start(&mut self, _: Duration, _: &mut Out) {}
    fn on_message(&mut self, _: Duration, _: String, _: Never, _: &mut Out) {}
    fn on_timer(&mut self, _: Duration, _: (), _: &mut Out) {}
}

fn config(dir: &Path) -> Config {
    let text = format!(
        "name = \"journal-node\"\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[tls]\ninsecure_dev_mode = true\n",
        dir.join("data")
    );
    Config::from_toml(&text, dir).expect("config")
}

async fn journal(node: &Node) -> DriverHandle<Journal> {
    let spec = DriverSpec::recovering("journal", |_n: &Node, r: &Recovered| Journal::recover(r));
    spawn_driver(node, spec).await.expect("driver")
}

/// The node process: `append` prints `ack <index>` for each acknowledged
/// append, forever; `verify` prints `recovered <first> <last>` after the
/// protocol rebuilt itself (or `failed <why>`), then appends one more.
fn child(mode: &str, dir: &Path) {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let running = start_node(config(dir)).await.expect("node starts");
        let j = journal(&running.node).await;
        let mut out = std::io::stdout();
        // The harness has printed "test <name> ... " without a newline.
        let _ = writeln!(out);
        let view = tokio::time::timeout(
            Duration::from_secs(20),
            j.invoke(|c, _, _| (c.first, c.last)),
        )
        .await;
        let (first, last) = match view {
            Ok(Ok(v)) => v,
            other => {
                let _ = writeln!(out, "failed the protocol did not rebuild: {other:?}");
                std::process::exit(3);
            }
        };
        if mode == "verify" {
            let next = j.invoke(|c, _, out| c.append(out)).await;
            let _ = writeln!(out, "recovered {first} {last} next {next:?}");
            let _ = out.flush();
            std::process::exit(0);
        }
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < 16 {
                let j = j.clone();
                inflight.push(async move { j.invoke(|c, _, out| c.append(out)).await });
            }
            if let Some(Ok(i)) = inflight.next().await {
                let _ = writeln!(out, "ack {i}");
                let _ = out.flush();
            }
        }
    });
}

fn run_child(mode: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
        .env("TROUPE_DURABLE_CHILD", mode)
        .env("TROUPE_DURABLE_DIR", dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the node process")
}

#[test]
fn acknowledged_records_survive_kill_9_and_the_protocol_rebuilds_from_them() {
    if let Ok(mode) = std::env::var("TROUPE_DURABLE_CHILD") {
        let dir = PathBuf::from(std::env::var("TROUPE_DURABLE_DIR").expect("dir"));
        child(&mode, &dir);
        return;
    }
    let dir = std::env::temp_dir().join(format!("troupe-durable-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::env::var("TROUPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7u64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut acked = 0u64;
    for round in 0..3 {
        let kill_after = rng.gen_range(40..400u64);
        let mut node = run_child("append", &dir);
        let stdout = node.stdout.take().expect("stdout");
        let mut seen = 0;
        let started = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            if let Some(i) = line.strip_prefix("ack ") {
                acked = acked.max(i.parse().expect("an index"));
                seen += 1;
                if seen == kill_after {
                    break;
                }
            } else if line.starts_with("failed") {
                panic!("round {round}: the node said {line:?}");
            }
            // Other lines are the test harness's own ("running 1 test").
            assert!(started.elapsed() < Duration::from_secs(120), "too slow");
        }
        // SIGKILL in the middle of the appends (16 in flight).
        node.kill().expect("kill -9");
        let _ = node.wait();
        assert_eq!(
            seen, kill_after,
            "round {round}: the node stopped acknowledging early"
        );

        let verify = run_child("verify", &dir);
        let out = verify.wait_with_output().expect("verify run");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("recovered ") || l.starts_with("failed "))
            .unwrap_or_else(|| panic!("round {round}: no verdict in {text:?}"));
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts[0], "recovered", "round {round}: {line}");
        let first: u64 = parts[1].parse().unwrap();
        let last: u64 = parts[2].parse().unwrap();
        assert_eq!(first, 1, "round {round}: the log starts at 1: {line}");
        assert!(
            last >= acked,
            "round {round}: acknowledged up to {acked}, recovered only up to {last}"
        );
        assert!(
            line.ends_with(&format!("next Ok({})", last + 1)),
            "round {round}: appends go on after the recovered log: {line}"
        );
        acked = last + 1;
        eprintln!("round {round}: killed after {kill_after} acks; recovered 1..={last}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
