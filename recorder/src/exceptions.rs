//! Exceptions and interrupts delivered to the guest, as trace events.
//!
//! The emu backend delivers them itself and reports each ([`crate::Backend::take_deliveries`]).
//! KVM delivers them inside the kernel, so for the kvm backend they are inferred, exactly, from
//! the single step that lands in a handler:
//!
//! - the handler: the new CS:RIP is the target of a present IDT gate (IVT entry in real mode);
//! - the frame the delivery pushed on the handler's stack (read over the post-step state):
//!   the saved CS is the interrupted code's, and the saved RIP is the instruction's own (a
//!   fault, or an interrupt at the boundary before an instruction that did not run) or its end
//!   (a trap: `int n`, `int3`, `into`, `int1`, a single-step #DB); below them, the error code
//!   for the vectors that push one (protected and long mode only; real mode pushes none);
//! - vectors 32 and up that are not the instruction's own `int n` are external interrupts;
//!   vector 2 at an instruction boundary is an NMI.
//!
//! Every instruction is considered, branches included (a `jmp`/`call`/`ret` can fault), and so
//! is a step whose instruction could not be fetched or decoded (#PF on the fetch, #UD). Steps
//! that plainly went where the instruction goes (its end, a direct branch's target, the same
//! `rep` instruction again) are ruled out first without reading memory.
//!
//! On some hosts (PVM) the single step that delivers also runs the handler's first instruction,
//! and the step of an `iret` also runs the instruction it returns to: both are recognised
//! ([`Inferred::also_ran`], [`returned_and_ran`]) so the step is recorded as retiring two
//! instructions, as the other backend's two steps.
//!
//! Limits: when several vectors' gates point at the same handler, the instruction decides
//! (`int n`'s immediate, #PF when CR2 changed) and otherwise the lowest vector whose frame
//! matches; in real mode a PIC interrupt mapped below 32 is taken for an exception.

use crate::backend::{Delivery, DeliveryKind};
use iced_x86::{FlowControl, Instruction, Mnemonic, OpKind};
use traces::{regs::CS, regs::SS, EventKind, ExceptionInfo, InterruptInfo, Regs};

const PF: u8 = 14;
const NMI: u8 = 2;
use mmu::bits::{CR0_PE, EFER_LMA};
/// SS descriptor D/B bit in the access rights: a 32-bit stack pointer.
const SS_B: u32 = 1 << 14;

/// The exception vectors that push an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP and
/// the #VC/#SX vectors 29 and 30), in protected and long mode.
pub fn pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The trace event of a delivery.
pub fn event(d: &Delivery) -> EventKind {
    match d.kind {
        DeliveryKind::Exception => EventKind::Exception(ExceptionInfo {
            vector: d.vector,
            error_code: d.error_code,
            cr2: d.cr2,
        }),
        DeliveryKind::External | DeliveryKind::Nmi => EventKind::ExternalInterrupt(InterruptInfo {
            vector: d.vector,
            nmi: d.kind == DeliveryKind::Nmi,
        }),
        DeliveryKind::Startup => EventKind::Startup { vector: d.vector },
    }
}

/// A delivery seen in a KVM step.
#[derive(Clone, Debug, PartialEq)]
pub struct Inferred {
    pub delivery: Delivery,
    /// The handler's first instruction when the step also ran it, with the registers it
    /// started from (the state right after the delivery).
    pub also_ran: Option<(Instruction, Regs)>,
}

/// How the CPU delivers in the current mode: gate size, and the width of each frame slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Regime {
    /// IVT entries of 4 bytes; 16-bit frame (IP, CS, FLAGS), no error code.
    Real,
    /// 8-byte gates; the frame slots are 2 bytes (286 gates) or 4 bytes (386 gates).
    Protected,
    /// 16-byte gates; 8-byte frame slots (RIP, CS, RFLAGS, RSP, SS).
    Long,
}

impl Regime {
    fn of(r: &Regs) -> Regime {
        if r.cr0 & CR0_PE == 0 {
            Regime::Real
        } else if r.efer & EFER_LMA != 0 {
            Regime::Long
        } else {
            Regime::Protected
        }
    }

    fn gate_size(self) -> u64 {
        match self {
            Regime::Real => 4,
            Regime::Protected => 8,
            Regime::Long => 16,
        }
    }
}

