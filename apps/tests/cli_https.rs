//! `troupe status` and `troupe tree` against a node whose endpoint has
//! `[http] client_certs = true`, as an operator runs them: `https://` with
//! `--ca`, `--cert` and `--key` works; every mistake (no certificate, a
//! certificate the node refuses, a CA the node's certificate is not from,
//! an unreadable key, plain `http://`) exits 1 saying what is wrong.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "troupe_run/mod.rs"]
mod troupe_run;

/// A fresh directory: a cluster CA in `certs/` with certificates for
/// `node-a` and the operator `ops`, another CA in `other/` with its own
/// `ops`, and `both.pem` holding both CAs.
fn cluster_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "troupe-cli-https-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (sub, names) in [("certs", &["node-a", "ops"][..]), ("other", &["ops"][..])] {
        let d = dir.join(sub);
        troupe::transports::certs::init(&d).expect("init");
        for n in names {
            troupe::transports::certs::issue(&d, n).expect("issue");
        }
    }
    let both = [dir.join("certs/ca.pem"), dir.join("other/ca.pem")]
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("ca"))
        .collect::<String>();
    std::fs::write(dir.join("both.pem"), both).expect("both.pem");
    dir
}

/// A running `troupe node`, killed when dropped.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts node-a with `[http] client_certs = true` and returns it with
/// the endpoint URL its `ready` log line gives.
fn start_node(dir: &Path) -> (NodeProcess, String) {
    let config = dir.join("node-a.toml");
    std::fs::write(
        &config,
        "name = \"node-a\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"certs/ca.pem\"\n\
         cert = \"certs/node-a.pem\"\nkey = \"certs/node-a.key\"\n\
         [[peers]]\nname = \"peer-x\"\naddr = \"127.0.0.1:9\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\nclient_certs = true\n",
    )
    .expect("config");
    let log = dir.join("node-a.log");
    let file = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["node", "--config", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .spawn()
        .expect("spawn troupe");
    let mut node = NodeProcess(child);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("ready")) {
            let url = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http="))
                .unwrap_or_else(|| panic!("no http= in the ready line: {line}"))
                .to_string();
            return (node, url);
        }
        if start.elapsed() > Duration::from_secs(30) || matches!(node.0.try_wait(), Ok(Some(_))) {
            panic!("node did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[&str]) -> Output {
    troupe_run::troupe_within(args, Duration::from_secs(30))
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().expect("utf-8").to_string()
}

/// `troupe ARGS` must exit 1 saying all of `words` on stderr.
fn fails(args: &[&str], words: &[&str]) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: {w:?} missing from: {err}");
    }
}

#[test]
fn status_and_tree_over_https_with_a_client_certificate() {
    let dir = cluster_dir();
    let (_node, url) = start_node(&dir);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (ca, cert, key) = (
        path(&dir, "certs/ca.pem"),
        path(&dir, "certs/ops.pem"),
        path(&dir, "certs/ops.key"),
    );
    let creds = ["--ca", &ca, "--cert", &cert, "--key", &key];

    let with = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "--node", url.as_str()];
        args.extend_from_slice(&creds);
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = with("status", &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("node-a  incarnation "), "{table}");
    assert!(table.contains("http     1 requests"), "{table}");
    let out = with("status", &["--server-name", "node-a"]);
    assert!(
        out.status.success(),
        "pinned to its name: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with("tree", &[]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("node-a"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client certificate: the CLI says what it needs.
    fails(&["status", "--node", &url], &["--ca, --cert and --key"]);
    fails(
        &["status", "--node", &url, "--ca", &ca, "--cert", &cert],
        &["missing: --key"],
    );
    // Plain HTTP to the HTTPS endpoint.
    let plain = url.replace("https://", "http://");
    fails(
        &["status", "--node", &plain],
        &["cannot reach", "client_certs = true speaks only HTTPS"],
    );
    // A key that cannot be read.
    let nowhere = path(&dir, "certs/nowhere.key");
    fails(
        &[
            "status", "--node", &url, "--ca", &ca, "--cert", &cert, "--key", &nowhere,
        ],
        &["key file", "nowhere.key"],
    );
    // A certificate of another CA, refused before connecting.
    let (other_cert, other_key) = (path(&dir, "other/ops.pem"), path(&dir, "other/ops.key"));
    fails(
        &[
            "status",
            "--node",
            &url,
            "--ca",
            &ca,
            "--cert",
            &other_cert,
            "--key",
            &other_key,
        ],
        &[
            "other/ops.pem",
            "not a client certificate of the CA",
            "certs/ca.pem",
        ],
    );
    // ... and by the node, when the CLI trusts that CA too.
    let both = path(&dir, "both.pem");
    fails(
        &[
            "status",
            "--node",
            &url,
            "--ca",
            &both,
            "--cert",
            &other_cert,
            "--key",
            &other_key,
        ],
        &[
            "the node refused the TLS handshake",
            "UnknownCA",
            "other/ops.pem",
        ],
    );
    // The node's certificate is not from the CA the CLI was given.
    let other_ca = path(&dir, "other/ca.pem");
    fails(
        &[
            "status",
            "--node",
            &url,
            "--ca",
            &other_ca,
            "--cert",
            &other_cert,
            "--key",
            &other_key,
        ],
        &[
            "the node's certificate is not accepted",
            "UnknownIssuer",
            "other/ca.pem",
        ],
    );
    // Nor under the name pinned.
    fails(
        &[
            "status",
            "--node",
            &url,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--server-name",
            "node-b",
        ],
        &[
            "the node's certificate is not accepted",
            "node-b",
            "--server-name",
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}
