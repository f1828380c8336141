//! The linear addresses an instruction touches, computed from its operands and the register
//! values before it executes.

use iced_x86::{InstructionInfoFactory, OpAccess, Register};
use mmu::Access;
use traces::Regs;

/// One memory access an instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    pub linear: u64,
    pub access: Access,
    pub size: usize,
}

/// The value iced-x86 asks for while computing an address: a general register (any width,
/// AH..BH included) or a segment register's base.
pub fn register_value(regs: &Regs, reg: Register) -> Option<u64> {
    use Register as R;
    let seg = |i: usize| Some(regs.seg[i].base);
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

/// Memory operands of `insn` with their linear addresses (segment base included) and access.
/// Addresses wrap at 32 bits outside 64-bit code. Operands whose address cannot be computed
/// (e.g. vector-indexed) are left out.
pub fn memory_operands(insn: &iced_x86::Instruction, regs: &Regs) -> Vec<Touch> {
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(insn);
    let wide = crate::bitness(regs) == 64;
    info.used_memory()
        .iter()
        .filter_map(|m| {
            let access = match m.access() {
                OpAccess::Write
                | OpAccess::CondWrite
                | OpAccess::ReadWrite
                | OpAccess::ReadCondWrite => Access::Write,
                OpAccess::Read | OpAccess::CondRead => Access::Read,
                _ => return None,
            };
            let lin = m.virtual_address(0, |reg, _, _| register_value(regs, reg))?;
            let linear = if wide { lin } else { lin & 0xffff_ffff };
            Some(Touch {
                linear,
                access,
                size: m.memory_size().size(),
            })
        })
        .collect()
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
        assert_eq!(register_value(&r, Register::AH), Some(0x77));
        assert_eq!(register_value(&r, Register::AX), Some(0x7788));
        assert_eq!(register_value(&r, Register::EAX), Some(0x5566_7788));
        assert_eq!(register_value(&r, Register::XMM0), None);
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
