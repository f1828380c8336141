//! `smap-pke-toggle`: CR4.SMAP (and CR4.PKE where CPUID has it) toggled in long mode, with
//! supervisor and user-page accesses in between. v5.9-rc dropped SMAP and PKE from the CR4
//! reset mask (427890aff855, cb957adb4ea4; fixed for v5.9), so KVM kept a permission bitmask
//! computed for the old SMAP/PKE.
//!
//! Page tables: the common identity map, with U/S=1 in the PML4E and PDPTE (the identity
//! pages stay supervisor through their PDE and PTEs), plus one user page:
//! PD `0x6000` entry 1 → PT `0x8000`, PTE 0 → `0x10000` with U/S=1: linear `0x200000` is a
//! user-mode address backed by page A. Page B (`0x11000`) is a supervisor page.
//!
//! Code (64-bit, after the long-mode entry): touch the user page (SMAP off) → [SMAP: CR4.SMAP=1,
//! touch page B, RFLAGS.AC=1 (`pushfq/or/popfq`: `stac` is not emulated on the PVM host),
//! touch the user page (allowed: explicit access with AC=1), AC=0, CR4.SMAP=0, touch the user
//! page; CR4.SMAP=1 again, touch page B, CR4.SMAP=0, touch the user page] → [PKU: CR4.PKE=1
//! (PKRU is 0: every key allows everything), touch the user page and page B, CR4.PKE=0, touch
//! the user page] → exit 0.
//!
//! Events after the long-mode entry: [SMAP: Cr4 0x200020, Cr4 0x20, Cr4 0x200020, Cr4 0x20]
//! [PKU: Cr4 0x400020, Cr4 0x20].
//!
//! Findings: `v5.9-rc` stale-context at each write that sets SMAP or PKE (events 7 and 9, and
//! 11 with PKU; with PKU but no SMAP, 7).

use super::long_mode_toggles::v59rc_stale;
use super::*;
use crate::asm::{exit, CPUID_PKU, CPUID_SMAP};
use crate::expect::*;
use crate::tables::{P, RW, US};
use iced_x86::code_asm::*;

const PT_USER: u64 = 0x8000;
/// The user-mode linear address (backed by page A).
pub const USER_PAGE: u64 = 0x20_0000;
const RFLAGS_AC: u32 = mmu::bits::RFLAGS_AC as u32;

fn tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(TABLES, TABLES_LEN);
    long_identity(&mut t, US)?;
    t.set64(PD, (USER_PAGE >> 21) & 0x1ff, PT_USER | P | RW | US)?;
    t.set64(PT_USER, 0, DATA_A | P | RW | US)?;
    Ok(t)
}

/// Sets (`on`) or clears RFLAGS.AC through the stack.
fn set_ac(a: &mut CodeAssembler, on: bool) -> Result<(), BuildError> {
    a.pushfq()?;
    if on {
        a.or(dword_ptr(rsp), RFLAGS_AC)?;
    } else {
        a.and(dword_ptr(rsp), !RFLAGS_AC)?;
    }
    a.popfq()?;
    Ok(())
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    p.touch_new(a, USER_PAGE)?;
    // Under v5.9-rc every SMAP or PKE set is a stale-context finding (no reset: the kept
    // permission / PKRU bitmask lacks the bit); clears are not (the kept context had it clear).
    let mut findings = Vec::new();
    let mut stale_here = |p: &Program, present: bool| {
        if present {
            findings.push(v59rc_stale(p.next_event()));
        }
    };
    p.if_cpuid(a, CPUID_SMAP, f.smap, |p, a| {
        stale_here(p, f.smap);
        p.cr4_update(a, CR4_SMAP, 0)?;
        p.touch_new(a, DATA_B)?;
        set_ac(a, true)?;
        p.touch_new(a, USER_PAGE)?;
        set_ac(a, false)?;
        p.cr4_update(a, 0, CR4_SMAP)?;
        p.touch_new(a, USER_PAGE)?;
        stale_here(p, f.smap);
        p.cr4_update(a, CR4_SMAP, 0)?;
        p.touch_new(a, DATA_B)?;
        p.cr4_update(a, 0, CR4_SMAP)?;
        p.touch_new(a, USER_PAGE)?;
        Ok(())
    })?;
    p.if_cpuid(a, CPUID_PKU, f.pku, |p, a| {
        stale_here(p, f.pku);
        p.cr4_update(a, CR4_PKE, 0)?;
        p.touch_new(a, USER_PAGE)?;
        p.touch_new(a, DATA_B)?;
        p.cr4_update(a, 0, CR4_PKE)?;
        p.touch_new(a, USER_PAGE)?;
        Ok(())
    })?;
    exit(a, 0)?;
    let meta = Meta {
        name: "smap-pke-toggle",
        description:
            "long mode: CR4.SMAP (and PKE) toggled with user-page accesses (the v5.9-rc regression)",
        needs: vec![PagingMode::Level4],
        findings,
    };
    finish(meta, p, code, tables()?)
}
