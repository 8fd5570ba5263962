//! Every configuration error names the file, the line and the key (issue 17):
//! parse errors inside `[failure_detector]` (an unknown key, a value of the
//! wrong type), values refused by validation, `[apps.*]` tables, and
//! start-up failures that belong to a key (`listen` already in use, `[tls]`
//! files that cannot work).

use std::path::{Path, PathBuf};

use troupe::config::Config;

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "troupe-config-errors-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A config for node `a` (insecure dev mode) with `tail` appended; the
/// lines of `tail` start at line 5.
fn file_with(dir: &Path, tail: &str) -> PathBuf {
    let path = dir.join("node-a.toml");
    let text =
        format!("name = \"a\"\nlisten = \"127.0.0.1:0\"\n[tls]\ninsecure_dev_mode = true\n{tail}");
    std::fs::write(&path, text).expect("write");
    path
}

/// `err` must say `at` right after the config file's name (`:LINE: KEY...`).
fn assert_at(err: &str, path: &Path, at: &str) {
    let want = format!("{}{at}", path.display());
    assert!(err.contains(&want), "want {want:?} in: {err}");
}

/// `Config::from_file` must refuse `tail`, saying `FILE:LINE: KEY` and `what`.
fn refused(tail: &str, line: usize, key: &str, what: &str) {
    let dir = temp_dir("refused");
    let path = file_with(&dir, tail);
    let err = Config::from_file(&path)
        .expect_err("must be refused")
        .to_string();
    let at = format!("{}:{line}: {key}", path.display());
    assert!(
        err.contains(&at) && err.contains(what),
        "for {tail:?}: want {at:?} and {what:?} in: {err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_key_in_the_failure_detector_table_is_reported_at_its_line() {
    refused(
        "[failure_detector]\nkind = \"phi-accrual\"\n\nthresold = 3.0\n",
        8,
        "failure_detector.thresold",
        "unknown key `thresold`",
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_and_line() {
    refused(
        "[failure_detector]\nkind = \"phi-accrual\"\nthreshold = \"high\"\n",
        7,
        "failure_detector.threshold",
        "invalid type: string \"high\", expected f64",
    );
    refused(
        "[transport]\nkeep_alive_ms = \"2s\"\n",
        6,
        "transport.keep_alive_ms",
        "invalid type: string \"2s\"",
    );
}

#[test]
fn a_key_of_another_detector_kind_is_reported_at_its_line() {
    refused(
        "[failure_detector]\nkind = \"swim\"\nthreshold = 3.0\n",
        7,
        "failure_detector.threshold",
        "not of kind = \"swim\"",
    );
}

#[test]
fn an_unknown_preset_is_reported_at_its_line_naming_the_presets() {
    refused(
        "[failure_detector]\nkind = \"heartbeat\"\n\npreset = \"fast\"\n",
        8,
        "failure_detector.preset",
        "unknown preset `fast`: the presets are lan-fast, lan, wan",
    );
    refused(
        "[failure_detector]\npreset = 2\nkind = \"swim\"\n",
        6,
        "failure_detector.preset",
        "invalid type: integer `2`",
    );
}

#[test]
fn a_key_that_does_not_fit_its_preset_is_reported_at_its_line() {
    // lan-fast probes every 300 ms: a 500 ms probe timeout cannot work.
    refused(
        "[failure_detector]\nkind = \"swim\"\npreset = \"lan-fast\"\nprobe_timeout_ms = 500\n",
        8,
        "failure_detector.probe_timeout_ms",
        "must be < probe_interval_ms (300), got 500",
    );
    // A preset with a key overriding it is accepted.
    let dir = temp_dir("preset");
    let path = file_with(
        &dir,
        "[failure_detector]\nkind = \"phi-accrual\"\npreset = \"wan\"\ngrace_ms = 5000\n",
    );
    let config = Config::from_file(&path).expect("valid");
    let want = troupe::protocols::fd::FailureDetectorConfig::PhiAccrual(
        troupe::protocols::fd::config::PhiAccrualConfig {
            grace_ms: 5000,
            ..troupe::protocols::fd::config::PhiAccrualConfig::preset(
                troupe::protocols::fd::config::Preset::Wan,
            )
        },
    );
    assert_eq!(config.failure_detector, want);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn values_refused_by_validation_name_their_key_and_line() {
    refused(
        "[failure_detector]\nkind = \"heartbeat\"\ninterval_ms = -5\n",
        7,
        "failure_detector.interval_ms",
        "must be > 0",
    );
    refused(
        "[[peers]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\n[[peers]]\nname = \"c\"\naddr = \"nowhere\"\n",
        10,
        "peers[1].addr",
        "must be host:port",
    );
    refused(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"short\"\n",
        7,
        "http.token",
        "at least 16",
    );
    // A key left out is reported at its table.
    let dir = temp_dir("missing");
    let path = dir.join("node-a.toml");
    std::fs::write(&path, "name = \"a\"\n\n[tls]\nca = \"ca.pem\"\n").expect("write");
    let err = Config::from_file(&path).expect_err("no cert").to_string();
    assert_at(&err, &path, ":3: tls.cert is required");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_of_apps_tables_get_the_line_of_their_key() {
    let dir = temp_dir("apps");
    let path = file_with(
        &dir,
        "[apps.votes]\nkind = \"voting\"\n\n[apps.votes.supervision]\nmax_restarts = \"many\"\n",
    );
    let config = Config::from_file(&path).expect("the [apps] table is read later");
    // What an app registry says (key paths from serde_path_to_error), located.
    let said = troupe::Error::Config(
        "apps.votes.supervision.max_restarts: invalid type: string \"many\", expected u32".into(),
    );
    let err = config.locate(said).to_string();
    assert_at(
        &err,
        &path,
        ":9: apps.votes.supervision.max_restarts: invalid type",
    );
    // A key that is not in the file: its table's line.
    let err = config
        .locate(troupe::Error::Config("apps.votes.members: who?".into()))
        .to_string();
    assert_at(&err, &path, ":5: apps.votes.members");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_listen_port_in_use_names_the_file_the_key_and_its_line() {
    let dir = temp_dir("port");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let path = dir.join("node-a.toml");
    std::fs::write(
        &path,
        format!("name = \"a\"\n\nlisten = \"127.0.0.1:{port}\"\n[tls]\ninsecure_dev_mode = true\n"),
    )
    .expect("write");
    let config = Config::from_file(&path).expect("config");
    let err = actix_rt::System::new()
        .block_on(troupe::runtime::start_node(config))
        .err()
        .expect("the port is taken")
        .to_string();
    assert_at(&err, &path, ":3: listen: ");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(taken);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn storage_keys_are_checked_at_their_line() {
    refused(
        "[storage]\ngroup_comit = false\n",
        6,
        "storage.group_comit",
        "unknown field",
    );
    refused(
        "[storage]\ngroup_commit = \"no\"\n",
        6,
        "storage.group_commit",
        "boolean",
    );
    let dir = temp_dir("storage");
    let path = file_with(&dir, "[storage]\ngroup_commit = false\n");
    let c = Config::from_file(&path).expect("a valid [storage] table");
    assert!(!c.storage.group_commit);
    std::fs::remove_dir_all(&dir).ok();
}
