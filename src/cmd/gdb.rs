//! `mmurr gdb TRACE`: serve a trace to gdb with reverse execution, and start gdb on it already
//! connected, with mmurr's commands loaded (as `rr replay` does); `--server-only` / `--listen`
//! only serve. Needs neither KVM nor the emulator.

use crate::cli::GdbArgs;
use anyhow::Context;
use std::io::Write;
use std::process::{Command, ExitCode};

pub fn run(args: &GdbArgs) -> anyhow::Result<ExitCode> {
    let (reader, _integrity) = super::open_trace(&args.trace)?;
    drop(reader);
    let target = mmurr_gdb::replay_target::ReplayTarget::open(&args.trace)
        .with_context(|| format!("cannot open trace {}", args.trace.display()))?;
    let what = format!("trace {}", args.trace.display());
    if args.server_only || args.listen.is_some() {
        let listen = args.listen.as_deref().unwrap_or(mmurr_gdb::DEFAULT_LISTEN);
        let addr = mmurr_gdb::listen_addr(listen, args.allow_remote)?;
        let listener = mmurr_gdb::bind(addr, &what)?;
        mmurr_gdb::serve_target(target, listener)?;
        return Ok(ExitCode::SUCCESS);
    }
    let gdb = std::env::var_os("GDB").unwrap_or_else(|| "gdb".into());
    let addr = mmurr_gdb::listen_addr("127.0.0.1:0", false)?;
    let listener = mmurr_gdb::bind(addr, &what)?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        if let Err(e) = mmurr_gdb::serve_target(target, listener) {
            eprintln!("mmurr: the gdb server failed: {e:#}");
        }
    });
    let mut script = tempfile::Builder::new()
        .prefix("mmurr-commands-")
        .suffix(".gdb")
        .tempfile()
        .context("writing mmurr's gdb commands to a temporary file")?;
    script
        .write_all(mmurr_gdb::GDB_COMMANDS.as_bytes())
        .context("writing mmurr's gdb commands to a temporary file")?;
    let status = Command::new(&gdb)
        .arg("-q")
        .arg("-ex")
        .arg(format!("source {}", script.path().display()))
        .arg("-ex")
        .arg(format!("target remote 127.0.0.1:{port}"))
        .args(&args.gdb_args)
        .status()
        .with_context(|| {
            format!(
                "cannot start gdb ({}): install it (apt-get install gdb), set GDB to its path, \
                 or serve only with --server-only",
                std::path::Path::new(&gdb).display()
            )
        })?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("mmurr: gdb ended with {status}");
        ExitCode::from(2)
    })
}
