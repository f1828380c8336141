//! The linear addresses an instruction touches, computed from its operands and the register
//! values before it executes.

use iced_x86::{InstructionInfoFactory, OpAccess, Register, UsedMemory};
use mmu::Access;
use traces::Regs;

/// One memory access an instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    pub linear: u64,
    pub access: Access,
    pub size: usize,
}

/// The value iced-x86 asks for while computing an address in code of `bits` (16, 32 or 64): a
/// general register (any width, AH..BH included) or a segment register's base. In 64-bit code
/// the CPU treats the ES, CS, SS and DS bases as zero (SDM Vol. 1 §3.4.2.1); FS and GS keep
/// theirs.
pub fn register_value(regs: &Regs, bits: u32, reg: Register) -> Option<u64> {
    use Register as R;
    let seg = |i: usize| {
        Some(if bits == 64 && i < traces::regs::FS {
            0
        } else {
            regs.seg[i].base
        })
    };
    match reg {
        R::ES => return seg(traces::regs::ES),
        R::CS => return seg(traces::regs::CS),
        R::SS => return seg(traces::regs::SS),
        R::DS => return seg(traces::regs::DS),
        R::FS => return seg(traces::regs::FS),
        R::GS => return seg(traces::regs::GS),
        R::RIP | R::EIP => return Some(regs.rip),
        R::AH | R::CH | R::DH | R::BH => {
            let full = reg.full_register();
            let idx = full.number() - Register::RAX.number();
            return regs.gpr.get(idx).map(|v| (v >> 8) & 0xff);
        }
        _ => {}
    }
    if !reg.is_gpr() {
        return None;
    }
    let full = reg.full_register();
    let idx = full.number().checked_sub(Register::RAX.number())?;
    let v = *regs.gpr.get(idx)?;
    Some(match reg.size() {
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    })
}

/// Memory operands of `insn` with their linear addresses (segment base included) and access,
/// with the registers before it executes. Addresses wrap at 32 bits outside 64-bit code.
/// Operands whose address cannot be computed (e.g. vector-indexed) are left out. An operand
/// of no fixed size (the XSAVE family) has `size` 0.
pub fn memory_operands(insn: &iced_x86::Instruction, regs: &Regs) -> Vec<Touch> {
    let mut factory = InstructionInfoFactory::new();
    memory_operands_with(&mut factory, insn, regs)
}

/// [`memory_operands`] with a caller's decoder-info factory (it allocates; the recorder keeps
/// one for the whole run).
pub fn memory_operands_with(
    factory: &mut InstructionInfoFactory,
    insn: &iced_x86::Instruction,
    regs: &Regs,
) -> Vec<Touch> {
    memory_operands_of(factory.info(insn).used_memory(), regs)
}

/// [`memory_operands`] from the decoder's list of the instruction's memory operands
/// (`InstructionInfo::used_memory`), for a caller that keeps it with the decoded instruction.
pub fn memory_operands_of(used: &[UsedMemory], regs: &Regs) -> Vec<Touch> {
    let bits = crate::bitness(regs);
    used.iter()
        .filter_map(|m| {
            let access = match m.access() {
                OpAccess::Write
                | OpAccess::CondWrite
                | OpAccess::ReadWrite
                | OpAccess::ReadCondWrite => Access::Write,
                OpAccess::Read | OpAccess::CondRead => Access::Read,
                _ => return None,
            };
            let lin = m.virtual_address(0, |reg, _, _| register_value(regs, bits, reg))?;
            let linear = if bits == 64 { lin } else { lin & 0xffff_ffff };
            Some(Touch {
                linear,
                access,
                size: m.memory_size().size(),
            })
        })
        .collect()
}

/// Every linear address the instruction at CS:RIP touches, fetch first, then its memory
/// operands: what a stale MMU context is checked against, in the recorder and the replayer
/// alike. `insn` is the instruction decoded at RIP (`None` when it could not be).
pub fn touched(insn: Option<&iced_x86::Instruction>, regs: &Regs) -> Vec<(u64, Access)> {
    let mut out = vec![(crate::linear_ip(regs), Access::Fetch)];
    if let Some(i) = insn {
        out.extend(
            memory_operands(i, regs)
                .into_iter()
                .map(|t| (t.linear, t.access)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs64() -> Regs {
        let mut r = Regs {
            cr0: 0x8000_0011,
            efer: 0x500,
            ..Regs::default()
        };
        r.seg[traces::regs::CS].attrs = 0xa09b;
        r
    }

    #[test]
    fn computes_linear_addresses_with_segment_bases() {
        let mut r = regs64();
        r.gpr[3] = 0x1000; // rbx
        r.gpr[1] = 3; // rcx
        r.seg[traces::regs::FS].base = 0x7000_0000;
        // mov [rbx+rcx*8+0x10], rax
        let i = crate::decode(&[0x48, 0x89, 0x44, 0xcb, 0x10], 64, 0).unwrap();
        assert_eq!(
            memory_operands(&i, &r),
            [Touch {
                linear: 0x1028,
                access: Access::Write,
                size: 8
            }]
        );
        // mov eax, fs:[rbx]
        let i = crate::decode(&[0x64, 0x8b, 0x03], 64, 0).unwrap();
        assert_eq!(
            memory_operands(&i, &r),
            [Touch {
                linear: 0x7000_1000,
                access: Access::Read,
                size: 4
            }]
        );
    }

    #[test]
    fn reads_narrow_and_high_byte_registers() {
        let mut r = Regs::default();
        r.gpr[0] = 0x1122_3344_5566_7788;
        assert_eq!(register_value(&r, 64, Register::AH), Some(0x77));
        assert_eq!(register_value(&r, 64, Register::AX), Some(0x7788));
        assert_eq!(register_value(&r, 64, Register::EAX), Some(0x5566_7788));
        assert_eq!(register_value(&r, 64, Register::XMM0), None);
    }

    #[test]
    fn sixty_four_bit_code_ignores_the_es_cs_ss_ds_bases() {
        let mut r = regs64();
        r.gpr[3] = 0x1000; // rbx
        r.seg[traces::regs::DS].base = 0x5000;
        r.seg[traces::regs::CS].base = 0x9000;
        r.seg[traces::regs::GS].base = 0x7000_0000;
        // mov eax, [rbx]: DS's base does not apply in 64-bit code
        let i = crate::decode(&[0x8b, 0x03], 64, 0).unwrap();
        assert_eq!(memory_operands(&i, &r)[0].linear, 0x1000);
        // mov eax, gs:[rbx]: GS's does
        let i = crate::decode(&[0x65, 0x8b, 0x03], 64, 0).unwrap();
        assert_eq!(memory_operands(&i, &r)[0].linear, 0x7000_1000);
        assert_eq!(crate::linear_ip(&r), 0);
        assert_eq!(touched(Some(&i), &r)[0], (0, Access::Fetch));
    }

    #[test]
    fn real_mode_addresses_use_segment_base() {
        let mut r = Regs::default();
        r.seg[traces::regs::DS].base = 0x1230;
        r.gpr[6] = 0x4; // si
                        // mov al, [si]
        let i = crate::decode(&[0x8a, 0x04], 16, 0).unwrap();
        assert_eq!(memory_operands(&i, &r)[0].linear, 0x1234);
    }
}
