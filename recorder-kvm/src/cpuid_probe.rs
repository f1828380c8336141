//! The CPUID a guest actually sees. On a PVM host the guest's CPUID results differ from
//! KVM_GET_SUPPORTED_CPUID (e.g. SMEP/SMAP are visible to the guest although the supported
//! table lacks them), so the trace records what a probe guest reads with the instruction.

use crate::mapping::GuestRam;
use crate::regs::{kvm_regs_of, kvm_sregs_of};
use kvm_bindings::{kvm_guest_debug, CpuId, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use kvm_ioctls::{Kvm, VcpuExit};
use traces::{CpuidEntry, Regs, Segment};

const CODE: u64 = 0x1000;

/// Executes CPUID for every (function, index) of `table` in a throwaway real-mode VM with
/// that table set, and returns the results. Leaves the probe cannot read keep the table's
/// values.
pub fn guest_visible(kvm: &Kvm, table: &CpuId) -> Result<Vec<CpuidEntry>, String> {
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    vm.set_tss_address(0xfffb_d000)
        .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
    let mut ram = GuestRam::new(0x2000)?;
    ram.write(CODE, &[0x0f, 0xa2, 0xf4]); // cpuid; hlt
    ram.register(&vm, 0, false)?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    vcpu.set_cpuid2(table)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let mut regs = Regs {
        rip: CODE,
        rflags: 2,
        cr0: 0x10,
        ..Regs::default()
    };
    let real = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attrs: 0x93,
    };
    regs.seg = [real; 6];
    regs.seg[traces::regs::CS].attrs = 0x9b;
    regs.tr = Segment {
        attrs: 0x8b,
        limit: 0xffff,
        ..Segment::default()
    };
    regs.ldtr = Segment {
        attrs: 0x82,
        limit: 0xffff,
        ..Segment::default()
    };
    regs.gdtr.limit = 0xffff;
    regs.idtr.limit = 0xffff;
    vcpu.set_sregs(&kvm_sregs_of(&regs, &sregs))
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let debug = kvm_guest_debug {
        control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
        ..Default::default()
    };
    vcpu.set_guest_debug(&debug)
        .map_err(|e| format!("KVM_SET_GUEST_DEBUG: {e}"))?;
    let mut out = Vec::new();
    for e in table.as_slice() {
        regs.gpr[0] = e.function as u64;
        regs.gpr[1] = e.index as u64;
        vcpu.set_regs(&kvm_regs_of(&regs))
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        let seen = match vcpu.run() {
            Ok(VcpuExit::Debug(_)) => {
                let r = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                (r.rip == CODE + 2).then_some((
                    r.rax as u32,
                    r.rbx as u32,
                    r.rcx as u32,
                    r.rdx as u32,
                ))
            }
            _ => None,
        };
        let (eax, ebx, ecx, edx) = seen.unwrap_or((e.eax, e.ebx, e.ecx, e.edx));
        out.push(CpuidEntry {
            function: e.function,
            index: e.index,
            eax,
            ebx,
            ecx,
            edx,
        });
    }
    drop(vcpu);
    drop(vm);
    drop(ram);
    Ok(out)
}
