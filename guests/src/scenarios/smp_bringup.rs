//! `smp-bringup`: the BSP starts the application processors with INIT-SIPI-SIPI, and each AP
//! climbs from real mode on its own, with its own page tables; AP 2 takes the seed bug's path
//! (32-bit paging, then CR4.PAE toggled with CR0.PG=1), so the stale context of v5.1-rc3 is on
//! that AP's MMU only. Record it with `--cpus 4` (emu backend).
//!
//! The BSP learns the number of vCPUs from fw_cfg (FW_CFG_NB_CPUS, as SeaBIOS does) and starts
//! APs 1..min(N, 4)-1, one after the other, then waits until each has set its done flag, and
//! only then goes to long mode itself and exits 0. With one vCPU it starts none.
//!
//! Layout (besides the common one, see [`super`]):
//!
//! | gpa | contents |
//! |---|---|
//! | `0x4000`.. | the BSP's 4-level identity map ([`super::long_identity`]) |
//! | `0x30000` | AP real-mode code: the startup IPI's vector is 0x30 (CS:IP = 3000:0000) |
//! | `0xf000` | AP 32-bit code (below 64 KiB for the real-mode far jump): reads its APIC ID from the LAPIC and picks its path |
//! | `0x32000` | AP 64-bit code: sets its done flag and parks (`cli; hlt`) |
//! | `0x33000` | done flags, one dword per APIC ID |
//! | `0x35000`.. | AP stacks (top of AP k at `0x34000 + k * 0x1000`) |
//! | `0x40000`, `0x43000` | APs 1 and 3: PML4, PDPT, PD (one 2 MiB page identity-mapping RAM) |
//! | `0x50000`..`0x55fff` | AP 2: the seed tables of `pae-toggle` ([`super::pae_toggle::seed_tables`]) |
//! | `0x56000`, `0x57000` | AP 2's marker pages (32-bit and PAE interpretation) |

use super::pae_toggle::{seed_sequence, seed_tables};
use super::*;
use crate::asm::{exit, SEL_DATA};
use crate::expect::*;
use crate::tables::{P, RW};
use crate::ApExpectation;
use iced_x86::code_asm::*;
use traces::FindingKind;

const AP16: u64 = 0x30000;
/// The startup IPI's vector: the AP starts at `vector << 12`.
const SIPI_VECTOR: u32 = (AP16 >> 12) as u32;
/// Below 64 KiB: the real-mode far jump into it has a 16-bit offset.
const AP32: u64 = 0xf000;
const AP64: u64 = 0x32000;
const DONE: u64 = 0x33000;
const AP_STACKS: u64 = 0x34000;
const AP_LONG_TABLES: u64 = 0x40000;
const AP_LONG_TABLES_LEN: usize = 0x9000;
const SEED_PD32: u64 = 0x50000;
const SEED_TABLES_LEN: usize = 0x6000;
const SEED_DATA_A: u64 = 0x56000;
const SEED_DATA_B: u64 = 0x57000;
/// The APIC ID of the AP that takes the seed bug's path.
pub const SEED_AP: u32 = 2;
/// The most vCPUs the scenario starts (BSP and APs 1..=3).
pub const MAX_CPUS: u32 = 4;

const LAPIC_ID: u64 = 0xfee0_0020;
const LAPIC_SVR: u64 = 0xfee0_00f0;
const LAPIC_ICR_LO: u64 = 0xfee0_0300;
const LAPIC_ICR_HI: u64 = 0xfee0_0310;
/// ICR: INIT, level assert.
const ICR_INIT: u32 = 0x4500;
/// ICR: startup, level assert, with the vector.
const ICR_STARTUP: u32 = 0x4600 | SIPI_VECTOR;
const FW_CFG_SELECTOR: u32 = 0x510;
const FW_CFG_DATA: u32 = 0x511;
const FW_CFG_NB_CPUS: u32 = 5;
const PS: u64 = 1 << 7;

