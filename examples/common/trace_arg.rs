//! `--trace FILE`, shared by the examples: where a run writes its trace
//! (JSON lines, see `troupe::framework::trace`), for
//! `troupe trace view FILE` (a space-time diagram) or
//! `troupe trace shiviz FILE`.

use std::path::PathBuf;

/// Removes `--trace FILE` (or `--trace=FILE`) from `args` and returns FILE.
/// Exits with a usage message when `--trace` has no FILE.
pub fn take(args: &mut Vec<String>) -> Option<PathBuf> {
    let i = args
        .iter()
        .position(|a| a == "--trace" || a.starts_with("--trace="))?;
    let arg = args.remove(i);
    if let Some(file) = arg.strip_prefix("--trace=") {
        return Some(PathBuf::from(file));
    }
    if i < args.len() {
        return Some(PathBuf::from(args.remove(i)));
    }
    eprintln!("--trace needs a FILE");
    std::process::exit(2);
}

/// Writes `trace` (JSON lines) to `path`, saying so, or why not.
pub fn write(path: &std::path::Path, trace: &troupe::framework::trace::TraceRecorder) {
    match trace.write_to(path) {
        Ok(()) => println!(
            "Trace: {} events in {p} (draw it: troupe trace view {p} -o trace.html)",
            trace.len(),
            p = path.display()
        ),
        Err(e) => eprintln!("Trace not written to {}: {e}", path.display()),
    }
}
