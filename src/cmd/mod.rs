//! One module per subcommand; each exposes `run(args) -> anyhow::Result<ExitCode>`.

mod check;
mod demo;
mod diff;
mod export;
mod gdb;
mod info;
mod policies;
mod record;
mod replay;
mod run;
mod scenarios;
mod verify;

use crate::cli::Command;
use std::process::ExitCode;

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
