//! A debugger in the stepping loop. The live gdb server drives a recording (or a plain run)
//! through this hook, which the loop calls between instructions with the backend in hand.

use crate::Backend;
use traces::{EndRecord, Event, PagingMode, Regs};

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

/// What the recorder knows before instruction `step + 1`: a debugger answers from this, so a
/// live session and a replay of its trace say the same things.
pub struct StepView<'a> {
    /// Instructions executed so far.
    pub step: u64,
    /// Registers before the next instruction.
    pub regs: &'a Regs,
    /// The recorder's own MMU model: every recorded policy's tracker as it stands now, and
    /// the CPU model the walks use.
    pub mmu: &'a history::Watch,
    /// The control-register writes the previous instruction made (their `CrWrite` events),
    /// with what every policy made of each.
    pub writes: &'a [(Event, history::WriteOutcome)],
    /// The paging-mode transition the previous instruction made.
    pub transition: Option<(PagingMode, PagingMode)>,
    /// The guest-physical memory the previous instruction wrote, as the trace records it.
    pub memory: &'a [traces::MemWrite],
    /// The host KVM's latest events (recorded with host events; read every step while a
    /// debugger drives the loop), oldest first, and the layout its role words decode with.
    pub host: &'a [traces::HostRecord],
    pub host_layout: &'static mmu::Layout,
}

pub trait StepControl {
    /// Called before instruction `view.step + 1`. May block (gdb has the guest stopped) and
    /// read or write state through `backend`.
    fn before_step(&mut self, view: &StepView<'_>, backend: &mut dyn Backend) -> StepVerdict;

    /// Called once when the run has ended.
    fn finished(&mut self, end: &EndRecord, exit_code: Option<u8>) {
        let _ = (end, exit_code);
    }
}
