//! Control-register writes, found two ways: by decoding the instruction before it runs (so a
//! `mov cr3` that reloads the same value, LMSW, CLTS, WRMSR to EFER and XSETBV are events even
//! when nothing changes) and by comparing the registers after it (anything else that changed
//! them, e.g. a task switch, is reported with `via: Other`).

use crate::insn;
use ::insn::register_value;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use traces::{ControlReg, CrWrite, Regs, WriteVia};

const MSR_EFER: u64 = 0xc000_0080;
use mmu::bits::EFER_LMA;

/// A write an instruction is about to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedWrite {
    pub reg: ControlReg,
    pub via: WriteVia,
    /// The value the instruction tries to write (the MMU model's input).
    pub attempted: u64,
}

/// The write `insn` makes, decoded before it executes with the registers `before`.
pub fn planned_write(insn: &Instruction, before: &Regs) -> Option<PlannedWrite> {
    let bits = insn::bitness(before);
    let gpr = |r: Register| register_value(before, bits, r).unwrap_or(0);
    let edx_eax = (before.gpr[2] & 0xffff_ffff) << 32 | (before.gpr[0] & 0xffff_ffff);
    let ecx = before.gpr[1] & 0xffff_ffff;
    match insn.mnemonic() {
        Mnemonic::Mov if insn.op0_kind() == OpKind::Register => {
            let reg = match insn.op0_register() {
                Register::CR0 => ControlReg::Cr0,
                Register::CR3 => ControlReg::Cr3,
                Register::CR4 => ControlReg::Cr4,
                _ => return None,
            };
            Some(PlannedWrite {
                reg,
                via: WriteVia::MovCr,
                attempted: gpr(insn.op1_register()),
            })
        }
        Mnemonic::Lmsw => {
            // LMSW loads CR0[3:0] but cannot clear PE.
            let src = match insn.op0_kind() {
                OpKind::Register => gpr(insn.op0_register()),
                _ => {
                    return Some(PlannedWrite {
                        reg: ControlReg::Cr0,
                        via: WriteVia::Lmsw,
                        attempted: before.cr0,
                    })
                }
            };
            let attempted = (before.cr0 & !0xe) | (src & 0xf) | (before.cr0 & 1);
            Some(PlannedWrite {
                reg: ControlReg::Cr0,
                via: WriteVia::Lmsw,
                attempted,
            })
        }
        Mnemonic::Clts => Some(PlannedWrite {
            reg: ControlReg::Cr0,
            via: WriteVia::Clts,
            attempted: before.cr0 & !8,
        }),
        Mnemonic::Wrmsr if ecx == MSR_EFER => Some(PlannedWrite {
            reg: ControlReg::Efer,
            via: WriteVia::Wrmsr,
            attempted: edx_eax,
        }),
        Mnemonic::Xsetbv if ecx == 0 => Some(PlannedWrite {
            reg: ControlReg::Xcr0,
            via: WriteVia::Xsetbv,
            attempted: edx_eax,
        }),
        _ => None,
    }
}

/// Instructions after which the backend's cached rarely-written registers must be re-read.
pub fn writes_rare_registers(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Xsetbv
            | Mnemonic::Wrmsr
            | Mnemonic::Swapgs
            | Mnemonic::Wrpkru
            | Mnemonic::Xrstor
            | Mnemonic::Xrstors
            | Mnemonic::Xrstor64
            | Mnemonic::Xrstors64
            | Mnemonic::Rsm
            | Mnemonic::Mov
            | Mnemonic::Lmsw
    ) && (insn.mnemonic() != Mnemonic::Mov
        || matches!(
            insn.op0_register(),
            Register::CR0 | Register::CR3 | Register::CR4
        ))
}

fn value(r: &Regs, reg: ControlReg) -> u64 {
    match reg {
        ControlReg::Cr0 => r.cr0,
        ControlReg::Cr3 => r.cr3,
        ControlReg::Cr4 => r.cr4,
        ControlReg::Efer => r.efer,
        ControlReg::Xcr0 => r.xcr0,
    }
}

const ALL: [ControlReg; 5] = [
    ControlReg::Cr0,
    ControlReg::Cr3,
    ControlReg::Cr4,
    ControlReg::Efer,
    ControlReg::Xcr0,
];