/// AP `k`'s own 4-level tables (k = 1 or 3): PML4, PDPT, PD in three pages.
fn ap_pml4(k: u32) -> u64 {
    AP_LONG_TABLES + u64::from(k / 2) * 0x3000
}

fn ap_long_tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(AP_LONG_TABLES, AP_LONG_TABLES_LEN);
    for k in [1, 3] {
        let pml4 = ap_pml4(k);
        t.set64(pml4, 0, (pml4 + 0x1000) | P | RW)?;
        t.set64(pml4 + 0x1000, 0, (pml4 + 0x2000) | P | RW)?;
        t.set64(pml4 + 0x2000, 0, P | RW | PS)?;
    }
    Ok(t)
}

/// `cli; hlt; jmp` back: the vCPU stops for good (nothing sends it an NMI or INIT).
fn park(a: &mut CodeAssembler) -> Result<(), BuildError> {
    let mut here = a.create_label();
    a.set_label(&mut here)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(here)?;
    Ok(())
}

/// The BSP: protected mode, the APs started and waited for, long mode, exit 0.
fn bsp(p: &mut Program, code: &mut Code) -> Result<(), BuildError> {
    p.real_to_protected(&mut code.a16, GDTR, STACK16, CODE32 as u32)?;
    let a = &mut code.a32;
    Program::protected_prologue(a, STACK_TOP as u32)?;
    // The APIC software-enabled, as firmware does before it sends IPIs.
    a.mov(dword_ptr(LAPIC_SVR), 0x1ffu32)?;
    // ecx = the number of vCPUs (fw_cfg), at most MAX_CPUS.
    a.mov(dx, FW_CFG_SELECTOR)?;
    a.mov(ax, FW_CFG_NB_CPUS)?;
    a.out(dx, ax)?;
    a.mov(dx, FW_CFG_DATA)?;
    a.in_(al, dx)?;
    a.movzx(ecx, al)?;
    let mut capped = a.create_label();
    a.cmp(ecx, MAX_CPUS)?;
    a.jbe(capped)?;
    a.mov(ecx, MAX_CPUS)?;
    a.set_label(&mut capped)?;
    // INIT, SIPI, SIPI to each AP in turn (the second SIPI finds it running: ignored).
    let (mut next, mut started) = (a.create_label(), a.create_label());
    a.mov(esi, 1u32)?;
    a.set_label(&mut next)?;
    a.cmp(esi, ecx)?;
    a.jae(started)?;
    a.mov(eax, esi)?;
    a.shl(eax, 24)?;
    for icr in [ICR_INIT, ICR_STARTUP, ICR_STARTUP] {
        a.mov(dword_ptr(LAPIC_ICR_HI), eax)?;
        a.mov(dword_ptr(LAPIC_ICR_LO), icr)?;
    }
    a.inc(esi)?;
    a.jmp(next)?;
    a.set_label(&mut started)?;
    // Wait until every started AP has set its done flag.
    let (mut wait, mut all_done) = (a.create_label(), a.create_label());
    a.mov(esi, 1u32)?;
    a.set_label(&mut wait)?;
    a.cmp(esi, ecx)?;
    a.jae(all_done)?;
    a.pause()?;
    a.cmp(dword_ptr(esi * 4 + DONE as i32), 1u32)?;
    a.jne(wait)?;
    a.inc(esi)?;
    a.jmp(wait)?;
    a.set_label(&mut all_done)?;
    p.protected_to_long(a, PML4, CODE64 as u32)?;
    let a = code.a64()?;
    Program::long_prologue(a, STACK_TOP)?;
    exit(a, 0)
}

