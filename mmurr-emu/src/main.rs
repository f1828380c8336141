//! `mmurr-emu`: the emu backend as its own executable (it links Unicorn, GPL-2.0, which the
//! Apache-2.0-only KVM crates in `mmurr` cannot be combined with). `mmurr record --backend emu`
//! runs `mmurr-emu record ...` with the same arguments.

mod cli;

use clap::Parser;
use cli::{Cli, Command, ProbeArgs, RecordArgs};
use mmurr_emu::{EmuBackend, SmpBackend};
use recorder::exit::Outcome;
use recorder::Backend;
use std::process::ExitCode;

/// `println!` that ignores a closed standard output (`mmurr-emu ... | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Record(a) => record(a),
        Command::Probe(a) => probe(a),
    };
    match r {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmurr-emu: error: {err:#}");
            err.chain()
                .find_map(Outcome::of_error)
                .unwrap_or(Outcome::Error)
                .into()
        }
    }
}

/// One engine, or one per vCPU (`--cpus`).
enum Machine {
    One(Box<EmuBackend>),
    Smp(SmpBackend),
}

fn record(a: &RecordArgs) -> anyhow::Result<ExitCode> {
    let cpuid = EmuBackend::probe_cpuid()?;
    let guest = a.guest.build(Some(&cpuid))?;
    let f = &a.flags;
    let mut opts = f.options(&guest)?;
    let spec = guest.spec;
    opts.fit_keyframes_to_ram(spec.ram_size);
    let mut machine = if f.cpus > 1 {
        Machine::Smp(SmpBackend::new(f.cpus)?)
    } else {
        Machine::One(Box::new(EmuBackend::new()?))
    };
    let backend: &mut dyn Backend = match &mut machine {
        Machine::One(b) => b.as_mut(),
        Machine::Smp(b) => b,
    };
    let summary = match &f.gdb {
        None => recorder::record(backend, &spec, &opts)?,
        Some(listen) => {
            // The live gdb server runs here, in the process that owns the Unicorn backend. An
            // unknown policy is refused before gdb is told to connect.
            recorder::resolve_policies(&opts.policies)?;
            let mut live = mmurr_gdb::start_live(mmurr_gdb::LiveOptions {
                listen,
                allow_remote: f.allow_remote,
                what: "emu guest",
                allow_writes: f.gdb_writable,
                vcpus: backend.vcpus(),
                interrupted: opts.interrupted.clone(),
            })?;
            recorder::record_with(backend, &spec, &opts, Some(&mut live))?
        }
    };
    let bsp = match &machine {
        Machine::One(b) => b,
        Machine::Smp(b) => b.bsp(),
    };
    for w in &bsp.warnings {
        eprintln!("mmurr-emu: warning: {w}");
    }
    if !bsp.entry_fixups.is_empty() && !f.quiet {
        eprintln!(
            "mmurr-emu: note: the entry trampoline could not load {} from descriptors; set directly",
            bsp.entry_fixups.join(", ")
        );
    }
    let e = &summary.end;
    eprintln!(
        "mmurr-emu: recorded {} steps, {} events in {:.2} s ({:.0} steps/s) -> {} ({} bytes)",
        summary.steps,
        summary.events,
        summary.elapsed.as_secs_f64(),
        summary.steps_per_second(),
        summary.output.display(),
        summary.file_bytes
    );
    eprintln!("mmurr-emu: end: {} — {}", e.reason.name(), e.message);
    for f in &e.self_check_failures {
        eprintln!("mmurr-emu: self-check failure: {f}");
    }
    for (what, n) in &summary.unhandled {
        eprintln!("mmurr-emu: unhandled: {what} ({n}x)");
    }
    Ok(Outcome::of_recording(e).into())
}

fn probe(a: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let backend = EmuBackend::new()?;
    let info = backend.info();
    let cpuid = backend.cpuid();
    let f = guests::CpuFeatures::from_cpuid(&cpuid);
    let modes = ["real", "unpaged", "32-bit", "pae", "4-level"]
        .into_iter()
        .chain(f.la57.then_some("5-level"))
        .collect::<Vec<_>>();
    let scenarios = guests::scenario_names();
    if a.json {
        out!(
            "{{\"engine\":{:?},\"cpu\":{:?},\"vendor\":{:?},\"paging_modes\":{:?},\"features\":{{\"smep\":{},\"smap\":{},\"pku\":{},\"la57\":{},\"pcid\":{}}},\"scenarios\":{:?}}}",
            info.engine, info.cpu_model_name, info.cpu_vendor, modes, f.smep, f.smap, f.pku, f.la57, f.pcid, scenarios
        );
    } else {
        out!(
            "engine:       {} (mmurr-emu {})",
            info.engine,
            env!("CARGO_PKG_VERSION")
        );
        out!(
            "guest CPU:    {} {} (family {:#x} model {:#x} stepping {})",
            info.cpu_vendor,
            info.cpu_model_name,
            info.cpu_family,
            info.cpu_model,
            info.cpu_stepping
        );
        out!("paging modes: {}", modes.join(", "));
        out!(
            "features:     smep={} smap={} pku={} la57={} pcid={}",
            f.smep,
            f.smap,
            f.pku,
            f.la57,
            f.pcid
        );
        out!("scenarios:    {} (all runnable)", scenarios.join(", "));
        out!(
            "guests:       --scenario NAME, --kernel ELF (multiboot v1), --image FILE@ADDR, \
             --firmware ROM, --guest-from TRACE (a Linux bzImage comes from `mmurr` as a guest file)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
