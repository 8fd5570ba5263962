//! `troupe check`: the model checker ([`troupe::protocols::testkit::model`])
//! over the catalog of models ([`troupe::protocols::testkit::models`]),
//! from the command line.
//!
//! ```text
//! troupe check --list
//! troupe check FAMILY [--algorithm A] [--members|--nodes N] [--mutation M]
//!              [--search bfs|dfs] [--depth D] [--max-states S]
//!              [--faults drop,dup,crash,partition] [--drops K] [--duplicates K] [--crashes K] [--crashable 1,2] [--no-restarts]
//!              [--partitions K] [--timers when-idle|next|any] [--timer-fires K]
//!              [--clock-runs] [--must-decide] [--trace FILE.jsonl | --replay FILE.jsonl]
//! ```
//!
//! Every option not given is the catalog's: the bounds the test suite
//! (`protocols/tests/model_check.rs`) checks the model within, or the ones
//! it catches the mutation within. Exit codes: 0 no violation within the
//! bounds, 1 a violation (the shortest path printed, and written as JSON
//! lines to `--trace`), 2 bad arguments.

use std::fmt::Write as _;
use std::path::PathBuf;

use troupe::protocols::testkit::model::{
    replay_steps, Bounds, Counterexample, Replay, Report, Timers, Verdict,
};
use troupe::protocols::testkit::models::{Algorithm, Check, Family, Mutation};

use crate::cli::CliError;

/// `troupe check`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["family", "list"])))]
pub struct CheckArgs {
    /// The protocol family to check (`--list` shows each one's model).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(Family::ALL.map(Family::name)))]
    pub family: Option<String>,
    /// List every model: its algorithms, default size and bounds, and the
    /// mutations (deliberately broken variants) it can run with.
    #[arg(long, conflicts_with = "family")]
    pub list: bool,
    /// The algorithm (default: the mutation's, or every one the suite
    /// checks, in turn).
    #[arg(long, short)]
    pub algorithm: Option<String>,
    /// The group size (default 3).
    #[arg(long, short = 'n', visible_alias = "nodes")]
    pub members: Option<u32>,
    /// Run a deliberately broken variant (default: none); its default
    /// bounds are those the suite catches it within.
    #[arg(long, value_name = "MUTATION")]
    pub mutation: Option<String>,
    /// Breadth-first (the shortest counterexample) or depth-first (deep
    /// paths with little memory; a counterexample, not the shortest).
    #[arg(long, default_value = "bfs", value_parser = ["bfs", "dfs"])]
    pub search: String,
    /// Steps per path at most.
    #[arg(long, value_name = "D")]
    pub depth: Option<usize>,
    /// Distinct states at most: the search stops there, undecided.
    #[arg(long, value_name = "S")]
    pub max_states: Option<usize>,
    /// Faults allowed once per path, by name (`drop`, `dup`, `crash`,
    /// `partition`), e.g. `--faults drop,dup,crash`; an explicit count
    /// (`--drops K`, ...) wins over it.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FAULT,...",
        value_parser = ["drop", "dup", "crash", "partition"]
    )]
    pub faults: Option<Vec<String>>,
    /// Messages the network may lose per path.
    #[arg(long, value_name = "K")]
    pub drops: Option<u32>,
    /// Messages the network may duplicate per path.
    #[arg(long, visible_alias = "dups", value_name = "K")]
    pub duplicates: Option<u32>,
    /// Crashes per path (a crash loses what the disk had not synced).
    #[arg(long, value_name = "K")]
    pub crashes: Option<u32>,
    /// The members that may crash (default: any), e.g. `--crashable 1`.
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub crashable: Option<Vec<u32>>,
    /// A crashed member stays down (default: it may restart from its disk).
    #[arg(long)]
    pub no_restarts: bool,
    /// Partitions per path (the group cut in two anywhere; healing is a
    /// step too).
    #[arg(long, value_name = "K")]
    pub partitions: Option<u32>,
    /// When timers fire: only while no message is in flight (when-idle,
    /// the default: timeouts longer than message delays), a member's next
    /// timer at any time (next), or any timer in any order (any).
    #[arg(long, value_parser = ["when-idle", "next", "any"])]
    pub timers: Option<String>,
    /// Timer firings per path at most.
    #[arg(long, value_name = "K")]
    pub timer_fires: Option<u32>,
    /// Let the clock run (each event sees the time it was due) instead of
    /// keeping it still; for cores whose safety rests on elapsed time.
    #[arg(long)]
    pub clock_runs: bool,
    /// Commit only: at rest, every running member that knows the
    /// transaction must have decided it (two-phase commit blocks).
    #[arg(long)]
    pub must_decide: bool,
    /// Write the counterexample, if one is found, to FILE as JSON lines:
    /// each step, then what happened in it as trace events (sends,
    /// deliveries, losses, timers, crashes, notes: what `troupe trace view`
    /// draws), and last the violation.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Replay a counterexample written by --trace (with the options it was
    /// found with: the choices of a state depend on the bounds) and say
    /// whether it still breaks a property.
    #[arg(long, value_name = "FILE", conflicts_with = "trace")]
    pub replay: Option<PathBuf>,
}

