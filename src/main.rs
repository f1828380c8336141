//! `mmurr`: record-and-replay debugger for the x86 MMU behaviour of virtual machines.

mod cli;
mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(&cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmurr: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
