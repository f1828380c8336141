//! Control registers decoded into their flags, named as the SDM and QEMU's gdb target
//! description name them, so `CR4 = [ PAE PGE ]` reads the same in mmurr, gdb and QEMU.

use traces::ControlReg;

/// (bit, name) for each defined bit.
type FlagTable = &'static [(u32, &'static str)];

const CR0: FlagTable = &[
    (0, "PE"),
    (1, "MP"),
    (2, "EM"),
    (3, "TS"),
    (4, "ET"),
    (5, "NE"),
    (16, "WP"),
    (18, "AM"),
    (29, "NW"),
    (30, "CD"),
    (31, "PG"),
];

const CR4: FlagTable = &[
    (0, "VME"),
    (1, "PVI"),
    (2, "TSD"),
    (3, "DE"),
    (4, "PSE"),
    (5, "PAE"),
    (6, "MCE"),
    (7, "PGE"),
    (8, "PCE"),
    (9, "OSFXSR"),
    (10, "OSXMMEXCPT"),
    (11, "UMIP"),
    (12, "LA57"),
    (13, "VMXE"),
    (14, "SMXE"),
    (16, "FSGSBASE"),
    (17, "PCIDE"),
    (18, "OSXSAVE"),
    (20, "SMEP"),
    (21, "SMAP"),
    (22, "PKE"),
    (23, "CET"),
    (24, "PKS"),
];

const EFER: FlagTable = &[
    (0, "SCE"),
    (8, "LME"),
    (10, "LMA"),
    (11, "NXE"),
    (12, "SVME"),
    (13, "LMSLE"),
    (14, "FFXSR"),
    (15, "TCE"),
];

const XCR0: FlagTable = &[
    (0, "X87"),
    (1, "SSE"),
    (2, "AVX"),
    (3, "BNDREG"),
    (4, "BNDCSR"),
    (5, "OPMASK"),
    (6, "ZMM_Hi256"),
    (7, "Hi16_ZMM"),
    (9, "PKRU"),
];

const RFLAGS: FlagTable = &[
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
    (19, "VIF"),
    (20, "VIP"),
    (21, "ID"),
];

fn table(reg: ControlReg) -> FlagTable {
    match reg {
        ControlReg::Cr0 => CR0,
        ControlReg::Cr4 => CR4,
        ControlReg::Efer => EFER,
        ControlReg::Xcr0 => XCR0,
        ControlReg::Cr3 => &[(3, "PWT"), (4, "PCD")],
    }
}

fn names(table: FlagTable, value: u64) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, _)| value >> bit & 1 == 1)
        .map(|&(_, name)| name)
        .collect()
}

/// The set flags of a control register, e.g. `["PE", "ET", "PG"]`.
pub fn set_flags(reg: ControlReg, value: u64) -> Vec<&'static str> {
    names(table(reg), value)
}

/// The set flags of RFLAGS.
pub fn rflags_flags(value: u64) -> Vec<&'static str> {
    names(RFLAGS, value)
}

/// `[ PE ET PG ]`, the form gdb prints flag registers in.
pub fn bracketed(flags: &[&str]) -> String {
    if flags.is_empty() {
        "[ ]".to_string()
    } else {
        format!("[ {} ]", flags.join(" "))
    }
}

/// The flags a write changed: `+PAE -PSE`, and `+bit13` for bits without a name.
pub fn changed_flags(reg: ControlReg, old: u64, new: u64) -> String {
    let t = table(reg);
    let mut out = Vec::new();
    let diff = old ^ new;
    for bit in 0..64u32 {
        if diff >> bit & 1 == 0 {
            continue;
        }
        let sign = if new >> bit & 1 == 1 { '+' } else { '-' };
        match t.iter().find(|(b, _)| *b == bit) {
            Some((_, name)) => out.push(format!("{sign}{name}")),
            None if reg == ControlReg::Cr3 => {}
            None => out.push(format!("{sign}bit{bit}")),
        }
    }
    if reg == ControlReg::Cr3 && (old & !0xfff) != (new & !0xfff) {
        out.push(format!("base {:#x} -> {:#x}", old & !0xfff, new & !0xfff));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cr0_and_cr4() {
        assert_eq!(set_flags(ControlReg::Cr0, 0x8000_0011), ["PE", "ET", "PG"]);
        assert_eq!(bracketed(&set_flags(ControlReg::Cr4, 0xa0)), "[ PAE PGE ]");
        assert_eq!(bracketed(&[]), "[ ]");
    }

    #[test]
    fn describes_changes() {
        assert_eq!(changed_flags(ControlReg::Cr4, 0x10, 0x20), "-PSE +PAE");
        assert_eq!(changed_flags(ControlReg::Efer, 0x100, 0x500), "+LMA");
        assert_eq!(changed_flags(ControlReg::Cr0, 0, 1 << 40), "+bit40");
        assert_eq!(
            changed_flags(ControlReg::Cr3, 0x1000, 0x2008),
            "+PWT base 0x1000 -> 0x2000"
        );
        assert_eq!(changed_flags(ControlReg::Cr3, 0x1000, 0x1000), "");
    }

    #[test]
    fn rflags() {
        assert_eq!(rflags_flags(0x246), ["PF", "ZF", "IF"]);
    }
}
