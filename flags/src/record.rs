//! How to record ([`RecordFlags`]) and the one function that makes recorder options of it.

use crate::BuiltGuest;
use clap::{Args, ValueEnum};
use guests::host_actions::HostActionAt;
use recorder::{RecordOptions, SerialSink};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// The MMU flavour policies are evaluated for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlavourChoice {
    Tdp,
    Shadow,
    /// L0's nested-NPT MMU for an L1 hypervisor: each write is L1's register (sheet §4.5).
    ShadowNpt,
    /// Nested EPT's MMU (sheet §4.6): built from the EPTP L1 loads, which no recording has;
    /// model-level scenarios only ([`recording_flavour`] refuses it).
    ShadowEpt,
    /// The walker of L2's page tables under nested TDP: each write is L2's register (§4.7).
    NestedWalker,
}

/// Parses `--flavour` for a recording (`record`, `run`, `check`): shadow-ept is refused with
/// the reason, since its only input is an EPTP no recording has.
pub fn recording_flavour(s: &str) -> Result<FlavourChoice, String> {
    let f = <FlavourChoice as ValueEnum>::from_str(s, false).map_err(|_| {
        format!("unknown MMU flavour `{s}`: one of tdp, shadow, shadow-npt, nested-walker")
    })?;
    if !mmu::Flavour::from(f).evaluates_recordings() {
        return Err(format!(
            "a recorded guest cannot be evaluated for `{s}`: nested EPT's MMU is built from the \
             EPTP that L1 loads when it enters L2 (VMLAUNCH/VMRESUME with EPT), and a recorded \
             guest runs no L2 and has no EPTP. Its scenarios are model-level: `mmurr scenarios` \
             lists them (flavour shadow-ept), e.g. `mmurr scenarios --run nested-ept-5-level`"
        ));
    }
    Ok(f)
}

impl From<FlavourChoice> for mmu::Flavour {
    fn from(f: FlavourChoice) -> mmu::Flavour {
        match f {
            FlavourChoice::Tdp => mmu::Flavour::Tdp,
            FlavourChoice::Shadow => mmu::Flavour::Shadow,
            FlavourChoice::ShadowNpt => mmu::Flavour::ShadowNpt,
            FlavourChoice::ShadowEpt => mmu::Flavour::ShadowEpt,
            FlavourChoice::NestedWalker => mmu::Flavour::NestedWalker,
        }
    }
}

impl From<mmu::Flavour> for FlavourChoice {
    fn from(f: mmu::Flavour) -> FlavourChoice {
        match f {
            mmu::Flavour::Tdp => FlavourChoice::Tdp,
            mmu::Flavour::Shadow => FlavourChoice::Shadow,
            mmu::Flavour::ShadowNpt => FlavourChoice::ShadowNpt,
            mmu::Flavour::ShadowEpt => FlavourChoice::ShadowEpt,
            mmu::Flavour::NestedWalker => FlavourChoice::NestedWalker,
        }
    }
}

