//! A debugger in the stepping loop. The live gdb server drives a recording (or a plain run)
//! through this hook, which the loop calls between instructions with the backend in hand.

use crate::Backend;
use traces::{EndRecord, Regs};

/// What the loop does after [`StepControl::before_step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepVerdict {
    /// Execute the next instruction.
    Run,
    /// Execute it, but the controller changed registers or memory through the backend first:
    /// the loop re-reads the registers.
    RunModified,
    /// End the run now (e.g. gdb sent `kill`); the message goes into the end record.
    Stop(String),
}

pub trait StepControl {
    /// Called before instruction `step + 1`, with the registers before it. May block (gdb has
    /// the guest stopped) and read or write state through `backend`.
    fn before_step(&mut self, step: u64, regs: &Regs, backend: &mut dyn Backend) -> StepVerdict;

    /// Called once when the run has ended.
    fn finished(&mut self, end: &EndRecord, exit_code: Option<u8>) {
        let _ = (end, exit_code);
    }
}
