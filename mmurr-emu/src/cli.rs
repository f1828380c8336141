//! `mmurr-emu`'s command line. `record` takes exactly the flags of `mmurr record` (minus
//! `--backend`, `--gdb`), so the parent passes its arguments through unchanged.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mmurr-emu",
    version,
    about = "mmurr's reference emulator backend (Unicorn, GPL-2.0): records a guest as `mmurr record --backend emu` does"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a guest on Unicorn and record every CR/EFER write, paging-mode transition and MMU decision.
    Record(RecordArgs),
    /// Say what this engine can run (paging modes, CPU features the guest sees).
    Probe(ProbeArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlavourChoice {
    Tdp,
    Shadow,
}

/// Which guest to run (the same flags as `mmurr record`).
#[derive(Args, Debug, Clone)]
pub struct GuestArgs {
    /// A built-in scenario (see `mmurr scenarios`).
    #[arg(long, group = "guest")]
    pub scenario: Option<String>,
    /// A multiboot (v1) ELF kernel.
    #[arg(long, group = "guest")]
    pub kernel: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "")]
    pub append: String,
    /// Multiboot modules for --kernel (repeatable).
    #[arg(long = "initrd", alias = "module", requires = "kernel")]
    pub modules: Vec<PathBuf>,
    /// A raw image loaded at a guest-physical address: FILE@ADDR.
    #[arg(long, group = "guest")]
    pub image: Option<String>,
    /// Entry point for --image (defaults to the load address); real mode unless --entry-mode.
    #[arg(long, requires = "image")]
    pub entry: Option<String>,
    /// CPU mode at entry for --image: real, protected, long.
    #[arg(long, requires = "image", default_value = "real")]
    pub entry_mode: String,
    /// The guest of an existing trace (images, loads, entry registers, CPUID, RAM size), and
    /// its scenario name: what `mmurr verify --backend emu` re-executes.
    #[arg(long, group = "guest", value_name = "TRACE")]
    pub guest_from: Option<PathBuf>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory: u64,
}

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Policies to model (repeatable; default: all).
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// MMU flavour the policies are evaluated for.
    #[arg(long, value_enum, default_value = "tdp")]
    pub flavour: FlavourChoice,
    /// Output trace file.
    #[arg(short, long, default_value = "mmurr.mmurr")]
    pub output: PathBuf,
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
    /// Serve the live guest to gdb at this address (it waits for gdb before its first
    /// instruction).
    #[arg(long)]
    pub gdb: Option<String>,
    /// Allow the gdb server to listen on a non-loopback address.
    #[arg(long, requires = "gdb")]
    pub allow_remote: bool,
    /// Let gdb change registers and memory (`mmurr run`; a recording refuses changes).
    #[arg(long, requires = "gdb", hide = true)]
    pub gdb_writable: bool,
    /// Feed the guest the inputs recorded in TRACE (rdtsc/rdrand/cpuid/... results, port and
    /// MMIO reads) instead of this machine's: what `mmurr verify` re-executes with. The run
    /// ends where the guest asks for an input TRACE does not have there (it diverged).
    #[arg(long, value_name = "TRACE", hide = true)]
    pub replay_inputs: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
