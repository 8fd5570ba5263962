//! `troupe check`, the model checker from the command line: `--list`
//! names every family, the 3PC partition counterexample is found (exit 1,
//! its steps printed, its trace written as JSON lines that replay), a
//! correct model holds exhaustively (exit 0), a mutation is caught (exit
//! 1), bad arguments exit 2 naming the bad value. Small bounds: seconds.

use std::time::Duration;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

/// `troupe check ARGS`: exit code, stdout, stderr.
fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let out = troupe_run::troupe_within(&all, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_names_every_family_and_mutation() {
    let (code, out, err) = check(&["--list"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for family in ["mutex", "election", "commit", "broadcast", "raft"] {
        assert!(out.contains(&format!("\n{family}: ")), "{family}:\n{out}");
    }
    for word in [
        "ricart-agrawala",
        "three-phase",
        "next-in-line",
        "causal",
        "no-tie-break",
        "forgets-decision",
        "forgets-deliveries",
        "one-ack",
        "forgets-term",
        "bounds for total-lamport: depth 60",
        "forgets-vote",
        "depth 60, 400000 states",
        "members:    3 (2 to 5)",
    ] {
        assert!(out.contains(word), "{word} missing from:\n{out}");
    }
}

#[test]
fn three_phase_commit_under_a_partition_breaks_agreement() {
    let dir = std::env::temp_dir().join(format!("troupe-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("3pc.jsonl");
    let trace_arg = trace.to_str().unwrap();
    // The coordinator may crash (for good), the group be cut in two once.
    let found_with = [
        "commit",
        "--algorithm",
        "three-phase",
        "--partitions",
        "1",
        "--crashes",
        "1",
        "--crashable",
        "1",
        "--no-restarts",
    ];
    let mut args = found_with.to_vec();
    args.extend(["--trace", trace_arg]);
    let (code, out, err) = check(&args);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("commit three-phase n=3: 12 steps to a violation:"),
        "{out}"
    );
    assert!(out.contains("    1. 1 begins transaction 1"), "{out}");
    assert!(out.contains(". PARTITION [1, 2] from the rest"), "{out}");
    assert!(out.contains(". CRASH 1"), "{out}");
    assert!(out.contains("AC1: node 2 decided Commit on tx 1"), "{out}");
    assert!(out.contains("VIOLATED"), "{out}");
    assert!(out.contains("states/s"), "{out}");
    assert!(err.contains("AC1"), "{err}");
    let lines = std::fs::read_to_string(&trace).unwrap();
    // The 12 steps and the violation, and between them what happened as
    // the framework's trace lines: every delivery or loss of a message
    // after its send, the crash, the partition and the violation noted.
    let (mut steps, mut sends, mut events) = (0, 0, Vec::new());
    let mut sent = std::collections::BTreeSet::new();
    for line in lines.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["ev"].as_str() {
            None => {
                assert_eq!(v["model"], "commit three-phase n=3", "{line}");
                steps += 1;
            }
            Some(ev) => {
                assert!(v["t_us"].is_u64() && v["node"].is_string(), "{line}");
                let node = v["node"].as_str().unwrap().to_string();
                match ev {
                    "send" => {
                        sends += 1;
                        sent.insert((node, v["seq"].as_u64().unwrap()));
                    }
                    "deliver" | "drop" => {
                        let key = (
                            v["from"].as_str().unwrap().to_string(),
                            v["seq"].as_u64().unwrap(),
                        );
                        assert!(sent.contains(&key), "{ev} before its send: {line}");
                    }
                    _ => {}
                }
                events.push(format!(
                    "{ev} {}",
                    v.get("text").and_then(|t| t.as_str()).unwrap_or("")
                ));
            }
        }
    }
    assert_eq!(steps, 13, "{lines}");
    assert!(sends >= 7, "{lines}");
    assert!(events.iter().any(|e| e.starts_with("crash")), "{events:?}");
    assert!(
        events.iter().any(|e| e.starts_with("drop")),
        "a vote lost in the partition: {events:?}"
    );
    assert!(events.iter().any(|e| e.contains("PARTITION")), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| e.contains("VIOLATED")).count(),
        3,
        "{events:?}"
    );
    assert!(lines.lines().any(|l| l.contains("\"violation\"")));

    // The trace replays to the violation with the options it was found
    // with; with others it does not fit (exit 2).
    let mut args = found_with.to_vec();
    args.extend(["--replay", trace_arg]);
    let (code, out, err) = check(&args);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("   12. timer 2: ThreePhase(Tx(1))"), "{out}");
    assert!(out.contains("violated: ") && out.contains("AC1"), "{out}");
    let (code, out, err) = check(&[
        "commit",
        "--algorithm",
        "three-phase",
        "--partitions",
        "1",
        "--replay",
        trace_arg,
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("step 5") && err.contains("PARTITION"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_correct_model_holds_and_a_mutation_is_caught() {
    let (code, out, err) = check(&["commit", "--algorithm", "two-phase"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("model:    commit two-phase n=3"), "{out}");
    assert!(out.contains("holds: exhaustive within the bounds"), "{out}");
    assert!(out.contains("states ("), "{out}");

    // Cut at depth 4: holds, but not exhaustively.
    let (code, out, err) = check(&["commit", "--algorithm", "two-phase", "--depth", "4"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("holds to depth 4") && out.contains("not exhaustive"),
        "{out}"
    );

    // The catalog's default algorithm and bounds for the mutation.
    let (code, out, err) = check(&["mutex", "--mutation", "no-tie-break"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("model:    mutex ricart-agrawala n=3"), "{out}");
    assert!(out.contains("steps to a violation"), "{out}");
    assert!(out.contains("VIOLATED"), "{out}");
}

/// The spelling: `--nodes N` and `--faults drop,dup,crash` (one of
/// each per path; an explicit count wins).
#[test]
fn nodes_and_named_faults_set_the_size_and_the_fault_budget() {
    let (code, out, err) = check(&[
        "broadcast",
        "--algorithm",
        "fifo",
        "--nodes",
        "2",
        "--faults",
        "drop,dup,crash",
        "--crashes",
        "0",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("model:    broadcast fifo n=2"), "{out}");
    assert!(
        out.contains("1 lost message") && out.contains("1 duplicated message"),
        "{out}"
    );
    assert!(!out.contains("1 crash"), "--crashes 0 wins: {out}");
    let (code, _, err) = check(&["broadcast", "--faults", "byzantine"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("byzantine"), "{err}");
}

#[test]
fn bad_arguments_exit_2_naming_the_bad_value() {
    for (args, says) in [
        (&["paxos"][..], "paxos"),
        (&["commit", "--algorithm", "four-phase"], "four-phase"),
        (
            &["commit", "--mutation", "forgets-nothing"],
            "forgets-nothing",
        ),
        (
            &[
                "mutex",
                "--algorithm",
                "lamport",
                "--mutation",
                "no-tie-break",
            ],
            "does not apply to mutex lamport",
        ),
        (
            &["raft", "--mutation", "forgets-decision"],
            "commit mutation",
        ),
        (&["raft", "--members", "9"], "9 members"),
        (&["commit", "--crashable", "7"], "crashable member 7"),
        (
            &["commit", "--replay", "/nonexistent/x.jsonl"],
            "--algorithm",
        ),
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {says:?} missing from {err}");
    }
}

/// Output piped into a reader that is gone (`troupe check --list | head`
/// with `head` done): the command ends quietly, no panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["check", "--list"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}