/// The `record`/`run` flags besides the guest and the backend.
#[derive(Args, Debug, Clone, PartialEq, Serialize)]
pub struct RecordFlags {
    /// Policies to model (repeatable; default: all).
    #[arg(long = "policy")]
    pub policy: Vec<String>,
    /// MMU flavour the policies are evaluated for: tdp, shadow, shadow-npt (each write is an
    /// L1 hypervisor's) or nested-walker (each write is L2's); shadow-ept is model-level only.
    /// Default: the scenario's (`mmurr scenarios`), else tdp.
    #[arg(long, value_parser = recording_flavour)]
    pub flavour: Option<FlavourChoice>,
    /// Output trace file.
    #[arg(short, long, default_value = "mmurr.mmurr")]
    pub output: PathBuf,
    /// Serve the live guest to gdb at this address (it waits for gdb before the first
    /// instruction).
    #[arg(long)]
    pub gdb: Option<String>,
    /// Allow the gdb server to listen on a non-loopback address.
    #[arg(long, requires = "gdb")]
    pub allow_remote: bool,
    /// Let gdb change registers and memory (`mmurr run`; a recording refuses changes).
    #[arg(long, requires = "gdb", hide = true)]
    pub gdb_writable: bool,
    /// Stop after this many instructions.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_steps: u64,
    /// Stop after this many seconds of wall-clock time.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Write guest serial output here instead of the terminal.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Record every instruction as a step of its own. By default the emu backend records in
    /// runs: the instructions between two events (a CR/EFER write, I/O, an interrupt, an
    /// exception, a timer deadline) run at emulator speed and become one record, and `replay`,
    /// `gdb` and `verify` rebuild the states inside by re-executing them on mmurr-emu. The
    /// kvm backend always single-steps.
    #[arg(long)]
    pub single_step: bool,
    /// Record in runs up to step STEP, then every instruction as a step of its own: how the
    /// replayer re-executes the part of a run around a point it must stand on (emu backend).
    #[arg(long, value_name = "STEP", conflicts_with = "single_step")]
    pub single_step_from: Option<u64>,
    /// Feed the guest the inputs recorded in TRACE (rdtsc/rdrand/cpuid/... results, port and
    /// MMIO reads) instead of this machine's: what `mmurr verify` re-executes with. The run
    /// ends where the guest asks for an input TRACE does not have there (it diverged).
    #[arg(long, value_name = "TRACE", hide = true)]
    pub replay_inputs: Option<PathBuf>,
    /// Record the host KVM's own MMU events (roots built and reused, zaps, walks, emulated
    /// instructions; kvm backend) from tracefs for `mmurr check --host`. On by default when
    /// the host allows it (root, tracefs); with this flag a host that does not is warned about.
    #[arg(long, conflicts_with = "no_host_events")]
    pub host_events: bool,
    /// Do not record the host KVM's events.
    #[arg(long)]
    pub no_host_events: bool,
    /// vCPUs of the guest (both backends): vCPU 0 starts at the entry state, the others (APs)
    /// wait for INIT-SIPI; the recorder runs them one instruction each, round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// A host action the VMM performs on a vCPU (repeatable), after a scenario's own:
    /// WHEN:ACTION, WHEN = step=N (after N steps) or rip=ADDR (before the instruction at linear
    /// address ADDR is first run), optionally followed by ,vcpu=N (default: the vCPU about to
    /// run); ACTION = init, efer=VALUE (KVM_SET_MSRS), sregs=CR0,CR3,CR4,EFER (KVM_SET_SREGS) or
    /// cpuid=FIELD:VALUE,... (KVM_SET_CPUID2; fields maxphyaddr, amd, gbpages, la57, pku, smep,
    /// smap, nx, pcid). E.g. `--host-action step=5000:efer=0xd01`,
    /// `--host-action step=147,vcpu=1:init`.
    #[arg(long = "host-action", value_name = "WHEN:ACTION", value_parser = host_action)]
    pub host_action: Vec<String>,
}

