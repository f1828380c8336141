//! The memory an instruction touches, from its decoded operands and the registers before it
//! executes: the linear addresses, then the guest-physical ranges behind them.

use crate::tlb::Tlb;
use iced_x86::{
    Instruction, InstructionInfo, InstructionInfoFactory, OpAccess, Register, UsedMemory,
};
use traces::Regs;

/// One operand access in linear address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearAccess {
    pub linear: u64,
    pub len: u64,
    pub access: mmu::Access,
}

/// Every memory operand access of `insn` (not the instruction fetch), with linear addresses
/// from [`insn::memory_operands_with`] and a length to translate.
pub fn operand_accesses(
    factory: &mut InstructionInfoFactory,
    insn: &Instruction,
    regs: &Regs,
) -> Vec<LinearAccess> {
    operand_accesses_of(factory.info(insn).used_memory(), regs)
}

/// [`operand_accesses`] from the decoder's memory-operand list of the instruction.
pub fn operand_accesses_of(used: &[UsedMemory], regs: &Regs) -> Vec<LinearAccess> {
    insn::memory_operands_of(used, regs)
        .into_iter()
        .filter_map(|t| {
            // XSAVE-family areas have no fixed size in the decoder: take a page for a write
            // (only the bytes that changed are kept in the trace anyway).
            let len = match t.size as u64 {
                0 if t.access == mmu::Access::Write => 4096,
                0 => return None,
                n => n,
            };
            Some(LinearAccess {
                linear: t.linear,
                len,
                access: t.access,
            })
        })
        .collect()
}

/// The segment registers the decoder says the instruction writes: bit `i` for
/// `traces::regs` index `i` (ES, CS, SS, DS, FS, GS).
pub fn segment_writes(info: &InstructionInfo) -> u8 {
    let sregs = [
        Register::ES,
        Register::CS,
        Register::SS,
        Register::DS,
        Register::FS,
        Register::GS,
    ];
    let written = |reg: Register| {
        info.used_registers().iter().any(|u| {
            u.register() == reg
                && matches!(
                    u.access(),
                    OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite
                )
        })
    };
    (0..sregs.len())
        .filter(|&i| written(sregs[i]))
        .fold(0, |m, i| m | 1 << i)
}

/// Descriptor-table reads a step made implicitly: the GDT/LDT descriptor of every segment
/// register (and TR/LDTR) the instruction loaded (changed, or written per `segment_writes`
/// from [`segment_writes`]). The CPU sets the descriptor's accessed bit, and walks (setting
/// A bits in page tables) to reach it.
pub fn descriptor_accesses(segment_writes: u8, before: &Regs, after: &Regs) -> Vec<LinearAccess> {
    // Real mode and virtual-8086 segments have no descriptors.
    if after.cr0 & 1 == 0 {
        return Vec::new();
    }
    let mut selectors: Vec<u16> = Vec::new();
    for i in 0..6 {
        if before.seg[i] != after.seg[i] || segment_writes & (1 << i) != 0 {
            selectors.push(after.seg[i].selector);
        }
    }
    if before.tr != after.tr {
        selectors.push(after.tr.selector);
    }
    if before.ldtr != after.ldtr {
        selectors.push(after.ldtr.selector);
    }
    selectors
        .into_iter()
        .filter(|&s| s & !3 != 0 && s & 4 == 0)
        .map(|s| LinearAccess {
            linear: after.gdtr.base.wrapping_add((s & !7) as u64),
            // 16 bytes covers the system descriptors (TSS, LDT) of IA-32e mode.
            len: if after.efer & (1 << 10) != 0 { 16 } else { 8 },
            access: mmu::Access::Write,
        })
        .collect()
}

/// A linear range split at page boundaries and translated; `None` if any page does not
/// translate (the instruction will fault, or touches memory the walker cannot read).
pub fn translate_range(
    regs: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    linear: u64,
    len: u64,
    access: mmu::Access,
    ad_entries: &mut Vec<(u64, u8)>,
) -> Option<Vec<(u64, u64)>> {
    let paged = regs.cr0 & (1 << 31) != 0;
    split(linear, len, |at| {
        if !paged {
            return Some(at);
        }
        let walk = walk(regs, cpu, mem, at, access);
        ad_entries.extend(walk.ad_updates.iter().map(|u| (u.gpa, u.bytes)));
        Some(walk.result.ok()?.gpa)
    })
}

