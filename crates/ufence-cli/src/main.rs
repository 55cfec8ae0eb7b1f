//! The `ufence` command: run a program under the preload, show a demo, list the options, and
//! watch and steer every process under ufence through its control block.

mod check;
mod demo;
mod exporter;
mod objects;
mod plan;
mod plan_file;
mod preload;
mod ps;
mod run;
use ufence_fleet::runtime;
mod set;
mod simulate;
mod stats;
mod symbolize;
mod top;
mod triage;

use clap::{Arg, ArgAction, Command};
use std::process::ExitCode;
use ufence_core::options::SPECS;

/// `--check` of `ufence objects` and `ufence stats` (see `check`).
fn check_arg() -> Arg {
    Arg::new("check")
        .long("check")
        .action(ArgAction::SetTrue)
        .help("First ask the process to check the canaries of its live objects (served on its next sampling slow path; damaged ones are reported by the process)")
}

fn cli() -> Command {
    let mut run = Command::new("run")
        .about("Run PROGRAM under libufence.so and return its exit status (128+N for signal N)")
        .arg(
            Arg::new("lib")
                .long("lib")
                .value_name("PATH")
                .help("libufence.so to preload (default: $UFENCE_LIB, then next to this binary)"),
        )
        .arg(
            Arg::new("command")
                .value_name("PROGRAM [ARGS]...")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .required(true),
        )
        .after_help(
            "Options are also read from UFENCE_OPTIONS (key=value pairs); those given here win.\n\
             Exit status: the program's (128+N for signal N); 127 if PROGRAM is not found, 126 if it\n\
             cannot be run.\n\n\
             Test mode, where a bug must fail the run even if the program exits 0:\n  \
             ufence run --sample_rate 1 --max_overhead 0 --exitcode 23 -- ./my-tests",
        );
    // One flag per option of the table, with its doc and default.
    for spec in SPECS {
        run = run.arg(
            Arg::new(spec.name)
                .long(spec.name)
                .alias(spec.name.replace('_', "-"))
                .value_name(spec.kind)
                .action(ArgAction::Set)
                .help(format!("{} [default: {}]", spec.doc, spec.default)),
        );
    }
    Command::new("ufence")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Sampling heap memory-safety error detector: KFENCE for user space")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(run)
        .subcommand(
            Command::new("demo")
                .about(
                    "Show ufence catching a use-after-free and an off-by-one in a small workload",
                )
                .arg(Arg::new("lib").long("lib").value_name("PATH")),
        )
        .subcommand(
            Command::new("options")
                .about("List every option with its type, default and meaning")
                .arg(
                    Arg::new("markdown")
                        .long("markdown")
                        .action(ArgAction::SetTrue)
                        .help("As a markdown table (for the README)"),
                ),
        )
        .subcommand(
            Command::new("ps")
                .about("List the processes under ufence (from their control blocks)")
                .arg(
                    Arg::new("all")
                        .long("all")
                        .action(ArgAction::SetTrue)
                        .help("Also list stale files: processes that crashed or were killed"),
                )
                .arg(
                    Arg::new("gc")
                        .long("gc")
                        .action(ArgAction::SetTrue)
                        .help("Remove stale files (implies --all)"),
                ),
        )
        .subcommand(
            Command::new("stats")
                .about("Show a process's counters, as KFENCE's stats file does")
                .arg(Arg::new("pid").value_name("PID"))
                .arg(
                    Arg::new("all")
                        .long("all")
                        .action(ArgAction::SetTrue)
                        .conflicts_with("pid")
                        .help("Every live process under ufence"),
                )
                .arg(
                    Arg::new("format")
                        .long("format")
                        .value_parser(["kfence", "json", "prometheus"])
                        .default_value("kfence"),
                )
                .arg(check_arg().conflicts_with("all")),
        )
        .subcommand(
            Command::new("objects")
                .about("Show every slot of a process's pool with symbolized stacks, as KFENCE's objects file does")
                .arg(Arg::new("pid").value_name("PID").required(true))
                .arg(check_arg()),
        )
        .subcommand(
            Command::new("set")
                .about("Change runtime options of a running process (e.g. sample_interval=500)")
                .arg(Arg::new("pid").value_name("PID").required(true))
                .arg(
                    Arg::new("settings")
                        .value_name("KEY=VALUE")
                        .num_args(1..)
                        .required(true),
                ),
        )
        .subcommand({
            let v = |name: &'static str, value: &'static str, help: &'static str| {
                Arg::new(name)
                    .long(name)
                    .value_name(value)
                    .help(help)
                    .allow_hyphen_values(true)
            };
            Command::new("plan")
                .about("Recommend sampling settings for a fleet and predict the time to find a bug (docs/fleet-model.md)")
                .arg(v("config", "FILE", "Read the inputs from a TOML file (docs/plan-example.toml): its keys are these flags' names; flags given here override it"))
                .arg(v("machines", "N", "Machines (processes) in the fleet (required, here or in --config)"))
                .arg(v("rate", "ALLOCS_PER_S", "Allocations per second per process (describes the workload)"))
                .arg(v("from", "PID", "Measure the workload from this live process (and --apply to it)").conflicts_with("all"))
                .arg(Arg::new("all").long("all").action(ArgAction::SetTrue).help("Measure the workload from every live process of this host (and --apply to them)"))
                .arg(v("long-lived", "FRACTION", "Fraction of allocations never freed: 0.1 or 10% [default: 0, or measured]"))
                .arg(v("lifetime", "DURATION", "Mean lifetime of the other objects [default: 0.01s, or measured]"))
                .arg(v("long-lived-sites", "K", "Allocation sites of the long-lived objects [default: 4, or measured]"))
                .arg(v("bug-per-hour", "R", "Executions of the bug path per hour per machine (required, here or in --config)"))
                .arg(v("kind", "KIND", "uaf, overflow, underflow, double-free [default: uaf]"))
                .arg(v("bytes", "B", "How far an overflow or underflow reaches, in bytes [default: 1]"))
                .arg(Arg::new("access").long("access").value_parser(["read", "write"]).help("Access of an overflow or underflow [default: write]"))
                .arg(v("delay", "DURATION", "Time between the free and the bad access (uaf, double-free) [default: 0]"))
                .arg(v("object-size", "BYTES", "Size of the bug's object [default: 64]"))
                .arg(v("align", "BYTES", "Its alignment [default: 16, as malloc]"))
                .arg(v("within", "DURATION", "Target: 90 % chance of a first detection within this time (90s, 15m, 2h, 7d, 2w) [default: 7d]"))
                .arg(v("cpu", "PERCENT", "CPU budget per process [default: 1]"))
                .arg(v("mib", "MIB", "Memory budget per process [default: 16]"))
                .arg(v("sample-cost-us", "US", "CPU cost of one sampled allocation and its free [default: 5]"))
                .arg(Arg::new("format").long("format").value_parser(["text", "json"]).default_value("text"))
                .arg(Arg::new("apply").long("apply").action(ArgAction::SetTrue).help("Set the recommended runtime knobs on the measured live processes (old -> new, as `ufence set`)"))
        })
        .subcommand({
            let v = |name: &'static str, value: &'static str, help: &'static str| {
                Arg::new(name)
                    .long(name)
                    .value_name(value)
                    .help(help)
                    .allow_hyphen_values(true)
            };
            Command::new("simulate")
                .about("Simulate a fleet running ufence's sampling decisions; time to first detection and pool occupancy, beside the model's")
                .arg(v("machines", "N", "Machines (processes)").required(true))
                .arg(v("rate", "ALLOCS_PER_S", "Allocations per second per process").required(true))
                .arg(v("long-lived", "FRACTION", "Fraction of allocations never freed: 0.1 or 10% [default: 0]"))
                .arg(v("lifetime", "DURATION", "Mean lifetime of the others [default: 0.01s]"))
                .arg(v("long-lived-sites", "K", "Allocation sites of the long-lived objects [default: 4]"))
                .arg(v("bug-per-hour", "R", "Executions of the bug path per hour per machine [default: 0]"))
                .arg(v("kind", "KIND", "uaf, overflow, underflow, double-free [default: uaf]"))
                .arg(v("bytes", "B", "Reach of an overflow or underflow [default: 1]"))
                .arg(Arg::new("access").long("access").value_parser(["read", "write"]))
                .arg(v("delay", "DURATION", "Free to bad access (uaf, double-free) [default: 0]"))
                .arg(v("object-size", "BYTES", "[default: 64]"))
                .arg(v("align", "BYTES", "[default: 16]"))
                .arg(v("sample-interval", "MS", "[default: 100]"))
                .arg(v("sample-rate", "N", "[default: 0]"))
                .arg(v("num-objects", "N", "[default: 255]"))
                .arg(v("burst", "N", "[default: 0]"))
                .arg(v("adaptive", "0|1", "[default: 0]"))
                .arg(v("adaptive-max", "MS", "[default: 10000]"))
                .arg(v("skip-covered-thresh", "PERCENT", "[default: 75]"))
                .arg(v("horizon", "DURATION", "Simulated time [default: 1d]"))
                .arg(v("seed", "N", "Same seed, same result [default: 1]"))
                .arg(v("runs", "R", "Simulate R fleets and report the distribution of the fleet's first detection (each fleet stops at its first) [default: 1]"))
                .arg(v("threads", "N", "Worker threads (the result does not depend on them) [default: all cores]"))
                .arg(Arg::new("exact").long("exact").action(clap::ArgAction::SetTrue).help("Step through every sample (the reference simulator; slower) instead of jumping over runs of short-lived samples"))
                .arg(Arg::new("format").long("format").value_parser(["text", "json"]).default_value("text"))
        })
        .subcommand(
            Command::new("top")
                .about("Live view of every process under ufence (q quits, s changes the sort)")
                .arg(
                    Arg::new("interval")
                        .long("interval")
                        .value_name("MS")
                        .value_parser(clap::value_parser!(u64).range(100..=60_000))
                        .default_value("1000")
                        .help("Refresh period"),
                ),
        )
        .subcommand(
            Command::new("symbolize")
                .about("Print JSON reports (report_dir) as text, symbolized offline by build-id")
                .arg(
                    Arg::new("reports")
                        .value_name("REPORT.json")
                        .num_args(1..)
                        .required(true),
                )
                .arg(
                    Arg::new("debug-dir")
                        .long("debug-dir")
                        .value_name("DIR")
                        .action(ArgAction::Append)
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Where to find binaries or debug files by build-id (repeatable)"),
                ),
        )
        .subcommand(
            Command::new("exporter")
                .about("Serve every process under ufence (live and stale) as Prometheus metrics over HTTP")
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .value_name("ADDR:PORT")
                        .default_value(exporter::DEFAULT_LISTEN)
                        .help("Address to serve /metrics on (loopback unless told otherwise)"),
                )
                .arg(
                    Arg::new("runtime-dir")
                        .long("runtime-dir")
                        .value_name("DIR")
                        .action(ArgAction::Append)
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Control-file directory to scan (repeatable) [default: yours; as root, every user's]"),
                )
                .arg(
                    Arg::new("report-dir")
                        .long("report-dir")
                        .value_name("DIR")
                        .action(ArgAction::Append)
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Count the JSON reports under DIR by kind (repeatable)"),
                )
                .arg(
                    Arg::new("starve-after")
                        .long("starve-after")
                        .value_name("SECS")
                        .value_parser(clap::value_parser!(u64).range(1..))
                        .default_value("600")
                        .help("A full pool that sampled nothing for this long is starving"),
                )
                .arg(
                    Arg::new("once")
                        .long("once")
                        .action(ArgAction::SetTrue)
                        .help("Print one scrape to stdout and exit (no server)"),
                ),
        )
        .subcommand(
            Command::new("triage")
                .about("Group a fleet's JSON reports by bug: count, hosts, builds, first and last seen")
                .arg(
                    Arg::new("paths")
                        .value_name("PATH")
                        .num_args(1..)
                        .required(true)
                        .help("Report files, directories (searched recursively for *.json, *.ndjson, *.jsonl), or - for newline-delimited JSON on stdin"),
                )
                .arg(
                    Arg::new("format")
                        .long("format")
                        .value_parser(["text", "json", "markdown"])
                        .default_value("text"),
                )
                .arg(
                    Arg::new("new-since")
                        .long("new-since")
                        .value_name("DATE")
                        .help("Only bugs first seen at or after DATE (YYYY-MM-DD[THH:MM[:SS]], UTC), oldest first"),
                )
                .arg(
                    Arg::new("debug-dir")
                        .long("debug-dir")
                        .value_name("DIR")
                        .action(ArgAction::Append)
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Name frames the reports could not (stripped binaries) from binaries or debug files found by build-id, as symbolize does (repeatable)"),
                )
                .arg(
                    Arg::new("verbose")
                        .short('v')
                        .long("verbose")
                        .action(ArgAction::SetTrue)
                        .help("List every skipped file with the reason"),
                ),
        )
        .subcommand(
            Command::new(demo::WORKLOAD_VERB)
                .hide(true)
                .arg(Arg::new("bug").required(true)),
        )
}

