//! The cost of recording frame lines to a `FileTraceSink` (`[trace] file`),
//! without a network: what a real node pays per frame on its own thread,
//! and what the whole process (the trace writer thread included) pays.
//!
//! Each round, `T` threads (default 2, like a sender and a receiver node on
//! their arbiters) each record `TRACE_BENCH_N` frames (default 1,000,000)
//! to a sink of their own, alternating a `send` line (to, seq, bytes, kind,
//! tag, lamport) and a `deliver` line, as the two nodes of a remote tell
//! do, paced at `TRACE_BENCH_RATE` lines per second and thread (default
//! 2,000,000, about what a node pair's tell bench makes; in steps of 1 ms,
//! sleeping when ahead). Reported per line: CPU ns of the recording thread
//! (what the node pays), CPU ns of everything else (the trace writer
//! threads: JSON and the file writes), and lines dropped because the
//! writer fell behind.
//!
//! Run with `cargo bench -p troupe-framework --bench trace_sink`. Knobs
//! (env): `TRACE_BENCH_N`, `TRACE_BENCH_ROUNDS` (default 5),
//! `TRACE_BENCH_THREADS` (default 2), `TRACE_BENCH_RATE`,
//! `TRACE_BENCH_FORMAT` (`jsonl`, the default, or `binary`).

use std::sync::Arc;
use std::time::Instant;

use troupe_framework::trace::{FileTraceSink, FrameEvent, Rotation, TraceFormat, TraceSink};

#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the whole process (user + system), in ns.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes the struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() {
    let n: u64 = env_or("TRACE_BENCH_N", 1_000_000);
    let rounds: usize = env_or("TRACE_BENCH_ROUNDS", 5);
    let threads: usize = env_or("TRACE_BENCH_THREADS", 2).max(1);
    let rate: u64 = env_or("TRACE_BENCH_RATE", 2_000_000u64).max(1000);
    let step = rate / 1000;
    let format = match std::env::var("TRACE_BENCH_FORMAT").as_deref() {
        Ok("binary") => TraceFormat::Binary,
        _ => TraceFormat::Jsonl,
    };
    let dir = std::env::temp_dir().join(format!("troupe-trace-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    println!(
        "trace sink ({format:?}): {threads} threads x {n} frames (alternating send / deliver lines) per round, {rate} lines/s each"
    );
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for round in 0..rounds {
        let sinks: Vec<Arc<FileTraceSink>> = (0..threads)
            .map(|i| {
                let path = dir.join(format!("n{i}-{round}.trace"));
                Arc::new(FileTraceSink::open(&path, Rotation::default(), format).expect("sink"))
            })
            .collect();
        let cpu0 = cpu_ns();
        let started = Instant::now();
        let handles: Vec<_> = sinks
            .iter()
            .enumerate()
            .map(|(i, sink)| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let me = format!("node{i}");
                    let t0 = Instant::now();
                    let c0 = thread_cpu_ns();
                    for seq in 0..n {
                        if seq % step == 0 {
                            let due = t0 + std::time::Duration::from_millis(seq / step);
                            if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(ahead);
                            }
                        }
                        if seq % 2 == 0 {
                            sink.record_frame(
                                &me,
                                FrameEvent::Send {
                                    to: "peer",
                                    seq,
                                    bytes: 151,
                                    kind: "tell",
                                    tag: "bench.blob",
                                    lamport: Some(seq),
                                    cause: None,
                                },
                            );
                        } else {
                            sink.record_frame(&me, FrameEvent::Deliver { from: "peer", seq });
                        }
                    }
                    thread_cpu_ns() - c0
                })
            })
            .collect();
        let per_thread: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        for s in &sinks {
            s.flush();
        }
        let elapsed = started.elapsed();
        let dropped: u64 = sinks.iter().map(|s| s.dropped()).sum();
        drop(sinks);
        let cpu = cpu_ns() - cpu0;
        let lines = n * threads as u64;
        let node_cpu: u64 = per_thread.iter().sum();
        let wall = node_cpu as f64 / lines as f64;
        let cpu_per = cpu.saturating_sub(node_cpu) as f64 / lines as f64;
        println!(
            "    round {round}: {wall:>6.1} CPU-ns/line on the recording thread, {cpu_per:>6.1} CPU-ns/line elsewhere (writer); {:.2} s; {dropped} dropped",
            elapsed.as_secs_f64()
        );
        walls.push(wall);
        cpus.push(cpu_per);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
    }
    walls.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    println!(
        "median: {:.1} CPU-ns/line on the recording thread, {:.1} CPU-ns/line elsewhere",
        walls[walls.len() / 2],
        cpus[cpus.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
