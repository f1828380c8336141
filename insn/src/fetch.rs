//! Reaching guest memory the way the CPU does: linear addresses through the current paging
//! mode, with the `mmu` reference walker.

use mmu::{Access, AccessRequest, ControlRegs, CpuModel, GuestMemory};
use traces::Regs;

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// The `mmu` view of a register file.
pub fn control_regs(regs: &Regs) -> ControlRegs {
    ControlRegs {
        cr0: regs.cr0,
        cr3: regs.cr3,
        cr4: regs.cr4,
        efer: regs.efer,
        smm: false,
        guest_mode: false,
        pdptrs: regs.pdptrs,
        pkru: regs.pkru,
    }
}

/// What a control-register write by the code running under `regs` tells the model beyond the
/// registers: CS.L (64-bit code).
pub fn write_context(regs: &Regs) -> mmu::WriteContext {
    mmu::WriteContext {
        cs_l: Some(crate::bitness(regs) == 64),
        host_initiated: false,
    }
}

/// Current privilege level: CS.DPL in protected mode (SS.DPL would do as well), 0 in real mode.
pub fn cpl(regs: &Regs) -> u8 {
    if regs.cr0 & 1 == 0 {
        0
    } else {
        ((regs.seg[traces::regs::CS].attrs >> 5) & 3) as u8
    }
}

/// The linear address of RIP: RIP itself in 64-bit code (the CPU ignores CS.base there),
/// else CS.base + RIP truncated to 32 bits.
pub fn linear_ip(regs: &Regs) -> u64 {
    if crate::bitness(regs) == 64 {
        regs.rip
    } else {
        regs.seg[traces::regs::CS].base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

/// Translates a linear address for an access by the current code; `None` when the access
/// would fault or the tables lie outside RAM.
pub fn translate(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    linear: u64,
    access: Access,
) -> Option<u64> {
    let req = AccessRequest {
        access,
        cpl: cpl(regs),
        implicit_supervisor: false,
        rflags_ac: regs.rflags & mmu::bits::RFLAGS_AC != 0,
    };
    mmu::walk(&control_regs(regs), cpu, mem, linear, &req)
        .result
        .ok()
        .map(|t| t.gpa)
}

/// `len` bytes of guest-linear memory read as the current code reads data (page by page
/// through the walker); `None` if any page does not translate or lies outside RAM.
pub fn read_linear(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    linear: u64,
    len: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let lin = linear.wrapping_add(out.len() as u64);
        let gpa = translate(regs, cpu, mem, lin, Access::Read)?;
        let n = ((4096 - (lin & 0xfff)) as usize).min(len - out.len());
        let mut buf = vec![0u8; n];
        if !mem.read(gpa, &mut buf) {
            return None;
        }
        out.extend_from_slice(&buf);
    }
    Some(out)
}

/// The instruction bytes at CS:RIP (up to 15, fewer where a page is not mapped).
pub fn fetch(regs: &Regs, cpu: &CpuModel, mem: &dyn GuestMemory) -> Vec<u8> {
    let start = linear_ip(regs);
    let mut out = Vec::with_capacity(MAX_INSN_LEN);
    while out.len() < MAX_INSN_LEN {
        let lin = start.wrapping_add(out.len() as u64);
        let Some(gpa) = translate(regs, cpu, mem, lin, Access::Fetch) else {
            break;
        };
        let in_page = (4096 - (lin & 0xfff)) as usize;
        let n = in_page.min(MAX_INSN_LEN - out.len());
        let mut buf = vec![0u8; n];
        if !mem.read(gpa, &mut buf) {
            break;
        }
        out.extend_from_slice(&buf);
    }
    out
}
