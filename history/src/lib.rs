//! The MMU history of a guest run: what each modelled kernel version's KVM did at every
//! control-register write (decisions), and where that went wrong (findings: stale contexts
//! with the addresses they mistranslate, needless resets, #GP disagreements).
//!
//! One computation for every consumer: the recorder runs a [`Watch`] live and writes its
//! decisions and findings into the trace (and hands it to the live gdb server); the replayer
//! runs the same [`Watch`] over a trace for any policies, feeding it the same inputs in the
//! same order, so `check`, `export`, the TUI, both gdb servers and `demo` give one finding
//! one step and one set of numbers.

mod action;
pub mod flags;
mod input;
pub mod to_trace;
mod watch;

pub use action::{
    cpu_model, cpuid_model, cr_reg, guest_write, host_effect, loaded, trace_reg, with_pdptrs,
    Cause, Effect,
};
pub use input::model_input;
pub use watch::{Found, Watch, WriteOutcome, STALE_SAMPLE, STALE_STEP_LIMIT};
