//! `mmurr replay T`: the trace browser. It needs a terminal: with standard output
//! redirected it says so and exits 2, since a TUI drawn into a pipe helps nobody.

use crate::cli::TraceArg;
use recorder::exit::Outcome;
use std::io::IsTerminal;
use std::process::ExitCode;

pub fn run(args: &TraceArg) -> anyhow::Result<ExitCode> {
    // Said before the TUI takes the screen, and again after it gives it back.
    let (reader, integrity) = super::open_trace(&args.trace)?;
    drop(reader);
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "mmurr: replay needs a terminal, and standard {} is not one; `mmurr info {}` or `mmurr export` print a trace instead",
            if std::io::stdout().is_terminal() { "input" } else { "output" },
            args.trace.display()
        );
        return Ok(Outcome::Error.into());
    }
    tui::run(&args.trace)?;
    super::warn_incomplete(&args.trace, &integrity);
    Ok(ExitCode::SUCCESS)
}
