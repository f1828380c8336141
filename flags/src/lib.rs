//! The one definition of the guest description and the `record`/`run` flags, shared by the
//! `mmurr` binary and the `mmurr-emu` executable (issue 11: "the guest/record flags: one
//! definition shared by `mmurr` and `mmurr-emu`").
//!
//! - [`GuestArgs`]: which guest to run, and [`GuestArgs::build`], the one function that turns
//!   it into a [`traces::GuestSpec`];
//! - [`RecordFlags`]: how to record it, and [`RecordFlags::options`], the one function that
//!   turns it into [`recorder::RecordOptions`];
//! - [`to_argv`]: the command line that gives a child process (mmurr-emu) the same values,
//!   derived from the clap definition itself, so no list of flag names is kept by hand.
//!
//! This crate is linked into the GPL-2.0 `mmurr-emu`, so it must never depend on
//! Apache-2.0-only crates (kvm-bindings, linux-loader); loaders built on those live on the
//! `mmurr` side and hand their guest over as a guest file ([`write_guest_file`]).

mod argv;
mod guest;
mod record;

pub use argv::{to_argv, ArgvError};
pub use guest::{
    is_bzimage, parse_addr, read_guest_file, write_guest_file, BuiltGuest, EntryModeChoice,
    GuestArgs, GuestError, MAX_MEMORY_MIB,
};
pub use record::{recording_flavour, FlavourChoice, OptionsError, RecordFlags};
