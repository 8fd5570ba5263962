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

/// A Chromium that stays open, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands on its fd 3, answers on its fd 4,
/// each a JSON message ended by a NUL byte), for pages that must be watched
/// while something else happens (the live dashboard while a node is
/// killed). One page, opened by [`Chromium::open`]; the browser is killed
/// when this is dropped.
pub struct BrowserPage {
    child: std::process::Child,
    to_browser: std::fs::File,
    answers: std::sync::mpsc::Receiver<serde_json::Value>,
    session: String,
    next_id: u64,
    profile: PathBuf,
}

impl Chromium {
    /// Opens `url` in a `width` x `height` window of a browser that stays
    /// open (see [`BrowserPage`]).
    pub fn open(&self, url: &str, (width, height): (u32, u32)) -> Result<BrowserPage, String> {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let profile = std::env::temp_dir().join(format!(
            "troupe-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        let pipe = || -> Result<(OwnedFd, OwnedFd), String> {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return Err(format!("pipe: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: both were just opened by pipe(2) and are owned here.
            Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
        };
        let (cmd_read, cmd_write) = pipe()?;
        let (ans_read, ans_write) = pipe()?;
        let (cr, aw) = (cmd_read.into_raw_fd(), ans_write.into_raw_fd());
        let mut command = Command::new(&self.exe);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(aw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: the child has its copies; these are ours to close.
        unsafe {
            drop(OwnedFd::from_raw_fd(cr));
            drop(OwnedFd::from_raw_fd(aw));
        }
        let child = spawned.map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let (tx, answers) = std::sync::mpsc::channel();
        let mut from_browser = std::fs::File::from(ans_read);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = match std::io::Read::read(&mut from_browser, &mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut page = BrowserPage {
            child,
            to_browser: std::fs::File::from(cmd_write),
            answers,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let target = page.call("Target.createTarget", serde_json::json!({ "url": url }))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = page.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target_id, "flatten": true }),
        )?;
        page.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {attached}"))?
            .to_string();
        Ok(page)
    }
}

impl BrowserPage {
    /// Sends `method` with `params` (to the page once attached) and waits
    /// up to 30 s for its answer's `result`.
    fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = serde_json::Value::String(self.session.clone());
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: the browser is gone: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .answers
                .recv_timeout(left)
                .map_err(|_| format!("{method}: no answer within 30 s"))?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event, or another call's answer
            }
            if let Some(e) = v.get("error") {
                return Err(format!("{method}: {e}"));
            }
            return Ok(v["result"].clone());
        }
    }

    /// The value of `expression` evaluated in the page (JSON; promises
    /// awaited).
    pub fn eval(&mut self, expression: &str) -> Result<serde_json::Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` every 100 ms until it is `true`, for at most
    /// `limit` (an exception, as while the page still loads, counts as not
    /// yet); the last value or exception otherwise.
    pub fn wait_for(&mut self, expression: &str, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let v = match self.eval(expression) {
                Ok(serde_json::Value::Bool(true)) => return Ok(()),
                Ok(v) => v.to_string(),
                Err(e) if e.contains("no answer within") || e.contains("the browser is gone") => {
                    return Err(e)
                }
                Err(e) => e,
            };
            if start.elapsed() > limit {
                return Err(format!("{expression} still {v} after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page's viewport at `out`.
    pub fn screenshot(&mut self, out: &Path) -> Result<(), String> {
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        )?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        let png = base64_decode(data)?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err("the screenshot is not a PNG".into());
        }
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(out, png).map_err(|e| format!("{}: {e}", out.display()))
    }
}

impl Drop for BrowserPage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (with padding), as the DevTools protocol sends binary.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", c as char)),
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        let mut n = 0u32;
        for &c in quad {
            n = (n << 6) | if c == b'=' { 0 } else { val(c)? };
        }
        n <<= 6 * (4 - quad.len() as u32);
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3usize.saturating_sub(pad)]);
    }
    Ok(out)
}
