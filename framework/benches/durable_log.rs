//! Synced appends through the node's durable store (`RedbStore`, group
//! commit) against the disk's own fsync rate, measured in the same run.
//!
//! Configurations, each appending 100-byte records:
//!
//! 1. `raw fsync`: append a record to a plain file in the same directory and
//!    `sync_data()` it, one after the other: the physical limit of one
//!    synced append. `raw fsync, in place` does the same into a preallocated
//!    file (overwriting, so the file's size never changes), to show what
//!    growing the file costs the disk.
//! 2. `store, fsync per record`: one thread submits an append to the store
//!    and waits for its acknowledgement before the next, so every record is
//!    its own commit (one fsync): the store with nothing to group.
//! 3. `group commit, W writers` (W = 1, 16, 256): W tasks on a tokio
//!    current-thread runtime (as protocol actors share an actix arbiter),
//!    each a namespace of its own (a protocol instance) appending to its own
//!    log and waiting for each append's acknowledgement before the next, as
//!    a driver waits for a sync before releasing an input's messages. The
//!    store's threads do the fsyncs; appends that arrive while a commit is in
//!    flight share the next one.
//!
//! This VM's disk is shared, and how long an fsync takes changes by 20x
//! within seconds (~0.15 ms, or ~4 ms while other work on the host flushes).
//! So each round opens every configuration once (a fresh store, a fresh
//! file) and then runs them in short blocks (`DURABLE_BENCH_BLOCK_MS`, after
//! a short warm-up each), one configuration after the other in an order that
//! rotates, several blocks each: a configuration's numbers for the round are
//! its blocks together, taken from the same seconds as everyone else's. The
//! table reports medians over rounds; the ratios are the medians of the
//! per-round ratios (each compares measurements of the same round), next to
//! the ratios of the medians.
//!
//! Run with `cargo bench -p troupe-framework --bench durable_log`. Knobs
//! (env): `DURABLE_BENCH_ROUNDS` (default 5), `DURABLE_BENCH_BLOCKS` blocks
//! per configuration and round (default 6), `DURABLE_BENCH_BLOCK_MS`
//! measured milliseconds per block (default 300, after 60 ms of warm-up),
//! `DURABLE_BENCH_WRITERS` (default `1,16,256`),
//! `DURABLE_BENCH_ONLY=raw|single|group` (one section; `group` alone is the
//! one to profile), `DURABLE_BENCH_DIR` (default: `durable-bench` under
//! cargo's target tmp dir, on the same disk as the repository).
//!
//! Without `--bench` (as `cargo test --benches` runs it) it makes one short
//! round of every configuration (about a second), to check that it works.

/// On mimalloc, as the `troupe` binary (`--features bench-system-alloc`
/// measures on glibc malloc instead).
#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_framework::storage::{DurableStore, RedbStore, StoreStats, Write};

/// Bytes per record, in every configuration.
const RECORD: usize = 100;
/// Filler byte of a record.
const FILL: u8 = 0x2a;
/// Size of the preallocated file of `raw fsync, in place` (1 MiB in the
/// quick check).
const PREALLOC: u64 = 64 << 20;

/// One configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    /// Append to a plain file + `sync_data`.
    RawAppend,
    /// Overwrite in a preallocated plain file + `sync_data`.
    RawInPlace,
    /// One thread, one store commit per record.
    Single,
    /// `n` concurrent writers on a tokio runtime, group commit.
    Group(usize),
}

