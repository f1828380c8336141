//! The memory an instruction touches, for front ends that default to "the address the guest
//! just used" (the TUI's page-walk panel) and for lookahead over the next instructions.

use insn::Touch;
use mmu::{Access, CpuModel, GuestMemory};
use traces::Regs;

/// The accesses of the instruction at RIP, with `regs` and `mem` as they are before it runs:
/// its fetch first, then its memory operands. Empty when the code is not mapped.
pub fn of_instruction(regs: &Regs, cpu: &CpuModel, mem: &dyn GuestMemory) -> Vec<Touch> {
    let bytes = insn::fetch(regs, cpu, mem);
    if bytes.is_empty() {
        return Vec::new();
    }
    let decoded = insn::decode(&bytes, insn::bitness(regs), regs.rip);
    let fetch = Touch {
        linear: insn::linear_ip(regs),
        access: Access::Fetch,
        size: decoded.as_ref().map_or(bytes.len(), |i| i.len()),
    };
    let mut out = vec![fetch];
    if let Some(i) = &decoded {
        out.extend(insn::memory_operands(i, regs));
    }
    out
}

/// The address that best says what an instruction did to memory: its last data access, or
/// its fetch when it has no memory operand.
pub fn last_touched(regs: &Regs, cpu: &CpuModel, mem: &dyn GuestMemory) -> Option<Touch> {
    let touches = of_instruction(regs, cpu, mem);
    touches
        .iter()
        .rev()
        .find(|t| t.access != Access::Fetch)
        .or(touches.first())
        .copied()
}

/// `r`, `w` or `x`.
pub fn access_letter(a: Access) -> char {
    match a {
        Access::Read => 'r',
        Access::Write => 'w',
        Access::Fetch => 'x',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu::FlatMemory;

    #[test]
    fn a_store_touches_its_operand_after_its_fetch() {
        let mut mem = FlatMemory::new(0, 0x2000);
        // mov [0x400000],eax
        mem.bytes[0x1000..0x1005].copy_from_slice(&[0xa3, 0, 0, 0x40, 0]);
        let mut regs = Regs {
            cr0: 0x11,
            rip: 0x1000,
            ..Regs::default()
        };
        regs.seg[traces::regs::CS].attrs = 0xc09b;
        let cpu = CpuModel::default_x86_64();
        let all = of_instruction(&regs, &cpu, &mem);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].access, Access::Fetch);
        let last = last_touched(&regs, &cpu, &mem).unwrap();
        assert_eq!((last.linear, last.access), (0x40_0000, Access::Write));
        regs.rip = 0x1800; // zero bytes decode as `add [eax],al`
        regs.gpr[0] = 0x1234;
        assert_eq!(last_touched(&regs, &cpu, &mem).unwrap().linear, 0x1234);
        regs.rip = 0x9000;
        assert!(last_touched(&regs, &cpu, &mem).is_none());
    }
}
