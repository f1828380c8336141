//! `mmurr record`: build the guest, pick the backend (kvm in-process, or the `mmurr-emu`
//! executable as a child), record, and report how the run ended.

use crate::cli::{BackendChoice, GuestArgs, RecordArgs};
use anyhow::{bail, Context};
pub use mmurr_flags::BuiltGuest;
use recorder::exit::Outcome;
use recorder::{RecordOptions, RecordSummary};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let guest = build_guest(&args.guest, args.flags.cpus)?;
    let backend = choose_backend(args.backend, &guest, args.flags.cpus)?;
    eprintln!("mmurr: backend {}: {}", backend.name(), backend.reason);
    match backend.kind {
        Chosen::Kvm => {
            let summary = record_on_kvm(args, &guest)?;
            print_summary(&summary);
            Ok(exit_code(&summary))
        }
        Chosen::Emu => run_emu_child(args, &guest),
    }
}

/// The guest of a machine of `cpus` vCPUs: a Linux bzImage is loaded here with the x86 boot
/// protocol ([`super::linux`], on linux-loader, which mmurr-emu must not link); everything
/// else by the shared definition.
pub fn build_guest(args: &GuestArgs, cpus: u32) -> anyhow::Result<BuiltGuest> {
    if let Some(name) = args.scenario.as_deref() {
        if let Some(why) = guests::model::scripts::script_named(name)
            .as_ref()
            .and_then(guests::model::guest::not_recordable)
        {
            anyhow::bail!(
                "`{name}` is a model-level scenario that no backend runs ({why}); write its \
                 trace with `mmurr scenarios --run {name} -o {name}.mmurr`"
            );
        }
    }
    if let Some(guest) = super::linux::build(args, cpus)? {
        return Ok(guest);
    }
    Ok(args.build(None)?)
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

/// A guest with memory the kvm backend does not map (it maps RAM at 0 and each ROM region as
/// a read-only slot; RAM elsewhere, as a region above RAM, it does not), and why.
fn kvm_cannot_map(guest: &BuiltGuest) -> Option<String> {
    let spec = &guest.spec;
    let r = spec.regions.iter().find(|r| {
        r.kind == traces::RegionKind::Ram && r.gpa.saturating_add(r.size) > spec.ram_size
    })?;
    Some(format!(
        "{} has {} at {:#x}, outside RAM, and the kvm backend maps RAM only from 0",
        guest.label, r.name, r.gpa
    ))
}

/// Why this host's KVM cannot run a guest that takes host actions `actions`, or, for a
/// model-level script's guest (`script`), give it the CPU features it checks for (PCID, LA57,
/// ...): the one answer for `record --backend auto` and `mmurr scenarios`. `guest_cpu` is what
/// this host's KVM gives its guests, asked only when the script uses such features.
pub fn kvm_refuses(
    host: &recorder_kvm::HostReport,
    actions: &[traces::HostAction],
    script: Option<&guests::model::Script>,
    guest_cpu: impl FnOnce() -> Option<mmu::CpuModel>,
) -> Option<String> {
    if let Some(why) = actions.iter().find_map(|a| host.refuses(a)) {
        return Some(why);
    }
    let script = script?;
    if guests::model::guest::features(script).is_empty() {
        return None;
    }
    let missing = guests::model::guest::features_missing(script, &guest_cpu()?);
    (!missing.is_empty()).then(|| {
        format!(
            "its guest needs {} in its CPUID, which this host's KVM does not offer its guests",
            missing.join(", ")
        )
    })
}

/// The paging modes the guest needs on `cpus` vCPUs: a scenario's APs beyond the machine's
/// never run, so their modes are not needed (`smp-bringup` on 2 vCPUs stays out of AP 2's
/// legacy paging).
fn needs_on(guest: &BuiltGuest, cpus: u32) -> Option<Vec<traces::PagingMode>> {
    let needs = guest.needs.clone()?;
    if cpus <= 1 {
        return Some(needs);
    }
    let scenario = guest
        .scenario
        .as_deref()
        .and_then(|name| guests::scenario(name, &guests::CpuFeatures::default()));
    Some(scenario.map_or(needs, |s| s.needs_on(cpus)))
}

/// `auto`: kvm when the probe says this host runs every paging mode the guest needs on its
/// vCPUs (unknown needs, as for --image and --kernel, count as runnable) and performs every
/// host action its scenario takes, and the kvm backend maps all of the guest's memory, else
/// emu.
pub fn choose_backend(
    choice: BackendChoice,
    guest: &BuiltGuest,
    cpus: u32,
) -> anyhow::Result<BackendChoiceMade> {
    let needs = needs_on(guest, cpus);
    let (needs, label) = (needs.as_deref(), guest.label.as_str());
    if choice != BackendChoice::Emu {
        if let Some(why) = kvm_cannot_map(guest) {
            if choice == BackendChoice::Kvm {
                bail!("{why}: record it with --backend emu");
            }
            return Ok(BackendChoiceMade {
                kind: Chosen::Emu,
                reason: why,
            });
        }
    }
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
            // A host action this host's KVM refuses (KVM_SET_CPUID2 after KVM_RUN), or a CPU
            // feature a script's guest checks for and this host's guests lack.
            let actions: Vec<traces::HostAction> = guest
                .host_actions
                .iter()
                .map(|a| a.action.resolve(&mmu::CpuModel::default_x86_64()))
                .collect();
            let script = guest
                .scenario
                .as_deref()
                .and_then(guests::model::scripts::script_named);
            let refused = kvm_refuses(&host, &actions, script.as_ref(), || {
                recorder_kvm::guest_cpu().ok()
            });
            Ok(match (blocked, refused) {
                (Some(why), _) => BackendChoiceMade {
                    kind: Chosen::Emu,
                    reason: format!("{label} needs a mode KVM cannot run here: {why}"),
                },
                (None, Some(why)) => BackendChoiceMade {
                    kind: Chosen::Emu,
                    reason: format!("{label} cannot run on this host's KVM: {why}"),
                },
                (None, None) => BackendChoiceMade {
                    kind: Chosen::Kvm,
                    reason: format!("{} runs {} here", host.engine(), host.runs_summary()),
                },
            })
        }
    }
}