/// Runs `troupe check` and prints its report. `Err`: a violation
/// ([`CliError::Other`], exit 1) or bad arguments ([`CliError::Usage`],
/// exit 2).
pub fn run(args: &CheckArgs) -> Result<(), CliError> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    let checks = checks(args)?;
    if let Some(file) = &args.replay {
        let [check] = checks.as_slice() else {
            return Err(CliError::Usage(format!(
                "--replay replays one model; name its algorithm with --algorithm (one of {})",
                names(checks.iter().map(|c| c.algorithm))
            )));
        };
        return replay(check, file);
    }
    let depth_first = args.search == "dfs";
    for (i, check) in checks.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let search = check.search().map_err(CliError::Usage)?;
        println!("{}", header(check, search.model_name(), depth_first));
        let report = if depth_first {
            search.dfs()
        } else {
            search.bfs()
        }
        .map_err(|e| CliError::Other(format!("{}: {e}", search.model_name())))?;
        if let Verdict::Violated(cx) = &report.verdict {
            println!("{cx}");
        }
        println!("{}", summary(&report, check, depth_first));
        if let Verdict::Violated(cx) = &report.verdict {
            if let Some(file) = &args.trace {
                let lines = cx.to_json_lines();
                std::fs::write(file, &lines)
                    .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
                println!(
                    "trace:    {} ({} steps and the violation, {} trace events)",
                    file.display(),
                    cx.steps.len(),
                    lines.lines().count() - cx.steps.len() - 1
                );
            }
            return Err(CliError::Other(format!(
                "{} violates a property: {}",
                cx.model, cx.violation
            )));
        }
    }
    Ok(())
}

