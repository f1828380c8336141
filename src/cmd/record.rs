//! `mmurr record`: build the guest, pick the backend (kvm in-process, or the `mmurr-emu`
//! executable as a child), record, and report how the run ended.

use crate::cli::{BackendChoice, FlavourChoice, GuestArgs, RecordArgs};
use anyhow::{bail, Context};
use guests::loader::EntryMode;
use recorder::exit::Outcome;
use recorder::{RecordOptions, RecordSummary, SerialSink};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use traces::{GuestSpec, PagingMode};

pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let guest = build_guest(&args.guest)?;
    let backend = choose_backend(args.backend, guest.needs.as_deref(), &guest.label)?;
    eprintln!("mmurr: backend {}: {}", backend.name(), backend.reason);
    match backend.kind {
        Chosen::Kvm => {
            let summary = record_on_kvm(args, &guest)?;
            print_summary(&summary);
            Ok(exit_code(&summary))
        }
        Chosen::Emu => run_emu_child(args),
    }
}

/// A guest ready to record, with the paging modes it needs when they are known.
pub struct BuiltGuest {
    pub spec: GuestSpec,
    pub scenario: Option<String>,
    pub needs: Option<Vec<PagingMode>>,
    pub label: String,
}

pub fn build_guest(args: &GuestArgs) -> anyhow::Result<BuiltGuest> {
    if let Some(name) = &args.scenario {
        let s = guests::scenario(name, &guests::CpuFeatures::default()).with_context(|| {
            format!(
                "no built-in scenario {name:?}; `mmurr scenarios` lists them ({})",
                guests::scenario_names().join(", ")
            )
        })?;
        return Ok(BuiltGuest {
            spec: s.guest,
            scenario: Some(s.name.to_string()),
            needs: Some(s.needs),
            label: format!("scenario {}", s.name),
        });
    }
    let ram_size = args
        .memory
        .checked_mul(1 << 20)
        .context("--memory is too large")?;
    if let Some(image) = &args.image {
        let (file, addr) = image
            .rsplit_once('@')
            .with_context(|| format!("--image wants FILE@ADDR, got {image:?}"))?;
        let addr = parse_u64(addr)?;
        let entry = match &args.entry {
            Some(e) => parse_u64(e)?,
            None => addr,
        };
        let mode = match args.entry_mode.as_str() {
            "real" => EntryMode::Real,
            "protected" => EntryMode::Protected,
            "long" => EntryMode::Long,
            other => bail!("--entry-mode must be real, protected or long, not {other:?}"),
        };
        let bytes = std::fs::read(file).with_context(|| format!("cannot read the image {file}"))?;
        let spec = guests::loader::load_raw(&bytes, addr, entry, mode, ram_size)
            .with_context(|| format!("cannot load {file} at {addr:#x}"))?;
        return Ok(BuiltGuest {
            label: spec.origin.clone(),
            spec,
            scenario: None,
            needs: None,
        });
    }
    if let Some(kernel) = &args.kernel {
        let elf = std::fs::read(kernel)
            .with_context(|| format!("cannot read the kernel {}", kernel.display()))?;
        let mut modules = Vec::new();
        for m in &args.modules {
            let bytes = std::fs::read(m)
                .with_context(|| format!("cannot read the module {}", m.display()))?;
            modules.push((m.display().to_string(), bytes));
        }
        let spec = guests::loader::load_multiboot(
            &elf,
            &kernel.display().to_string(),
            &args.append,
            &modules,
            ram_size,
        )
        .with_context(|| format!("cannot load the multiboot kernel {}", kernel.display()))?;
        return Ok(BuiltGuest {
            label: format!("kernel {}", kernel.display()),
            spec,
            scenario: None,
            needs: None,
        });
    }
    bail!("say which guest to run: --scenario NAME, --kernel ELF or --image FILE@ADDR")
}

fn parse_u64(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.with_context(|| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    Kvm,
    Emu,
}

pub struct BackendChoiceMade {
    pub kind: Chosen,
    pub reason: String,
}

impl BackendChoiceMade {
    pub fn name(&self) -> &'static str {
        match self.kind {
            Chosen::Kvm => "kvm",
            Chosen::Emu => "emu",
        }
    }
}

/// `auto`: kvm when the probe says this host runs every paging mode the guest needs (unknown
/// needs, as for --image and --kernel, count as runnable), else emu.
pub fn choose_backend(
    choice: BackendChoice,
    needs: Option<&[PagingMode]>,
    label: &str,
) -> anyhow::Result<BackendChoiceMade> {
    match choice {
        BackendChoice::Kvm => Ok(BackendChoiceMade {
            kind: Chosen::Kvm,
            reason: "chosen with --backend kvm".into(),
        }),
        BackendChoice::Emu => Ok(BackendChoiceMade {
            kind: Chosen::Emu,
            reason: "chosen with --backend emu".into(),
        }),
        BackendChoice::Auto => {
            let host = recorder_kvm::probe();
            if let Err(why) = &host.usable {
                return Ok(BackendChoiceMade {
                    kind: Chosen::Emu,
                    reason: format!("/dev/kvm is not usable: {why}"),
                });
            }
            let blocked = needs
                .unwrap_or(&[])
                .iter()
                .find_map(|&m| host.cannot_run(m));
            Ok(match blocked {
                Some(why) => BackendChoiceMade {
                    kind: Chosen::Emu,
                    reason: format!("{label} needs a mode KVM cannot run here: {why}"),
                },
                None => BackendChoiceMade {
                    kind: Chosen::Kvm,
                    reason: format!("{} runs {} here", host.engine(), host.runs_summary()),
                },
            })
        }
    }
}

