//! `exceptions`: in long mode, a guest with an IDT takes #GP, #UD and #PF with error codes and
//! resumes after each: faulting control-register writes (CR4.LA57 set in IA-32e mode, a CR4
//! reserved bit, an EFER reserved bit by `wrmsr`, CR0.PG cleared in 64-bit mode), a data
//! segment load of a selector beyond the GDT limit (#GP with the selector as error code), a
//! `jmp` to a non-canonical address (the branch itself faults), `ud2`, a read of a not-present
//! page, a write to a read-only page with CR0.WP=1, and a `call` into a not-present page (the
//! fetch at the target faults, with the I/D bit since EFER.NXE=1).
//!
//! (A CR4 bit above 31 is not used as the reserved bit: this host's PVM KVM ignores bits 63:32
//! of `mov cr4` instead of raising #GP.)
//!
//! Handlers (64-bit interrupt gates, selector 0x18) for #UD, #GP and #PF start with
//! `inc qword [count]` (one counter per vector), then check what the CPU pushed against what
//! the code stored before the fault (vector, error code, saved RIP, CR2 for #PF), replace the
//! saved RIP with the resume address, drop the error code and return with `iretq`. Every other
//! vector of 0..31 goes to a handler that exits with status 0x11. At the end the guest checks
//! the counters (6 #GP, 1 #UD, 3 #PF) and exits with 0.
//!
//! Memory: IDT at `0x12000` (32 gates), handler mailbox and counters on page B (`0x11000`),
//! page `0x13000` mapped read-only, linear `0x200000` not present (PD entry 1 is empty).
//!
//! Events after the long-mode entry: Cr0 0x80010011 (WP), Efer 0xd00 (NXE, LMA kept); then per
//! fault: [CrFaulted Cr4 0x1020, #GP(0)], [CrFaulted Cr4 0x8020, #GP(0)], [CrFaulted Efer
//! 0xd02, #GP(0)], [CrFaulted Cr0 0x10011, #GP(0)], #GP(0x28), #GP(0), #UD, #PF(0, 0x200000),
//! #PF(3, 0x13000), #PF(0x10, 0x200000).

use super::*;
use crate::asm::{exit, MSR_EFER, SEL_CODE64};
use crate::expect::*;
use crate::tables::P;
use iced_x86::code_asm::*;
use traces::ControlReg;

const IDT: u64 = 0x12000;
/// Gates for the 32 exception vectors.
const IDT_VECTORS: u64 = 32;
/// Page B holds the counters (8 bytes per vector) and the mailbox the handlers check.
const COUNTS: u64 = DATA_B;
const EXP_VECTOR: u64 = DATA_B + 0x100;
const EXP_ERROR: u64 = DATA_B + 0x108;
const EXP_RIP: u64 = DATA_B + 0x110;
const EXP_CR2: u64 = DATA_B + 0x118;
const RESUME: u64 = DATA_B + 0x120;
const IDTR: u64 = DATA_B + 0x130;
/// A page mapped present but read-only.
const READ_ONLY: u64 = 0x13000;
/// A linear address whose PDE is not present.
const NOT_PRESENT: u64 = 0x20_0000;
/// 64-bit interrupt gate, present, DPL 0.
const GATE_TYPE: u32 = 0x8e00;
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
/// A selector whose index lies beyond the GDT's limit (four descriptors).
const BAD_SELECTOR: u32 = 0x28;

const UD: u8 = 6;
const GP: u8 = 13;
const PF: u8 = 14;
/// #PF error code bits.
const PF_PRESENT: u32 = 1;
const PF_WRITE: u32 = 2;
const PF_FETCH: u32 = 0x10;

/// Exit statuses of the handlers' checks.
mod fail {
    pub const UNEXPECTED_VECTOR: u8 = 0x11;
    pub const VECTOR: u8 = 0x12;
    pub const ERROR_CODE: u8 = 0x13;
    pub const RIP: u8 = 0x14;
    pub const CR2: u8 = 0x15;
    pub const COUNT: u8 = 0x16;
}

fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Writes the 16-byte gate at `rdi` pointing at the handler address in `rax` (clobbers rdx).
fn write_gate(a: &mut CodeAssembler) -> Result<(), BuildError> {
    a.mov(rdx, rax)?;
    a.mov(word_ptr(rdi), dx)?;
    a.mov(word_ptr(rdi + 2), SEL_CODE64 as u32)?;
    a.mov(word_ptr(rdi + 4), GATE_TYPE)?;
    a.shr(rdx, 16)?;
    a.mov(word_ptr(rdi + 6), dx)?;
    a.shr(rdx, 16)?;
    a.mov(dword_ptr(rdi + 8), edx)?;
    a.mov(dword_ptr(rdi + 12), 0)?;
    Ok(())
}

/// The handler of `vector`: count, check the frame against the mailbox, resume.
fn handler(a: &mut CodeAssembler, vector: u8, fails: &FailLabels) -> Result<(), BuildError> {
    let err = has_error_code(vector);
    a.inc(qword_ptr(COUNTS + 8 * vector as u64))?;
    a.cmp(qword_ptr(EXP_VECTOR), vector as i32)?;
    a.jne(fails.vector)?;
    if err {
        a.mov(rax, qword_ptr(rsp))?;
        a.cmp(rax, qword_ptr(EXP_ERROR))?;
        a.jne(fails.error_code)?;
    }
    if vector == PF {
        a.mov(rax, cr2)?;
        a.cmp(rax, qword_ptr(EXP_CR2))?;
        a.jne(fails.cr2)?;
    }
    let rip_slot = if err { 8 } else { 0 };
    a.mov(rax, qword_ptr(rsp + rip_slot))?;
    a.cmp(rax, qword_ptr(EXP_RIP))?;
    a.jne(fails.rip)?;
    a.mov(rax, qword_ptr(RESUME))?;
    a.mov(qword_ptr(rsp + rip_slot), rax)?;
    if err {
        a.add(rsp, 8)?;
    }
    a.iretq()?;
    Ok(())
}

struct FailLabels {
    vector: CodeLabel,
    error_code: CodeLabel,
    rip: CodeLabel,
    cr2: CodeLabel,
    count: CodeLabel,
}

/// What a handler must see for one fault.
struct Expect {
    vector: u8,
    error_code: Option<u32>,
    cr2: Option<u64>,
    /// The saved RIP (`None`: the faulting site itself).
    rip: Option<u64>,
}

impl Expect {
    fn gp(error_code: u32) -> Expect {
        Expect {
            vector: GP,
            error_code: Some(error_code),
            cr2: None,
            rip: None,
        }
    }

    fn pf(error_code: u32, address: u64) -> Expect {
        Expect {
            vector: PF,
            error_code: Some(error_code),
            cr2: Some(address),
            rip: None,
        }
    }
}

/// One fault: fills the mailbox, runs `setup` then the faulting instruction `faulting` at a
/// labelled site, and continues at the resume label.
fn fault(
    p: &mut Program,
    a: &mut CodeAssembler,
    want: Expect,
    setup: impl FnOnce(&mut CodeAssembler) -> Result<(), BuildError>,
    faulting: impl FnOnce(&mut CodeAssembler) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let mut site = a.create_label();
    let mut resume = a.create_label();
    a.mov(qword_ptr(EXP_VECTOR), want.vector as i32)?;
    a.mov(qword_ptr(EXP_ERROR), want.error_code.unwrap_or(0) as i32)?;
    a.mov(rax, want.cr2.unwrap_or(0))?;
    a.mov(qword_ptr(EXP_CR2), rax)?;
    match want.rip {
        Some(r) => a.mov(rax, r)?,
        None => a.lea(rax, ptr(site))?,
    }
    a.mov(qword_ptr(EXP_RIP), rax)?;
    a.lea(rax, ptr(resume))?;
    a.mov(qword_ptr(RESUME), rax)?;
    setup(a)?;
    a.set_label(&mut site)?;
    faulting(a)?;
    a.set_label(&mut resume)?;
    a.nop()?;
    p.model.events.push(ExpectedEvent::Exception {
        vector: want.vector,
        error_code: want.error_code,
        cr2: want.cr2,
    });
    Ok(())
}

