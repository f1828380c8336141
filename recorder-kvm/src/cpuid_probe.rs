//! The CPUID a guest actually sees. On a PVM host the guest's CPUID results differ from
//! KVM_GET_SUPPORTED_CPUID (e.g. SMEP/SMAP are visible to the guest although the supported
//! table lacks them), so the trace records what a probe reads with the instruction.
//!
//! The probe runs on the guest's own vCPU before the guest is loaded: a VM of its own cost a
//! second VM and memory slot per recording (≈ 2–8 ms here, most of it the slot's set-up).

use crate::mapping::GuestRam;
use crate::regs::{kvm_regs_of, kvm_sregs_of};
use kvm_bindings::{kvm_guest_debug, CpuId, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use traces::{CpuidEntry, Regs, Segment};

/// Where the probe's `cpuid` goes: the start of RAM, which is zero again afterwards.
const CODE: u64 = 0;
const CPUID: [u8; 2] = [0x0f, 0xa2];

/// Executes CPUID for every (function, index) of `table` on `vcpu`, which has that table set
/// and has not run yet, single-stepping in real mode at the start of `ram` (which must still
/// be all zero: it is zeroed again). Returns the results; leaves the probe cannot read keep
/// the table's values. The caller sets the guest's registers and debug state afterwards.
pub fn guest_visible(
    vcpu: &mut VcpuFd,
    ram: &mut GuestRam,
    table: &CpuId,
    sync_regs: bool,
) -> Result<Vec<CpuidEntry>, String> {
    if !ram.write(CODE, &CPUID) {
        return Err("no RAM for the CPUID probe".into());
    }
    let out = run_probe(vcpu, table, sync_regs);
    ram.write(CODE, &[0; CPUID.len()]);
    out
}

/// The paging features a guest of this host's KVM sees (its CPUID read with the instruction,
/// in a throw-away VM of one page): what the kvm backend's guests get, for choosing a backend
/// before recording one that needs PCID or LA57. A few milliseconds.
pub fn guest_cpu() -> Result<mmu::CpuModel, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let mut ram = GuestRam::new(0x1000)?;
    ram.register(&vm, 0, false)?;
    let table = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    vcpu.set_cpuid2(&table)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let seen = guest_visible(&mut vcpu, &mut ram, &table, false)?;
    // The vCPU and the VM go before the RAM they map.
    drop(vcpu);
    drop(vm);
    Ok(insn::cpu_model(&seen))
}

fn run_probe(vcpu: &mut VcpuFd, table: &CpuId, sync_regs: bool) -> Result<Vec<CpuidEntry>, String> {
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
    // Single-stepped: with the in-kernel irqchip a HLT would not come back.
    let debug = kvm_guest_debug {
        control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
        ..Default::default()
    };
    vcpu.set_guest_debug(&debug)
        .map_err(|e| format!("KVM_SET_GUEST_DEBUG: {e}"))?;
    if sync_regs {
        vcpu.set_sync_valid_reg(SyncReg::Register);
    }
    let mut out = Vec::new();
    for e in table.as_slice() {
        regs.gpr[0] = e.function as u64;
        regs.gpr[1] = e.index as u64;
        // Through the sync-regs area where there is one: one ioctl per leaf instead of three.
        if sync_regs {
            vcpu.sync_regs_mut().regs = kvm_regs_of(&regs);
            vcpu.set_sync_dirty_reg(SyncReg::Register);
        } else {
            vcpu.set_regs(&kvm_regs_of(&regs))
                .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        }
        let seen = match vcpu.run() {
            Ok(VcpuExit::Debug(_)) => {
                let r = if sync_regs {
                    vcpu.sync_regs().regs
                } else {
                    vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?
                };
                (r.rip == CODE + CPUID.len() as u64).then_some((
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
    Ok(out)
}