/// Parses `--host-action` (the spelling is `guests::host_actions`'), kept as given.
fn host_action(s: &str) -> Result<String, String> {
    s.parse::<HostActionAt>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

impl Default for RecordFlags {
    fn default() -> Self {
        RecordFlags {
            policy: Vec::new(),
            flavour: None,
            output: PathBuf::from("mmurr.mmurr"),
            gdb: None,
            allow_remote: false,
            gdb_writable: false,
            max_steps: 10_000_000,
            timeout: None,
            serial_log: None,
            quiet: false,
            single_step: false,
            single_step_from: None,
            replay_inputs: None,
            host_events: false,
            no_host_events: false,
            cpus: 1,
            host_action: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("--timeout {0}: give a positive number of seconds")]
    Timeout(f64),
    #[error("installing the SIGINT/SIGTERM handler: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    HostAction(guests::host_actions::HostActionError),
    #[error("--replay-inputs: {0}")]
    ReplayInputs(#[from] replayer::inputs::InputsError),
}

impl RecordFlags {
    /// The recorder's options for these flags, for `guest` (its scenario's flavour and host
    /// actions); installs the SIGINT/SIGTERM handler that ends the run cleanly.
    pub fn options(&self, guest: &BuiltGuest) -> Result<RecordOptions, OptionsError> {
        let mut opts = RecordOptions::new(&self.output);
        opts.policies = self.policy.clone();
        opts.flavour = match self.flavour {
            Some(f) => f.into(),
            None => guest.flavour.unwrap_or(mmu::Flavour::Tdp),
        };
        opts.host_actions = guest.host_actions.clone();
        for spec in &self.host_action {
            opts.host_actions
                .push(spec.parse().map_err(OptionsError::HostAction)?);
        }
        let scenario = guest.scenario.clone();
        opts.max_steps = self.max_steps;
        opts.timeout = match self.timeout {
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => return Err(OptionsError::Timeout(t)),
            None => None,
        };
        opts.scenario = scenario;
        opts.command_line = std::env::args().collect();
        opts.serial = match &self.serial_log {
            Some(p) => SerialSink::File(p.clone()),
            None => SerialSink::Stdout,
        };
        opts.progress = !self.quiet;
        opts.set_runs(!self.single_step);
        opts.single_step_from = self.single_step_from;
        opts.interrupted = recorder::signals::interrupt_flag().map_err(OptionsError::Signals)?;
        opts.host_events = match (self.host_events, self.no_host_events) {
            (_, true) => recorder::HostEventsChoice::Off,
            (true, false) => recorder::HostEventsChoice::On,
            (false, false) => recorder::HostEventsChoice::Auto,
        };
        if let Some(trace) = &self.replay_inputs {
            opts.replay_inputs = Some(replayer::inputs::load(trace)?);
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{to_argv, EntryModeChoice, GuestArgs};
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser, Debug, PartialEq)]
    struct Both {
        #[command(flatten)]
        guest: GuestArgs,
        #[command(flatten)]
        flags: RecordFlags,
    }

    fn round_trip(guest: GuestArgs, flags: RecordFlags) {
        let mut argv = vec!["x".to_string()];
        argv.extend(to_argv(&guest).unwrap());
        argv.extend(to_argv(&flags).unwrap());
        let m = Both::command().try_get_matches_from(&argv);
        let parsed =
            Both::from_arg_matches(&m.unwrap_or_else(|e| panic!("{argv:?}: {e}"))).unwrap();
        assert_eq!(parsed, Both { guest, flags }, "{argv:?}");
    }

    #[test]
    fn shadow_ept_is_refused_on_recordings_with_the_reason() {
        let err = recording_flavour("shadow-ept").unwrap_err();
        assert!(err.contains("EPTP") && err.contains("model-level"), "{err}");
        assert!(recording_flavour("bogus").unwrap_err().contains("unknown"));
        for f in mmu::Flavour::ALL {
            let parsed = recording_flavour(f.name());
            assert_eq!(parsed.is_ok(), f.evaluates_recordings(), "{}", f.name());
            if let Ok(c) = parsed {
                assert_eq!(mmu::Flavour::from(c), f);
            }
        }
    }

    #[test]
    fn every_flag_survives_the_child_command_line() {
        round_trip(GuestArgs::default(), RecordFlags::default());
        round_trip(
            GuestArgs {
                kernel: Some("k.elf".into()),
                append: "console=ttyS0 quiet".into(),
                initrd: vec!["a.cpio".into(), "b".into()],
                memory: 256,
                ..GuestArgs::default()
            },
            RecordFlags {
                policy: vec!["v6.14".into(), "v5.1-rc3".into()],
                flavour: Some(FlavourChoice::Shadow),
                output: "out dir/t.mmurr".into(),
                gdb: Some("127.0.0.1:1234".into()),
                allow_remote: true,
                gdb_writable: true,
                max_steps: 17,
                timeout: Some(2.5),
                serial_log: Some("s.log".into()),
                quiet: true,
                single_step: true,
                single_step_from: None,
                replay_inputs: Some("r.mmurr".into()),
                host_events: true,
                no_host_events: false,
                cpus: 4,
                host_action: vec!["step=3:init".into(), "rip=0x1000:efer=0x500".into()],
            },
        );
        round_trip(
            GuestArgs {
                image: Some("boot.bin@0x7c00".into()),
                entry: Some("0x7c10".into()),
                entry_mode: EntryModeChoice::Long,
                ..GuestArgs::default()
            },
            RecordFlags {
                timeout: Some(60.0),
                no_host_events: true,
                single_step_from: Some(123_456),
                ..RecordFlags::default()
            },
        );
        round_trip(
            GuestArgs {
                guest_from: Some("g.mmurr".into()),
                ..GuestArgs::default()
            },
            RecordFlags::default(),
        );
    }
}