/// One present IDT gate (IVT entry in real mode).
struct Gate {
    vector: u8,
    /// Handler CS:RIP.
    selector: u16,
    offset: u64,
    /// Interrupt-stack-table index (64-bit gates).
    ist: u8,
    /// Frame slot width: 2, 4 or 8 bytes.
    slot: u64,
}

/// The delivery a KVM step made, if the post-step state shows one. `insn` is the instruction
/// at `before`'s RIP (`None`: not fetchable or not decodable); `mem` is memory after the step.
pub fn infer(
    insn: Option<&Instruction>,
    before: &Regs,
    after: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<Inferred> {
    let end = insn.map(|i| i.next_ip() & ip_mask(before));
    if let Some(i) = insn {
        if went_where_it_goes(i, end, before, after) {
            return None;
        }
    }
    let regime = Regime::of(after);
    let soft = insn.and_then(software_vector);
    let mut found: Vec<(Inferred, bool)> = Vec::new();
    let mut reached: Vec<(u64, Option<Option<Instruction>>)> = Vec::new();
    for g in present_gates(after, regime, cpu, mem)? {
        let same_cs = match regime {
            Regime::Real => g.selector == after.seg[CS].selector,
            // The handler runs with RPL = its CPL, not the gate selector's RPL.
            _ => g.selector & !3 == after.seg[CS].selector & !3,
        };
        if !same_cs {
            continue;
        }
        let err = regime != Regime::Real && g.vector < 32 && pushes_error_code(g.vector);
        let Some(base) = frame_base(before, after, regime, &g, err, cpu, mem) else {
            continue;
        };
        // Error-code slot first where the vector has one.
        let at = base.wrapping_add(if err { g.slot } else { 0 });
        let Some(frame) = read_slots(after, cpu, mem, at, g.slot, 2) else {
            continue;
        };
        let (saved_rip, saved_cs) = (frame[0], frame[1] as u16);
        if saved_cs != before.seg[CS].selector {
            continue;
        }
        let at_boundary = saved_rip == before.rip & ip_mask(before);
        let trap = end == Some(saved_rip);
        if !at_boundary && !trap {
            continue;
        }
        let entered = match reached.iter().find(|(o, _)| *o == g.offset) {
            Some(&(_, r)) => r,
            None => {
                let r = in_handler(g.offset, after, cpu, mem);
                reached.push((g.offset, r));
                r
            }
        };
        let Some(first) = entered else {
            continue;
        };
        let error_code = if err {
            match read_slots(after, cpu, mem, base, g.slot, 1) {
                Some(e) => Some(e[0] as u32),
                None => continue,
            }
        } else {
            None
        };
        let own_int = trap && soft == Some(g.vector);
        let kind = if own_int || g.vector < 32 && g.vector != NMI {
            DeliveryKind::Exception
        } else if g.vector == NMI && at_boundary {
            DeliveryKind::Nmi
        } else if g.vector == NMI {
            DeliveryKind::Exception
        } else {
            DeliveryKind::External
        };
        let delivery = Delivery {
            vector: g.vector,
            kind,
            error_code,
            cr2: (g.vector == PF && kind == DeliveryKind::Exception).then_some(after.cr2),
        };
        let also_ran = first.map(|i| (i, handler_entry(before, after, regime, &g, base)));
        found.push((Inferred { delivery, also_ran }, own_int));
    }
    // Several gates share the handler: the instruction's own `int n`, then #PF if CR2
    // changed, then the lowest vector.
    let pick = found
        .iter()
        .position(|(_, own)| *own)
        .or_else(|| {
            (after.cr2 != before.cr2)
                .then(|| found.iter().position(|(d, _)| d.delivery.vector == PF))
                .flatten()
        })
        .or((!found.is_empty()).then_some(0))?;
    Some(found.swap_remove(pick).0)
}

/// The step ended in the handler at `offset`: `Some(None)` on its first instruction,
/// `Some(Some(first))` (as on hosts whose single step also runs the handler's first
/// instruction) right after that instruction or at its direct branch target.
fn in_handler(
    offset: u64,
    after: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<Option<Instruction>> {
    if after.rip == offset {
        return Some(None);
    }
    let mut at = after.clone();
    at.rip = offset;
    let bytes = insn::fetch(&at, cpu, mem);
    let first = insn::decode(&bytes, insn::bitness(&at), offset)?;
    ends_at(&first, &at, after.rip).then_some(Some(first))
}

/// `rip` is where `i`, run from `at`, goes: its end or its direct branch target.
fn ends_at(i: &Instruction, at: &Regs, rip: u64) -> bool {
    let mask = ip_mask(at);
    rip == i.next_ip() & mask || is_direct(i) && rip == i.near_branch_target() & mask
}

/// The registers the handler's first instruction starts from: the general registers of the
/// interrupted code with the stack pointer at the frame (`base`, the lowest slot), and the
/// handler's CS, SS and RFLAGS after the step (the system registers a first instruction does
/// not change), with TF, NT, RF and VM cleared and (interrupt gates) IF, as the delivery does
/// (SDM Vol. 3A 6.12.1).
fn handler_entry(before: &Regs, after: &Regs, regime: Regime, g: &Gate, base: u64) -> Regs {
    const TF: u64 = 1 << 8;
    const IF: u64 = 1 << 9;
    const NT: u64 = 1 << 14;
    const RF: u64 = 1 << 16;
    const VM: u64 = 1 << 17;
    let mut entry = after.clone();
    entry.gpr = before.gpr;
    entry.gpr[4] = match regime {
        Regime::Long => base,
        _ => {
            let mask = if after.seg[SS].attrs & SS_B != 0 && regime == Regime::Protected {
                0xffff_ffff
            } else {
                0xffff
            };
            let sp = base.wrapping_sub(after.seg[SS].base) & mask;
            before.gpr[4] & !mask | sp
        }
    };
    entry.rip = g.offset;
    entry.rflags = before.rflags & !(TF | NT | RF | VM | IF) | after.rflags & IF;
    entry
}

/// The step of an `iret` that also ran the instruction it returned to (seen on PVM hosts):
/// that instruction and the registers it started from. `mem` is memory before the step (the
/// frame the `iret` popped). `None` when the step ended where the `iret` returns, or
/// somewhere not explained by one instruction run from there.
pub fn returned_and_ran(
    insn: &Instruction,
    before: &Regs,
    after: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<(Instruction, Regs)> {
    let slot = match insn.mnemonic() {
        Mnemonic::Iretq => 8,
        Mnemonic::Iretd => 4,
        Mnemonic::Iret => 2,
        _ => return None,
    };
    let regime = Regime::of(before);
    // The frame at the stack pointer: RIP, CS, RFLAGS and (64-bit, or a return to an outer
    // level) RSP, SS.
    let ss = before.seg[SS];
    let sp_mask = match regime {
        Regime::Long => u64::MAX,
        _ if ss.attrs & SS_B != 0 && regime == Regime::Protected => 0xffff_ffff,
        _ => 0xffff,
    };
    let sp = before.gpr[4] & sp_mask;
    let at = if regime == Regime::Long {
        sp
    } else {
        ss.base.wrapping_add(sp) & 0xffff_ffff
    };
    let outer = regime == Regime::Long || insn::cpl(after) > insn::cpl(before);
    let frame = read_slots(before, cpu, mem, at, slot, if outer { 5 } else { 3 })?;
    if after.rip == frame[0] || frame[1] as u16 != after.seg[CS].selector {
        return None;
    }
    let mut entry = after.clone();
    entry.gpr = before.gpr;
    entry.gpr[4] = if outer {
        frame[3]
    } else {
        before.gpr[4] & !sp_mask | sp.wrapping_add(3 * slot) & sp_mask
    };
    entry.rip = frame[0];
    entry.rflags = frame[2] & 0xffff_ffff | 2;
    let bytes = insn::fetch(&entry, cpu, mem);
    let next = insn::decode(&bytes, insn::bitness(&entry), entry.rip)?;
    ends_at(&next, &entry, after.rip).then_some((next, entry))
}

/// Where the delivery put its frame (the lowest slot, the error code's where there is one),
/// computed from the state before it: the interrupted stack, or the TSS's stack for a
/// privilege change, or (64-bit) the IST stack, aligned as the CPU aligns it.
fn frame_base(
    before: &Regs,
    after: &Regs,
    regime: Regime,
    g: &Gate,
    err: bool,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<u64> {
    let inner = insn::cpl(after) < insn::cpl(before);
    let tss = |off: u64, slot: u64| {
        read_slots(after, cpu, mem, before.tr.base.wrapping_add(off), slot, 1).map(|v| v[0])
    };
    match regime {
        Regime::Real => {
            let sp = before.gpr[4].wrapping_sub(6) & 0xffff;
            Some(before.seg[SS].base.wrapping_add(sp) & 0xffff_ffff)
        }
        Regime::Long => {
            let top = if g.ist != 0 {
                tss(0x24 + 8 * (g.ist as u64 - 1), 8)?
            } else if inner {
                tss(4 + 8 * insn::cpl(after) as u64, 8)?
            } else {
                before.gpr[4]
            };
            Some((top & !0xf).wrapping_sub(8 * (5 + err as u64)))
        }
        Regime::Protected => {
            let (ss, sp, slots) = if inner {
                // The new SS is the handler's; its stack pointer comes from the TSS.
                let cpl = insn::cpl(after) as u64;
                let tss32 = matches!(before.tr.attrs & 0xf, 0x9 | 0xb);
                let sp = if tss32 {
                    tss(4 + 8 * cpl, 4)?
                } else {
                    tss(2 + 4 * cpl, 2)?
                };
                (after.seg[SS], sp, 5)
            } else {
                (before.seg[SS], before.gpr[4], 3)
            };
            let mask = if ss.attrs & SS_B != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
            let sp = sp.wrapping_sub(g.slot * (slots + err as u64)) & mask;
            Some(ss.base.wrapping_add(sp) & 0xffff_ffff)
        }
    }
}

/// The step ended where the instruction itself goes: its end, its direct branch target, or
/// itself again (one `rep` iteration), with CS unchanged.
fn went_where_it_goes(i: &Instruction, end: Option<u64>, before: &Regs, after: &Regs) -> bool {
    if after.seg[CS].selector != before.seg[CS].selector {
        return false;
    }
    if Some(after.rip) == end && software_vector(i).is_none() {
        return true;
    }
    if after.rip == before.rip && (i.has_rep_prefix() || i.has_repne_prefix()) {
        return true;
    }
    is_direct(i) && after.rip == i.near_branch_target() & ip_mask(before)
}

/// A near branch with its target in the instruction (`jmp rel`, `jcc`, `call rel`, `loop`).
fn is_direct(i: &Instruction) -> bool {
    matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    ) && matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
    )
}

/// The vector an `int n`/`int3`/`into`/`int1` raises.
fn software_vector(i: &Instruction) -> Option<u8> {
    match i.mnemonic() {
        Mnemonic::Int => Some(i.immediate8()),
        Mnemonic::Int3 => Some(3),
        Mnemonic::Into => Some(4),
        Mnemonic::Int1 => Some(1),
        _ => None,
    }
}

fn ip_mask(r: &Regs) -> u64 {
    match insn::bitness(r) {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// `count` little-endian slots of `slot` bytes from linear `at`.
fn read_slots(
    r: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    at: u64,
    slot: u64,
    count: u64,
) -> Option<Vec<u64>> {
    let bytes = insn::read_linear(r, cpu, mem, at, (slot * count) as usize)?;
    Some(
        bytes
            .chunks_exact(slot as usize)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect(),
    )
}

/// The present gates of the IDT (the IVT in real mode), in vector order.
fn present_gates(
    r: &Regs,
    regime: Regime,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<Vec<Gate>> {
    let size = regime.gate_size();
    let entries = ((r.idtr.limit as u64 + 1) / size).min(256);
    let table = insn::read_linear(r, cpu, mem, r.idtr.base, (entries * size) as usize)?;
    let gates = table
        .chunks_exact(size as usize)
        .enumerate()
        .filter_map(|(v, g)| {
            let w = |i: usize| u16::from_le_bytes([g[i], g[i + 1]]) as u64;
            let vector = v as u8;
            if regime == Regime::Real {
                return Some(Gate {
                    vector,
                    selector: w(2) as u16,
                    offset: w(0),
                    ist: 0,
                    slot: 2,
                });
            }
            let slot = match (regime, g[5] & 0x1f) {
                (Regime::Long, 0xe | 0xf) => 8,
                (Regime::Protected, 0xe | 0xf) => 4,
                (Regime::Protected, 0x6 | 0x7) => 2,
                _ => return None, // task gates and reserved types
            };
            if g[5] & 0x80 == 0 {
                return None;
            }
            let high = if regime == Regime::Long {
                (u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as u64) << 32
            } else {
                0
            };
            let offset = w(0) | w(6) << 16 | high;
            Some(Gate {
                vector,
                selector: w(2) as u16,
                offset: if slot == 2 { offset & 0xffff } else { offset },
                ist: if regime == Regime::Long { g[4] & 7 } else { 0 },
                slot,
            })
        })
        .collect();
    Some(gates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::Segment;

    const IDT: u64 = 0x1000;
    const STACK: u64 = 0x8000;
    const CODE: u64 = 0x4000;
    const HANDLER: u64 = 0x5000;

    fn long_regs() -> Regs {
        let mut r = Regs {
            cr0: 0x11,
            efer: 0x500,
            rip: CODE,
            ..Regs::default()
        };
        r.seg[CS] = Segment {
            selector: 0x18,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xa09b,
        };
        r.idtr.base = IDT;
        r.idtr.limit = 32 * 16 - 1;
        r.gpr[4] = STACK;
        r
    }

    fn gate64(mem: &mut [u8], vector: u64, handler: u64) {
        let at = (IDT + 16 * vector) as usize;
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x18u16.to_le_bytes());
        g[5] = 0x8e;
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        mem[at..at + 16].copy_from_slice(&g);
    }

    /// Memory, before and after regs of a 64-bit delivery of `vector` at `CODE` with the frame
    /// the CPU pushes (RSP aligned down to 16, then SS, RSP, RFLAGS, CS, RIP, error code).
    fn delivered(vector: u8, saved_rip: u64, err: Option<u32>) -> (mmu::FlatMemory, Regs, Regs) {
        let mut bytes = vec![0u8; 0x10000];
        for v in 0..32 {
            gate64(&mut bytes, v, 0x6000 + 0x10 * v);
        }
        gate64(&mut bytes, vector as u64, HANDLER);
        let before = long_regs();
        let mut frame = vec![0x10, STACK, 2, 0x18, saved_rip];
        if let Some(e) = err {
            frame.push(e as u64);
        }
        let mut sp = STACK;
        for v in frame {
            sp -= 8;
            bytes[sp as usize..sp as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
        let mut after = before.clone();
        after.rip = HANDLER;
        after.gpr[4] = sp;
        (mmu::FlatMemory { base: 0, bytes }, before, after)
    }

    fn decode(bytes: &[u8]) -> Instruction {
        insn::decode(bytes, 64, CODE).unwrap()
    }

    #[test]
    fn a_faulting_cr_write_is_gp_with_its_error_code() {
        let (mem, before, after) = delivered(13, CODE, Some(0));
        let i = decode(&[0x0f, 0x22, 0xe0]); // mov cr4, rax
        let d = infer(Some(&i), &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!(
            d,
            Delivery {
                vector: 13,
                kind: DeliveryKind::Exception,
                error_code: Some(0),
                cr2: None
            }
        );
        assert_eq!(
            event(&d),
            EventKind::Exception(ExceptionInfo {
                vector: 13,
                error_code: Some(0),
                cr2: None
            })
        );
    }

    #[test]
    fn a_faulting_branch_and_an_undecodable_fetch_are_seen() {
        let (mem, before, after) = delivered(13, CODE, Some(0));
        let jmp = decode(&[0xff, 0xe0]); // jmp rax
        let d = infer(Some(&jmp), &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!((d.vector, d.error_code), (13, Some(0)));
        let (mem, before, mut after) = delivered(14, CODE, Some(0x10));
        after.cr2 = CODE;
        let d = infer(None, &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!(
            (d.vector, d.error_code, d.cr2),
            (14, Some(0x10), Some(CODE))
        );
    }

    #[test]
    fn ud_has_no_error_code_and_int_n_is_a_trap() {
        let (mem, before, after) = delivered(6, CODE, None);
        let ud2 = decode(&[0x0f, 0x0b]);
        let d = infer(Some(&ud2), &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!(
            (d.vector, d.error_code, d.kind),
            (6, None, DeliveryKind::Exception)
        );
        // `int 0x10` pushes the address after it.
        let (mem, before, after) = delivered(0x10, CODE + 2, None);
        let int = decode(&[0xcd, 0x10]);
        let d = infer(Some(&int), &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!((d.vector, d.kind), (0x10, DeliveryKind::Exception));
    }

    #[test]
    fn vectors_from_32_at_a_boundary_are_external_interrupts() {
        let (mut mem, mut before, mut after) = delivered(0, CODE, None);
        before.idtr.limit = 64 * 16 - 1;
        after.idtr.limit = 64 * 16 - 1;
        gate64(&mut mem.bytes, 0, 0x6000);
        gate64(&mut mem.bytes, 40, HANDLER);
        let nop = decode(&[0x90]);
        let d = infer(Some(&nop), &before, &after, &mmu::CpuModel::default(), &mem)
            .unwrap()
            .delivery;
        assert_eq!(
            event(&d),
            EventKind::ExternalInterrupt(InterruptInfo {
                vector: 40,
                nmi: false
            })
        );
    }

    #[test]
    fn ordinary_steps_and_returns_are_not_deliveries() {
        let (mut mem, before, _) = delivered(13, CODE, Some(0));
        // No frame on the stack, only a return address.
        mem.bytes[(STACK - 48) as usize..STACK as usize].fill(0);
        mem.bytes[STACK as usize..STACK as usize + 8].copy_from_slice(&HANDLER.to_le_bytes());
        let cpu = mmu::CpuModel::default();
        let nop = decode(&[0x90]);
        let mut after = before.clone();
        after.rip = CODE + 1;
        assert_eq!(infer(Some(&nop), &before, &after, &cpu, &mem), None);
        // A `ret` to the handler's address is not a delivery.
        let ret = decode(&[0xc3]);
        after.rip = HANDLER;
        after.gpr[4] = STACK + 8;
        assert_eq!(infer(Some(&ret), &before, &after, &cpu, &mem), None);
    }

    #[test]
    fn a_step_that_also_ran_the_handlers_first_instruction() {
        // Seen on PVM hosts: the step delivering #GP also retires `inc qword [0x9000]`.
        let (mut mem, before, mut after) = delivered(13, CODE, Some(0x28));
        let inc = [0x48, 0xff, 0x04, 0x25, 0x00, 0x90, 0x00, 0x00];
        mem.bytes[HANDLER as usize..HANDLER as usize + 8].copy_from_slice(&inc);
        after.rip = HANDLER + 8;
        let mov_ds = decode(&[0x8e, 0xd8]);
        let cpu = mmu::CpuModel::default();
        let got = infer(Some(&mov_ds), &before, &after, &cpu, &mem).unwrap();
        assert_eq!(
            (got.delivery.vector, got.delivery.error_code),
            (13, Some(0x28))
        );
        // The handler's first instruction, from the state right after the delivery: RSP at
        // the error code, RIP at the handler.
        let (first, entry) = got
            .also_ran
            .expect("the step also ran the handler's first insn");
        assert_eq!((first.ip(), first.len()), (HANDLER, 8));
        assert_eq!((entry.rip, entry.gpr[4]), (HANDLER, STACK - 48));
        // Only the delivery: nothing else ran.
        after.rip = HANDLER;
        let got = infer(Some(&mov_ds), &before, &after, &cpu, &mem).unwrap();
        assert_eq!(got.also_ran, None);
        // Anywhere else in the handler it is not recognised.
        after.rip = HANDLER + 9;
        assert_eq!(infer(Some(&mov_ds), &before, &after, &cpu, &mem), None);
    }

    #[test]
    fn an_iretq_step_that_also_ran_the_instruction_it_returned_to() {
        // The handler's `iretq` with the frame at RSP returns to CODE, where `nop` stands.
        let (mut mem, _, delivered_state) = delivered(6, CODE, None);
        mem.bytes[CODE as usize] = 0x90;
        let mut before = delivered_state.clone();
        before.rip = HANDLER;
        let iretq = insn::decode(&[0x48, 0xcf], 64, HANDLER).unwrap();
        let cpu = mmu::CpuModel::default();
        let mut after = long_regs();
        after.rflags = 2;
        // Returned only: nothing more ran.
        assert_eq!(returned_and_ran(&iretq, &before, &after, &cpu, &mem), None);
        // Returned and ran the `nop`: it started at CODE with the frame's RSP.
        after.rip = CODE + 1;
        let (next, entry) = returned_and_ran(&iretq, &before, &after, &cpu, &mem).unwrap();
        assert_eq!((next.ip(), entry.rip, entry.gpr[4]), (CODE, CODE, STACK));
        // Somewhere one instruction does not reach: not recognised.
        after.rip = CODE + 2;
        assert_eq!(returned_and_ran(&iretq, &before, &after, &cpu, &mem), None);
        // Not an iret at all.
        let nop = insn::decode(&[0x90], 64, HANDLER).unwrap();
        assert_eq!(returned_and_ran(&nop, &before, &after, &cpu, &mem), None);
    }
}
