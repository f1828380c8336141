//! `cr3-switch`: two address spaces in long mode; CR3 loads between them, a reload of the
//! same value, and (when CPUID has PCID) loads with PCIDs and the no-flush bit 63.
//!
//! Both spaces identity-map all RAM through the shared page table `0x7000`, and map linear
//! `0x200000` (PD index 1) differently:
//!
//! | space | PML4 | PDPT | PD | PT for `0x200000` | `0x200000` → |
//! |---|---|---|---|---|---|
//! | A | `0x4000` | `0x5000` | `0x6000` | `0xa000` | `0x10000` |
//! | B | `0xb000` | `0xc000` | `0xd000` | `0xe000` | `0x11000` |
//!
//! Code (64-bit, after the long-mode entry with CR3 = A): write MA at 0x200000 → CR3 ← B,
//! write MB at 0x200000, check page B has MB and page A still MA → CR3 ← A, read MA → CR3 ← A
//! again (same value: a write all the same) → read MA → CR3 ← B, read MB. With PCID:
//! CR4.PCIDE=1 (CR3 = B with PCID 0) → CR3 ← A|1, B|2, A|1|bit63, B|2|bit63 (reading the
//! marker each time) → CR3 ← B (PCID 0) → CR4.PCIDE=0. Exit 0.
//!
//! Events after the long-mode entry: Cr3 0xb000, Cr3 0x4000, Cr3 0x4000, Cr3 0xb000;
//! [PCID: Cr4 0x20020, Cr3 0x4001, Cr3 0xb002, Cr3 0x4001, Cr3 0xb002 (bit 63 is not
//! stored), Cr3 0xb000, Cr4 0x20].

use super::*;
use crate::asm::{exit, CPUID_PCID};
use crate::expect::*;
use crate::tables::{P, RW};

const PT_A: u64 = 0xa000;
const PML4_B: u64 = 0xb000;
const PDPT_B: u64 = 0xc000;
const PD_B: u64 = 0xd000;
const PT_B: u64 = 0xe000;
/// Linear address mapped differently in the two spaces.
pub const SWITCHED: u64 = 0x20_0000;

fn tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(TABLES, TABLES_LEN);
    long_identity(&mut t, 0)?;
    let idx = (SWITCHED >> 21) & 0x1ff;
    t.set64(PD, idx, PT_A | P | RW)?;
    t.set64(PT_A, 0, DATA_A | P | RW)?;
    t.set64(PML4_B, 0, PDPT_B | P | RW)?;
    t.set64(PDPT_B, 0, PD_B | P | RW)?;
    t.set64(PD_B, 0, PT_IDENTITY | P | RW)?;
    t.set64(PD_B, idx, PT_B | P | RW)?;
    t.set64(PT_B, 0, DATA_B | P | RW)?;
    Ok(t)
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    let space_a = PML4;
    let space_b = PML4_B;
    let ma = p.touch_new(a, SWITCHED)?;
    p.mov_cr3(a, space_b)?;
    let mb = p.touch_new(a, SWITCHED)?;
    p.check(a, DATA_B, mb)?;
    p.check(a, DATA_A, ma)?;
    p.mov_cr3(a, space_a)?;
    p.check(a, SWITCHED, ma)?;
    p.mov_cr3(a, space_a)?;
    p.check(a, SWITCHED, ma)?;
    p.mov_cr3(a, space_b)?;
    p.check(a, SWITCHED, mb)?;

    p.if_cpuid(a, CPUID_PCID, f.pcid, |p, a| {
        p.cr4_update(a, CR4_PCIDE, 0)?;
        p.mov_cr3(a, space_a | 1)?;
        p.check(a, SWITCHED, ma)?;
        p.mov_cr3(a, space_b | 2)?;
        p.check(a, SWITCHED, mb)?;
        p.mov_cr3(a, space_a | 1 | CR3_NOFLUSH)?;
        p.check(a, SWITCHED, ma)?;
        p.mov_cr3(a, space_b | 2 | CR3_NOFLUSH)?;
        p.check(a, SWITCHED, mb)?;
        p.mov_cr3(a, space_b)?;
        p.check(a, SWITCHED, mb)?;
        p.cr4_update(a, 0, CR4_PCIDE)?;
        Ok(())
    })?;
    exit(a, 0)?;

    let meta = Meta {
        name: "cr3-switch",
        description: "long mode: CR3 loads between two address spaces, a same-value reload, PCID/no-flush loads",
        needs: vec![PagingMode::Level4],
        // CR3 loads exercise the root cache (hits and misses), not role recomputation: no
        // policy in the catalogue keeps a stale context here.
        findings: Vec::new(),
    };
    finish(meta, p, code, tables()?)
}