/// The writes one step made. `retired` says the instruction completed (RIP reached its end)
/// rather than faulting.
pub fn detect(
    planned: Option<PlannedWrite>,
    retired: bool,
    before: &Regs,
    after: &Regs,
) -> Vec<CrWrite> {
    let mut out = Vec::new();
    if let Some(p) = planned {
        let old = value(before, p.reg);
        let faulted = !retired && value(after, p.reg) == old;
        // The value the instruction wrote, faulted or not: what KVM's handlers receive and
        // judge (the register may hold something else afterwards: CR0.ET forced to 1, the
        // CR3 no-flush bit dropped, EFER.LMA kept; the step's registers show that).
        let new = p.attempted;
        out.push(CrWrite {
            reg: p.reg,
            old,
            new,
            via: p.via,
            faulted,
        });
    }
    for reg in ALL {
        if planned.is_some_and(|p| p.reg == reg) {
            continue;
        }
        let (old, new) = (value(before, reg), value(after, reg));
        if old == new {
            continue;
        }
        // EFER.LMA follows CR0.PG: part of the CR0 write, not a write of its own.
        let lma_only = reg == ControlReg::Efer && (old ^ new) == EFER_LMA;
        if lma_only && planned.is_some_and(|p| p.reg == ControlReg::Cr0) {
            continue;
        }
        out.push(CrWrite {
            reg,
            old,
            new,
            via: WriteVia::Other,
            faulted: false,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 64-bit code with 4-level paging, CR3 at 0x1000 (also the tracer caches' tests).
    pub(crate) fn long_mode() -> Regs {
        let mut r = Regs {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0x500,
            ..Regs::default()
        };
        r.seg[traces::regs::CS].attrs = 0xa09b;
        r
    }

    #[test]
    fn mov_cr3_with_the_same_value_is_a_write() {
        let before = {
            let mut r = long_mode();
            r.gpr[0] = 0x1000;
            r
        };
        let i = insn::decode(&[0x0f, 0x22, 0xd8], 64, 0).unwrap(); // mov cr3, rax
        let p = planned_write(&i, &before).unwrap();
        assert_eq!(
            p,
            PlannedWrite {
                reg: ControlReg::Cr3,
                via: WriteVia::MovCr,
                attempted: 0x1000
            }
        );
        let w = detect(Some(p), true, &before, &before);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0],
            CrWrite {
                reg: ControlReg::Cr3,
                old: 0x1000,
                new: 0x1000,
                via: WriteVia::MovCr,
                faulted: false
            }
        );
    }

    #[test]
    fn wrmsr_efer_xsetbv_clts_lmsw() {
        let mut r = long_mode();
        r.gpr[1] = 0xc000_0080;
        r.gpr[0] = 0xd01;
        let wrmsr = insn::decode(&[0x0f, 0x30], 64, 0).unwrap();
        assert_eq!(planned_write(&wrmsr, &r).unwrap().attempted, 0xd01);
        r.gpr[1] = 0;
        r.gpr[0] = 7;
        let xsetbv = insn::decode(&[0x0f, 0x01, 0xd1], 64, 0).unwrap();
        assert_eq!(planned_write(&xsetbv, &r).unwrap().reg, ControlReg::Xcr0);
        r.cr0 |= 8;
        let clts = insn::decode(&[0x0f, 0x06], 64, 0).unwrap();
        assert_eq!(planned_write(&clts, &r).unwrap().attempted, 0x8000_0011);
        r.gpr[0] = 0;
        let lmsw = insn::decode(&[0x0f, 0x01, 0xf0], 64, 0).unwrap(); // lmsw ax
        assert_eq!(planned_write(&lmsw, &r).unwrap().attempted, 0x8000_0011);
    }

    #[test]
    fn lma_set_by_a_cr0_write_is_not_an_efer_write_and_faults_are_marked() {
        let mut before = long_mode();
        before.cr0 = 0x11;
        before.efer = 0x100;
        let mut after = before.clone();
        after.cr0 = 0x8000_0011;
        after.efer = 0x500;
        let p = PlannedWrite {
            reg: ControlReg::Cr0,
            via: WriteVia::MovCr,
            attempted: 0x8000_0011,
        };
        let w = detect(Some(p), true, &before, &after);
        assert_eq!(w.len(), 1);
        let w = detect(Some(p), false, &before, &before);
        assert!(w[0].faulted && w[0].new == 0x8000_0011 && w[0].old == 0x11);
        let mut other = before.clone();
        other.cr3 = 0x5000;
        let w = detect(None, true, &before, &other);
        assert_eq!(w[0].via, WriteVia::Other);
    }
}
