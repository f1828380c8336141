//! Host actions on the emulated vCPU: the registers and CPUID KVM's ioctl would leave, set
//! in the engine (the kvm backend performs the ioctls themselves). What each means to the MMU
//! model is `history::host_effect`'s; the recorder compares the two after every action.

use crate::engine::EmuBackend;
use recorder::{Backend, BackendError};
use traces::HostAction;

impl EmuBackend {
    /// [`Backend::host_action`] on this engine's vCPU.
    pub(crate) fn perform(&mut self, action: &HostAction) -> Result<(), BackendError> {
        let mut regs = self.regs_full()?;
        match *action {
            // `__set_sregs_common`: loaded as given, no legality checks (the engine reloads
            // PDPTEs from memory in PAE paging, as KVM does).
            HostAction::SetSregs(l) => regs = recorder::host_actions::sregs_loaded(&regs, &l),
            // Host-initiated: none of the guest's checks (LME may change with paging on, LMA
            // stays as it is), but KVM_SET_MSRS refuses reserved bits.
            HostAction::SetMsrEfer { value } => {
                let cpu = self.cpu_model();
                if value & !mmu::paging::transition::efer_allowed(&cpu) != 0 {
                    return Err(BackendError::Other(format!(
                        "KVM_SET_MSRS refuses EFER {value:#x}: reserved bits for this CPU"
                    )));
                }
                regs.efer = (value & !mmu::bits::EFER_LMA) | (regs.efer & mmu::bits::EFER_LMA);
            }
            // `kvm_vcpu_reset(init_event)`: the INIT state (SDM vol. 3A table 10-1); EDX holds
            // the processor signature (CPUID.1:EAX), XCR0 and PKRU are kept.
            HostAction::Init => {
                let mut init = guests::image::init_entry();
                init.gpr[2] = self.cpuid_leaf(1)[0].into();
                init.xcr0 = regs.xcr0;
                init.pkru = regs.pkru;
                regs = init;
            }
            HostAction::SetCpuid(c) => {
                let table = insn::with_cpu_model(&self.cpuid(), &history::cpu_model(&c));
                return self.replace_cpuid(table);
            }
            HostAction::NestedVmrun { .. }
            | HostAction::SetNestedState { .. }
            | HostAction::VmEntryEpt { .. }
            | HostAction::VmExit { .. } => return Err(recorder::host_actions::needs_an_l2(action)),
        }
        self.set_regs(&regs)
    }
}
