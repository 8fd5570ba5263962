//! Interoperability of the certificates Troupe issues with a strict,
//! independent X.509 stack: Python's `cryptography` (what aioquic uses)
//! must parse the cluster CA and a node certificate and verify the node as a
//! TLS server and as a TLS client.
//!
//! `scripts/test.sh` installs `cryptography` with pip when it is missing;
//! without Python or `cryptography` this test says SKIPPED on stderr and
//! passes (the strict-DER unit test in `certs` always runs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `interop/strict_x509.py` on `dir`'s `ca.pem` and `NODE.pem`: `None`
/// when Python or `cryptography` is missing, else `(success, output)`.
fn python_verdict(dir: &Path, node: &str) -> Option<(bool, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/strict_x509.py");
    let out = match Command::new("python3")
        .arg(&script)
        .arg(dir.join("ca.pem"))
        .arg(dir.join(format!("{node}.pem")))
        .arg(node)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip(&format!("python3 cannot run: {e}"));
            return None;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) {
        skip(text.trim());
        return None;
    }
    Some((out.status.success(), text))
}

fn skip(why: &str) {
    // Not println!: libtest would hide it.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED cert_interop (Python `cryptography` check): {why}; \
         `pip install cryptography` to run it"
    );
}

#[test]
fn python_cryptography_verifies_issued_node_certificates() {
    let dir = std::env::temp_dir().join(format!("troupe-cert-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    troupe_transports::certs::init(&dir).expect("init");
    troupe_transports::certs::issue(&dir, "node-a").expect("issue");
    let verdict = python_verdict(&dir, "node-a");
    std::fs::remove_dir_all(&dir).ok();
    if let Some((ok, output)) = verdict {
        assert!(
            ok,
            "Python's cryptography refuses the certificates: {output}"
        );
        assert!(output.starts_with("ok"), "{output}");
    }
}
