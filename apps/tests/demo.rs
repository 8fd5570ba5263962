//! `troupe demo`, the README's first command, run as a user runs it: the
//! built binary, its own three node processes on 127.0.0.1 (on ports the
//! demo picks, outside the kernel's ephemeral range and checked free, so it
//! can run alongside the rest of the suite). The test checks that it exits
//! 0 and that its narration shows every step happening: asks answered with
//! the right values, the burst of tells all counted, node-3 declared Down
//! by both others after the kill, the restarted node-3 (a new incarnation)
//! seen Up by both others, and the closing "done:" line; and that it
//! removed its working directory and left no node process running.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A healthy demo takes about 6 s; this is for a busy 2-core CI machine.
const LIMIT: Duration = Duration::from_secs(180);

/// The lines of step `[n]` of the demo's narration (up to the next step).
fn section(out: &str, n: u32) -> Vec<&str> {
    let head = format!("[{n}] ");
    out.lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| !(l.starts_with('[') && l.contains("] ")))
        .collect()
}

/// The one line of `lines` containing every one of `words`.
fn line_with<'a>(lines: &[&'a str], words: &[&str], out: &str) -> &'a str {
    lines
        .iter()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| panic!("no line with {words:?} where expected in:\n{out}"))
}

/// The text after `key` in `line`, up to the next space or comma.
fn after<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = line.split_once(key).map(|(_, r)| r).unwrap_or("");
    rest.split([' ', ',']).next().unwrap_or("")
}

/// True if `pid` is a running process whose command line mentions `work`
/// (the demo's working directory, where its nodes' configs are).
fn runs_in(pid: &str, work: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(work))
        .unwrap_or(false)
}

#[test]
fn demo_runs_every_step_and_exits_zero() {
    let logs = std::env::temp_dir().join(format!("troupe-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).expect("log dir");
    let stdout = std::fs::File::create(logs.join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(logs.join("stderr")).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so a hung demo is killed with its nodes.
        .process_group(0)
        .spawn()
        .expect("spawn troupe demo");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for troupe demo") {
            break Some(status);
        }
        if start.elapsed() > LIMIT {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(logs.join("stdout")).unwrap_or_default();
    let err = std::fs::read_to_string(logs.join("stderr")).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("troupe demo still running after {LIMIT:?}; stdout:\n{out}\nstderr:\n{err}")
    });
    assert!(
        status.success(),
        "troupe demo exited with {status}; stdout:\n{out}\nstderr:\n{err}"
    );

    // [2] three nodes started and answering.
    let s2 = section(&out, 2);
    let mut pids = Vec::new();
    for n in ["node-1", "node-2", "node-3"] {
        let l = line_with(&s2, &[&format!("{n} started (pid ")], &out);
        pids.push(after(l, "(pid ").trim_end_matches(')').to_string());
        line_with(&s2, &[&format!("{n} answers: incarnation {n}#")], &out);
    }
    let first_node3 = after(
        line_with(&s2, &["node-3 answers: incarnation "], &out),
        "incarnation ",
    );

    // [3] asks answered with the right values; every tell counted.
    let s3 = section(&out, 3);
    line_with(&s3, &["demo -> node-1/counter", "ask Add(5)", "= 5 "], &out);
    line_with(
        &s3,
        &["demo -> node-1/counter -> node-2/counter", "Add(7)", "= 7 "],
        &out,
    );
    line_with(&s3, &["20000 tells Add(1), then ask Get = 20000 "], &out);
    line_with(&s3, &["node-2/counter  200 asks one at a time: p50 "], &out);

    // [4] everyone Up.
    let s4 = section(&out, 4);
    for n in ["node-1", "node-2", "node-3"] {
        let l = line_with(&s4, &[&format!("{n} sees ")], &out);
        assert_eq!(l.matches(": Up").count(), 2, "{n} does not see all Up: {l}");
    }

    // [5] node-3 killed; both others declare it Down.
    let s5 = section(&out, 5);
    for n in ["node-1", "node-2"] {
        line_with(&s5, &[&format!("{n} declared node-3 Down ")], &out);
    }

    // [6] node-3 restarted with a new incarnation, seen Up by both others.
    let s6 = section(&out, 6);
    let l = line_with(&s6, &["node-3 started again (pid "], &out);
    pids.push(after(l, "(pid ").trim_end_matches(')').to_string());
    let second_node3 = after(
        line_with(&s6, &["node-3 answers: incarnation "], &out),
        "incarnation ",
    );
    assert!(
        second_node3.starts_with("node-3#") && second_node3 != first_node3,
        "restarted node-3 should have a new incarnation ({first_node3} before, {second_node3} after)"
    );
    for n in ["node-1", "node-2"] {
        let l = line_with(&s6, &[&format!("{n} sees ")], &out);
        assert!(
            l.contains("node-3: Up"),
            "{n} does not accept the restarted node-3: {l}"
        );
    }

    // [7] the closing line.
    line_with(
        &section(&out, 7),
        &["done: tells, asks, failure detection and rejoin all worked over QUIC."],
        &out,
    );

    // Cleaned up after itself.
    let work = std::env::temp_dir().join(format!("troupe-demo-{}", child.id()));
    assert!(
        !work.exists(),
        "troupe demo left its working directory {}",
        work.display()
    );
    for pid in &pids {
        assert!(
            !runs_in(pid, &work.to_string_lossy()),
            "node process {pid} still running after the demo exited"
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}