/// The checks the arguments name, each validated.
fn checks(args: &CheckArgs) -> Result<Vec<Check>, CliError> {
    let usage = CliError::Usage;
    let family: Family = args
        .family
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(usage)?;
    let mutation: Mutation = match &args.mutation {
        Some(m) => m.parse().map_err(usage)?,
        None => Mutation::None,
    };
    if let Some(other) = mutation.family().filter(|f| *f != family) {
        return Err(usage(format!(
            "mutation {:?} is a {other} mutation, not a {family} one (mutations of {family}: {})",
            mutation.name(),
            or_none(names(family.mutations()))
        )));
    }
    let algorithms = match (&args.algorithm, mutation.caught_with()) {
        (Some(a), _) => vec![Algorithm::parse(family, a).map_err(usage)?],
        (None, Some((a, _))) => vec![a],
        (None, None) => family.checked_algorithms(),
    };
    let timers = args.timers.as_deref().map(|t| match t {
        "next" => Timers::Next,
        "any" => Timers::Any,
        _ => Timers::WhenIdle,
    });
    algorithms
        .into_iter()
        .map(|algorithm| {
            let mut c = Check::new(algorithm, mutation).map_err(usage)?;
            let b = &mut c.bounds;
            set(&mut b.max_depth, args.depth);
            set(&mut b.max_states, args.max_states);
            for fault in args.faults.iter().flatten() {
                match fault.as_str() {
                    "drop" => b.drops = 1,
                    "dup" => b.duplicates = 1,
                    "crash" => b.crashes = 1,
                    _ => b.partitions = 1,
                }
            }
            set(&mut b.drops, args.drops);
            set(&mut b.duplicates, args.duplicates);
            set(&mut b.crashes, args.crashes);
            set(&mut b.partitions, args.partitions);
            set(&mut b.timers, timers);
            if args.timer_fires.is_some() {
                b.timer_fires = args.timer_fires;
            }
            b.restarts &= !args.no_restarts;
            b.frozen_clock &= !args.clock_runs;
            set(&mut c.members, args.members);
            if args.crashable.is_some() {
                c.crashable = args.crashable.clone();
            }
            c.must_decide = args.must_decide;
            c.validate().map_err(usage)?;
            Ok(c)
        })
        .collect()
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn names<T: std::fmt::Display>(all: impl IntoIterator<Item = T>) -> String {
    all.into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".to_string()
    } else {
        s
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The faults a path may have and the timing rules, in words.
fn describe(b: &Bounds, crashable: Option<&[u32]>) -> String {
    let mut faults = Vec::new();
    if b.drops > 0 {
        faults.push(plural(b.drops, "lost message", "lost messages"));
    }
    if b.duplicates > 0 {
        faults.push(plural(
            b.duplicates,
            "duplicated message",
            "duplicated messages",
        ));
    }
    if b.crashes > 0 {
        let mut s = plural(b.crashes, "crash", "crashes");
        let who = crashable.map(|c| {
            let s = if c.len() == 1 { "" } else { "s" };
            format!("member{s} {} only", names(c))
        });
        let restart = (!b.restarts).then(|| "no restart".to_string());
        let notes: Vec<String> = who.into_iter().chain(restart).collect();
        if !notes.is_empty() {
            let _ = write!(s, " ({})", notes.join(", "));
        }
        faults.push(s);
    }
    if b.partitions > 0 {
        faults.push(plural(b.partitions, "partition", "partitions"));
    }
    let timers = match b.timers {
        Timers::WhenIdle => "when idle",
        Timers::Next => "next at any time",
        Timers::Any => "any in any order",
    };
    let fires = b
        .timer_fires
        .map(|k| format!(", at most {k} per path"))
        .unwrap_or_default();
    format!(
        "depth {}, {} states; faults per path: {}; timers {timers}{fires}; clock {}",
        b.max_depth,
        b.max_states,
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        },
        if b.frozen_clock { "frozen" } else { "runs" }
    )
}

fn header(check: &Check, model: &str, depth_first: bool) -> String {
    let mutation = match check.mutation {
        Mutation::None => String::new(),
        m => format!(", mutation {m}: {}", m.about()),
    };
    format!(
        "model:    {model}{mutation}\nsearch:   {}, {}",
        if depth_first {
            "depth-first"
        } else {
            "breadth-first"
        },
        describe(&check.bounds, check.crashable.as_deref())
    )
}

/// The numbers and the verdict.
fn summary(r: &Report, check: &Check, depth_first: bool) -> String {
    let verdict = match &r.verdict {
        Verdict::Violated(_) if depth_first => {
            "VIOLATED (depth-first: a counterexample, not necessarily the shortest)".to_string()
        }
        Verdict::Violated(_) if r.forced > 0 => "VIOLATED (breadth-first; the inert-first \
             reduction may make it longer than the shortest)"
            .to_string(),
        Verdict::Violated(_) => "VIOLATED (breadth-first: the shortest counterexample)".to_string(),
        Verdict::Holds if r.depth_limited => format!(
            "holds to depth {}: no violation, but paths were cut at the depth bound \
             (not exhaustive; --depth goes deeper)",
            check.bounds.max_depth
        ),
        Verdict::Holds => {
            "holds: exhaustive within the bounds (every state they allow explored)".to_string()
        }
        Verdict::Undecided => format!(
            "undecided: stopped at the state bound ({} states) with no violation so far \
             (not exhaustive; --max-states goes further)",
            check.bounds.max_states
        ),
    };
    format!(
        "explored: {} states ({} unique), depth {} reached, {:.2?} ({:.0} states/s)\nverdict:  {verdict}",
        r.explored,
        r.unique,
        r.depth,
        r.elapsed,
        r.states_per_second()
    )
}

/// `--replay FILE`: run the trace's steps and say what happened.
fn replay(check: &Check, file: &PathBuf) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let cx = Counterexample::from_json_lines(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let search = check.search().map_err(CliError::Usage)?;
    if cx.model != search.model_name() {
        return Err(CliError::Usage(format!(
            "{} is a trace of {:?}, these options check {:?}: pass the options it was found with",
            file.display(),
            cx.model,
            search.model_name()
        )));
    }
    let replayed = replay_steps(&*search, &cx)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    println!(
        "{}\nreplay:   {} ({} steps)",
        header(check, search.model_name(), false),
        file.display(),
        cx.steps.len()
    );
    let (steps, violation) = match replayed {
        Replay::Violated { steps, violation } => (steps, Some(violation)),
        Replay::Clean { steps } => (steps, None),
    };
    for (i, what) in steps.iter().enumerate() {
        println!("  {:>3}. {what}", i + 1);
    }
    match violation {
        Some(v) => {
            println!("  violated: {v}");
            if v != cx.violation {
                println!("(the trace recorded another violation: {})", cx.violation);
            }
            Err(CliError::Other(format!(
                "the trace still breaks {}: {v}",
                cx.model
            )))
        }
        None => {
            println!(
                "verdict:  the path replays without a violation (the trace recorded: {})",
                cx.violation
            );
            Ok(())
        }
    }
}

/// `--list`: every model of the catalog.
pub fn list() -> String {
    let mut s = String::from(
        "Models (troupe check FAMILY [--algorithm A] [--mutation M] ...; options not given take \
         the defaults below):\n",
    );
    for f in Family::ALL {
        let checked = f.checked_algorithms();
        let others: Vec<Algorithm> = f
            .algorithms()
            .into_iter()
            .filter(|a| !checked.contains(a))
            .collect();
        let _ = writeln!(s, "\n{f}: {}", f.about());
        let _ = write!(s, "  algorithms: {}", names(&checked));
        if checked.len() > 1 {
            s.push_str(" (default: each in turn)");
        }
        if !others.is_empty() {
            let _ = write!(s, "; also {} (not in the suite)", names(&others));
        }
        let range = f.members();
        let _ = writeln!(
            s,
            "\n  members:    {} ({} to {})\n  bounds:     {}",
            Family::DEFAULT_MEMBERS,
            range.start(),
            range.end(),
            describe(&f.bounds(), None)
        );
        for a in checked.iter().filter(|a| f.bounds_for(**a) != f.bounds()) {
            let _ = writeln!(s, "  bounds for {a}: {}", describe(&f.bounds_for(*a), None));
        }
        let mutations = f.mutations();
        if mutations.is_empty() {
            s.push_str("  mutations:  none\n");
        }
        for (i, m) in mutations.into_iter().enumerate() {
            let label = if i == 0 { "mutations:" } else { "" };
            let _ = writeln!(s, "  {label:<11} {m} ({}): {}", m.breaks(), m.about());
            let caught = match m.caught_with() {
                Some((a, b)) if b == f.bounds() => {
                    format!("the suite catches it with {a} within the bounds above")
                }
                Some((a, b)) => format!(
                    "the suite catches it with {a} within {}",
                    describe(&b, None)
                ),
                None => "not in the suite: the bounds above by default".to_string(),
            };
            let _ = writeln!(s, "  {:<11} {caught}", "");
        }
    }
    s
}
