//! What an operator sees from the `troupe` binary: start-up mistakes stop
//! `troupe node` with a non-zero exit code and an error naming the file;
//! `troupe certs` refuses what it cannot do safely; a running node logs
//! plain text (its election's outcome included) and stops cleanly on
//! SIGINT / SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

/// A fresh directory with a cluster CA in `certs/` and certificates for `nodes`.
fn cluster_dir(tag: &str, nodes: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "troupe-cli-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = dir.join("certs");
    troupe::transports::certs::init(&certs).expect("init");
    for n in nodes {
        troupe::transports::certs::issue(&certs, n).expect("issue");
    }
    dir
}

/// Writes `dir/NAME.toml` for node `name` using certificate files `cert`
/// (`certs/CERT.pem`, `certs/CERT.key`), listening on a free port.
fn write_config(dir: &Path, name: &str, cert: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\n[tls]\nca = \"certs/ca.pem\"\n\
             cert = \"certs/{cert}.pem\"\nkey = \"certs/{cert}.key\"\n\n\
             [[peers]]\nname = \"peer-x\"\naddr = \"127.0.0.1:9\"\n{extra}"
        ),
    )
    .expect("write config");
    path
}

#[path = "troupe_run/mod.rs"]
mod troupe_run;

/// Runs `troupe ARGS`; a process still running after 20 s is killed and fails the test.
fn run(args: &[&str]) -> Output {
    troupe_run::troupe_within(args, Duration::from_secs(20))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `troupe ARGS` must exit with code 1, saying all of `words` on stderr.
fn fails(args: &[&str], words: &[&str]) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    for w in words {
        assert!(err.contains(w), "stderr does not say {w:?}: {err}");
    }
}

