//! Faults: #GP reasons and page faults with their error code.

use std::fmt;

/// #PF error-code bits (SDM §4.7; KVM `PFERR_*`, sheet §7.7).
pub mod pfec {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
    pub const PK: u32 = 1 << 5;
}

/// Why an instruction (MOV CR, WRMSR, a PDPTE load, a non-canonical access) raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gp {
    /// MOV CR0 setting bits 63:32.
    Cr0HighBits { bits: u64 },
    /// CR0.NW=1 with CD=0.
    Cr0NwWithoutCd,
    /// CR0.PG=1 with PE=0.
    Cr0PgWithoutPe,
    /// Setting CR0.PG with EFER.LME=1 and CR4.PAE=0.
    Cr0LongModeWithoutPae,
    /// Setting CR0.PG with EFER.LME=1 while CS.L=1 (KVM).
    Cr0LongModeWithCsL,
    /// Clearing CR0.PG in 64-bit mode (CS.L=1 with LMA=1).
    Cr0ClearPgIn64BitMode,
    /// Clearing CR0.PG while CR4.PCIDE=1 (KVM).
    Cr0ClearPgWithPcide,
    /// MOV CR4 setting a reserved bit or one for a feature the guest CPU lacks.
    Cr4Reserved { bits: u64 },
    /// Clearing CR4.PAE while EFER.LMA=1.
    Cr4ClearPaeInLongMode,
    /// Changing CR4.LA57 while EFER.LMA=1.
    Cr4La57ChangeInLongMode,
    /// Setting CR4.PCIDE outside IA-32e mode.
    Cr4PcideOutsideLongMode,
    /// Setting CR4.PCIDE while CR3\[11:0\] != 0.
    Cr4PcideWithNonZeroPcid,
    /// CR3 with bits at or above MAXPHYADDR.
    Cr3AboveMaxPhyAddr { bits: u64 },
    /// WRMSR EFER with reserved or unsupported bits.
    EferReserved { bits: u64 },
    /// Guest WRMSR EFER changing LME while CR0.PG=1.
    EferLmeChangeWithPaging,
    /// The PDPT could not be read (outside guest RAM).
    PdpteUnreadable { gpa: u64 },
    /// A present PDPTE has reserved bits set.
    PdpteReserved { index: u8, value: u64 },
    /// Non-canonical linear address in IA-32e mode (#GP or #SS, never #PF).
    NonCanonical { gva: u64 },
}

impl fmt::Display for Gp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gp::Cr0HighBits { bits } => write!(f, "#GP: CR0 bits 63:32 set ({bits:#x})"),
            Gp::Cr0NwWithoutCd => write!(f, "#GP: CR0.NW=1 with CD=0"),
            Gp::Cr0PgWithoutPe => write!(f, "#GP: CR0.PG=1 with PE=0"),
            Gp::Cr0LongModeWithoutPae => {
                write!(f, "#GP: setting CR0.PG with EFER.LME=1 and CR4.PAE=0")
            }
            Gp::Cr0LongModeWithCsL => write!(f, "#GP: setting CR0.PG with EFER.LME=1 and CS.L=1"),
            Gp::Cr0ClearPgIn64BitMode => write!(f, "#GP: clearing CR0.PG in 64-bit mode"),
            Gp::Cr0ClearPgWithPcide => write!(f, "#GP: clearing CR0.PG with CR4.PCIDE=1"),
            Gp::Cr4Reserved { bits } => write!(f, "#GP: reserved/unsupported CR4 bits {bits:#x}"),
            Gp::Cr4ClearPaeInLongMode => write!(f, "#GP: clearing CR4.PAE with EFER.LMA=1"),
            Gp::Cr4La57ChangeInLongMode => write!(f, "#GP: changing CR4.LA57 with EFER.LMA=1"),
            Gp::Cr4PcideOutsideLongMode => write!(f, "#GP: setting CR4.PCIDE outside IA-32e mode"),
            Gp::Cr4PcideWithNonZeroPcid => write!(f, "#GP: setting CR4.PCIDE with CR3[11:0] != 0"),
            Gp::Cr3AboveMaxPhyAddr { bits } => {
                write!(f, "#GP: CR3 bits above MAXPHYADDR ({bits:#x})")
            }
            Gp::EferReserved { bits } => write!(f, "#GP: reserved/unsupported EFER bits {bits:#x}"),
            Gp::EferLmeChangeWithPaging => write!(f, "#GP: EFER.LME changed while CR0.PG=1"),
            Gp::PdpteUnreadable { gpa } => write!(f, "#GP: PDPT at {gpa:#x} outside guest RAM"),
            Gp::PdpteReserved { index, value } => {
                write!(f, "#GP: PDPTE{index} = {value:#x} has reserved bits set")
            }
            Gp::NonCanonical { gva } => write!(f, "#GP: non-canonical address {gva:#x}"),
        }
    }
}

impl std::error::Error for Gp {}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// #PF with the exact error code; `level` is where the walk stopped (0 for a
    /// permission fault detected on the final translation).
    PageFault { error_code: u32, level: u8 },
    /// #GP (non-canonical address).
    Gp(Gp),
    /// A paging-structure entry lies outside guest RAM. Hardware would read all-ones or abort;
    /// KVM's walker fails the walk. Reported separately so nobody mistakes it for a guest #PF.
    EntryUnreadable { gpa: u64, level: u8 },
}

impl Fault {
    pub fn error_code(&self) -> Option<u32> {
        match self {
            Fault::PageFault { error_code, .. } => Some(*error_code),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::PageFault { error_code, level } => {
                write!(f, "#PF(error code {error_code:#x}")?;
                for (bit, name) in [
                    (pfec::P, "P"),
                    (pfec::W, "W"),
                    (pfec::U, "U"),
                    (pfec::RSVD, "RSVD"),
                    (pfec::FETCH, "I/D"),
                    (pfec::PK, "PK"),
                ] {
                    if error_code & bit != 0 {
                        write!(f, " {name}")?;
                    }
                }
                if *level != 0 {
                    write!(f, ", at level {level}")?;
                }
                write!(f, ")")
            }
            Fault::Gp(gp) => write!(f, "{gp}"),
            Fault::EntryUnreadable { gpa, level } => {
                write!(f, "level-{level} entry at {gpa:#x} outside guest RAM")
            }
        }
    }
}