pub fn record_options(
    args: &RecordArgs,
    scenario: Option<String>,
) -> anyhow::Result<RecordOptions> {
    let mut opts = RecordOptions::new(&args.output);
    opts.policies = args.policies.clone();
    opts.flavour = match args.flavour {
        FlavourChoice::Tdp => mmu::Flavour::Tdp,
        FlavourChoice::Shadow => mmu::Flavour::Shadow,
    };
    opts.max_steps = args.max_steps;
    opts.timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => bail!("--timeout must be a positive number of seconds, not {t}"),
        None => None,
    };
    opts.scenario = scenario;
    opts.command_line = std::env::args().collect();
    opts.serial = match &args.serial_log {
        Some(p) => SerialSink::File(p.clone()),
        None => SerialSink::Stdout,
    };
    opts.progress = !args.quiet;
    opts.interrupted =
        recorder::signals::interrupt_flag().context("installing the SIGINT/SIGTERM handler")?;
    Ok(opts)
}

pub fn record_on_kvm(args: &RecordArgs, guest: &BuiltGuest) -> anyhow::Result<RecordSummary> {
    if args.gdb.is_some() {
        return super::run::live_on_kvm(args, guest, false);
    }
    let opts = record_options(args, guest.scenario.clone())?;
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe())?;
    Ok(recorder::record(&mut backend, &guest.spec, &opts)?)
}

pub fn print_summary(s: &RecordSummary) {
    eprintln!(
        "mmurr: recorded {} steps ({:.0} steps/s) and {} events into {} ({} bytes)",
        s.steps,
        s.steps_per_second(),
        s.events,
        s.output.display(),
        s.file_bytes
    );
    eprintln!(
        "mmurr: run ended ({}): {}",
        s.end.reason.name(),
        s.end.message
    );
    for (what, n) in &s.unhandled {
        eprintln!("mmurr: unhandled {what}: {n} times (reads returned all-ones)");
    }
    for f in &s.end.self_check_failures {
        eprintln!("mmurr: SELF-CHECK FAILED: {f}");
    }
}

pub fn exit_code(s: &RecordSummary) -> ExitCode {
    Outcome::of_recording(&s.end).into()
}

/// `mmurr-emu` next to this executable.
pub fn emu_executable() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let emu = me.with_file_name(format!("mmurr-emu{}", std::env::consts::EXE_SUFFIX));
    if !emu.exists() {
        bail!(
            "the emu backend is the separate executable {} (GPL-2.0, built with `cargo build \
             -p mmurr-emu`), and it is not there",
            emu.display()
        );
    }
    Ok(emu)
}

/// The `mmurr record` flags for `mmurr-emu record`, which takes the same ones minus
/// --backend (the live gdb server runs inside `mmurr-emu`, so --gdb goes along).
pub fn emu_args(args: &RecordArgs) -> Vec<String> {
    let g = &args.guest;
    let mut v: Vec<String> = vec!["record".into()];
    let mut push = |flag: &str, value: String| {
        v.push(flag.into());
        v.push(value);
    };
    if let Some(s) = &g.scenario {
        push("--scenario", s.clone());
    }
    if let Some(k) = &g.kernel {
        push("--kernel", k.display().to_string());
        push("--append", g.append.clone());
        for m in &g.modules {
            push("--initrd", m.display().to_string());
        }
    }
    if let Some(i) = &g.image {
        push("--image", i.clone());
        if let Some(e) = &g.entry {
            push("--entry", e.clone());
        }
        push("--entry-mode", g.entry_mode.clone());
    }
    push("--memory", g.memory.to_string());
    for p in &args.policies {
        push("--policy", p.clone());
    }
    push(
        "--flavour",
        match args.flavour {
            FlavourChoice::Tdp => "tdp".into(),
            FlavourChoice::Shadow => "shadow".into(),
        },
    );
    push("--output", args.output.display().to_string());
    push("--max-steps", args.max_steps.to_string());
    if let Some(t) = args.timeout {
        push("--timeout", t.to_string());
    }
    if let Some(p) = &args.serial_log {
        push("--serial-log", p.display().to_string());
    }
    if let Some(addr) = &args.gdb {
        push("--gdb", addr.clone());
    }
    if args.quiet {
        v.push("--quiet".into());
    }
    if args.gdb.is_some() && args.allow_remote {
        v.push("--allow-remote".into());
    }
    v
}

/// Runs `mmurr-emu record` and passes its exit code through. The child shares the terminal,
/// so Ctrl-C reaches it directly; this process only waits (its own flag just absorbs the
/// signal so it outlives the child).
pub fn run_emu_child(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let status = spawn_emu(&emu_args(args))?;
    Ok(ExitCode::from(Outcome::code_of_child(status)))
}

pub fn spawn_emu(argv: &[String]) -> anyhow::Result<std::process::ExitStatus> {
    let emu = emu_executable()?;
    let _absorb = recorder::signals::interrupt_flag().context("installing the signal handler")?;
    std::process::Command::new(&emu)
        .args(argv)
        .status()
        .with_context(|| format!("cannot run {}", emu.display()))
}
