//! Legality of CR0/CR3/CR4/EFER writes (SDM §4.1.2, MOV CRn/WRMSR exceptions; KVM
//! `kvm_set_cr0`, `kvm_set_cr3`, `kvm_set_cr4`, `set_efer`; sheet §5.2–5.4, §7.2) and the
//! register state a legal write produces.

use super::fault::Gp;
use super::pdpte::load_pdptrs;
use crate::regs::bits::*;
use crate::regs::{ControlRegs, CpuModel, GuestMemory};

/// Which register is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrReg {
    Cr0,
    Cr3,
    Cr4,
    Efer,
}

/// Facts about a write that [`ControlRegs`] does not carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteContext {
    /// CS.L, if known: clearing CR0.PG in 64-bit mode (LMA=1, CS.L=1) raises #GP; setting PG
    /// with CS.L=1 too (KVM). `None` skips both checks (compatibility mode is assumed).
    pub cs_l: Option<bool>,
    /// Host-initiated (KVM_SET_MSRS): skips the CPUID and "LME change with PG=1" checks.
    pub host_initiated: bool,
}

/// X86_CR0_PDPTR_BITS / X86_CR4_PDPTR_BITS: changes that reload the PDPTEs (sheet §7.3).
pub const CR0_PDPTR_BITS: u64 = CR0_CD | CR0_NW | CR0_PG;
pub const CR4_PDPTR_BITS: u64 = CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP;

/// CR4 bits that exist without a CPUID feature this model tracks. Bits for features outside the
/// model (UMIP, VMXE, SMXE, FSGSBASE, OSXSAVE) are accepted: the model does not track them.
const CR4_ALWAYS: u64 = CR4_VME
    | CR4_PVI
    | CR4_TSD
    | CR4_DE
    | CR4_PSE
    | CR4_PAE
    | CR4_MCE
    | CR4_PGE
    | CR4_PCE
    | CR4_OSFXSR
    | CR4_OSXMMEXCPT
    | CR4_UMIP
    | CR4_VMXE
    | CR4_SMXE
    | CR4_FSGSBASE
    | CR4_OSXSAVE;

/// CR4 bits the guest may set on this CPU model.
pub fn cr4_allowed(cpu: &CpuModel) -> u64 {
    let mut a = CR4_ALWAYS;
    for (have, bit) in [
        (cpu.la57, CR4_LA57),
        (cpu.pcid, CR4_PCIDE),
        (cpu.smep, CR4_SMEP),
        (cpu.smap, CR4_SMAP),
        (cpu.pku, CR4_PKE),
    ] {
        if have {
            a |= bit;
        }
    }
    a
}

/// EFER bits the guest may set (LM is assumed; NX per CPUID; SVME/FFXSR on AMD only).
pub fn efer_allowed(cpu: &CpuModel) -> u64 {
    let mut a = EFER_SCE | EFER_LME | EFER_LMA;
    if cpu.nx {
        a |= EFER_NXE;
    }
    if cpu.amd {
        a |= EFER_SVME | EFER_FFXSR;
    }
    a
}

/// Every EFER bit the model knows: SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE, AUTOIBRS.
const EFER_KNOWN: u64 = EFER_SCE
    | EFER_LME
    | EFER_LMA
    | EFER_NXE
    | EFER_SVME
    | (1 << 13)
    | EFER_FFXSR
    | (1 << 15)
    | (1 << 21);

/// Does writing `value` to `reg` raise #GP? Guest-initiated write, CS.L unknown.
pub fn check_write(
    reg: CrReg,
    regs_before: &ControlRegs,
    value: u64,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
) -> Result<(), Gp> {
    apply_write_with(reg, regs_before, value, cpu, mem, &WriteContext::default()).map(|_| ())
}

/// [`check_write`] with the extra facts of a [`WriteContext`].
pub fn check_write_with(
    reg: CrReg,
    regs_before: &ControlRegs,
    value: u64,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    ctx: &WriteContext,
) -> Result<(), Gp> {
    apply_write_with(reg, regs_before, value, cpu, mem, ctx).map(|_| ())
}

/// The registers after a legal write: CR0.ET forced, EFER.LMA updated on PG transitions (and
/// read-only on EFER writes), PDPTE registers reloaded where the architecture reloads them,
/// CR3's NOFLUSH bit stripped. #GP leaves the registers unchanged.
pub fn apply_write(
    reg: CrReg,
    regs_before: &ControlRegs,
    value: u64,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
) -> Result<ControlRegs, Gp> {
    apply_write_with(reg, regs_before, value, cpu, mem, &WriteContext::default())
}