/// The architectural walk of `linear` for `access` at the current CPL (paging on).
pub fn walk(
    regs: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    linear: u64,
    access: mmu::Access,
) -> mmu::Walk {
    let req = mmu::AccessRequest {
        access,
        cpl: crate::guest_view::cpl(regs),
        implicit_supervisor: false,
        rflags_ac: regs.rflags & (1 << 18) != 0,
    };
    mmu::walk(
        &crate::guest_view::control_regs(regs),
        cpu,
        mem,
        linear,
        &req,
    )
}

/// `linear..linear + len` split at page boundaries, each piece `(gpa, len)` with the
/// guest-physical address `translate` gives its start; `None` if one does not translate.
pub fn split(
    linear: u64,
    len: u64,
    mut translate: impl FnMut(u64) -> Option<u64>,
) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = linear;
    let end = linear.checked_add(len)?;
    while at < end {
        let page_end = (at | 0xfff).saturating_add(1).min(end);
        out.push((translate(at)?, page_end - at));
        at = page_end;
    }
    Some(out)
}

/// Reads up to 15 instruction bytes at RIP, stopping at the first unreadable page; the
/// translations through `tlb`.
pub fn fetch_bytes(
    tlb: &mut Tlb,
    regs: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    buf: &mut [u8; 15],
    ad_entries: &mut Vec<(u64, u8)>,
) -> usize {
    let linear = insn::linear_ip(regs);
    let fetch = |len| LinearAccess {
        linear,
        len,
        access: mmu::Access::Fetch,
    };
    let Some(ranges) = tlb
        .translate_range(regs, cpu, mem, &fetch(15), ad_entries)
        .or_else(|| {
            // The tail may cross into an unmapped page; the instruction may still fit before it.
            let first = 0x1000 - (linear & 0xfff);
            tlb.translate_range(regs, cpu, mem, &fetch(first.min(15)), ad_entries)
        })
    else {
        return 0;
    };
    let mut n = 0;
    for (gpa, len) in ranges {
        let len = len as usize;
        if !mem.read(gpa, &mut buf[n..n + len]) {
            break;
        }
        n += len;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_mode_regs() -> Regs {
        let mut r = Regs {
            cr0: 0x11,
            efer: 0x500,
            ..Regs::default()
        };
        r.seg[traces::regs::CS].attrs = 0xa09b;
        r.seg[traces::regs::FS].base = 0x7000_0000;
        r
    }

    #[test]
    fn stack_and_operand_writes_are_found() {
        let mut regs = long_mode_regs();
        regs.gpr[4] = 0x8000; // rsp
        regs.gpr[7] = 0x2000; // rdi
        let mut f = InstructionInfoFactory::new();
        // push rax
        let push = insn::decode(&[0x50], 64, 0).unwrap();
        let a = operand_accesses(&mut f, &push, &regs);
        assert_eq!(
            a,
            vec![LinearAccess {
                linear: 0x7ff8,
                len: 8,
                access: mmu::Access::Write
            }]
        );
        // mov dword [rdi+0x10], eax
        let mov = insn::decode(&[0x89, 0x47, 0x10], 64, 0).unwrap();
        let a = operand_accesses(&mut f, &mov, &regs);
        assert_eq!(
            a,
            vec![LinearAccess {
                linear: 0x2010,
                len: 4,
                access: mmu::Access::Write
            }]
        );
        // mov rax, fs:[8]
        let fs = insn::decode(&[0x64, 0x48, 0x8b, 0x04, 0x25, 8, 0, 0, 0], 64, 0).unwrap();
        let a = operand_accesses(&mut f, &fs, &regs);
        assert_eq!(a[0].linear, 0x7000_0008);
        assert_eq!(a[0].access, mmu::Access::Read);
    }

    #[test]
    fn real_mode_adds_the_segment_base() {
        let mut regs = Regs::default();
        regs.seg[traces::regs::DS].base = 0x1230;
        regs.gpr[3] = 0x4; // bx
        let mut f = InstructionInfoFactory::new();
        // mov [bx], al
        let mov = insn::decode(&[0x88, 0x07], 16, 0).unwrap();
        let a = operand_accesses(&mut f, &mov, &regs);
        assert_eq!(a[0].linear, 0x1234);
        let mut ad = Vec::new();
        let mem = mmu::FlatMemory {
            base: 0,
            bytes: vec![0; 0x10000],
        };
        assert_eq!(
            translate_range(
                &regs,
                &mmu::CpuModel::default(),
                &mem,
                0xffe,
                4,
                mmu::Access::Write,
                &mut ad
            ),
            Some(vec![(0xffe, 2), (0x1000, 2)])
        );
    }
}
