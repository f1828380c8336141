//! One module per subcommand; each exposes `run(args) -> anyhow::Result<ExitCode>`.

mod check;
mod export;
mod info;
mod policies;

use crate::cli::Command;
use std::process::ExitCode;

/// Runs one subcommand. Errors print as `mmurr: error: ...` and exit 2.
pub fn dispatch(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Record(_) => not_built("record", 4),
        Command::Run(_) => not_built("run", 7),
        Command::Replay(_) => not_built("replay", 8),
        Command::Gdb(_) => not_built("gdb", 7),
        Command::Check(args) => check::run(args),
        Command::Verify(_) => not_built("verify", 6),
        Command::Diff(_) => not_built("diff", 5),
        Command::Info(args) => info::run(args),
        Command::Export(args) => export::run(args),
        Command::Scenarios(_) => not_built("scenarios", 4),
        Command::Policies(args) => policies::run(args),
        Command::Demo(_) => not_built("demo", 4),
    }
}

/// Subcommands that are designed but not built yet say so and fail, never pretend.
fn not_built(name: &str, issue: u32) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mmurr {name}` is not built yet (tracked in issue {issue})")
}