/// The recorder's options for the in-process kvm backend, which single-steps whatever
/// `--single-step` says (it has no runs), so its keyframes keep the step-by-step interval.
pub fn record_options(args: &RecordArgs, guest: &BuiltGuest) -> anyhow::Result<RecordOptions> {
    let mut opts = args.flags.options(guest)?;
    opts.set_runs(false);
    Ok(opts)
}

pub fn record_on_kvm(args: &RecordArgs, guest: &BuiltGuest) -> anyhow::Result<RecordSummary> {
    if args.flags.gdb.is_some() {
        return super::run::live_on_kvm(args, guest, false);
    }
    let opts = record_options(args, guest)?;
    let mut backend = recorder_kvm::KvmBackend::with_vcpus(recorder_kvm::probe(), args.flags.cpus)?;
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

/// This installation's `mmurr-emu` (`$MMURR_EMU`, else beside this executable): the one the
/// replayer re-executes runs with.
pub fn emu_executable() -> anyhow::Result<PathBuf> {
    replayer::reexec::installed_emu().ok_or_else(|| {
        anyhow::anyhow!(
            "the emu backend is the separate executable mmurr-emu (GPL-2.0, built with `cargo \
             build -p mmurr-emu`), and it is not beside {} (or set MMURR_EMU to its path)",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "this executable".into())
        )
    })
}

/// `mmurr-emu record` with the same guest and record flags, derived from their one definition
/// (everything but --backend). A guest only `mmurr` can build (a Linux bzImage) goes over as a
/// guest file (`--guest-from`), kept alive by the returned handle until the child has ended.
pub fn emu_args(
    args: &RecordArgs,
    guest: &BuiltGuest,
) -> anyhow::Result<(Vec<String>, Option<tempfile::TempPath>)> {
    let mut argv: Vec<String> = vec!["record".into()];
    let mut handoff = None;
    let child_guest = if super::linux::is_linux_guest(&args.guest)? {
        let file = tempfile::Builder::new()
            .prefix("mmurr-guest-")
            .suffix(".mmurr")
            .tempfile()
            .context("creating the guest file for mmurr-emu")?
            .into_temp_path();
        mmurr_flags::write_guest_file(&file, &guest.spec, guest.scenario.clone())?;
        let g = GuestArgs {
            guest_from: Some(file.to_path_buf()),
            ..GuestArgs::default()
        };
        handoff = Some(file);
        g
    } else {
        args.guest.clone()
    };
    argv.extend(mmurr_flags::to_argv(&child_guest)?);
    argv.extend(mmurr_flags::to_argv(&args.flags)?);
    Ok((argv, handoff))
}

/// Runs `mmurr-emu record` and passes its exit code through. The child shares the terminal,
/// so Ctrl-C reaches it directly; this process only waits (its own flag just absorbs the
/// signal so it outlives the child).
pub fn run_emu_child(args: &RecordArgs, guest: &BuiltGuest) -> anyhow::Result<ExitCode> {
    let (argv, _guest_file) = emu_args(args, guest)?;
    let status = spawn_emu(&argv)?;
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
