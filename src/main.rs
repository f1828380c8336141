//! `mmurr`: record-and-replay debugger for the x86 MMU behaviour of virtual machines.

mod cli;
mod cmd;

use clap::Parser;
use recorder::exit::Outcome;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(&cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmurr: error: {err:#}");
            // A backend's typed error (host-unsupported, engine failure) keeps its own code;
            // every other is mmurr's own failure.
            err.chain()
                .find_map(Outcome::of_error)
                .unwrap_or(Outcome::Error)
                .into()
        }
    }
}
