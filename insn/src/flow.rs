//! Where an instruction ends, and the instructions a single step retired beyond the one it
//! was asked to run (one KVM single step on a PVM host sometimes retires `endbr64` and the
//! following `push` together).

use crate::{bitness, decode, fetch};
use iced_x86::{FlowControl, Instruction};
use mmu::{CpuModel, GuestMemory};
use traces::Regs;

/// How far ahead a step that retired several instructions is looked for.
const MAX_BEYOND: usize = 3;

/// RIP is this wide in code of `bits` bits.
fn ip_mask(bits: u32) -> u64 {
    match bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// RIP after `i` completes without branching, in the code size of `before` (IP wraps at 16
/// bits, EIP at 32).
pub fn fall_through(i: &Instruction, before: &Regs) -> u64 {
    i.next_ip() & ip_mask(bitness(before))
}

/// Where `i` leaves RIP when it completes without an exception, as far as the instruction
/// alone says: its fall-through and, for a direct branch, its target.
fn ends(i: &Instruction, mask: u64) -> [Option<u64>; 2] {
    let target = match i.flow_control() {
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
            if i.is_jmp_short_or_near() || i.is_jcc_short_or_near() || i.is_call_near() =>
        {
            Some(i.near_branch_target() & mask)
        }
        _ => None,
    };
    let falls_through = !matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Call
            | FlowControl::IndirectCall
            | FlowControl::Return
    );
    [falls_through.then(|| i.next_ip() & mask), target]
}

/// The instructions after `first` that the step from `before` to `after_rip` also retired,
/// in order: empty when `first` itself explains `after_rip` (its fall-through, a `rep`
/// iteration) or nothing does (an exception or interrupt was delivered, a branch went where
/// its operands said). `first` must fall through (`FlowControl::Next`); the following
/// instructions are fetched from `mem` through the paging of `before`.
pub fn retired_beyond(
    first: &Instruction,
    before: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    after_rip: u64,
) -> Vec<Instruction> {
    let bits = bitness(before);
    let mask = ip_mask(bits);
    if first.flow_control() != FlowControl::Next
        || after_rip == first.next_ip() & mask
        || after_rip == before.rip
    {
        return Vec::new();
    }
    let mut regs = before.clone();
    let mut chain = Vec::new();
    let mut ip = first.next_ip() & mask;
    while chain.len() < MAX_BEYOND {
        regs.rip = ip;
        let Some(i) = decode(&fetch(&regs, cpu, mem), bits, ip) else {
            break;
        };
        chain.push(i);
        if ends(&i, mask).contains(&Some(after_rip)) {
            return chain;
        }
        if i.flow_control() != FlowControl::Next {
            break;
        }
        ip = i.next_ip() & mask;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu::FlatMemory;

    /// Unpaged 32-bit protected mode over a flat memory holding `code` at 0x1000.
    fn machine(code: &[u8]) -> (Regs, FlatMemory) {
        let mut r = Regs {
            cr0: 1,
            rip: 0x1000,
            ..Regs::default()
        };
        r.seg[traces::regs::CS].attrs = 0xc09b;
        let mut m = FlatMemory::new(0, 0x4000);
        m.bytes[0x1000..0x1000 + code.len()].copy_from_slice(code);
        (r, m)
    }

    #[test]
    fn finds_the_push_retired_with_endbr() {
        // endbr32; push ebp; mov ebp, esp; jmp 0x1000
        let code = [0xf3, 0x0f, 0x1e, 0xfb, 0x55, 0x89, 0xe5, 0xeb, 0xf7];
        let (r, m) = machine(&code);
        let cpu = CpuModel::default();
        let first = decode(&code, 32, 0x1000).unwrap();
        let names = |v: Vec<Instruction>| v.iter().map(crate::format).collect::<Vec<_>>();
        // Ended at its own fall-through: nothing beyond.
        assert!(retired_beyond(&first, &r, &cpu, &m, 0x1004).is_empty());
        assert_eq!(
            names(retired_beyond(&first, &r, &cpu, &m, 0x1005)),
            ["push ebp"]
        );
        assert_eq!(
            names(retired_beyond(&first, &r, &cpu, &m, 0x1007)),
            ["push ebp", "mov ebp,esp"]
        );
        // Through the jump to its target.
        assert_eq!(
            retired_beyond(&first, &r, &cpu, &m, 0x1000).len(),
            0,
            "RIP unchanged"
        );
        // Somewhere unexplained (a handler): nothing.
        assert!(retired_beyond(&first, &r, &cpu, &m, 0x2000).is_empty());
    }

    #[test]
    fn a_direct_jump_target_ends_the_chain() {
        // nop; jmp +0x10
        let code = [0x90, 0xeb, 0x10];
        let (r, m) = machine(&code);
        let first = decode(&code, 32, 0x1000).unwrap();
        let got = retired_beyond(&first, &r, &CpuModel::default(), &m, 0x1013);
        assert_eq!(got.len(), 1);
    }
}
