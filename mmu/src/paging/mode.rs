//! Paging-mode selection (SDM §4.1.1, sheet §7.1).

use crate::regs::bits::*;

/// The paging mode selected by CR0, CR4 and EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PagingMode {
    /// CR0.PE=0 (and PG=0): real mode, linear = physical.
    Real,
    /// Protected mode without paging: linear = physical.
    Unpaged,
    /// 32-bit paging: 2 levels of 4-byte entries.
    Bits32,
    /// PAE paging: PDPTE registers + 2 levels of 8-byte entries.
    Pae,
    /// 4-level (IA-32e) paging.
    Level4,
    /// 5-level paging (CR4.LA57).
    Level5,
}

impl PagingMode {
    /// Mode from the registers. IA-32e paging is selected by EFER.LMA (the CPU sets it on
    /// CR0.PG 0→1 with LME=1, see [`efer_after_cr0_write`]); LME alone does not switch modes.
    /// PG=1 with LMA=1 and PAE=0 cannot be reached architecturally; it is reported as
    /// IA-32e paging because that is what LMA says (KVM's role does the same, sheet §3.2).
    pub fn of(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
        if cr0 & CR0_PG == 0 {
            if cr0 & CR0_PE == 0 {
                PagingMode::Real
            } else {
                PagingMode::Unpaged
            }
        } else if efer & EFER_LMA != 0 {
            if cr4 & CR4_LA57 != 0 {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }

    pub fn of_regs(regs: &crate::ControlRegs) -> PagingMode {
        PagingMode::of(regs.cr0, regs.cr4, regs.efer)
    }

    /// Guest paging level as KVM counts it (`cpu_role.base.level`): 0 without paging.
    pub fn level(self) -> u8 {
        match self {
            PagingMode::Real | PagingMode::Unpaged => 0,
            PagingMode::Bits32 => 2,
            PagingMode::Pae => 3,
            PagingMode::Level4 => 4,
            PagingMode::Level5 => 5,
        }
    }

    pub fn is_paged(self) -> bool {
        self.level() != 0
    }

    /// IA-32e paging (4- or 5-level).
    pub fn is_long(self) -> bool {
        matches!(self, PagingMode::Level4 | PagingMode::Level5)
    }

    pub fn name(self) -> &'static str {
        match self {
            PagingMode::Real => "real",
            PagingMode::Unpaged => "unpaged",
            PagingMode::Bits32 => "32-bit",
            PagingMode::Pae => "PAE",
            PagingMode::Level4 => "4-level",
            PagingMode::Level5 => "5-level",
        }
    }
}

impl std::fmt::Display for PagingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// EFER after a CR0 write: the CPU sets LMA on PG 0→1 with LME=1 and clears it on PG 1→0
/// (SDM §4.1.2; in KVM the vendor `set_cr0`, sheet §5.2 step 6).
pub fn efer_after_cr0_write(efer: u64, old_cr0: u64, new_cr0: u64) -> u64 {
    let was = old_cr0 & CR0_PG != 0;
    let now = new_cr0 & CR0_PG != 0;
    match (was, now) {
        (false, true) if efer & EFER_LME != 0 => efer | EFER_LMA,
        (true, false) => efer & !EFER_LMA,
        _ => efer,
    }
}

/// EFER.LMA as it stands after a CR0 write.
pub fn lma_after_cr0_write(efer: u64, old_cr0: u64, new_cr0: u64) -> bool {
    efer_after_cr0_write(efer, old_cr0, new_cr0) & EFER_LMA != 0
}
