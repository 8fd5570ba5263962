//! Running the `troupe` binary from a test, bounded in time, and the
//! random choices of the clients of the cluster tests: shared by the tests
//! that drive it as a user would (`#[path]`-included, so that each
//! compiles only this).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starts `troupe ARGS` (no input, its output piped), not waited for.
pub fn spawn_troupe(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe")
}

/// Runs `troupe ARGS` and returns its output; a process still running
/// after `limit` is killed and fails the test.
pub fn troupe_within(args: &[&str], limit: Duration) -> Output {
    let mut child = spawn_troupe(args);
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

/// Runs `troupe ARGS` (within two minutes) and fails the test, quoting its
/// output, unless it succeeds.
#[allow(dead_code)] // not every test that includes this module uses it
pub fn troupe_ok(args: &[&str]) -> Output {
    let out = troupe_within(args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "troupe {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whatever happens to the test, no node process of the local cluster in
/// this directory survives it (SIGKILL on drop).
#[allow(dead_code)] // not every test that includes this module uses it
pub struct KillNodesOnDrop(pub std::path::PathBuf);

impl Drop for KillNodesOnDrop {
    fn drop(&mut self) {
        use troupe_apps::cluster::{read_file, running};
        if let Ok(file) = read_file(&self.0) {
            for n in file.nodes.iter().filter(|n| running(n)) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(n.pid.to_string())
                    .status();
            }
        }
    }
}

/// A small deterministic generator (xorshift64*) for a test's client
/// threads, one per client.
#[allow(dead_code)] // not every test that includes this module uses it
pub struct Rng(u64);

#[allow(dead_code)]
impl Rng {
    /// The generator of client `n` (each client its own sequence).
    pub fn for_client(n: u64) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15 ^ ((n + 1) * 0x1234_5678))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