/// [`apply_write`] with a [`WriteContext`].
pub fn apply_write_with(
    reg: CrReg,
    b: &ControlRegs,
    value: u64,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    ctx: &WriteContext,
) -> Result<ControlRegs, Gp> {
    let mut a = *b;
    match reg {
        CrReg::Cr0 => {
            if value >> 32 != 0 {
                return Err(Gp::Cr0HighBits {
                    bits: value & !0xffff_ffff,
                });
            }
            if value & CR0_NW != 0 && value & CR0_CD == 0 {
                return Err(Gp::Cr0NwWithoutCd);
            }
            if value & CR0_PG != 0 && value & CR0_PE == 0 {
                return Err(Gp::Cr0PgWithoutPe);
            }
            let pg_on = value & CR0_PG != 0;
            if b.lme() && !b.pg() && pg_on {
                if !b.pae() {
                    return Err(Gp::Cr0LongModeWithoutPae);
                }
                if ctx.cs_l == Some(true) {
                    // KVM refuses to enter long mode with CS.L=1 (sheet §7.2).
                    return Err(Gp::Cr0LongModeWithCsL);
                }
            }
            if !pg_on && b.pg() {
                if b.lma() && ctx.cs_l == Some(true) {
                    return Err(Gp::Cr0ClearPgIn64BitMode);
                }
                if b.pcide() {
                    return Err(Gp::Cr0ClearPgWithPcide);
                }
            }
            // ET is hardwired to 1 (KVM forces it; reserved bits are dropped silently).
            a.cr0 = value | CR0_ET;
            a.efer = super::mode::efer_after_cr0_write(b.efer, b.cr0, a.cr0);
            if !b.lme() && pg_on && b.pae() && (value ^ b.cr0) & CR0_PDPTR_BITS != 0 {
                a.pdptrs = load_pdptrs(b.cr3, mem, cpu.phys_bits())?;
            }
        }
        CrReg::Cr4 => {
            let bad = value & !cr4_allowed(cpu);
            if bad != 0 {
                return Err(Gp::Cr4Reserved { bits: bad });
            }
            if b.lma() {
                if value & CR4_PAE == 0 {
                    return Err(Gp::Cr4ClearPaeInLongMode);
                }
                if (value ^ b.cr4) & CR4_LA57 != 0 {
                    return Err(Gp::Cr4La57ChangeInLongMode);
                }
            } else if b.pg() && value & CR4_PAE != 0 && (value ^ b.cr4) & CR4_PDPTR_BITS != 0 {
                a.pdptrs = load_pdptrs(b.cr3, mem, cpu.phys_bits())?;
            }
            if value & CR4_PCIDE != 0 && !b.pcide() {
                if !b.lma() {
                    return Err(Gp::Cr4PcideOutsideLongMode);
                }
                if b.cr3 & CR3_PCID_MASK != 0 {
                    return Err(Gp::Cr4PcideWithNonZeroPcid);
                }
            }
            a.cr4 = value;
        }
        CrReg::Cr3 => {
            let v = if b.pcide() {
                value & !CR3_NOFLUSH
            } else {
                value
            };
            let bad = v & cpu.reserved_gpa_bits();
            if bad != 0 {
                return Err(Gp::Cr3AboveMaxPhyAddr { bits: bad });
            }
            // PDPTEs are always reloaded by MOV CR3 in PAE paging, even for the same value.
            if b.is_pae_paging() {
                a.pdptrs = load_pdptrs(v, mem, cpu.phys_bits())?;
            }
            a.cr3 = v;
        }
        CrReg::Efer => {
            // Bits no CPU defines fail even for host-initiated writes (efer_reserved_bits);
            // the CPUID-dependent ones only for the guest.
            let unknown = value & !EFER_KNOWN;
            if unknown != 0 {
                return Err(Gp::EferReserved { bits: unknown });
            }
            if !ctx.host_initiated {
                let bad = value & !efer_allowed(cpu);
                if bad != 0 {
                    return Err(Gp::EferReserved { bits: bad });
                }
                if b.pg() && (b.efer ^ value) & EFER_LME != 0 {
                    return Err(Gp::EferLmeChangeWithPaging);
                }
            }
            // LMA is read-only: keep the current value.
            a.efer = (value & !EFER_LMA) | (b.efer & EFER_LMA);
        }
    }
    Ok(a)
}
