//! The `mmurr` command line: subcommands in the style of rr, git and perf.

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use mmurr_flags::{recording_flavour, FlavourChoice, GuestArgs, RecordFlags};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mmurr",
    version,
    about = "Record-and-replay debugger for the x86 MMU behaviour of virtual machines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a guest and record every CR/EFER write, paging-mode transition and MMU decision.
    Record(RecordArgs),
    /// Run a guest under the live gdb server without recording.
    Run(RecordArgs),
    /// Browse a trace in the terminal UI.
    Replay(TraceArg),
    /// Serve a trace to gdb, with reverse execution.
    Gdb(GdbArgs),
    /// Re-evaluate MMU policies over a trace and report stale contexts (exit 1 if found).
    Check(CheckArgs),
    /// Re-execute a trace's guest on this machine and compare step by step.
    Verify(VerifyArgs),
    /// Report the first divergence between two traces.
    Diff(DiffArgs),
    /// Print a trace's header and counts.
    Info(InfoArgs),
    /// Export a trace's events as JSON lines or a Perfetto (Chrome trace-event) file.
    Export(ExportArgs),
    /// List the built-in guest scenarios and which backend can run them here, and the
    /// model-level scenarios; `--run NAME` runs a model-level one under every policy.
    Scenarios(ScenariosArgs),
    /// List the modelled kernel-version policies.
    Policies(JsonFlag),
    /// Record the seed scenario (pae-toggle) and show what happened.
    Demo(DemoArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Kvm,
    Emu,
    Auto,
}

/// `record`/`run`: the guest and the record flags (one definition with `mmurr-emu`, in
/// `mmurr-flags`) and the backend, which only `mmurr` chooses.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Where to run it: kvm, emu (the mmurr-emu executable), or auto (kvm when this host's KVM
    /// runs every mode the guest needs).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub flags: RecordFlags,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArg {
    pub trace: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct GdbArgs {
    pub trace: PathBuf,
    /// Serve on this address and start no gdb (for IDEs and remote gdb); implies
    /// --server-only.
    #[arg(long)]
    pub listen: Option<String>,
    /// Only serve (on --listen, default 127.0.0.1:1234); do not start gdb.
    #[arg(long)]
    pub server_only: bool,
    /// Allow a non-loopback listen address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Arguments for the gdb that `mmurr gdb` starts (after `--`), e.g. `-- -batch -ex 'mmurr
    /// seek 40' -ex 'p $pc'`. gdb is `$GDB`, else `gdb`.
    #[arg(last = true)]
    pub gdb_args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ScenariosArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Run the model-level scenario NAME: each step's decision and verdicts per policy, and
    /// whether they are the ones it declares. Exit 1 when a stale context or #GP mismatch is
    /// shown, as `check` does.
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Policies to run `--run` under (repeatable; default: all).
    #[arg(long = "policy", requires = "run")]
    pub policies: Vec<String>,
    /// Also write the model-level scenario as a trace (backend `model`: its steps are the
    /// script's actions, host actions as events) that `check`, `info`, `export`, `replay` and
    /// `gdb` open.
    #[arg(short = 'o', long = "output", value_name = "F.mmurr", requires = "run")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    pub trace: PathBuf,
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// MMU flavour: tdp, shadow, shadow-npt or nested-walker (default: the trace's);
    /// shadow-ept needs an EPTP no recording has (model-level scenarios only).
    #[arg(long, value_parser = recording_flavour)]
    pub flavour: Option<FlavourChoice>,
    #[arg(long)]
    pub json: bool,
    /// Print every finding; by default repeats of one story (same policy, kind, kind of write
    /// and attributes) are printed once with their count, first and last step.
    #[arg(long)]
    pub all: bool,
    /// Hold the policies against the recording host's own KVM: the roots it built or reused
    /// (recorded with `record --host-events`) against each policy's root_role for the host's
    /// flavour. Exit 1 when the host's own release's policy (or a `--policy` given)
    /// disagrees on a root.
    #[arg(long, conflicts_with = "flavour")]
    pub host: bool,
    /// Also list every policy's decision at every control-register write and host action,
    /// action by action (always done for model-level traces and recordings with host
    /// actions).
    #[arg(long, conflicts_with = "host")]
    pub decisions: bool,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    pub trace: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Compare only what the guest did (registers, memory written, CR writes, transitions,
    /// exceptions, port I/O), not the MMU model's decisions: for traces of machines whose
    /// CPUID or MAXPHYADDR differ (kvm and emu).
    #[arg(long)]
    pub guest_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    pub trace: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Json,
    Perfetto,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    pub trace: PathBuf,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ExportFormat,
    /// Output file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    #[arg(short, long, default_value = "demo.mmurr")]
    pub output: PathBuf,
    /// Print the events and verdicts instead of opening the TUI.
    #[arg(long)]
    pub no_tui: bool,
}