/// A control-register write that must fault with #GP(0): `mov cr, rax`.
fn faulting_mov_cr(
    p: &mut Program,
    a: &mut CodeAssembler,
    reg: ControlReg,
    value: u64,
) -> Result<(), BuildError> {
    p.model
        .faulted_write(reg, value)
        .map_err(BuildError::Model)?;
    fault(
        p,
        a,
        Expect::gp(0),
        |a| Ok(a.mov(rax, value)?),
        |a| {
            match reg {
                ControlReg::Cr0 => a.mov(cr0, rax)?,
                ControlReg::Cr4 => a.mov(cr4, rax)?,
                other => return Err(BuildError::Model(format!("no mov to {other:?} here"))),
            }
            Ok(())
        },
    )
}

pub(crate) fn build(f: &CpuFeatures) -> Result<Scenario, BuildError> {
    let mut p = Program::new(*f);
    let mut code = Code::new(true)?;
    enter_long_mode(&mut p, &mut code)?;
    let a = code.a64()?;
    let mut start = a.create_label();
    a.jmp(start)?;

    // Handlers first (jumped over), then the fail exits they branch to.
    let mut fails = FailLabels {
        vector: a.create_label(),
        error_code: a.create_label(),
        rip: a.create_label(),
        cr2: a.create_label(),
        count: a.create_label(),
    };
    let mut handlers = Vec::new();
    for v in [UD, GP, PF] {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        handler(a, v, &fails)?;
        handlers.push((v, l));
    }
    let mut unexpected = a.create_label();
    a.set_label(&mut unexpected)?;
    exit(a, fail::UNEXPECTED_VECTOR)?;
    for (label, status) in [
        (&mut fails.vector, fail::VECTOR),
        (&mut fails.error_code, fail::ERROR_CODE),
        (&mut fails.rip, fail::RIP),
        (&mut fails.cr2, fail::CR2),
        (&mut fails.count, fail::COUNT),
    ] {
        a.set_label(label)?;
        exit(a, status)?;
    }

    // The IDT: every exception vector to `unexpected`, then the three handled ones.
    a.set_label(&mut start)?;
    let mut fill = a.create_label();
    a.lea(rax, ptr(unexpected))?;
    a.mov(rdi, IDT)?;
    a.mov(ecx, IDT_VECTORS as u32)?;
    a.set_label(&mut fill)?;
    write_gate(a)?;
    a.add(rdi, 16)?;
    a.dec(ecx)?;
    a.jnz(fill)?;
    for (v, l) in &handlers {
        a.lea(rax, ptr(*l))?;
        a.mov(rdi, IDT + 16 * *v as u64)?;
        write_gate(a)?;
    }
    a.mov(word_ptr(IDTR), (IDT_VECTORS * 16 - 1) as u32)?;
    a.mov(rax, IDT)?;
    a.mov(qword_ptr(IDTR + 2), rax)?;
    a.lidt(ptr(IDTR))?;

    // CR0.WP so that a supervisor write to a read-only page faults; EFER.NXE so that a fetch
    // fault says so in the error code.
    let cr0_now = p.model.state.cr0;
    p.mov_cr0(a, cr0_now | CR0_WP)?;
    let efer = p.model.state.efer;
    p.wrmsr_efer(a, efer | EFER_NXE)?;
    // RFLAGS.AF is undefined after the shifts of `write_gate` and engines leave it differently;
    // every fault pushes RFLAGS, so define it (`cmp` sets AF) to keep the frames equal on kvm and
    // emu. The handlers' `iretq` restores it from there.
    a.cmp(rax, rax)?;

    // Faulting control-register writes (#GP(0); the registers keep their values).
    let cr4_now = p.model.state.cr4;
    faulting_mov_cr(&mut p, a, ControlReg::Cr4, cr4_now | CR4_LA57)?;
    faulting_mov_cr(&mut p, a, ControlReg::Cr4, cr4_now | CR4_RESERVED_15)?;
    let efer_bad = p.model.state.efer | 1 << 1;
    p.model
        .faulted_write(ControlReg::Efer, efer_bad)
        .map_err(BuildError::Model)?;
    fault(
        &mut p,
        a,
        Expect::gp(0),
        |a| {
            a.mov(ecx, MSR_EFER)?;
            a.mov(eax, efer_bad as u32)?;
            a.mov(edx, (efer_bad >> 32) as u32)?;
            Ok(())
        },
        |a| Ok(a.wrmsr()?),
    )?;
    let cr0_now = p.model.state.cr0;
    faulting_mov_cr(&mut p, a, ControlReg::Cr0, cr0_now & !CR0_PG)?;

    // A data segment load of a selector beyond the GDT limit: #GP(selector).
    fault(
        &mut p,
        a,
        Expect::gp(BAD_SELECTOR),
        |a| Ok(a.mov(eax, BAD_SELECTOR)?),
        |a| Ok(a.mov(ds, ax)?),
    )?;
    // A branch to a non-canonical address faults on the branch: #GP(0).
    fault(
        &mut p,
        a,
        Expect::gp(0),
        |a| Ok(a.mov(rax, NON_CANONICAL)?),
        |a| Ok(a.jmp(rax)?),
    )?;
    let ud = Expect {
        vector: UD,
        error_code: None,
        cr2: None,
        rip: None,
    };
    fault(&mut p, a, ud, |_| Ok(()), |a| Ok(a.ud2()?))?;
    // #PF: not-present read, write to a read-only page, fetch from a not-present page.
    fault(
        &mut p,
        a,
        Expect::pf(0, NOT_PRESENT),
        |a| Ok(a.mov(rbx, NOT_PRESENT)?),
        |a| Ok(a.mov(eax, dword_ptr(rbx))?),
    )?;
    fault(
        &mut p,
        a,
        Expect::pf(PF_PRESENT | PF_WRITE, READ_ONLY),
        |a| Ok(a.mov(rbx, READ_ONLY)?),
        |a| Ok(a.mov(dword_ptr(rbx), eax)?),
    )?;
    // The call retires (return address pushed); the fetch at its target faults with the saved
    // RIP at the target. The handler resumes after the call, which drops the return address.
    fault(
        &mut p,
        a,
        Expect {
            rip: Some(NOT_PRESENT),
            ..Expect::pf(PF_FETCH, NOT_PRESENT)
        },
        |a| Ok(a.mov(rax, NOT_PRESENT)?),
        |a| Ok(a.call(rax)?),
    )?;
    a.add(rsp, 8)?;

    for (v, n) in [(GP, 6i32), (UD, 1), (PF, 3)] {
        a.cmp(qword_ptr(COUNTS + 8 * v as u64), n)?;
        a.jne(fails.count)?;
    }
    exit(a, 0)?;

    let mut t = Tables::new(TABLES, TABLES_LEN);
    long_identity(&mut t, 0)?;
    t.set64(PT_IDENTITY, READ_ONLY >> 12, READ_ONLY | P)?;
    let meta = Meta {
        name: "exceptions",
        description: "long mode with an IDT: #GP (faulting CR/EFER writes, bad selector, \
                      non-canonical jmp), #UD and #PF with error codes, each handled and resumed",
        needs: vec![PagingMode::Level4],
        findings: Vec::new(),
    };
    finish(meta, p, code, t)
}
