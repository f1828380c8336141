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
    /// The vCPU that executed `step` (`regs` and `mmu` are its own; vCPU 0 at step 0 and on
    /// one-vCPU machines), and how many the machine has.
    pub vcpu: u32,
    pub vcpus: u32,
    /// The other vCPUs as the interleaving parked them (see [`StepView::regs_of`]).
    pub(crate) parked: &'a [Option<crate::tracer::Vcpu>],
}

impl StepView<'_> {
    /// The registers of `vcpu` before its next instruction (`None`: no such vCPU). A debugger
    /// shows other vCPUs than the current one from these, as the replayer's parked registers.
    pub fn regs_of(&self, vcpu: u32) -> Option<&Regs> {
        if vcpu == self.vcpu {
            return Some(self.regs);
        }
        Some(&self.parked.get(vcpu as usize)?.as_ref()?.regs)
    }

    /// The MMU model of `vcpu` (KVM keeps one MMU per vCPU).
    pub fn mmu_of(&self, vcpu: u32) -> Option<&history::Watch> {
        if vcpu == self.vcpu {
            return Some(self.mmu);
        }
        Some(&self.parked.get(vcpu as usize)?.as_ref()?.mmu)
    }
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
