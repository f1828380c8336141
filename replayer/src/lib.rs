//! The replayer: a trace turned into a machine you can stand anywhere in, with no KVM, no
//! emulator and not the recording host. It is the engine under the TUI, the replay gdb server
//! and `mmurr check`.

pub mod analysis;
pub mod check;
pub mod cpu;
pub mod diff;
/// Control registers decoded into their flags (owned by the `history` crate).
pub use history::flags;
pub mod host_check;
pub mod hosts;
pub mod inputs;
pub mod memory;
pub mod reexec;
pub mod timeline;
pub mod views;

pub use analysis::{Analysis, Retain, Verdict, WriteAnalysis, WriteDetail};
pub use check::{
    check, check_with, group, report, ActionDecisions, CheckFinding, CheckReport, FindingGroup,
    PolicyDecision, PolicySummary,
};
pub use cpu::cpu_model;
pub use diff::{diff, diff_with, Compare, DiffReport, Divergence, Side};
pub use host_check::{
    check_host, host_layout, host_roots, HostCheck, HostCheckError, HostHistory, HostRoot,
    PolicyVerdict,
};
pub use memory::MemoryImage;
pub use reexec::Reexecution;
pub use timeline::{Snapshot, StepView, Timeline, TimelineError};
