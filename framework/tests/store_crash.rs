//! `RedbStore` across a SIGKILL: a child process (this test binary, run as
//! `crash_child`) appends to 16 logs from 16 tasks, with a small journal
//! limit so that folds happen all the time, and prints every acknowledged
//! append; the parent kills it at some point (mid-commit or mid-fold, by
//! chance) and reopens the store. Every acknowledged record must be there,
//! and every log must be one contiguous run from index 1 (a submission is
//! all or nothing; nothing after a lost one survives).
//!
//! A SIGKILL loses the process, not the machine: what the kernel already has
//! survives whether or not it was synced, so this checks the store's
//! bookkeeping (journal, folds, recovery), not the disk's fsync.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_framework::storage::{DurableStore, RedbStore, Write};

const CHILD_DIR: &str = "TROUPE_STORE_CRASH_DIR";
const WRITERS: usize = 16;

fn record(ns: usize, index: u64) -> Vec<u8> {
    let mut r = vec![0u8; 64];
    r[..8].copy_from_slice(&(ns as u64).to_le_bytes());
    r[8..16].copy_from_slice(&index.to_le_bytes());
    r
}

/// The child: writes until killed (does nothing in a normal test run).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = Arc::new(
        RedbStore::open_with_fold_bytes(PathBuf::from(dir).join(RedbStore::FILE_NAME), 32 << 10)
            .expect("open"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let ns = format!("w{w}");
                    // A later life goes on where the previous one stopped.
                    let start = store
                        .load(&ns)
                        .expect("load")
                        .log_bounds("log")
                        .map_or(1, |(_, last)| last + 1);
                    for i in start.. {
                        let mut writes = vec![Write::Append {
                            log: "log".into(),
                            first: i,
                            records: vec![record(w, i)],
                        }];
                        if i % 7 == 0 {
                            writes.push(Write::Put {
                                key: "last".into(),
                                value: i.to_le_bytes().to_vec(),
                            });
                        }
                        store
                            .submit(&ns, writes)
                            .wait()
                            .await
                            .expect("acknowledged");
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ack {w} {i}");
                        let _ = out.flush();
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_appends_survive_a_sigkill_mid_commit_or_mid_fold() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("troupe-store-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    for (life, after) in [20u64, 150, 70].into_iter().enumerate() {
        let before = acked.clone();
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut f = line.split_whitespace();
                if f.next() != Some("ack") {
                    continue;
                }
                let w: usize = f.next().and_then(|x| x.parse().ok()).expect("writer");
                let i: u64 = f.next().and_then(|x| x.parse().ok()).expect("index");
                acks.push((w, i));
                counter.fetch_add(1, Ordering::Relaxed);
            }
            acks
        });
        // Once it has acknowledged a few hundred appends, let it write for
        // a while more.
        let t0 = Instant::now();
        while seen.load(Ordering::Relaxed) < 200 && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(after));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let acks = reader.join().expect("reader");
        for (w, i) in acks {
            // A new life starts each log where the previous one left it.
            let e = acked.entry(w).or_insert(0);
            *e = (*e).max(i);
        }
        let store = RedbStore::open_dir(&dir).expect("reopen after SIGKILL");
        for w in 0..WRITERS {
            let r = store.load(&format!("w{w}")).expect("load");
            let want = acked.get(&w).copied().unwrap_or(0);
            let recs: Vec<(u64, Vec<u8>)> = r.log("log").map(|(i, b)| (i, b.to_vec())).collect();
            let last = recs.last().map_or(0, |(i, _)| *i);
            assert!(
                last >= want,
                "life {life}: writer {w} lost acknowledged records: {last} < {want}"
            );
            for (k, (i, b)) in recs.iter().enumerate() {
                assert_eq!(*i, k as u64 + 1, "life {life}: writer {w}'s log has a hole");
                assert_eq!(*b, record(w, *i), "life {life}: writer {w}'s record {i}");
            }
            if last >= 7 {
                let put = r
                    .get("last")
                    .map(|v| u64::from_le_bytes(v.try_into().expect("u64")));
                assert_eq!(put, Some(last - last % 7), "life {life}: writer {w}");
            }
            acked.insert(w, last);
        }
        drop(store);
        assert!(
            acked.values().sum::<u64>() > before.values().sum::<u64>(),
            "life {life}: the child acknowledged nothing"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
