//! `unpaged-cr4`: CR4 bits toggled in protected mode with CR0.PG=0, then paging enabled.
//!
//! With paging off no CR4 paging bit changes any translation, yet KVM puts raw CR4 bits into
//! its roles (even with PG=0 in v5.1..v5.13) and resets on their changes, so these writes
//! exercise resets whose re-init has nothing to walk; the final CR0.PG write must then build a
//! context from the accumulated CR4. Paging is enabled into long mode (not 32-bit paging)
//! because the PVM KVM on the development hosts cannot run 32-bit or PAE paging; this way the
//! scenario runs on both backends and KVM can be compared with the emulator.
//!
//! Code (32-bit, PG=0; memory touched after every write): CR4 ← PSE, PSE|PAE,
//! PSE|PAE|PGE (PGE is required: exit status 2 without it); then, each only where CPUID has
//! it, SMEP, SMAP, PKE and LA57 set and cleared again; then PSE cleared, PAE cleared; CR3 ←
//! 0x4000, CR4 ← PGE|PAE, EFER.LME, CR0.PG, far jump to 64-bit code, touch, exit 0.
//!
//! Page tables: the common 4-level identity map (`long_identity`).
//!
//! Events: Cr0 0x11, Real→Unpaged, Cr4 0x10, Cr4 0x30, Cr4 0xb0, [SMEP: Cr4 0x1000b0, Cr4
//! 0xb0], [SMAP: Cr4 0x2000b0, Cr4 0xb0], [PKU: Cr4 0x4000b0, Cr4 0xb0], [LA57: Cr4 0x10b0,
//! Cr4 0xb0], Cr4 0xa0, Cr4 0x80, Cr3 0x4000, Cr4 0xa0, Efer 0x100, Cr0 0x80000011,
//! Unpaged→Level4.

use super::*;
use crate::asm::{exit, CPUID_LA57, CPUID_PGE, CPUID_PKU, CPUID_SMAP, CPUID_SMEP};
use crate::expect::*;

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    p.real_to_protected(&mut code.a16, GDTR, STACK16, CODE32 as u32)?;
    let a = &mut code.a32;
    Program::protected_prologue(a, STACK_TOP as u32)?;
    p.touch_new(a, DATA_A)?;
    p.cr4_update(a, CR4_PSE, 0)?;
    p.touch_new(a, DATA_A)?;
    p.cr4_update(a, CR4_PAE, 0)?;
    p.touch_new(a, DATA_A)?;
    p.require_cpuid(a, CPUID_PGE)?;
    p.cr4_update(a, CR4_PGE, 0)?;
    p.touch_new(a, DATA_A)?;
    for (bit, present, cpuid) in [
        (CR4_SMEP, f.smep, CPUID_SMEP),
        (CR4_SMAP, f.smap, CPUID_SMAP),
        (CR4_PKE, f.pku, CPUID_PKU),
        (CR4_LA57, f.la57, CPUID_LA57),
    ] {
        p.if_cpuid(a, cpuid, present, |p, a| {
            p.cr4_update(a, bit, 0)?;
            p.touch_new(a, DATA_A)?;
            p.cr4_update(a, 0, bit)?;
            p.touch_new(a, DATA_A)?;
            Ok(())
        })?;
    }
    p.cr4_update(a, 0, CR4_PSE)?;
    p.touch_new(a, DATA_A)?;
    p.cr4_update(a, 0, CR4_PAE)?;
    p.touch_new(a, DATA_A)?;
    p.protected_to_long(a, PML4, CODE64 as u32)?;

    let a64 = code.a64()?;
    Program::long_prologue(a64, STACK_TOP)?;
    p.touch_new(a64, DATA_A)?;
    exit(a64, 0)?;

    let t = identity_tables()?;
    let meta = Meta {
        name: "unpaged-cr4",
        description:
            "CR4 PSE/PAE/PGE/SMEP/SMAP/PKE/LA57 toggled with CR0.PG=0, then long mode with PGE set",
        needs: vec![PagingMode::Level4],
        // Writes with PG=0 leave nothing to mistranslate, and the final CR0.PG write resets
        // under every policy: no finding is expected.
        findings: Vec::new(),
    };
    finish(meta, p, code, t)
}
