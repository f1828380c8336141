//! `mmurr`: record-and-replay debugger for the x86 MMU behaviour of virtual machines.

mod cli;
mod cmd;

use clap::Parser;
use recorder::exit::{Failure, Outcome};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(&cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmurr: error: {err:#}");
            // An error that knows its outcome (host-unsupported, ...) exits with that code;
            // every other is mmurr's own failure.
            err.chain()
                .find_map(|e| e.downcast_ref::<Failure>())
                .map_or(Outcome::Error, |f| f.outcome)
                .into()
        }
    }
}
