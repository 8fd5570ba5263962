//! Headless Chromium for the tests that check a page in a real browser
//! (`#[path]`-included: `#[path = "common/browser.rs"] mod browser;`).
//!
//! No driver crate: Chromium's own command line loads a page, runs its
//! scripts and prints the DOM they left (`--dump-dom`), or saves a
//! screenshot (`--screenshot`). Each launch gets a fresh profile directory
//! (removed afterwards) and the flags that make it quiet and offline:
//! no sandbox (tests run as root in containers), no GPU, no QUIC, no first
//! run, no background networking, component updates or sync.
//!
//! Chromium is the Debian package `chromium` (`scripts/test.sh` installs
//! it when root); `CHROMIUM=/path/to/chrome` picks another. When none is
//! found, [`Chromium::or_skip`] says `SKIPPED: chromium not installed` on
//! stderr, past libtest's capture, and the test returns early (passes).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Chromium executable.
pub struct Chromium {
    exe: PathBuf,
}

/// The flags of every launch (see the module docs).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
];

impl Chromium {
    /// `$CHROMIUM`, or `chromium` / `chromium-browser` / `google-chrome`
    /// on the `PATH`.
    pub fn find() -> Option<Chromium> {
        if let Some(exe) = std::env::var_os("CHROMIUM") {
            let exe = PathBuf::from(exe);
            return exe.is_file().then_some(Chromium { exe });
        }
        let path = std::env::var_os("PATH")?;
        for dir in std::env::split_paths(&path) {
            for name in ["chromium", "chromium-browser", "google-chrome"] {
                let exe = dir.join(name);
                if exe.is_file() {
                    return Some(Chromium { exe });
                }
            }
        }
        None
    }

    /// [`Chromium::find`], or `None` after telling (on stderr, visible in a
    /// plain `cargo test`) that `test` was skipped.
    pub fn or_skip(test: &str) -> Option<Chromium> {
        let found = Self::find();
        if found.is_none() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: chromium not installed: browser test {test} did not run (apt-get install chromium, or set CHROMIUM)"
            );
        }
        found
    }

    /// Runs Chromium with `args` after the common flags, within `limit`;
    /// its stdout, or why it failed.
    fn run(&self, args: &[String], limit: Duration) -> Result<String, String> {
        let profile = std::env::temp_dir().join(format!(
            "troupe-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        let mut child = Command::new(&self.exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.exe.display()))?;
        // Read stdout while it runs (a large DOM would fill the pipe).
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
            s
        });
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        let _ = std::fs::remove_dir_all(&profile);
        match status {
            None => Err(format!(
                "chromium {args:?} did not exit within {limit:?}; stderr:\n{err}"
            )),
            Some(s) if !s.success() => {
                Err(format!("chromium {args:?} failed ({s}); stderr:\n{err}"))
            }
            Some(_) => Ok(out),
        }
    }

    /// Loads `url` in a `width` x `height` window and returns the DOM once
    /// the page has loaded and its scripts ran (synchronous work before
    /// `load` is included; timers are not waited for).
    pub fn dump_dom(&self, url: &str, (width, height): (u32, u32)) -> Result<String, String> {
        self.run(
            &[
                format!("--window-size={width},{height}"),
                "--dump-dom".to_string(),
                url.to_string(),
            ],
            Duration::from_secs(120),
        )
    }

    /// [`Chromium::dump_dom`] for a page that drives another: pages from
    /// files may reach each other (a test page scripting a page in an
    /// `<iframe>`), and the DOM is read after `virtual_ms` of virtual time
    /// (timers and animation frames run, as fast as they can).
    pub fn dump_dom_scripted(
        &self,
        url: &str,
        (width, height): (u32, u32),
        virtual_ms: u32,
    ) -> Result<String, String> {
        self.run(
            &[
                format!("--window-size={width},{height}"),
                "--allow-file-access-from-files".to_string(),
                format!("--virtual-time-budget={virtual_ms}"),
                "--dump-dom".to_string(),
                url.to_string(),
            ],
            Duration::from_secs(120),
        )
    }

    /// Loads `url` in a `width` x `height` window and saves a PNG of it
    /// at `out`.
    pub fn screenshot(
        &self,
        url: &str,
        out: &Path,
        (width, height): (u32, u32),
    ) -> Result<(), String> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let _ = std::fs::remove_file(out);
        self.run(
            &[
                format!("--window-size={width},{height}"),
                format!("--screenshot={}", out.display()),
                url.to_string(),
            ],
            Duration::from_secs(120),
        )?;
        let png =
            std::fs::read(out).map_err(|e| format!("no screenshot at {}: {e}", out.display()))?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(format!("{} is not a PNG", out.display()));
        }
        Ok(())
    }
}

static PROFILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The `file://` URL of `path` (made absolute), with `fragment` if not empty.
pub fn file_url(path: &Path, fragment: &str) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = format!("file://{}", abs.display());
    if !fragment.is_empty() {
        url.push('#');
        url.push_str(fragment);
    }
    url
}

/// The attributes of the first `<body ...>` tag of `dom`.
pub fn body_attributes(dom: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(start) = dom.find("<body") else {
        return out;
    };
    let Some(len) = dom[start..].find('>') else {
        return out;
    };
    let tag = &dom[start + "<body".len()..start + len];
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_string();
        let after = &rest[eq + 2..];
        let Some(close) = after.find('"') else { break };
        out.insert(name, after[..close].to_string());
        rest = &after[close + 1..];
    }
    out
}

/// The `target/` directory of this build (for files people look at).
pub fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_troupe"));
    // target/<profile>/troupe
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}
