//! CPU time of this process, for the benches of both crates (included by
//! `#[path]` from `transports/benches/support` and `benches/support`).

/// CPU time used so far by all threads of this process (ns), from schedstat.
pub fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}
