//! `ballast-run-tests`: runs the test executables of one `cargo test --no-run
//! --message-format=json` build in two lanes side by side, so the long end-to-end
//! binary (real guests, mostly waiting) overlaps the other crates' tests instead of
//! following them. `cargo test` runs binaries one at a time and holds the build
//! directory's lock while they run, so two cargo processes cannot overlap them.
//!
//! Usage: `ballast-run-tests CARGO_JSON_FILE [--alone LABEL]... [--split FILTER]...
//! [--rest-command CMD]... [-- TEST-ARGS...]`
//! - LABEL names a binary as `<package dir>/<source>` relative to the current
//!   directory (the workspace root), e.g. `tests/tests/it/main.rs`; those run in the
//!   first lane with their output live; every other binary runs in the second lane,
//!   one after another, each one's output printed whole when it ends, and then each
//!   CMD (`sh -c`, in the current directory: doc tests, a short fuzz run) the same way.
//! - `--split FILTER` runs the first lane's tests matching FILTER (a libtest name
//!   filter) in a process of their own from the start, beside it (`--skip FILTER`
//!   there), output printed whole at its end: libtest starts tests in name order, so a
//!   long suite late in the alphabet would otherwise run alone at the end.
//! - Each binary runs as cargo would run it: in its package's directory, with
//!   `CARGO_MANIFEST_DIR` and `CARGO` set, TEST-ARGS passed on.
//!
//! Exits 0 when every binary passed, 1 when one failed (all still run), 2 on a usage
//! or I/O error. The real guests of both lanes share the lab's slots and libvirtd
//! lease across processes (crates/ballast-testvm).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ballast_testenv::plan::{split_lanes, test_binaries, TestBinary};

struct Args {
    cargo_json: PathBuf,
    alone: Vec<String>,
    split: Vec<String>,
    rest_commands: Vec<String>,
    test_args: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut cargo_json = None;
    let mut alone = Vec::new();
    let mut rest_commands = Vec::new();
    let mut split = Vec::new();
    let mut test_args = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--alone" => alone.push(args.next().ok_or("--alone needs a label")?),
            "--split" => split.push(args.next().ok_or("--split needs a test name filter")?),
            "--rest-command" => {
                rest_commands.push(args.next().ok_or("--rest-command needs a command")?)
            }
            "--" => {
                test_args.extend(args.by_ref());
            }
            _ if cargo_json.is_none() => cargo_json = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Args {
        cargo_json: cargo_json.ok_or(
            "usage: ballast-run-tests CARGO_JSON_FILE [--alone LABEL]... [-- TEST-ARGS...]",
        )?,
        alone,
        split,
        rest_commands,
        test_args,
    })
}

/// How one binary's run ended.
struct Outcome {
    label: String,
    passed: bool,
    took: Duration,
}

fn command(binary: &TestBinary, test_args: &[String]) -> Command {
    let mut command = Command::new(&binary.executable);
    command
        .args(test_args)
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env(
            "CARGO",
            std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        );
    command
}

fn header(label: &str, binary: &TestBinary) -> String {
    format!("     Running {label} ({})\n", binary.executable.display())
}

/// The first lane: output straight to the terminal.
fn run_live(binaries: &[TestBinary], root: &Path, test_args: &[String]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for binary in binaries {
        let label = binary.label(root);
        print!("{}", header(&label, binary));
        let _ = std::io::stdout().flush();
        let started = Instant::now();
        let status = command(binary, test_args).status();
        outcomes.push(Outcome {
            passed: report(&label, status.map(|status| status.success())),
            label,
            took: started.elapsed(),
        });
    }
    outcomes
}

/// The second lane: each binary's output printed whole when it ends.
fn run_buffered(binaries: &[TestBinary], root: &Path, test_args: &[String]) -> Vec<Outcome> {
    binaries
        .iter()
        .map(|binary| {
            let mut command = command(binary, test_args);
            run_captured(
                binary.label(root),
                &header(&binary.label(root), binary),
                &mut command,
            )
        })
        .collect()
}

/// The second lane's commands after its binaries, each printed whole when it ends.
fn run_commands(commands: &[String]) -> Vec<Outcome> {
    commands
        .iter()
        .map(|line| {
            let mut command = Command::new("sh");
            command.arg("-c").arg(line);
            run_captured(
                line.clone(),
                &format!("     Running `{line}`\n"),
                &mut command,
            )
        })
        .collect()
}

fn run_captured(label: String, header: &str, command: &mut Command) -> Outcome {
    let started = Instant::now();
    let output = command.stdin(Stdio::null()).output();
    let mut block = header.as_bytes().to_vec();
    let passed = match output {
        Ok(output) => {
            block.extend_from_slice(&output.stdout);
            block.extend_from_slice(&output.stderr);
            report(&label, Ok(output.status.success()))
        }
        Err(error) => report(&label, Err(error)),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&block);
    let _ = stdout.flush();
    Outcome {
        label,
        passed,
        took: started.elapsed(),
    }
}

fn report(label: &str, result: std::io::Result<bool>) -> bool {
    match result {
        Ok(passed) => passed,
        Err(error) => {
            eprintln!("ballast-run-tests: cannot run {label}: {error}");
            false
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("ballast-run-tests: {message}");
            return ExitCode::from(2);
        }
    };
    let json = match std::fs::read_to_string(&args.cargo_json) {
        Ok(json) => json,
        Err(error) => {
            eprintln!("ballast-run-tests: {}: {error}", args.cargo_json.display());
            return ExitCode::from(2);
        }
    };
    let root = std::env::current_dir().unwrap_or_default();
    let (alone, rest) = split_lanes(test_binaries(&json), &root, &args.alone);
    if let Some(missing) = args
        .alone
        .iter()
        .find(|label| !alone.iter().any(|binary| binary.label(&root) == **label))
    {
        eprintln!("ballast-run-tests: --alone {missing}: no such test binary in the build");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut live_args = args.test_args.clone();
    for filter in &args.split {
        live_args.extend(["--skip".to_string(), filter.clone()]);
    }
    let outcomes = std::thread::scope(|scope| {
        let split: Vec<_> = alone
            .iter()
            .flat_map(|binary| args.split.iter().map(move |filter| (binary, filter)))
            .map(|(binary, filter)| {
                let root = &root;
                let test_args = &args.test_args;
                scope.spawn(move || {
                    let label = format!("{} [{filter}]", binary.label(root));
                    let mut command = command(binary, test_args);
                    command.arg(filter);
                    run_captured(label.clone(), &header(&label, binary), &mut command)
                })
            })
            .collect();
        let live = scope.spawn(|| run_live(&alone, &root, &live_args));
        let mut outcomes = run_buffered(&rest, &root, &args.test_args);
        outcomes.extend(run_commands(&args.rest_commands));
        let rest_took = started.elapsed();
        outcomes.extend(live.join().unwrap_or_default());
        for handle in split {
            outcomes.extend(handle.join().ok());
        }
        println!(
            "\nlanes: {} binaries alone ({} split off), {} others and {} commands in {:.0?}; wall {:.0?}",
            alone.len(),
            args.split.len(),
            rest.len(),
            args.rest_commands.len(),
            rest_took,
            started.elapsed()
        );
        outcomes
    });
    for outcome in &outcomes {
        println!(
            "  {:>6.1}s  {}  {}",
            outcome.took.as_secs_f64(),
            if outcome.passed { "ok    " } else { "FAILED" },
            outcome.label
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed)
        .map(|outcome| outcome.label.as_str())
        .collect();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("ballast-run-tests: failed: {}", failed.join(", "));
        ExitCode::from(1)
    }
}
