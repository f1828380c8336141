//! `long-mode-entry`: real mode → protected mode → CR4.PAE → EFER.LME → CR0.PG (EFER.LMA
//! becomes 1 as part of the CR0 write) → far jump to 64-bit code → touch memory → exit 0.
//!
//! Page tables: the common 4-level identity map (`long_identity`): PML4 `0x4000`,
//! PDPT `0x5000`, PD `0x6000`, PT `0x7000` (all RAM, 4 KiB pages, supervisor, writable).
//!
//! Events: Cr0 0x11, Real→Unpaged, Cr3 0x4000, Cr4 0x20, Efer 0x100 (LMA still 0: paging is
//! off), Cr0 0x80000011, Unpaged→Level4.

use super::*;
use crate::asm::exit;

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    let m = p.touch_new(a, DATA_A)?;
    p.touch_new(a, DATA_B)?;
    p.check(a, DATA_A, m)?;
    exit(a, 0)?;
    let t = identity_tables()?;
    let meta = Meta {
        name: "long-mode-entry",
        description: "real mode -> protected mode -> PAE + EFER.LME -> CR0.PG: 4-level paging",
        needs: vec![PagingMode::Level4],
        findings: Vec::new(),
    };
    finish(meta, p, code, t)
}