impl Config {
    fn label(self) -> String {
        match self {
            Config::RawAppend => "raw fsync (append + sync_data)".into(),
            Config::RawInPlace => "raw fsync, in place (preallocated)".into(),
            Config::Single => "store, fsync per record (1 thread)".into(),
            Config::Group(n) => format!("store, group commit, {n} writer{}", plural(n)),
        }
    }
    fn slug(self) -> String {
        match self {
            Config::RawAppend => "raw".into(),
            Config::RawInPlace => "raw-in-place".into(),
            Config::Single => "single".into(),
            Config::Group(n) => format!("group-{n}"),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What one block measured.
#[derive(Default)]
struct Block {
    /// Latency of every synced append that started and ended in the window.
    lat: Vec<Duration>,
    /// Length of the window.
    secs: f64,
    /// CPU time of the whole process (every thread) in the window.
    cpu: f64,
    /// Syncs (fsyncs, or store commits) and submissions in the window.
    syncs: u64,
    submissions: u64,
}

impl Block {
    fn add(&mut self, b: Block) {
        self.lat.extend(b.lat);
        self.secs += b.secs;
        self.cpu += b.cpu;
        self.syncs += b.syncs;
        self.submissions += b.submissions;
    }
}

/// What one configuration measured in one round (its blocks together).
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Records acknowledged (synced) per second.
    records_per_s: f64,
    /// Syncs (fsyncs, or store commits) per second.
    syncs_per_s: f64,
    /// Records per sync (`StoreStats::mean_group` over the windows; 1 for raw).
    mean_group: f64,
    /// Latency of one synced append, submit to acknowledgement.
    p50: Duration,
    p99: Duration,
    /// CPU time of the process per synced record (all threads: writers,
    /// the store's threads; for raw, the one thread).
    cpu_us: f64,
}

impl From<Block> for Sample {
    fn from(mut b: Block) -> Self {
        b.lat.sort_unstable();
        let stats = StoreStats {
            submissions: b.submissions,
            syncs: b.syncs,
            ..StoreStats::default()
        };
        Sample {
            records_per_s: b.lat.len() as f64 / b.secs,
            syncs_per_s: b.syncs as f64 / b.secs,
            mean_group: stats.mean_group(),
            p50: percentile(&b.lat, 0.50),
            p99: percentile(&b.lat, 0.99),
            cpu_us: b.cpu * 1e6 / b.lat.len().max(1) as f64,
        }
    }
}

/// The measured window of a block: warm-up ends at `start`, measurement at
/// `end`.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: Duration, len: Duration) -> Self {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + len,
        }
    }
    fn secs(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
    /// An operation counts when it started and ended inside the window.
    fn holds(&self, t0: Instant, t1: Instant) -> bool {
        t0 >= self.start && t1 <= self.end
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time used so far by every thread of this process (from
/// `/proc/self/task/*/schedstat`, nanoseconds on CPU), in seconds.
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn record() -> Vec<u8> {
    vec![FILL; RECORD]
}

fn append(first: u64) -> Vec<Write> {
    vec![Write::Append {
        log: "log".into(),
        first,
        records: vec![record()],
    }]
}

/// A configuration's state across the blocks of a round.
enum Bed {
    Raw {
        file: File,
        /// Preallocated bytes (0: append).
        prealloc: u64,
        off: u64,
    },
    Single {
        store: RedbStore,
        next: u64,
    },
    Group {
        store: Arc<RedbStore>,
        rt: tokio::runtime::Runtime,
        next: Vec<u64>,
    },
}

impl Bed {
    fn open(config: Config, dir: &Path, prealloc: u64) -> Self {
        match config {
            Config::RawAppend | Config::RawInPlace => {
                let prealloc = if config == Config::RawInPlace {
                    prealloc
                } else {
                    0
                };
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(dir.join("raw.log"))
                    .expect("open the raw file");
                if prealloc > 0 {
                    // Write the blocks for real (set_len alone leaves a hole
                    // that the first write would allocate), then make the
                    // size durable.
                    let zeros = vec![0u8; 1 << 20];
                    for i in 0..prealloc.div_ceil(1 << 20) {
                        file.write_all_at(&zeros, i << 20).expect("fill");
                    }
                    file.sync_all().expect("sync");
                }
                Bed::Raw {
                    file,
                    prealloc,
                    off: 0,
                }
            }
            Config::Single => Bed::Single {
                store: RedbStore::open_dir(dir).expect("open the store"),
                next: 1,
            },
            Config::Group(n) => Bed::Group {
                store: Arc::new(RedbStore::open_dir(dir).expect("open the store")),
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime"),
                next: vec![1; n],
            },
        }
    }

    fn block(&mut self, w: Window) -> Block {
        match self {
            Bed::Raw {
                file,
                prealloc,
                off,
            } => raw(file, *prealloc, off, w),
            Bed::Single { store, next } => single(store, next, w),
            Bed::Group { store, rt, next } => group(store, rt, next, w),
        }
    }
}

/// Section 1, the disk alone: append (or overwrite) a record and
/// `sync_data` it.
fn raw(f: &mut File, prealloc: u64, off: &mut u64, w: Window) -> Block {
    let rec = record();
    let mut lat = Vec::new();
    let mut cpu0 = None;
    loop {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        if cpu0.is_none() && t0 >= w.start {
            cpu0 = Some(cpu_secs());
        }
        if prealloc > 0 {
            f.write_all_at(&rec, *off % (prealloc - RECORD as u64))
                .expect("write");
            *off += RECORD as u64;
        } else {
            f.write_all(&rec).expect("append");
        }
        f.sync_data().expect("sync_data");
        let t1 = Instant::now();
        if w.holds(t0, t1) {
            lat.push(t1 - t0);
        }
    }
    let n = lat.len() as u64;
    Block {
        lat,
        secs: w.secs(),
        cpu: cpu_secs() - cpu0.unwrap_or_else(cpu_secs),
        syncs: n,
        submissions: n,
    }
}

/// Section 2: one thread, each append submitted and awaited before the next.
fn single(store: &RedbStore, next: &mut u64, w: Window) -> Block {
    let mut lat = Vec::new();
    let mut before = None;
    loop {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        if before.is_none() && t0 >= w.start {
            before = Some((store.stats(), cpu_secs()));
        }
        futures::executor::block_on(store.submit("single", append(*next)).wait())
            .expect("append acknowledged");
        *next += 1;
        let t1 = Instant::now();
        if w.holds(t0, t1) {
            lat.push(t1 - t0);
        }
    }
    let ((before, cpu0), after) = (
        before.unwrap_or_else(|| (store.stats(), cpu_secs())),
        store.stats(),
    );
    Block {
        lat,
        secs: w.secs(),
        cpu: cpu_secs() - cpu0,
        syncs: after.syncs - before.syncs,
        submissions: after.submissions - before.submissions,
    }
}

/// Section 3: `next.len()` tasks on a current-thread tokio runtime, each
/// appending to its own namespace's log and waiting for each
/// acknowledgement.
fn group(
    store: &Arc<RedbStore>,
    rt: &tokio::runtime::Runtime,
    next: &mut [u64],
    w: Window,
) -> Block {
    rt.block_on(async {
        let tasks: Vec<_> = next
            .iter()
            .enumerate()
            .map(|(i, &first)| {
                let store = store.clone();
                tokio::spawn(async move {
                    let ns = format!("protocol-{i:03}");
                    let mut lat = Vec::new();
                    let mut next = first;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= w.end {
                            break;
                        }
                        store
                            .submit(&ns, append(next))
                            .wait()
                            .await
                            .expect("append acknowledged");
                        next += 1;
                        let t1 = Instant::now();
                        if w.holds(t0, t1) {
                            lat.push(t1 - t0);
                        }
                    }
                    (lat, next)
                })
            })
            .collect();
        let stats = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(w.start.into()).await;
                let before = (store.stats(), cpu_secs());
                tokio::time::sleep_until(w.end.into()).await;
                (before, (store.stats(), cpu_secs()))
            })
        };
        let mut lat = Vec::new();
        for (t, n) in tasks.into_iter().zip(next.iter_mut()) {
            let (l, after) = t.await.expect("writer task");
            lat.extend(l);
            *n = after;
        }
        let ((before, cpu0), (after, cpu1)) = stats.await.expect("stats task");
        Block {
            lat,
            secs: w.secs(),
            cpu: cpu1 - cpu0,
            syncs: after.syncs - before.syncs,
            submissions: after.submissions - before.submissions,
        }
    })
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // one short round only checks that every configuration works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        env("DURABLE_BENCH_ROUNDS", 5usize).max(1)
    };
    let blocks: usize = if quick {
        1
    } else {
        env("DURABLE_BENCH_BLOCKS", 6usize).max(1)
    };
    let len = Duration::from_millis(if quick {
        60
    } else {
        env("DURABLE_BENCH_BLOCK_MS", 300u64)
    });
    let warmup = Duration::from_millis(if quick { 20 } else { 60 });
    let writers: Vec<usize> = std::env::var("DURABLE_BENCH_WRITERS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let only = std::env::var("DURABLE_BENCH_ONLY").ok();
    let dir: PathBuf = std::env::var_os("DURABLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("durable-bench"));

    let mut configs = Vec::new();
    if only.as_deref().is_none_or(|o| o == "raw") {
        configs.push(Config::RawAppend);
        configs.push(Config::RawInPlace);
    }
    if only.as_deref().is_none_or(|o| o == "single") {
        configs.push(Config::Single);
    }
    if only.as_deref().is_none_or(|o| o == "group") {
        configs.extend(writers.iter().map(|&n| Config::Group(n)));
    }

    let mut out = std::io::stderr();
    if quick {
        let _ = writeln!(
            out,
            "durable_log: quick check (run `cargo bench -p troupe-framework --bench durable_log` to measure)"
        );
    } else {
        println!("cargo bench -p troupe-framework --bench durable_log");
        println!(
            "  {rounds} rounds; per round every configuration runs {blocks} blocks of {} ms \
             (after {} ms of warm-up each), interleaved; {RECORD}-byte records; directory {}",
            len.as_millis(),
            warmup.as_millis(),
            dir.display()
        );
    }

    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    let n = configs.len();
    for round in 0..rounds {
        let _ = std::fs::remove_dir_all(&dir);
        let mut beds: Vec<Bed> = configs
            .iter()
            .map(|c| {
                let d = dir.join(c.slug());
                std::fs::create_dir_all(&d).expect("bench directory");
                Bed::open(*c, &d, if quick { 1 << 20 } else { PREALLOC })
            })
            .collect();
        let mut acc: Vec<Block> = (0..n).map(|_| Block::default()).collect();
        for b in 0..blocks {
            for k in 0..n {
                let i = (round + b + k) % n;
                acc[i].add(beds[i].block(Window::after(warmup, len)));
            }
        }
        drop(beds);
        for (i, a) in acc.into_iter().enumerate() {
            let s = Sample::from(a);
            if !quick {
                println!(
                    "  round {}: {:<40} {:>9.0} records/s {:>7.0} syncs/s  group {:>6.1}  p50 {:>7.3} ms  p99 {:>7.3} ms  cpu {:>6.1} us/record",
                    round + 1,
                    configs[i].label(),
                    s.records_per_s,
                    s.syncs_per_s,
                    s.mean_group,
                    ms(s.p50),
                    ms(s.p99),
                    s.cpu_us
                );
            }
            results[i].push(s);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    if quick {
        for (c, r) in configs.iter().zip(&results) {
            assert!(
                r.iter().all(|s| s.records_per_s > 0.0),
                "{}: nothing synced",
                c.label()
            );
        }
        let _ = writeln!(out, "durable_log: every configuration ran");
        return;
    }

    println!();
    println!("median of {rounds} rounds:");
    println!();
    println!(
        "| configuration | records/s | syncs/s | records per sync | p50 latency | p99 latency | CPU per record |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, r) in configs.iter().zip(&results) {
        let m = |f: &dyn Fn(&Sample) -> f64| median(r.iter().map(f).collect());
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.3} ms | {:.3} ms | {:.1} us |",
            c.label(),
            m(&|s| s.records_per_s),
            m(&|s| s.syncs_per_s),
            m(&|s| s.mean_group),
            m(&|s| ms(s.p50)),
            m(&|s| ms(s.p99)),
            m(&|s| s.cpu_us),
        );
    }

    // The two targets of issue 15, per round and overall.
    let find = |c: Config| configs.iter().position(|&x| x == c);
    let ratio = |a: usize, b: usize, f: &dyn Fn(&Sample) -> f64| -> (f64, f64, Vec<f64>) {
        let per_round: Vec<f64> = results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| f(x) / f(y))
            .collect();
        let of_medians =
            median(results[a].iter().map(f).collect()) / median(results[b].iter().map(f).collect());
        (median(per_round.clone()), of_medians, per_round)
    };
    let show = |name: &str, (med, of_med, per): (f64, f64, Vec<f64>), target: &str, ok: bool| {
        let rounds: Vec<String> = per.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{name}: median of per-round ratios {med:.2}, ratio of medians {of_med:.2} \
             (rounds: {}); target {target}: {}",
            rounds.join(" "),
            if ok { "holds" } else { "NOT met" }
        );
    };
    println!();
    if let (Some(s), Some(r)) = (find(Config::Single), find(Config::RawAppend)) {
        let x = ratio(s, r, &|s| ms(s.p50));
        let ok = x.0 <= 2.0;
        show(
            "single-writer store append p50 / raw fsync p50",
            x,
            "<= 2",
            ok,
        );
    }
    if let (Some(s), Some(r)) = (find(Config::Single), find(Config::RawAppend)) {
        // The mean latency of a one-at-a-time writer is 1 / its rate: steadier
        // than the p50 when fsyncs take either ~0.15 or ~4 ms.
        let x = ratio(r, s, &|s| s.records_per_s);
        println!(
            "single-writer store append mean / raw fsync mean (raw fsyncs/s / store records/s): \
             median of per-round ratios {:.2}, ratio of medians {:.2}",
            x.0, x.1
        );
    }
    if let (Some(g), Some(s)) = (find(Config::Group(256)), find(Config::Single)) {
        let x = ratio(g, s, &|s| s.records_per_s);
        let ok = x.0 >= 50.0;
        show(
            "records/s at 256 writers / records/s of fsync per record",
            x,
            ">= 50",
            ok,
        );
    }
    if let (Some(g), Some(r)) = (find(Config::Group(256)), find(Config::RawAppend)) {
        let x = ratio(g, r, &|s| s.records_per_s);
        println!(
            "records/s at 256 writers / raw fsyncs/s: median of per-round ratios {:.1}, ratio of medians {:.1}",
            x.0, x.1
        );
    }
}
