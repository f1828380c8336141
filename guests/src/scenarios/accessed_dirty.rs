//! `accessed-dirty`: in long mode, hundreds of pages read and written through 4-level paging so
//! the CPU sets their accessed and dirty bits; the guest clears the bits again in its page
//! table and reloads CR3, round after round. Counters are updated with `inc qword [mem]` and
//! `pop qword [mem]`. Exists to prove that a recording's memory is exact: every byte the CPU's
//! page walks write is guest memory the trace must carry, though no instruction names it.
//!
//! Page tables: the common 4-level identity map (`long_identity`); the touched pages are
//! [`FIRST_PAGE`].. ([`PAGES`] of them), mapped by the entries `PT_IDENTITY + 8 * index`.
//!
//! Each of [`ROUNDS`] rounds: for every touched page, `mov rax, [page]` (accessed), on every
//! other page `mov [page + 8], rcx` (dirty), `inc qword [COUNT]`, `push qword [page]`,
//! `pop qword [POPPED]`; check that the PTE of the first page has A and D set and the second A
//! only; clear A and D in every touched page's PTE (`and qword [pte], ~0x60`); `mov cr3`
//! (same value: flushes the TLB, so the next round's walks set the bits again). At the end
//! the counter must be `ROUNDS * PAGES`. Exit 0.
//!
//! Events after the long-mode entry (see `long-mode-entry`): Cr3 0x4000, once per round.

use super::*;
use crate::asm::exit;
use crate::expect::*;
use iced_x86::code_asm::*;

/// Pages touched per round.
pub const PAGES: u64 = 384;
/// The first touched page (guest-physical = linear).
pub const FIRST_PAGE: u64 = 0x4_0000;
pub const ROUNDS: u64 = 3;
/// `inc qword` counter: one per page and round.
pub const COUNT: u64 = DATA_A;
/// Where `pop qword [mem]` stores each page's first qword.
pub const POPPED: u64 = DATA_A + 8;
const PTE_A: u64 = 1 << 5;

/// The guest-physical addresses of the touched pages' PTEs.
pub fn pte_range() -> std::ops::Range<u64> {
    let first = PT_IDENTITY + 8 * (FIRST_PAGE >> 12);
    first..first + 8 * PAGES
}
const PTE_D: u64 = 1 << 6;

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    let first_pte = pte_range().start;
    for _ in 0..ROUNDS {
        let mut touch = a.create_label();
        let mut clean = a.create_label();
        let mut clear = a.create_label();
        a.mov(rbx, FIRST_PAGE)?;
        a.mov(rcx, PAGES)?;
        a.set_label(&mut touch)?;
        a.mov(rax, qword_ptr(rbx))?;
        a.test(cl, 1)?;
        a.jnz(clean)?;
        a.mov(qword_ptr(rbx + 8), rcx)?;
        a.set_label(&mut clean)?;
        a.mov(rdx, COUNT)?;
        a.inc(qword_ptr(rdx))?;
        a.push(qword_ptr(rbx))?;
        a.mov(rdx, POPPED)?;
        a.pop(qword_ptr(rdx))?;
        a.add(rbx, 0x1000)?;
        a.dec(rcx)?;
        a.jnz(touch)?;
        // The CPU set the bits: A and D on the first page (written), A only on the second.
        for (pte, bits) in [(first_pte, PTE_A | PTE_D), (first_pte + 8, PTE_A)] {
            a.mov(rbx, pte)?;
            a.mov(rax, qword_ptr(rbx))?;
            a.and(eax, (PTE_A | PTE_D) as i32)?;
            p.expect_eax(a, bits as u32)?;
        }
        a.mov(rbx, first_pte)?;
        a.mov(rcx, PAGES)?;
        a.set_label(&mut clear)?;
        a.and(qword_ptr(rbx), !(PTE_A | PTE_D) as i32)?;
        a.add(rbx, 8)?;
        a.dec(rcx)?;
        a.jnz(clear)?;
        p.mov_cr3(a, PML4)?;
    }
    p.check(a, COUNT, (ROUNDS * PAGES) as u32)?;
    exit(a, 0)?;

    let t = identity_tables()?;
    let meta = Meta {
        name: "accessed-dirty",
        description: "long mode: hundreds of pages whose accessed/dirty bits the CPU sets and the guest clears again, CR3 reloads, inc/pop to memory",
        needs: vec![PagingMode::Level4],
        // Same-value CR3 reloads: no role changes, no findings.
        findings: Vec::new(),
    };
    finish(meta, p, code, t)
}
