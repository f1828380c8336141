//! The entry trampoline: a few instructions, assembled with iced-x86, that bring Unicorn's
//! CPU from the state it opens in (64-bit code, flat zero segments, paging off) down to the
//! guest's entry mode with the entry segment caches.
//!
//! Why a trampoline: Unicorn's register API sets only selectors, so a segment's base, limit
//! and access rights must be loaded by the CPU itself, from a descriptor. QEMU then also
//! derives its hidden flags (code size, stack size, CPL) exactly as for the guest's own loads.
//!
//! The trampoline lives in a scratch region mapped outside guest RAM for the duration of the
//! run and unmapped afterwards, so guest memory at step 0 is exactly the `GuestSpec`'s.
//! Paging, EFER and the remaining control-register bits are applied by the host after the
//! last trampoline instruction (a far transfer to the entry CS:RIP) has retired, like a VMM's
//! KVM_SET_SREGS. Whatever the trampoline cannot express (a selector in the LDT, two segments
//! sharing a selector with different caches, a real-mode base other than selector<<4) is set
//! afterwards by [`crate::engine::EmuBackend::set_regs`], which the caller reports.

use crate::regs::descriptor_for;
use iced_x86::code_asm::*;
use traces::{Regs, Segment};

/// Scratch region layout (offsets from its base).
pub const SCRATCH_SIZE: u64 = 0x2_0000;
const CODE16_OFF: u64 = 0x800;
const GDTR_OFF: u64 = 0xf00;
/// Where the protected- and long-mode paths land: their far transfer loads the entry CS but
/// goes to this `ud2` in the scratch region, not to the entry RIP, because paging is not on
/// yet and the entry RIP (a kernel's high address) need not be a physical address; the host
/// sets RIP with the rest of the entry state.
const LANDING_OFF: u64 = 0xe00;
const GDT_OFF: u64 = 0x1000;
/// Temporary GDT slots for the real-mode path (data segments, then 16-bit code).
const REAL_DATA_SLOT: u16 = 1;
const REAL_CODE_SLOT: u16 = 7;

/// The entry mode family the trampoline targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    Real,
    Protected,
    Long,
}

impl EntryMode {
    pub fn of(r: &Regs) -> EntryMode {
        if r.efer & (1 << 10) != 0 {
            EntryMode::Long
        } else if r.cr0 & 1 != 0 {
            EntryMode::Protected
        } else {
            EntryMode::Real
        }
    }
}

/// Bytes to place in the scratch region before running, and where to start.
pub struct Trampoline {
    pub mode: EntryMode,
    /// (offset in scratch, bytes).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// RIP to start at (the scratch base: CS base is 0 when the trampoline starts).
    pub start: u64,
    /// Upper bound on instructions it executes (a safety net for the step loop).
    pub max_instructions: usize,
    /// RIP once the last instruction has retired (with the entry CS loaded).
    pub end_rip: u64,
}

/// Data segments in the order the trampoline loads them: SS last but one so that a stack is
/// never needed, FS/GS whose 64-bit bases the host sets afterwards.
const DATA_SEGS: [usize; 5] = [
    traces::regs::ES,
    traces::regs::DS,
    traces::regs::FS,
    traces::regs::GS,
    traces::regs::SS,
];

fn seg_reg(n: usize) -> AsmRegisterSegment {
    match n {
        0 => es,
        1 => cs,
        2 => ss,
        3 => ds,
        4 => fs,
        _ => gs,
    }
}

fn loadable(s: &Segment) -> bool {
    // Null, unusable or LDT selectors are left to the host fix-up.
    s.selector & 0xfffc != 0
        && s.attrs & 0x1_0000 == 0
        && s.attrs & 0x80 != 0
        && s.selector & 4 == 0
}

fn e(err: IcedError) -> String {
    format!("mmurr-emu: assembling the entry trampoline failed: {err}")
}