fn main() -> ExitCode {
    // The demo's workload runs under sample_rate=1, where every allocation takes one of the
    // pool's 255 slots while slots last: it must not start by building the whole command line
    // (hundreds of allocations that stay), or its planted bugs would find the pool full.
    let mut args = std::env::args();
    let verb = args.nth(1);
    if verb.as_deref() == Some(symbolize::FRAMES_VERB) {
        return ExitCode::from(symbolize::frames_main());
    }
    if verb.as_deref() == Some(demo::WORKLOAD_VERB) {
        let bug = args.next().unwrap_or_default();
        return match demo::workload(&bug) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("ufence: {e}");
                ExitCode::from(2)
            }
        };
    }
    let matches = cli().get_matches();
    if !matches!(matches.subcommand_name(), Some("run")) {
        // A verb whose reader goes away (`ufence objects PID | head -3`) ends as Unix tools
        // do, killed quietly by SIGPIPE (a shell shows 141), instead of Rust's panic on the
        // failed print. `run` keeps ignoring it: it must outlive its program's readers to
        // return the program's status (and the program gets the default action back at exec).
        // SAFETY: setting a signal's disposition to the default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match matches.subcommand() {
        Some(("run", m)) => run::main(m),
        Some(("demo", m)) => demo::main(m.get_one::<String>("lib").map(String::as_str)),
        Some(("options", m)) => {
            print_options(m.get_flag("markdown"));
            Ok(0)
        }
        Some(("ps", m)) => ps::main(m),
        Some(("stats", m)) => stats::main(m),
        Some(("objects", m)) => objects::main(m),
        Some(("set", m)) => set::main(m),
        Some(("plan", m)) => {
            let verb = cli().find_subcommand("plan").expect("plan").clone();
            match plan_file::merged(m, verb) {
                Ok(Some(merged)) => plan::main(&merged),
                Ok(None) => plan::main(m),
                Err(e) => Err(e),
            }
        }
        Some(("simulate", m)) => simulate::main(m),
        Some(("top", m)) => top::main(m),
        Some(("symbolize", m)) => {
            let files: Vec<String> = m.get_many::<String>("reports").unwrap().cloned().collect();
            let dirs: Vec<_> = m
                .get_many::<std::path::PathBuf>("debug-dir")
                .map(|d| d.cloned().collect())
                .unwrap_or_default();
            symbolize::main(&files, &dirs)
        }
        Some(("triage", m)) => triage::main(m),
        Some(("exporter", m)) => exporter::main(m),
        Some((demo::WORKLOAD_VERB, m)) => demo::workload(m.get_one::<String>("bug").unwrap()),
        _ => unreachable!("clap requires a subcommand"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("ufence: {msg}");
            ExitCode::from(2)
        }
    }
}

fn print_options(markdown: bool) {
    if markdown {
        println!("| option | default | meaning |\n| --- | --- | --- |");
        for s in SPECS {
            println!("| `{}` | {} | {} |", s.name, s.default, s.doc);
        }
    } else {
        for s in SPECS {
            let rt = if s.runtime { ", runtime" } else { "" };
            println!("{} ({s}, default {}{rt})\n    {}", s.name, s.default, s.doc);
        }
    }
}
