//! One module per subcommand; each exposes `run(args) -> anyhow::Result<ExitCode>`.

mod check;
mod check_host;
mod demo;
mod diff;
mod export;
mod gdb;
mod info;
mod linux;
mod policies;
mod record;
mod replay;
mod run;
mod scenarios;
mod verify;

use crate::cli::Command;
use anyhow::Context;
use recorder::exit::Outcome;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;
use traces::{Depth, Integrity, Reader};

/// Runs one subcommand. Errors print as `mmurr: error: ...` and exit 2.
pub fn dispatch(command: &Command) -> anyhow::Result<ExitCode> {
    if prints_only(command) {
        restore_default_sigpipe();
    }
    match command {
        Command::Record(args) => record::run(args),
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Gdb(args) => gdb::run(args),
        Command::Check(args) => check::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Info(args) => info::run(args),
        Command::Export(args) => export::run(args),
        Command::Scenarios(args) => scenarios::run(args),
        Command::Policies(args) => policies::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

/// Commands whose only output is text for a reader or a pipe.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Info(_)
            | Command::Export(_)
            | Command::Check(_)
            | Command::Diff(_)
            | Command::Scenarios(_)
            | Command::Policies(_)
    )
}

/// Rust starts with SIGPIPE ignored, so `mmurr export T | head` would panic in `println!`
/// once `head` exits. Printing commands take the default action instead and end quietly, as
/// Unix tools do. Recording commands keep ignoring it: a closed pipe must not cut a recording.
fn restore_default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no memory-safety preconditions; no
    // handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Opens a trace for a command that reads it, checks every chunk's checksum, and says first, on
/// standard error, what the trace lost if it cannot be read whole. Every command that reads a
/// trace starts here, so a partial trace never passes as a whole one.
pub fn open_trace(path: &Path) -> anyhow::Result<(Reader<BufReader<File>>, Integrity)> {
    let mut reader =
        Reader::open(path).with_context(|| format!("cannot read the trace {}", path.display()))?;
    let integrity = reader.verify(Depth::Checksums);
    warn_incomplete(path, &integrity);
    Ok((reader, integrity))
}

/// The stderr lines for a trace that cannot be read whole (nothing for a complete one).
pub fn warn_incomplete(path: &Path, integrity: &Integrity) {
    for line in integrity.problems() {
        eprintln!("mmurr: warning: {}: {line}", path.display());
    }
}

/// A command that met the damage [`open_trace`] reported: say so, and exit with
/// "incomplete trace", not as if mmurr itself had failed.
pub fn stopped_at_damage(e: &anyhow::Error) -> ExitCode {
    eprintln!("mmurr: error: stopped at the damage reported above: {e:#}");
    Outcome::IncompleteTrace.into()
}

/// `result`, except that a failure on a trace [`open_trace`] reported as damaged is that
/// damage ([`stopped_at_damage`]).
pub fn unless_damaged(
    integrity: &Integrity,
    result: anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    match result {
        Err(e) if !integrity.complete => Ok(stopped_at_damage(&e)),
        r => r,
    }
}

/// The `--json` form of [`Integrity`], under the key `trace_integrity` next to `complete`.
pub fn integrity_json(integrity: &Integrity) -> serde_json::Value {
    serde_json::to_value(integrity)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}
