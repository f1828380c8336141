//! `mmurr gdb TRACE [--listen ADDR] [--allow-remote]`: serve a trace to gdb with reverse
//! execution. Needs neither KVM nor the emulator, except inside runs (traces recorded in runs on
//! emu), which `mmurr-emu` re-executes.

use crate::cli::GdbArgs;
use std::process::ExitCode;

pub fn run(args: &GdbArgs) -> anyhow::Result<ExitCode> {
    let (reader, _integrity) = super::open_trace(&args.trace)?;
    drop(reader);
    let addr = mmurr_gdb::listen_addr(&args.listen, args.allow_remote)?;
    let listener = mmurr_gdb::bind(addr, &format!("trace {}", args.trace.display()))?;
    mmurr_gdb::serve_trace(&args.trace, listener, super::reexecution())?;
    Ok(ExitCode::SUCCESS)
}