/// The APs' code: one real-mode entry for all, then a path per APIC ID. Returns each AP's
/// expectations (index k - 1 for AP k).
fn aps(f: &CpuFeatures, img: &mut Image) -> Result<Vec<ApExpectation>, BuildError> {
    let mut progs: Vec<Program> = (1..MAX_CPUS).map(|_| Program::new(*f)).collect();
    // Real mode: the same instructions (and CR0 write) for every AP.
    let mut a16 = CodeAssembler::new(16)?;
    progs[0].real_to_protected(&mut a16, GDTR, STACK16, AP32 as u32)?;
    for p in &mut progs[1..] {
        p.model.cr0(CR0_PE | CR0_ET).map_err(BuildError::Model)?;
    }
    // IP 0 is CS base AP16: branches and the far jump are position-independent or absolute.
    let bytes = a16.assemble(0)?;
    img.add("AP real-mode code", AP16, bytes)?;

    let mut a = CodeAssembler::new(32)?;
    a.mov(ax, SEL_DATA as u32)?;
    for s in [ds, es, fs, gs, ss] {
        a.mov(s, ax)?;
    }
    a.mov(ebx, dword_ptr(LAPIC_ID))?;
    a.shr(ebx, 24)?;
    let mut labels: Vec<CodeLabel> = (1..MAX_CPUS).map(|_| a.create_label()).collect();
    for (k, l) in (1..MAX_CPUS).zip(&labels) {
        a.cmp(ebx, k)?;
        a.je(*l)?;
    }
    park(&mut a)?;
    let mut findings = vec![Vec::new(); labels.len()];
    for (k, l) in (1..MAX_CPUS).zip(labels.iter_mut()) {
        let p = &mut progs[k as usize - 1];
        a.set_label(l)?;
        a.mov(esp, (AP_STACKS + u64::from(k) * 0x1000) as u32)?;
        if k == SEED_AP {
            let pae_on = seed_sequence(p, &mut a, SEED_PD32, SEED_DATA_A, SEED_DATA_B)?;
            findings[k as usize - 1].push(ExpectedFinding {
                policy: "v5.1-rc3",
                kind: FindingKind::StaleContext,
                at_event: pae_on,
            });
            a.mov(dword_ptr(DONE + u64::from(k) * 4), 1u32)?;
            park(&mut a)?;
        } else {
            p.protected_to_long(&mut a, ap_pml4(k), AP64 as u32)?;
        }
    }
    img.add("AP protected-mode code", AP32, assemble(a, AP32, 0x1000)?)?;

    let mut a = CodeAssembler::new(64)?;
    a.mov(ax, SEL_DATA as u32)?;
    for s in [ds, es, ss] {
        a.mov(s, ax)?;
    }
    a.mov(ebx, ebx)?; // the APIC ID, zero-extended
    a.mov(dword_ptr(rbx * 4 + DONE as i32), 1u32)?;
    park(&mut a)?;
    img.add("AP 64-bit code", AP64, assemble(a, AP64, 0x1000)?)?;

    Ok(progs
        .into_iter()
        .zip(findings)
        .map(|(p, expected_findings)| ApExpectation {
            expected: p.model.events,
            expected_findings,
        })
        .collect())
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    bsp(&mut p, &mut code)?;
    let mut img = Image::new(RAM_SIZE);
    let aps = aps(f, &mut img)?;
    img.add(
        "AP page tables",
        AP_LONG_TABLES,
        ap_long_tables()?.into_bytes(),
    )?;
    let mut seed = Tables::new(SEED_PD32, SEED_TABLES_LEN);
    seed_tables(&mut seed, SEED_PD32, SEED_DATA_A, SEED_DATA_B)?;
    img.add("AP 2 seed tables", SEED_PD32, seed.into_bytes())?;
    let meta = Meta {
        name: "smp-bringup",
        description: "the BSP starts up to 3 APs with INIT-SIPI-SIPI; each climbs to long mode \
                      with its own tables, AP 2 toggles CR4.PAE under 32-bit paging (--cpus 4)",
        needs: vec![PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4],
        findings: Vec::new(),
    };
    let mut s = finish_with(meta, p, code, identity_tables()?, img)?;
    s.aps = aps;
    Ok(s)
}
