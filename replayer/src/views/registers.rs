//! The register file as a debugger shows it: general registers at the width of the current
//! code, RFLAGS and the control registers decoded into their flags, the PDPTE registers while
//! PAE paging uses them, and the segments that decide the code size.

use history::flags::{bracketed, rflags_flags, set_flags};
use traces::regs::{CS, DS, ES, FS, GS, SS};
use traces::{ControlReg, Regs};

/// One displayed register: name, value, and decoded detail (flags, mode facts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterLine {
    pub name: String,
    pub value: String,
    pub detail: String,
}

fn line(name: impl Into<String>, value: String, detail: String) -> RegisterLine {
    RegisterLine {
        name: name.into(),
        value,
        detail,
    }
}

const GPR64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const GPR32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
const GPR16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
const SEGS: [(usize, &str); 6] = [
    (CS, "cs"),
    (SS, "ss"),
    (DS, "ds"),
    (ES, "es"),
    (FS, "fs"),
    (GS, "gs"),
];

/// The general registers at the current code size (16, 32 or 64 bits).
pub fn general(regs: &Regs) -> Vec<RegisterLine> {
    let bits = insn::bitness(regs);
    let (names, digits): (&[&str], usize) = match bits {
        64 => (&GPR64, 16),
        32 => (&GPR32, 8),
        _ => (&GPR16, 4),
    };
    let mask = if digits == 16 {
        u64::MAX
    } else {
        (1u64 << (digits * 4)) - 1
    };
    names
        .iter()
        .zip(regs.gpr.iter())
        .map(|(n, v)| line(*n, format!("{:0digits$x}", v & mask), String::new()))
        .collect()
}

/// RIP, RFLAGS, the control registers decoded, the PDPTE registers under PAE paging, and
/// the segment registers.
pub fn control(regs: &Regs) -> Vec<RegisterLine> {
    let mode = mmu::PagingMode::of(regs.cr0, regs.cr4, regs.efer);
    let flags = |r: ControlReg, v: u64| bracketed(&set_flags(r, v));
    let mut out = vec![
        line(
            "rip",
            format!("{:#x}", regs.rip),
            format!(
                "{}-bit code, CPL {}, linear {:#x}",
                insn::bitness(regs),
                insn::cpl(regs),
                insn::linear_ip(regs)
            ),
        ),
        line(
            "rflags",
            format!("{:#x}", regs.rflags),
            bracketed(&rflags_flags(regs.rflags)),
        ),
        line(
            "cr0",
            format!("{:#010x}", regs.cr0),
            flags(ControlReg::Cr0, regs.cr0),
        ),
        line("cr2", format!("{:#x}", regs.cr2), String::new()),
        line(
            "cr3",
            format!("{:#x}", regs.cr3),
            cr3_detail(mode, regs.cr3),
        ),
        line(
            "cr4",
            format!("{:#010x}", regs.cr4),
            flags(ControlReg::Cr4, regs.cr4),
        ),
        line(
            "efer",
            format!("{:#x}", regs.efer),
            flags(ControlReg::Efer, regs.efer),
        ),
    ];
    if regs.xcr0 != 0 {
        out.push(line(
            "xcr0",
            format!("{:#x}", regs.xcr0),
            flags(ControlReg::Xcr0, regs.xcr0),
        ));
    }
    if mode == mmu::PagingMode::Pae {
        for (i, p) in regs.pdptrs.iter().enumerate() {
            let detail = if p & 1 == 1 {
                format!("-> page directory {:#x}", p & 0x000f_ffff_ffff_f000)
            } else {
                "not present".into()
            };
            out.push(line(format!("pdpte{i}"), format!("{p:#x}"), detail));
        }
    }
    for (i, name) in SEGS {
        let s = regs.seg[i];
        out.push(line(
            name,
            format!("{:#06x}", s.selector),
            format!(
                "base {:#x} limit {:#x} attrs {:#x}",
                s.base, s.limit, s.attrs
            ),
        ));
    }
    out
}

/// What CR3 points at in this paging mode.
fn cr3_detail(mode: mmu::PagingMode, cr3: u64) -> String {
    match mode {
        mmu::PagingMode::Real | mmu::PagingMode::Unpaged => "unused (no paging)".into(),
        mmu::PagingMode::Bits32 => format!("page directory {:#x}", cr3 & 0xffff_f000),
        mmu::PagingMode::Pae => format!("PDPT {:#x}", mmu::pdpt_address(cr3)),
        mmu::PagingMode::Level4 => format!("PML4 {:#x}", cr3 & 0x000f_ffff_ffff_f000),
        mmu::PagingMode::Level5 => format!("PML5 {:#x}", cr3 & 0x000f_ffff_ffff_f000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_pae_guest() {
        let mut r = Regs {
            cr0: 0x8000_0011,
            cr4: 0x20,
            cr3: 0x4800,
            ..Regs::default()
        };
        r.pdptrs[0] = 0x7001;
        r.seg[CS].attrs = 0xc09b;
        r.gpr[0] = 0x1_2345_6789;
        let c = control(&r);
        let find = |n: &str| c.iter().find(|l| l.name == n).unwrap().clone();
        assert_eq!(find("cr0").detail, "[ PE ET PG ]");
        assert_eq!(find("cr4").detail, "[ PAE ]");
        assert_eq!(find("cr3").detail, "PDPT 0x4800");
        assert_eq!(find("pdpte0").detail, "-> page directory 0x7000");
        assert_eq!(find("pdpte1").detail, "not present");
        assert!(find("rip").detail.starts_with("32-bit code"));
        let g = general(&r);
        assert_eq!(
            (g[0].name.as_str(), g[0].value.as_str()),
            ("eax", "23456789")
        );
        assert_eq!(g.len(), 8);
    }

    #[test]
    fn no_pdptes_outside_pae() {
        let r = Regs::default();
        assert!(control(&r).iter().all(|l| !l.name.starts_with("pdpte")));
        assert_eq!(general(&r)[0].value, "0000");
    }
}