/// `troupe ARGS` must succeed; what it printed on stdout.
fn succeeds(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `troupe node --config FILE` must fail at start-up, saying all of `words`.
fn node_fails(config: &Path, words: &[&str]) {
    fails(
        &["node", "--config", config.to_str().expect("utf-8 path")],
        words,
    );
}

#[test]
fn node_refuses_tls_files_that_cannot_work_naming_them() {
    let dir = cluster_dir("tls", &["node-a", "node-c"]);
    // A certificate issued for another node name.
    let c = write_config(&dir, "node-b", "node-c", "");
    node_fails(&c, &["node-b.toml", "node-c.pem", "\"node-b\""]);
    // A certificate from another cluster's CA.
    let other = dir.join("other");
    troupe::transports::certs::init(&other).expect("other CA");
    let c = write_config(&dir, "node-a", "node-a", "");
    let text = std::fs::read_to_string(&c)
        .expect("read")
        .replace("certs/ca.pem", "other/ca.pem");
    std::fs::write(&c, text).expect("write");
    node_fails(&c, &["node-a.toml", "node-a.pem", "UnknownIssuer"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A key that is not the certificate's: `troupe node` and an app that
/// embeds Troupe (`Config::from_file` + `start_node`) say the same thing,
/// naming the config file, its `[tls]` key line and both files.
#[test]
fn a_key_of_another_certificate_reads_the_same_from_the_cli_and_the_library() {
    let dir = cluster_dir("pair", &["node-a", "node-b"]);
    let c = write_config(&dir, "node-a", "node-a", "");
    let text = std::fs::read_to_string(&c)
        .expect("read")
        .replace("certs/node-a.key", "certs/node-b.key");
    std::fs::write(&c, text).expect("write");
    let out = run(&["node", "--config", c.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let embedded = actix_rt::System::new().block_on(async {
        let config = troupe::config::Config::from_file(&c).expect("the file itself is fine");
        troupe::runtime::start_node(config)
            .await
            .err()
            .expect("the library refuses the pair")
            .to_string()
    });
    assert_eq!(stderr(&out).trim_end(), format!("troupe: {embedded}"));
    for w in [
        "node-a.toml:7: tls.key",
        "node-b.key does not belong to the certificate",
        "node-a.pem",
    ] {
        assert!(embedded.contains(w), "{w:?} missing from: {embedded}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn node_refuses_a_private_key_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = cluster_dir("mode", &["node-a"]);
    let key = dir.join("certs/node-a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let c = write_config(&dir, "node-a", "node-a", "");
    node_fails(&c, &["node-a.key", "chmod 600"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn node_refuses_a_data_dir_it_cannot_use_naming_the_key() {
    let dir = cluster_dir("data", &["node-a"]);
    let c = write_config(&dir, "node-a", "node-a", "");
    std::fs::write(dir.join("a-file"), "not a directory").expect("write");
    let text = std::fs::read_to_string(&c)
        .expect("read")
        .replace("listen = ", "data_dir = \"a-file\"\nlisten = ");
    std::fs::write(&c, text).expect("write");
    node_fails(&c, &["node-a.toml", "data_dir", "a-file"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn node_names_the_config_file_and_the_key_in_an_apps_table_error() {
    let dir = cluster_dir("apps", &["node-a"]);
    let c = write_config(
        &dir,
        "node-a",
        "node-a",
        "\n[apps.election]\nalgoritm = \"bully\"\n",
    );
    // The settings start on line 14 (see write_config).
    node_fails(
        &c,
        &["node-a.toml:14: apps.election.algoritm", "unknown field"],
    );
    let c = write_config(&dir, "node-a", "node-a", "\n[apps.x]\nkind = \"gossip\"\n");
    node_fails(
        &c,
        &[
            "node-a.toml:14: apps.x.kind",
            "\"gossip\"",
            "bank, chat, counter, crashtest, election, kv, lock, status",
        ],
    );
    // The flat form of earlier versions says what to write instead.
    let c = write_config(&dir, "node-a", "node-a", "\n[apps]\nelection = \"bully\"\n");
    node_fails(&c, &["node-a.toml:14: apps.election", "[apps.election]"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn node_refuses_election_members_that_are_not_peers() {
    let dir = cluster_dir("members", &["node-a"]);
    let c = write_config(
        &dir,
        "node-a",
        "node-a",
        "\n[apps.election]\nalgorithm = \"bully\"\nmembers = [\"node-a\", \"peer-y\"]\n",
    );
    node_fails(&c, &["node-a.toml:15: apps.election.members[1]", "peer-y"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn certs_issue_without_a_ca_says_to_run_certs_init() {
    let dir = cluster_dir("noca", &[]);
    let empty = dir.join("empty");
    fails(
        &[
            "certs",
            "issue",
            "--dir",
            empty.to_str().expect("utf-8"),
            "--node",
            "node-a",
        ],
        &["troupe certs init --dir"],
    );
    assert!(!empty.exists(), "certs issue must not create the directory");
    // ca.pem alone (a node host's copy) is not enough to issue.
    std::fs::remove_file(dir.join("certs/ca.key")).expect("rm ca.key");
    let certs = dir.join("certs");
    fails(
        &[
            "certs",
            "issue",
            "--dir",
            certs.to_str().expect("utf-8"),
            "--node",
            "node-a",
        ],
        &["ca.key is missing"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn certs_init_twice_keeps_the_first_ca_key() {
    let dir = cluster_dir("twice", &[]);
    let certs = dir.join("certs");
    let key = std::fs::read(certs.join("ca.key")).expect("ca.key");
    fails(
        &["certs", "init", "--dir", certs.to_str().expect("utf-8")],
        &["refusing to overwrite"],
    );
    assert_eq!(std::fs::read(certs.join("ca.key")).expect("ca.key"), key);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn certs_issue_renews_only_when_asked_and_says_until_when() {
    let dir = cluster_dir("renew", &["node-a"]);
    let certs = dir.join("certs");
    let c = certs.to_str().expect("utf-8");
    let key = std::fs::read(certs.join("node-a.key")).expect("key");
    fails(
        &["certs", "issue", "--dir", c, "--node", "node-a"],
        &["node-a", "already exists", "--renew"],
    );
    assert_eq!(std::fs::read(certs.join("node-a.key")).expect("key"), key);
    let said = succeeds(&[
        "certs", "issue", "--dir", c, "--node", "node-a", "--renew", "--days", "30",
    ]);
    assert!(
        said.contains("renewed") && said.contains("valid until"),
        "{said}"
    );
    assert_ne!(std::fs::read(certs.join("node-a.key")).expect("key"), key);
    fails(
        &[
            "certs", "issue", "--dir", c, "--node", "node-b", "--days", "0",
        ],
        &["0 days", "1 to"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn certs_issue_says_when_the_ca_cuts_a_certificate_short() {
    let dir = cluster_dir("cap", &[]);
    let certs = dir.join("fresh");
    let c = certs.to_str().expect("utf-8");
    succeeds(&["certs", "init", "--dir", c, "--days", "10"]);
    let said = succeeds(&["certs", "issue", "--dir", c, "--node", "node-a"]);
    assert!(
        said.contains("shorter than the 365 days") && said.contains("cluster CA"),
        "{said}"
    );
    let said = succeeds(&[
        "certs", "issue", "--dir", c, "--node", "node-b", "--days", "5",
    ]);
    assert!(!said.contains("shorter"), "{said}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts `troupe node` with its output in `log`, waits until the log says
/// `wait_for`, sends `signal`, and returns the exit status and the whole log.
#[cfg(unix)]
fn run_until_signal(
    config: &Path,
    log: &Path,
    wait_for: &str,
    signal: &str,
) -> (Option<i32>, String) {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(exe())
        .args(["node", "--config", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .spawn()
        .expect("spawn troupe");
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(wait_for)
    {
        if start.elapsed() > Duration::from_secs(20) || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            panic!(
                "node did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("node did not stop after {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

#[cfg(unix)]
#[test]
fn node_stops_cleanly_on_sigint_and_sigterm_with_a_plain_text_log() {
    let dir = cluster_dir("signals", &["node-a"]);
    let c = write_config(&dir, "node-a", "node-a", "");
    for signal in ["-INT", "-TERM"] {
        let log = dir.join(format!("node-a{signal}.log"));
        let (code, text) = run_until_signal(&c, &log, "ready", signal);
        assert_eq!(code, Some(0), "{signal}: {text}");
        assert!(text.contains("node stopped"), "{signal}: {text}");
        assert!(
            !text.contains('\u{1b}'),
            "{signal}: terminal colour codes in a log file: {text:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn node_warns_when_its_certificate_expires_within_thirty_days() {
    let dir = cluster_dir("expiry", &[]);
    let certs = dir.join("certs");
    let c = certs.to_str().expect("utf-8");
    succeeds(&[
        "certs", "issue", "--dir", c, "--node", "node-a", "--days", "20",
    ]);
    let c = write_config(&dir, "node-a", "node-a", "");
    let (code, text) = run_until_signal(&c, &dir.join("node-a.log"), "--renew", "-TERM");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("WARN") && text.contains("node-a.pem") && text.contains("expires on"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn node_logs_the_elected_leader() {
    let dir = cluster_dir("leader", &["node-a"]);
    let c = dir.join("node-a.toml");
    std::fs::write(
        &c,
        "name = \"node-a\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"certs/ca.pem\"\n\
         cert = \"certs/node-a.pem\"\nkey = \"certs/node-a.key\"\n[apps.election]\nalgorithm = \"bully\"\n",
    )
    .expect("write config");
    let (code, text) = run_until_signal(&c, &dir.join("node-a.log"), "leader elected", "-TERM");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("leader elected") && text.contains("leader=node-a"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
