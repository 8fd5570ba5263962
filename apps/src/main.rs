//! The `troupe` command. See `troupe --help`.

use std::process::ExitCode;

use clap::Parser;
use troupe_apps::cli::{run, Cli};

/// mimalloc rather than the system allocator: a node allocates in bursts (a
/// received chunk's messages, each with its inbox entry) and frees them
/// later, which overflows glibc malloc's small per-thread cache; its slow
/// path took about a quarter of a receiving node's CPU time in the
/// remote-tell benchmark (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troupe: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
