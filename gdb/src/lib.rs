//! mmurr's gdb servers, on the `gdbstub` crate.
//!
//! - The replay server ([`serve_trace`], `mmurr gdb TRACE`): a trace as a target with reverse
//!   execution (`reverse-stepi`, `reverse-continue`), needing neither KVM nor an emulator.
//! - The live server (`mmurr record --gdb`, `mmurr run --gdb`): gdb drives the recorder's
//!   stepping loop through a hook, on either backend.
//!
//! Both present one fixed x86-64 register layout with the system registers ([`arch`],
//! [`target_xml`]), translate gdb's addresses through the guest's page tables
//! ([`guest_memory`]), and answer the same `monitor` commands ([`monitor`]).

pub mod arch;
pub mod breakpoints;
pub mod guest_memory;
pub mod live_target;
pub mod monitor;
pub mod recorder_hook;
pub mod replay_target;
pub mod server;
pub mod target_xml;
pub mod threads;
pub mod whole_trace;

/// gdb commands (`mmurr seek`, `mmurr goto-event`, `mmurr when`, ...) that `mmurr gdb` loads
/// into the gdb it starts: the moves also flush gdb's register cache.
pub const GDB_COMMANDS: &str = include_str!("commands.gdb");

pub use recorder_hook::{start_live, LiveOptions};
pub use server::{bind, listen_addr, serve_target, serve_trace, DEFAULT_LISTEN};
