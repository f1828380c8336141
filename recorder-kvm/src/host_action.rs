//! Host actions performed for real: the ioctls a VMM issues between two of the guest's
//! instructions (KVM_SET_SREGS, KVM_SET_MSRS(EFER), KVM_SET_CPUID2, INIT). Where this host's
//! KVM refuses one, the error says so and names the emu backend.

use crate::regs::kvm_sregs_of;
use kvm_bindings::{kvm_msi, kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_VCPUEVENT_VALID_SMM};
use kvm_ioctls::{VcpuFd, VmFd};
use recorder::BackendError;
use traces::Regs;

const MSR_EFER: u32 = 0xc000_0080;
/// The local APICs' MSI window and the INIT delivery mode (SDM vol. 3A, 11.11).
const MSI_ADDRESS: u32 = 0xfee0_0000;
const DELIVERY_INIT: u32 = 5 << 8;
const LEVEL_ASSERT: u32 = 1 << 14;

fn refused(what: &str, why: impl std::fmt::Display) -> BackendError {
    BackendError::HostUnsupported(format!(
        "this host's KVM refuses {what}: {why}; `--backend emu` performs it on the reference \
         emulator"
    ))
}

/// KVM_SET_SREGS of `regs` (`recorder::host_actions::sregs_loaded`), the rest of the
/// special registers as they are.
pub fn set_sregs(vcpu: &VcpuFd, regs: &Regs) -> Result<(), BackendError> {
    let base = vcpu
        .get_sregs()
        .map_err(|e| BackendError::Other(format!("KVM_GET_SREGS: {e}")))?;
    vcpu.set_sregs(&kvm_sregs_of(regs, &base))
        .map_err(|e| refused("KVM_SET_SREGS with these control registers", e))
}

/// KVM_SET_MSRS writing EFER, host-initiated as migration does.
pub fn set_msr_efer(vcpu: &VcpuFd, value: u64) -> Result<(), BackendError> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_EFER,
        data: value,
        ..Default::default()
    }])
    .map_err(|e| BackendError::Other(format!("MSR list: {e:?}")))?;
    match vcpu.set_msrs(&msrs) {
        Ok(1) => Ok(()),
        Ok(_) => Err(refused(
            &format!("KVM_SET_MSRS of EFER {value:#x}"),
            "it set none of the MSRs",
        )),
        Err(e) => Err(refused(&format!("KVM_SET_MSRS of EFER {value:#x}"), e)),
    }
}

/// KVM_SET_CPUID2 with the vCPU's table changed to `table` where the MMU reads it.
pub fn set_cpuid(vcpu: &VcpuFd, cpu: &mmu::CpuModel) -> Result<(), BackendError> {
    let mut kvm_table = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| BackendError::Other(format!("KVM_GET_CPUID2: {e}")))?;
    let patched = insn::with_cpu_model(&crate::vcpu::cpuid_entries(&kvm_table), cpu);
    for e in kvm_table.as_mut_slice() {
        if let Some(p) = patched
            .iter()
            .find(|p| p.function == e.function && p.index == e.index)
        {
            (e.eax, e.ebx, e.ecx, e.edx) = (p.eax, p.ebx, p.ecx, p.edx);
        }
    }
    vcpu.set_cpuid2(&kvm_table).map_err(|e| {
        let why = if matches!(e.errno(), libc::EBUSY | libc::EINVAL) {
            format!(
                "{e}: since Linux 5.16 (feb627e8d6f6, relaxed by c6617c61e8fe to an identical \
                 table) a vCPU's CPUID cannot change once it has run"
            )
        } else {
            e.to_string()
        };
        refused("KVM_SET_CPUID2 after KVM_RUN", why)
    })
}

/// INIT through the in-kernel local APIC, which KVM takes at its next look at the vCPU's
/// events (`kvm_apic_accept_events`, run by KVM_GET_MP_STATE) with `kvm_vcpu_reset(vcpu,
/// true)`, the path the guest's own INIT IPIs take; a BSP stays runnable, at the reset vector.
/// The INIT is an MSI with delivery mode INIT to `apic_id`; where no local APIC takes it, it
/// is latched as KVM_SET_VCPU_EVENTS does for migration (`smi.latched_init`, which marks
/// KVM_APIC_INIT pending).
pub fn init(vm: &VmFd, vcpu: &VcpuFd, apic_id: u32) -> Result<(), BackendError> {
    let msi = kvm_msi {
        address_lo: MSI_ADDRESS | (apic_id & 0xff) << 12,
        data: DELIVERY_INIT | LEVEL_ASSERT,
        ..Default::default()
    };
    let delivered = vm.signal_msi(msi).is_ok_and(|n| n > 0);
    if !delivered {
        let mut events = vcpu
            .get_vcpu_events()
            .map_err(|e| BackendError::Other(format!("KVM_GET_VCPU_EVENTS: {e}")))?;
        events.flags = KVM_VCPUEVENT_VALID_SMM;
        events.smi.latched_init = 1;
        vcpu.set_vcpu_events(&events)
            .map_err(|e| refused("INIT (by MSI, or latched with KVM_SET_VCPU_EVENTS)", e))?;
    }
    vcpu.get_mp_state()
        .map_err(|e| BackendError::Other(format!("KVM_GET_MP_STATE after INIT: {e}")))?;
    Ok(())
}
