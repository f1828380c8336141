//! `pae-toggle`: the seed bug (KVM 47c42e6b4192, v5.1-rc3). A 32-bit guest with paging on sets
//! CR4.PAE, so the MMU must switch from the 2-level to the PAE walker without CR0.PG changing.
//!
//! Layout (besides the common one, see [`super`]):
//!
//! | gpa | contents |
//! |---|---|
//! | `0x4000` | 32-bit page directory PD32. PDE 0 → `0x5000`, PDE 1 → `0x6000` |
//! | `0x4800` | = PDEs 512..519 of PD32 **and** the PAE PDPT: PDPTE 0 → `0x7000`, PDPTEs 1-3 zero |
//! | `0x5000` | 32-bit page table: identity map of 0..2 MiB (4-byte PTEs) |
//! | `0x6000` | 32-bit page table: PTE 0 → `0x10000` (page A) |
//! | `0x7000` | PAE page directory: PDE 0 → `0x8000`, PDE 2 → `0x9000` |
//! | `0x8000` | PAE page table: identity map of 0..2 MiB (8-byte PTEs) |
//! | `0x9000` | PAE page table: PTE 0 → `0x11000` (page B) |
//!
//! CR3 = `0x4800` throughout. With 32-bit paging `CR3[11:5]` are ignored and the page directory
//! is `0x4000`; with PAE paging the PDPT is at `CR3[31:5]` = `0x4800`. So the page CR3 points at
//! is valid both as a page directory and (at offset 0x800) as a PDPT.
//!
//! Why not the PDPT in the first 32 bytes of the page directory (CR3 = `0x4000`)? PDPTE 0 would
//! be PDE 0 (low dword) and PDE 1 (high dword). PDE 0 must map the code (the linear address of
//! the instruction after `mov cr0` equals its physical address, below 2 MiB, so PDE 0), and
//! every 32-bit walk through it sets its accessed bit, bit 5, which is reserved in a PDPTE: the
//! PDPTE load at `mov cr4` would then #GP. PDEs 512-519 (linear 2 GiB..2 GiB+32 MiB) are never
//! walked, so their bits stay as written. As PDEs they are harmless: PDE 512 = `0x7001`
//! (present, read-only, supervisor) would map linear 0x8000_0000.. through the PAE page
//! directory read as a page table, and nothing touches that range. As a PDPTE, `0x7001` has
//! bits 2:1 and 8:5 clear and a zero high dword (PDE 513), so it is valid for any MAXPHYADDR.
//!
//! The marker address is linear `0x400000`: 32-bit paging walks PDE 1 → PTE 0 → page A
//! (`0x10000`); PAE paging walks PDPTE 0 → PDE 2 → PTE 0 → page B (`0x11000`). A policy that
//! keeps the 2-level context after the CR4.PAE write translates it to page A where the
//! architecture says page B.
//!
//! Code: real mode → CR0.PE → far jump → CR3 ← 0x4800 → CR0.PG (32-bit paging) → write marker
//! M1 at 0x400000 and check it landed in page A → CR4.PAE=1 (PAE paging; the PDPTEs load
//! here) → write M2 at 0x400000, read it back, check page B has M2 and page A still M1 →
//! CR4.PAE=0 (32-bit paging again; this write flushes the TLB) → read 0x400000, expect M1 →
//! exit 0.

use super::*;
use crate::asm::exit;
use crate::expect::*;
use crate::tables::{P, RW};
use traces::FindingKind;

const PD32: u64 = 0x4000;
const PDPT_OFFSET: u64 = 0x800;
const PT32_IDENTITY: u64 = 0x5000;
const PT32_MARKER: u64 = 0x6000;
const PD_PAE: u64 = 0x7000;
const PT_PAE_IDENTITY: u64 = 0x8000;
const PT_PAE_MARKER: u64 = 0x9000;
/// Linear address whose translation differs between the two paging modes.
pub const MARKER_LINEAR: u64 = 0x40_0000;

fn tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(TABLES, TABLES_LEN);
    let rw = (P | RW) as u32;
    t.set32(PD32, 0, PT32_IDENTITY as u32 | rw)?;
    t.set32(PD32, 1, PT32_MARKER as u32 | rw)?;
    t.identity32(PT32_IDENTITY, IDENTITY_PAGES, rw)?;
    t.set32(PT32_MARKER, 0, DATA_A as u32 | rw)?;
    // PDPTE 0 (= PDE 512, low dword; PDE 513 = high dword stays 0): present only.
    t.set64(PD32 + PDPT_OFFSET, 0, PD_PAE | P)?;
    t.set64(PD_PAE, 0, PT_PAE_IDENTITY | P | RW)?;
    t.set64(
        PD_PAE,
        (MARKER_LINEAR >> 21) & 0x1ff,
        PT_PAE_MARKER | P | RW,
    )?;
    t.identity64(PT_PAE_IDENTITY, IDENTITY_PAGES, P | RW)?;
    t.set64(PT_PAE_MARKER, 0, DATA_B | P | RW)?;
    Ok(t)
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(false)?;
    p.real_to_protected(&mut code.a16, GDTR, STACK16, CODE32 as u32)?;
    let a = &mut code.a32;
    Program::protected_prologue(a, STACK_TOP as u32)?;
    p.mov_cr3(a, PD32 | PDPT_OFFSET)?;
    p.mov_cr0(a, CR0_PE | CR0_ET | CR0_PG)?;
    let m1 = p.touch_new(a, MARKER_LINEAR)?;
    p.check(a, DATA_A, m1)?;
    let pae_on = p.next_event();
    p.cr4_update(a, CR4_PAE, 0)?;
    let m2 = p.touch_new(a, MARKER_LINEAR)?;
    p.check(a, DATA_B, m2)?;
    p.check(a, DATA_A, m1)?;
    p.cr4_update(a, 0, CR4_PAE)?;
    p.check(a, MARKER_LINEAR, m1)?;
    exit(a, 0)?;
    let meta = Meta {
        name: "pae-toggle",
        description:
            "32-bit paging, then CR4.PAE set and cleared with CR0.PG=1 (the 47c42e6b4192 seed bug)",
        needs: vec![PagingMode::Bits32, PagingMode::Pae],
        // Under TDP, v5.1-rc3 resets on the PAE write but its compare key ignores CR4.PAE, so
        // the 2-level context is kept. Clearing PAE again needs no finding: the kept 2-level
        // context then matches the architecture. v5.1 (ext.cr4_pae) and later re-initialise.
        findings: vec![ExpectedFinding {
            policy: "v5.1-rc3",
            kind: FindingKind::StaleContext,
            at_event: pae_on,
        }],
    };
    finish(meta, p, code, tables()?)
}
