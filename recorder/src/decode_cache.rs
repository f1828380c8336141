//! Decoded instructions by RIP, code size and bytes, with what the decoder says about their
//! memory operands and segment-register writes: a loop runs the same few instructions, and
//! decoding each again (plus the decoder's operand info, asked twice per step) showed in the
//! step rate. A hit needs the same bytes, so code that changed is decoded afresh.

use crate::accesses;
use iced_x86::{Instruction, InstructionInfoFactory, UsedMemory};

/// Slots, indexed by RIP (direct-mapped: a colliding instruction replaces the other).
const SLOTS: usize = 256;

/// One decoded instruction and the decoder's facts about it that do not depend on registers.
pub struct Decoded {
    pub insn: Instruction,
    /// `InstructionInfo::used_memory`: the memory operands (addresses computed per step).
    pub memory: Vec<UsedMemory>,
    /// [`accesses::segment_writes`].
    pub segment_writes: u8,
}

struct Slot {
    rip: u64,
    bitness: u32,
    /// The instruction's own bytes (`insn.len()` of them).
    bytes: [u8; 15],
    decoded: Decoded,
}

pub struct DecodeCache {
    slots: Vec<Option<Slot>>,
}

impl Default for DecodeCache {
    fn default() -> Self {
        DecodeCache {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }
}

impl DecodeCache {
    /// The instruction `bytes` (as many as could be fetched, up to 15) start with, decoded in
    /// code of `bitness` at `rip`; `None` when they do not decode.
    pub fn decode(
        &mut self,
        factory: &mut InstructionInfoFactory,
        bytes: &[u8],
        bitness: u32,
        rip: u64,
    ) -> Option<&Decoded> {
        let index = (rip as usize) % SLOTS;
        let hit = self.slots[index].as_ref().is_some_and(|s| {
            let len = s.decoded.insn.len();
            s.rip == rip
                && s.bitness == bitness
                && bytes.get(..len).is_some_and(|b| b == &s.bytes[..len])
        });
        if !hit {
            let insn = crate::insn::decode(bytes, bitness, rip)?;
            let info = factory.info(&insn);
            let decoded = Decoded {
                insn,
                memory: info.used_memory().to_vec(),
                segment_writes: accesses::segment_writes(info),
            };
            let mut own = [0u8; 15];
            let len = insn.len().min(bytes.len());
            own[..len].copy_from_slice(&bytes[..len]);
            self.slots[index] = Some(Slot {
                rip,
                bitness,
                bytes: own,
                decoded,
            });
        }
        self.slots[index].as_ref().map(|s| &s.decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_needs_the_same_rip_mode_and_instruction_bytes() {
        let mut cache = DecodeCache::default();
        let mut f = InstructionInfoFactory::new();
        // mov [rdi+0x10], eax; then bytes of a following instruction that do not matter.
        let bytes = [0x89, 0x47, 0x10, 0x90, 0x90];
        let d = cache.decode(&mut f, &bytes, 64, 0x1000).unwrap();
        assert_eq!(d.insn.len(), 3);
        assert_eq!(d.memory.len(), 1);
        assert_eq!(d.segment_writes, 0);
        // The same instruction with other bytes after it: the cached one.
        let same = cache.decode(&mut f, &bytes[..3], 64, 0x1000).unwrap();
        assert_eq!(same.insn, crate::insn::decode(&bytes, 64, 0x1000).unwrap());
        // Changed code at the same RIP: decoded afresh (`mov ds, ax` writes DS).
        let d = cache.decode(&mut f, &[0x8e, 0xd8], 64, 0x1000).unwrap();
        assert_eq!(d.insn.len(), 2);
        assert_eq!(d.segment_writes, 1 << traces::regs::DS);
        assert!(d.memory.is_empty());
        // Another mode at the same RIP and bytes.
        let d16 = cache
            .decode(&mut f, &[0x89, 0x47, 0x10], 16, 0x1000)
            .unwrap();
        assert_eq!(
            d16.insn,
            crate::insn::decode(&[0x89, 0x47, 0x10], 16, 0x1000).unwrap()
        );
        // Too few bytes for the cached instruction: decoded (and here fails) afresh.
        assert!(cache.decode(&mut f, &[0x89], 16, 0x1000).is_none());
    }
}
