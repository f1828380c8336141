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
/// Linear address whose translation differs between the two paging modes.
pub const MARKER_LINEAR: u64 = 0x40_0000;

fn tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(TABLES, TABLES_LEN);
    seed_tables(&mut t, PD32, DATA_A, DATA_B)?;
    Ok(t)
}

/// The seed layout above with the 32-bit page directory at `pd32` and the other tables in the
/// five pages after it; the marker maps to `data_a` (32-bit) and `data_b` (PAE). `smp-bringup`
/// gives one AP its own copy.
pub(crate) fn seed_tables(
    t: &mut Tables,
    pd32: u64,
    data_a: u64,
    data_b: u64,
) -> Result<(), BuildError> {
    let (pt32_identity, pt32_marker) = (pd32 + 0x1000, pd32 + 0x2000);
    let (pd_pae, pt_pae_identity, pt_pae_marker) = (pd32 + 0x3000, pd32 + 0x4000, pd32 + 0x5000);
    let rw = (P | RW) as u32;
    t.set32(pd32, 0, pt32_identity as u32 | rw)?;
    t.set32(pd32, 1, pt32_marker as u32 | rw)?;
    t.identity32(pt32_identity, IDENTITY_PAGES, rw)?;
    t.set32(pt32_marker, 0, data_a as u32 | rw)?;
    // PDPTE 0 (= PDE 512, low dword; PDE 513 = high dword stays 0): present only.
    t.set64(pd32 + PDPT_OFFSET, 0, pd_pae | P)?;
    t.set64(pd_pae, 0, pt_pae_identity | P | RW)?;
    t.set64(
        pd_pae,
        (MARKER_LINEAR >> 21) & 0x1ff,
        pt_pae_marker | P | RW,
    )?;
    t.identity64(pt_pae_identity, IDENTITY_PAGES, P | RW)?;
    t.set64(pt_pae_marker, 0, data_b | P | RW)
}

/// The seed sequence from unpaged protected mode over [`seed_tables`] at `pd32`: 32-bit
/// paging, marker M1 through 0x400000 lands in `data_a`, CR4.PAE set with CR0.PG=1, marker M2
/// lands in `data_b`, CR4.PAE cleared, 0x400000 reads M1 again. Returns the index of the
/// expected CR4.PAE write (the event the v5.1-rc3 stale context is about).
pub(crate) fn seed_sequence(
    p: &mut Program,
    a: &mut CodeAssembler,
    pd32: u64,
    data_a: u64,
    data_b: u64,
) -> Result<usize, BuildError> {
    p.mov_cr3(a, pd32 | PDPT_OFFSET)?;
    p.mov_cr0(a, CR0_PE | CR0_ET | CR0_PG)?;
    let m1 = p.touch_new(a, MARKER_LINEAR)?;
    p.check(a, data_a, m1)?;
    let pae_on = p.next_event();
    p.cr4_update(a, CR4_PAE, 0)?;
    let m2 = p.touch_new(a, MARKER_LINEAR)?;
    p.check(a, data_b, m2)?;
    p.check(a, data_a, m1)?;
    p.cr4_update(a, 0, CR4_PAE)?;
    p.check(a, MARKER_LINEAR, m1)?;
    Ok(pae_on)
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(false)?;
    p.real_to_protected(&mut code.a16, GDTR, STACK16, CODE32 as u32)?;
    let a = &mut code.a32;
    Program::protected_prologue(a, STACK_TOP as u32)?;
    let pae_on = seed_sequence(&mut p, a, PD32, DATA_A, DATA_B)?;
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
