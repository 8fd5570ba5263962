//! `troupe trace check` on trace files written here: a good trace passes
//! with a summary, a bad one fails (exit 1) naming the violation.

use std::time::Duration;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

fn delivered(node: &str, origin: &str, seq: u64, vector: &str) -> String {
    format!(
        "{{\"t_us\":0,\"node\":\"{node}\",\"ev\":\"delivered\",\"protocol\":\"broadcast.chat\",\"origin\":\"{origin}\",\"seq\":{seq},\"index\":0,\"vector\":{vector},\"held_back\":false}}\n"
    )
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = troupe_run::troupe_within(args, Duration::from_secs(20));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trace_check_passes_good_traces_and_names_violations() {
    let dir = std::env::temp_dir().join(format!("troupe-trace-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per node: n1 broadcasts a, n2 delivers it and answers with b.
    let n1 = dir.join("n1.jsonl");
    let n2 = dir.join("n2.jsonl");
    let n3_bad = dir.join("n3-bad.jsonl");
    std::fs::write(
        &n1,
        delivered("n1", "n1", 1, r#"[["n1",1]]"#)
            + &delivered("n1", "n2", 1, r#"[["n1",1],["n2",1]]"#),
    )
    .unwrap();
    std::fs::write(
        &n2,
        delivered("n2", "n1", 1, r#"[["n1",1]]"#)
            + &delivered("n2", "n2", 1, r#"[["n1",1],["n2",1]]"#),
    )
    .unwrap();
    // n3 delivers the answer before the message it answers.
    std::fs::write(
        &n3_bad,
        delivered("n3", "n2", 1, r#"[["n1",1],["n2",1]]"#)
            + &delivered("n3", "n1", 1, r#"[["n1",1]]"#),
    )
    .unwrap();
    let (p1, p2, p3) = (
        n1.to_str().unwrap(),
        n2.to_str().unwrap(),
        n3_bad.to_str().unwrap(),
    );

    let (ok, out, err) = run(&["trace", "check", "--causal", "--total", p1, p2]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("4 deliveries"), "{out}");
    assert!(out.contains("causal order, total order"), "{out}");
    assert!(out.contains("broadcast.chat: 2 nodes, 2 messages"), "{out}");

    let (ok, out, err) = run(&["trace", "check", "--causal", p1, p2, p3]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("causal order violated: node n3 delivered n2#1"),
        "{err}"
    );
    assert!(err.contains("line 5"), "{err}");

    // Without --causal only duplicates and (here) total order are checked:
    // n3's order differs from the others'.
    let (ok, _, err) = run(&["trace", "check", "--total", p1, p3]);
    assert!(!ok);
    assert!(err.contains("total order violated"), "{err}");
    let (ok, out, err) = run(&["trace", "check", p1, p2, p3]);
    assert!(ok, "{out}{err}");

    let (ok, _, err) = run(&["trace", "check", "no-such-file.jsonl"]);
    assert!(!ok);
    assert!(err.contains("no-such-file.jsonl"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
