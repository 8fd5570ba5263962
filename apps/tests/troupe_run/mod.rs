//! Running the `troupe` binary from a test, bounded in time: shared by the
//! tests that drive it as a user would (`#[path]`-included, so that each
//! compiles only this).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `troupe ARGS` and returns its output; a process still running
/// after `limit` is killed and fails the test.
pub fn troupe_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe");
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "troupe {args:?} did not exit within {limit:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
