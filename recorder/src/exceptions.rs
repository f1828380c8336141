//! Exceptions and interrupts, inferred where observable: an instruction that is not a branch
//! ended somewhere other than its fall-through, and the new RIP is an IDT handler.

use crate::accesses::translate_range;
use iced_x86::{FlowControl, Instruction};
use traces::{ExceptionInfo, Regs};

const PF: u8 = 14;

/// The exception delivered during a step, if the registers show one.
pub fn delivered(
    insn: &Instruction,
    before: &Regs,
    after: &Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
) -> Option<ExceptionInfo> {
    if insn.flow_control() != FlowControl::Next || after.rip == insn.next_ip() {
        return None;
    }
    // A REP string instruction traps after each iteration with RIP unchanged.
    if after.rip == before.rip && (insn.has_rep_prefix() || insn.has_repne_prefix()) {
        return None;
    }
    if after.cr2 != before.cr2 {
        return Some(ExceptionInfo {
            vector: PF,
            error_code: None,
            cr2: Some(after.cr2),
        });
    }
    let vector = idt_vector_of(after, cpu, mem)?;
    Some(ExceptionInfo {
        vector,
        error_code: None,
        cr2: None,
    })
}

/// The IDT vector whose gate points at `after`'s CS:RIP (the lowest one if several do).
fn idt_vector_of(r: &Regs, cpu: &mmu::CpuModel, mem: &dyn mmu::GuestMemory) -> Option<u8> {
    let long = r.efer & (1 << 10) != 0;
    let real = r.cr0 & 1 == 0;
    let gate = if long {
        16
    } else if real {
        4
    } else {
        8
    };
    let entries = ((r.idtr.limit as u64 + 1) / gate).min(256);
    let mut ad = Vec::new();
    let ranges = translate_range(
        r,
        cpu,
        mem,
        r.idtr.base,
        entries * gate,
        mmu::Access::Read,
        &mut ad,
    )?;
    let mut table = Vec::with_capacity((entries * gate) as usize);
    for (gpa, len) in ranges {
        let mut buf = vec![0u8; len as usize];
        if !mem.read(gpa, &mut buf) {
            return None;
        }
        table.extend(buf);
    }
    let target = if real {
        r.seg[traces::regs::CS].base + r.rip
    } else {
        r.rip
    };
    table
        .chunks_exact(gate as usize)
        .position(|g| {
            let w = |i: usize| u16::from_le_bytes([g[i], g[i + 1]]) as u64;
            let handler = match gate {
                4 => (w(2) << 4) + w(0),
                8 => w(0) | w(6) << 16,
                _ => {
                    w(0) | w(6) << 16
                        | (u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as u64) << 32
                }
            };
            handler == target
        })
        .map(|v| v as u8)
}
