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
//! Limits: when several vectors' gates point at the same handler, the instruction decides
//! (`int n`'s immediate, #PF when CR2 changed) and otherwise the lowest vector whose frame
//! matches; in real mode a PIC interrupt mapped below 32 is taken for an exception. A step in
//! which KVM also ran the handler's first instruction (seen on some hosts) is not recognised.

use crate::backend::{Delivery, DeliveryKind};
use iced_x86::{FlowControl, Instruction, Mnemonic, OpKind};
use traces::{regs::CS, regs::SS, EventKind, ExceptionInfo, InterruptInfo, Regs};

const PF: u8 = 14;
const NMI: u8 = 2;
const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
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
    }
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

/// One IDT gate that points at the handler the step landed in.
struct Gate {
    vector: u8,
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
) -> Option<Delivery> {
    let end = insn.map(|i| i.next_ip() & ip_mask(before));
    if let Some(i) = insn {
        if went_where_it_goes(i, end, before, after) {
            return None;
        }
    }
    let regime = Regime::of(after);
    let gates = gates_targeting(after, regime, cpu, mem)?;
    let frame_base = stack_linear(after, regime);
    let soft = insn.and_then(software_vector);
    let mut found: Vec<(Delivery, bool)> = Vec::new();
    for g in gates {
        let err = regime != Regime::Real && g.vector < 32 && pushes_error_code(g.vector);
        // Error-code slot first where the vector has one.
        let at = frame_base.wrapping_add(if err { g.slot } else { 0 });
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
        let error_code = if err {
            read_slots(after, cpu, mem, frame_base, g.slot, 1).map(|e| e[0] as u32)
        } else {
            None
        };
        if err && error_code.is_none() {
            continue;
        }
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
        let d = Delivery {
            vector: g.vector,
            kind,
            error_code,
            cr2: (g.vector == PF && kind == DeliveryKind::Exception).then_some(after.cr2),
        };
        found.push((d, own_int));
    }
    // Several gates share the handler: the instruction's own `int n`, then #PF if CR2
    // changed, then the lowest vector.
    found
        .iter()
        .find(|(_, own)| *own)
        .or_else(|| {
            (after.cr2 != before.cr2)
                .then(|| found.iter().find(|(d, _)| d.vector == PF))
                .flatten()
        })
        .or(found.first())
        .map(|(d, _)| *d)
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
    let direct = matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    ) && matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
    );
    direct && after.rip == i.near_branch_target() & ip_mask(before)
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

/// The linear address of the top of the handler's stack.
fn stack_linear(r: &Regs, regime: Regime) -> u64 {
    let ss = r.seg[SS];
    match regime {
        Regime::Long => r.gpr[4],
        Regime::Real => ss.base.wrapping_add(r.gpr[4] & 0xffff) & 0xffff_ffff,
        Regime::Protected => {
            let mask = if ss.attrs & SS_B != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
            ss.base.wrapping_add(r.gpr[4] & mask) & 0xffff_ffff
        }
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

/// The present gates (IVT entries in real mode) whose target is `r`'s CS:RIP, in vector order.
fn gates_targeting(
    r: &Regs,
    regime: Regime,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<Vec<Gate>> {
    let size = regime.gate_size();
    let entries = ((r.idtr.limit as u64 + 1) / size).min(256);
    let table = insn::read_linear(r, cpu, mem, r.idtr.base, (entries * size) as usize)?;
    let cs = r.seg[CS].selector;
    let gates = table
        .chunks_exact(size as usize)
        .enumerate()
        .filter_map(|(v, g)| {
            let w = |i: usize| u16::from_le_bytes([g[i], g[i + 1]]) as u64;
            let (offset, selector, slot) = match regime {
                Regime::Real => (w(0), w(2) as u16, 2),
                _ => {
                    let kind = g[5] & 0x1f;
                    let present = g[5] & 0x80 != 0;
                    let slot = match (regime, kind) {
                        (Regime::Long, 0xe | 0xf) => 8,
                        (Regime::Protected, 0xe | 0xf) => 4,
                        (Regime::Protected, 0x6 | 0x7) => 2,
                        _ => return None, // task gates and reserved types
                    };
                    if !present {
                        return None;
                    }
                    let high = if regime == Regime::Long {
                        (u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as u64) << 32
                    } else {
                        0
                    };
                    let offset = w(0) | w(6) << 16 | high;
                    let offset = if slot == 2 { offset & 0xffff } else { offset };
                    (offset, w(2) as u16, slot)
                }
            };
            let same_cs = match regime {
                Regime::Real => selector == cs,
                // The handler runs with RPL = its CPL, not the gate's selector RPL.
                _ => selector & !3 == cs & !3,
            };
            (same_cs && offset == r.rip).then_some(Gate {
                vector: v as u8,
                slot,
            })
        })
        .collect::<Vec<_>>();
    (!gates.is_empty()).then_some(gates)
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
        let d = infer(Some(&i), &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
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
        let d = infer(Some(&jmp), &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
        assert_eq!((d.vector, d.error_code), (13, Some(0)));
        let (mem, before, mut after) = delivered(14, CODE, Some(0x10));
        after.cr2 = CODE;
        let d = infer(None, &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
        assert_eq!((d.vector, d.error_code, d.cr2), (14, Some(0x10), Some(CODE)));
    }

    #[test]
    fn ud_has_no_error_code_and_int_n_is_a_trap() {
        let (mem, before, after) = delivered(6, CODE, None);
        let ud2 = decode(&[0x0f, 0x0b]);
        let d = infer(Some(&ud2), &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
        assert_eq!((d.vector, d.error_code, d.kind), (6, None, DeliveryKind::Exception));
        // `int 0x10` pushes the address after it.
        let (mem, before, after) = delivered(0x10, CODE + 2, None);
        let int = decode(&[0xcd, 0x10]);
        let d = infer(Some(&int), &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
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
        let d = infer(Some(&nop), &before, &after, &mmu::CpuModel::default(), &mem).unwrap();
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
        let (mem, before, _) = delivered(13, CODE, Some(0));
        let cpu = mmu::CpuModel::default();
        let nop = decode(&[0x90]);
        let mut after = before.clone();
        after.rip = CODE + 1;
        assert_eq!(infer(Some(&nop), &before, &after, &cpu, &mem), None);
        // A `ret` to the handler's address is not a delivery: no frame naming this RIP.
        let ret = decode(&[0xc3]);
        after.rip = HANDLER;
        after.gpr[4] = STACK + 8;
        assert_eq!(infer(Some(&ret), &before, &after, &cpu, &mem), None);
    }
}
