//! `mmurr-emu`'s command line. `record` takes exactly the flags of `mmurr record` minus
//! `--backend`: both binaries flatten the same structs from `mmurr-flags`, and `mmurr` derives
//! the child's command line from them.

use clap::{Args, Parser, Subcommand};
use mmurr_flags::{GuestArgs, RecordFlags};

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

/// `mmurr record`'s guest and record flags (one definition, in `mmurr-flags`), without
/// `--backend`.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    #[command(flatten)]
    pub flags: RecordFlags,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
