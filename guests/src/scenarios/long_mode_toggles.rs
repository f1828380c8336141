//! `long-mode-toggles`: in long mode, each role-relevant bit set and cleared with memory
//! touched in between: CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NXE, CR4.PGE, CR4.PKE.
//!
//! SMEP, SMAP and PKE are toggled only when CPUID (checked by the guest at run time) has them;
//! NX and PGE, which every long-mode CPU has, are required (exit status 2 without them).
//! All mapped pages are supervisor, writable and executable, so none of the toggles changes
//! whether an access faults: they change the MMU context, not the outcome.
//!
//! Page tables: the common 4-level identity map (`long_identity`).
//!
//! Events after the long-mode entry (see `long-mode-entry`): Cr0 0x80010011, Cr0 0x80000011;
//! [SMEP: Cr4 0x100020, Cr4 0x20]; [SMAP: Cr4 0x200020, Cr4 0x20]; Efer 0xd00 (LMA kept),
//! Efer 0x500; Cr4 0xa0, Cr4 0x20; [PKU: Cr4 0x400020, Cr4 0x20].
//!
//! Findings: `v5.9-rc` stale-context at the write that sets SMAP (event 11 with SMEP and SMAP)
//! and at the one that sets PKE.

use super::*;
use crate::asm::{exit, CPUID_NX, CPUID_PGE, CPUID_PKU, CPUID_SMAP, CPUID_SMEP};
use crate::expect::*;
use traces::FindingKind;

/// The v5.9-rc regression's finding at the write with index `at_event`.
pub(crate) fn v59rc_stale(at_event: usize) -> ExpectedFinding {
    ExpectedFinding {
        policy: "v5.9-rc",
        kind: FindingKind::StaleContext,
        at_event,
    }
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    p.touch_new(a, DATA_A)?;

    let cr0 = p.model.state.cr0;
    p.mov_cr0(a, cr0 | CR0_WP)?;
    p.touch_new(a, DATA_A)?;
    p.mov_cr0(a, cr0)?;
    p.touch_new(a, DATA_A)?;

    // v5.9-rc dropped CR4.SMAP and CR4.PKE from the reset mask: setting either keeps a
    // context without it (stale permission / PKRU bitmask). Clearing it again needs no
    // finding, as the kept context was built with the bit clear.
    let mut findings = Vec::new();
    for (bit, present, cpuid) in [
        (CR4_SMEP, f.smep, CPUID_SMEP),
        (CR4_SMAP, f.smap, CPUID_SMAP),
    ] {
        p.if_cpuid(a, cpuid, present, |p, a| {
            if bit == CR4_SMAP && present {
                findings.push(v59rc_stale(p.next_event()));
            }
            p.cr4_update(a, bit, 0)?;
            p.touch_new(a, DATA_A)?;
            p.cr4_update(a, 0, bit)?;
            p.touch_new(a, DATA_A)?;
            Ok(())
        })?;
    }

    p.require_cpuid(a, CPUID_NX)?;
    let efer = p.model.state.efer;
    p.wrmsr_efer(a, efer | EFER_NXE)?;
    p.touch_new(a, DATA_A)?;
    p.wrmsr_efer(a, efer)?;
    p.touch_new(a, DATA_A)?;

    p.require_cpuid(a, CPUID_PGE)?;
    p.cr4_update(a, CR4_PGE, 0)?;
    p.touch_new(a, DATA_A)?;
    p.cr4_update(a, 0, CR4_PGE)?;
    p.touch_new(a, DATA_A)?;

    p.if_cpuid(a, CPUID_PKU, f.pku, |p, a| {
        if f.pku {
            findings.push(v59rc_stale(p.next_event()));
        }
        p.cr4_update(a, CR4_PKE, 0)?;
        p.touch_new(a, DATA_A)?;
        p.cr4_update(a, 0, CR4_PKE)?;
        p.touch_new(a, DATA_A)?;
        Ok(())
    })?;
    exit(a, 0)?;

    let t = identity_tables()?;
    let meta = Meta {
        name: "long-mode-toggles",
        description:
            "long mode: CR0.WP, CR4.SMEP/SMAP, EFER.NXE, CR4.PGE (and PKE) set and cleared",
        needs: vec![PagingMode::Level4],
        findings,
    };
    finish(meta, p, code, t)
}
