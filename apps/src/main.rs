//! The `troupe` command. See `troupe --help`.

use std::process::ExitCode;

use clap::Parser;
use troupe_apps::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troupe: {e}");
            ExitCode::FAILURE
        }
    }
}