/// Builds the trampoline for `entry`, with the scratch region at `base` (below 4 GiB).
pub fn build(entry: &Regs, base: u64) -> Result<Trampoline, String> {
    let mode = EntryMode::of(entry);
    let mut gdt = vec![0u8; 0x1_0000];
    let mut put = |slot: u16, d: u64| {
        let o = slot as usize * 8;
        gdt[o..o + 8].copy_from_slice(&d.to_le_bytes());
    };
    let gdt_base = base + GDT_OFF;
    let mut gdtr = Vec::new();
    gdtr.extend_from_slice(&0xffffu16.to_le_bytes());
    gdtr.extend_from_slice(&gdt_base.to_le_bytes());

    let mut writes = Vec::new();
    let mut end_rip = entry.rip;
    match mode {
        EntryMode::Long | EntryMode::Protected => {
            let bits = if mode == EntryMode::Long { 64 } else { 32 };
            let mut a = CodeAssembler::new(bits).map_err(e)?;
            if bits == 64 {
                a.mov(rax, base + GDTR_OFF).map_err(e)?;
                a.lgdt(ptr(rax)).map_err(e)?;
            } else {
                a.mov(eax, (base + GDTR_OFF) as u32).map_err(e)?;
                a.lgdt(ptr(eax)).map_err(e)?;
            }
            let mut used: Vec<(u16, u64)> = Vec::new();
            for &n in &DATA_SEGS {
                let s = &entry.seg[n];
                if !loadable(s) {
                    continue;
                }
                let Some(d) = descriptor_for(s) else { continue };
                let slot = s.selector >> 3;
                if used.iter().any(|&(sl, dd)| sl == slot && dd != d) {
                    continue;
                }
                used.push((slot, d));
                put(slot, d);
                a.mov(ax, s.selector as u32).map_err(e)?;
                a.mov(seg_reg(n), ax).map_err(e)?;
            }
            let c = &entry.seg[traces::regs::CS];
            let d = descriptor_for(c).filter(|_| loadable(c)).ok_or_else(|| {
                format!("mmurr-emu: entry CS {c:x?} cannot be loaded from a descriptor")
            })?;
            let slot = c.selector >> 3;
            if used.iter().any(|&(sl, dd)| sl == slot && dd != d) {
                return Err(format!(
                    "mmurr-emu: entry CS selector {:#x} is shared with a data segment of different attributes",
                    c.selector
                ));
            }
            put(slot, d);
            end_rip = landing(c, base, bits).unwrap_or(entry.rip);
            if bits == 64 {
                a.mov(rax, c.selector as u64).map_err(e)?;
                a.push(rax).map_err(e)?;
                a.mov(rax, end_rip).map_err(e)?;
                a.push(rax).map_err(e)?;
                // retfq: REX.W far return (iced's assembler has no 64-bit far-return mnemonic).
                a.db(&[0x48, 0xcb]).map_err(e)?;
            } else {
                // jmp far ptr16:32
                let mut far = vec![0xea];
                far.extend_from_slice(&(end_rip as u32).to_le_bytes());
                far.extend_from_slice(&c.selector.to_le_bytes());
                a.db(&far).map_err(e)?;
            }
            writes.push((0, a.assemble(base).map_err(e)?));
            // ud2: nothing runs there, but the engine may translate the block.
            writes.push((LANDING_OFF, vec![0x0f, 0x0b]));
        }
        EntryMode::Real => {
            // Part 1 (32-bit protected mode): load each data segment's limit and access rights
            // from a temporary descriptor, then enter 16-bit protected mode with CS limit and
            // rights of the entry CS (base = scratch, so the next instructions are reachable).
            let mut a = CodeAssembler::new(32).map_err(e)?;
            a.mov(eax, (base + GDTR_OFF) as u32).map_err(e)?;
            a.lgdt(ptr(eax)).map_err(e)?;
            for (k, &n) in DATA_SEGS.iter().enumerate() {
                let s = &entry.seg[n];
                let tmp = Segment {
                    selector: 0,
                    base: s.base & 0xffff_ffff,
                    limit: s.limit,
                    attrs: s.attrs | 0x80,
                };
                let Some(d) = descriptor_for(&tmp) else {
                    continue;
                };
                let slot = REAL_DATA_SLOT + k as u16;
                put(slot, d);
                a.mov(ax, (slot << 3) as u32).map_err(e)?;
                a.mov(seg_reg(n), ax).map_err(e)?;
            }
            let c = &entry.seg[traces::regs::CS];
            let code16 = Segment {
                selector: 0,
                base,
                limit: c.limit.max(0xffff),
                attrs: (c.attrs | 0x80) & 0xffff,
            };
            let d = descriptor_for(&code16).ok_or_else(|| {
                format!("mmurr-emu: entry CS {c:x?} cannot be expressed as a descriptor")
            })?;
            put(REAL_CODE_SLOT, d);
            let mut far = vec![0xea];
            far.extend_from_slice(&(CODE16_OFF as u32).to_le_bytes());
            far.extend_from_slice(&(REAL_CODE_SLOT << 3).to_le_bytes());
            a.db(&far).map_err(e)?;
            let part1 = a.assemble(base).map_err(e)?;
            if part1.len() as u64 > CODE16_OFF {
                return Err("mmurr-emu: trampoline part 1 too long".into());
            }
            // Part 2 (16-bit): clear CR0.PE, then set each selector in real mode (QEMU updates
            // selector and base = selector << 4, keeping the limit and rights just loaded),
            // then far-jump to the entry CS:IP.
            let mut b = CodeAssembler::new(16).map_err(e)?;
            b.mov(eax, cr0).map_err(e)?;
            b.and(eax, !1u32 as i32).map_err(e)?;
            b.mov(cr0, eax).map_err(e)?;
            for &n in &DATA_SEGS {
                b.mov(ax, entry.seg[n].selector as u32).map_err(e)?;
                b.mov(seg_reg(n), ax).map_err(e)?;
            }
            // jmp far ptr16:32 with an operand-size prefix (IP may exceed 16 bits).
            let mut far = vec![0x66, 0xea];
            far.extend_from_slice(&(entry.rip as u32).to_le_bytes());
            far.extend_from_slice(&c.selector.to_le_bytes());
            b.db(&far).map_err(e)?;
            let part2 = b.assemble(CODE16_OFF).map_err(e)?;
            writes.push((0, part1));
            writes.push((CODE16_OFF, part2));
        }
    }
    writes.push((GDTR_OFF, gdtr));
    writes.push((GDT_OFF, gdt));
    Ok(Trampoline {
        mode,
        writes,
        start: base,
        max_instructions: 32,
        end_rip,
    })
}

/// The landing pad's offset in the code segment `code` (flat or not), if `code` reaches it: 64-bit code ignores
/// the base and limit; otherwise the offset must lie within the limit.
fn landing(code: &Segment, base: u64, bits: u32) -> Option<u64> {
    let linear = base + LANDING_OFF;
    if bits == 64 {
        return Some(linear);
    }
    let offset = linear.wrapping_sub(code.base) & 0xffff_ffff;
    (offset <= code.limit as u64).then_some(offset)
}
