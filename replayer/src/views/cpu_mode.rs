//! The CPU's mode in one paragraph: paging mode, code size, CS:RIP as the CPU sees it and the
//! linear address a debugger uses, and CR0/CR4/EFER as flag lists (`[ PE ET PG ]`, the form gdb
//! prints flag registers in).

use history::flags::{bracketed, set_flags};
use traces::regs::CS;
use traces::{ControlReg, Regs};

/// `monitor mode`'s text.
pub fn describe(regs: &Regs) -> String {
    let mode = mmu::PagingMode::of(regs.cr0, regs.cr4, regs.efer);
    let bits = insn::bitness(regs);
    let cs = regs.seg[CS];
    let flags = |r, v| bracketed(&set_flags(r, v));
    [
        format!(
            "paging mode {}, {}-bit code, CPL {}",
            mode.name(),
            bits,
            insn::cpl(regs)
        ),
        format!(
            "CS:RIP {:#06x}:{:#x} (CS.base {:#x}); linear pc {:#x}",
            cs.selector,
            regs.rip,
            cs.base,
            insn::linear_ip(regs)
        ),
        format!(
            "CR0  {:#010x} {}",
            regs.cr0,
            flags(ControlReg::Cr0, regs.cr0)
        ),
        format!("CR3  {:#x}", regs.cr3),
        format!(
            "CR4  {:#010x} {}",
            regs.cr4,
            flags(ControlReg::Cr4, regs.cr4)
        ),
        format!(
            "EFER {:#x} {}",
            regs.efer,
            flags(ControlReg::Efer, regs.efer)
        ),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_mode_and_flags() {
        let mut r = Regs {
            cr0: 0x8000_0011,
            cr4: 0x20,
            ..Regs::default()
        };
        r.seg[CS].attrs = 0xc09b;
        let text = describe(&r);
        assert!(text.contains("paging mode PAE"), "{text}");
        assert!(text.contains("[ PE ET PG ]"), "{text}");
        assert!(text.contains("[ PAE ]"), "{text}");
        assert!(text.contains("32-bit code"), "{text}");
    }
}
