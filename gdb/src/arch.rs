//! The gdbstub `Arch` of both servers: x86-64 with the system registers (`gdbstub_arch`'s
//! x86-64 arch has no control registers, and its register file could not say "unavailable").
//!
//! `$pc` / `$rip` is the *linear* instruction pointer, CS.base + RIP (truncated to 32 bits
//! outside 64-bit code), not the architectural RIP. gdb addresses memory linearly (breakpoints,
//! `x/i $pc`, the frame's pc), so in real mode and with non-flat protected-mode segments this
//! is the only value that makes `x/4i $pc` and `break *ADDR` agree with what the CPU fetches.
//! With CS.base = 0 (every paged guest, and long mode, where CS.base is ignored) the two are
//! equal. `monitor mode` prints CS:RIP as the CPU sees it. Writing `$pc` subtracts CS.base.
//!
//! The x87 and SSE registers are in the layout (gdb's amd64 support requires them) but a trace
//! does not record them: they are sent as "unavailable" and gdb prints `<unavailable>`.

use crate::target_xml::REGISTERS;
use gdbstub::arch::{Arch, RegId, Registers};
use std::num::NonZeroUsize;
use traces::regs::{CS, DS, ES, FS, GS, SS};

/// x86-64 with control registers and EFER.
pub enum X86_64System {}

impl Arch for X86_64System {
    type Usize = u64;
    type Registers = SystemRegs;
    type BreakpointKind = usize;
    type RegId = SystemRegId;

    /// Served through `TargetDescriptionXmlOverride` instead (see [`crate::target_xml`]).
    fn target_description_xml() -> Option<&'static str> {
        None
    }
}

/// gdb's general registers in its order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15.
/// The trace stores them in hardware encoding order: rax rcx rdx rbx rsp rbp rsi rdi r8..r15.
const GDB_TO_HW: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];

/// The register file as gdb sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemRegs {
    /// In gdb order (rax rbx rcx rdx rsi rdi rbp rsp r8..r15).
    pub gpr: [u64; 16],
    /// Linear instruction pointer (see the module comment).
    pub rip: u64,
    pub eflags: u32,
    /// Selectors in gdb order: cs ss ds es fs gs.
    pub sel: [u32; 6],
    pub fs_base: u64,
    pub gs_base: u64,
    pub k_gs_base: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
}

/// Segment indices of `traces::Regs::seg` in gdb's cs ss ds es fs gs order.
const GDB_SEGS: [usize; 6] = [CS, SS, DS, ES, FS, GS];

impl SystemRegs {
    pub fn from_trace(r: &traces::Regs) -> SystemRegs {
        let mut gpr = [0; 16];
        for (g, hw) in GDB_TO_HW.iter().enumerate() {
            gpr[g] = r.gpr[*hw];
        }
        SystemRegs {
            gpr,
            rip: insn::linear_ip(r),
            eflags: r.rflags as u32,
            sel: GDB_SEGS.map(|s| r.seg[s].selector as u32),
            fs_base: r.seg[FS].base,
            gs_base: r.seg[GS].base,
            k_gs_base: r.kernel_gs_base,
            cr0: r.cr0,
            cr2: r.cr2,
            cr3: r.cr3,
            cr4: r.cr4,
            cr8: r.cr8,
            efer: r.efer,
        }
    }

    /// Folds gdb's view back into a full register file. Segment selectors written from gdb
    /// change only the selector (a debugger does not load descriptors); RIP is un-linearised.
    pub fn apply_to(&self, r: &mut traces::Regs) {
        for (g, hw) in GDB_TO_HW.iter().enumerate() {
            r.gpr[*hw] = self.gpr[g];
        }
        let cs_base = r.seg[CS].base;
        let lin = insn::linear_ip(r);
        if lin != self.rip {
            r.rip = self.rip.wrapping_sub(cs_base);
            if insn::bitness(r) != 64 {
                r.rip &= 0xffff_ffff;
            }
        }
        // Keep the bits of RFLAGS above 31 (reserved, always zero, but do not invent them).
        r.rflags = (r.rflags & !0xffff_ffff) | self.eflags as u64;
        for (i, s) in GDB_SEGS.iter().enumerate() {
            r.seg[*s].selector = self.sel[i] as u16;
        }
        r.seg[FS].base = self.fs_base;
        r.seg[GS].base = self.gs_base;
        r.kernel_gs_base = self.k_gs_base;
        r.cr0 = self.cr0;
        r.cr2 = self.cr2;
        r.cr3 = self.cr3;
        r.cr4 = self.cr4;
        r.cr8 = self.cr8;
        r.efer = self.efer;
    }

    /// The bytes of register `n` (an index into [`REGISTERS`]); `None` for registers a trace
    /// does not hold (x87, SSE).
    pub fn get(&self, n: usize) -> Option<Vec<u8>> {
        let v: u64 = match n {
            0..=15 => self.gpr[n],
            16 => self.rip,
            17 => self.eflags as u64,
            18..=23 => self.sel[n - 18] as u64,
            24..=56 => return None,
            57 => self.fs_base,
            58 => self.gs_base,
            59 => self.k_gs_base,
            60 => self.cr0,
            61 => self.cr2,
            62 => self.cr3,
            63 => self.cr4,
            64 => self.cr8,
            65 => self.efer,
            _ => return None,
        };
        let size = REGISTERS.get(n)?.1;
        Some(v.to_le_bytes()[..size].to_vec())
    }

    /// Sets register `n` from little-endian bytes; false for unknown or unavailable registers
    /// and for a wrong size.
    pub fn set(&mut self, n: usize, bytes: &[u8]) -> bool {
        let Some(&(_, size)) = REGISTERS.get(n) else {
            return false;
        };
        if bytes.len() != size || size > 8 {
            return false;
        }
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(bytes);
        let v = u64::from_le_bytes(b);
        match n {
            0..=15 => self.gpr[n] = v,
            16 => self.rip = v,
            17 => self.eflags = v as u32,
            18..=23 => self.sel[n - 18] = v as u32,
            57 => self.fs_base = v,
            58 => self.gs_base = v,
            59 => self.k_gs_base = v,
            60 => self.cr0 = v,
            61 => self.cr2 = v,
            62 => self.cr3 = v,
            63 => self.cr4 = v,
            64 => self.cr8 = v,
            65 => self.efer = v,
            _ => return false,
        }
        true
    }
}

impl Registers for SystemRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for (n, &(_, size)) in REGISTERS.iter().enumerate() {
            match self.get(n) {
                Some(bytes) => bytes.into_iter().for_each(|b| write_byte(Some(b))),
                None => (0..size).for_each(|_| write_byte(None)),
            }
        }
    }

    /// A `G` packet: every register in order. Unavailable registers' bytes are skipped over
    /// (their content is not ours to keep); a short or long packet is refused whole.
    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let total: usize = REGISTERS.iter().map(|r| r.1).sum();
        if bytes.len() != total {
            return Err(());
        }
        let mut next = self.clone();
        let mut at = 0;
        for (n, &(_, size)) in REGISTERS.iter().enumerate() {
            let chunk = &bytes[at..at + size];
            if next.get(n).is_some() && !next.set(n, chunk) {
                return Err(());
            }
            at += size;
        }
        *self = next;
        Ok(())
    }
}

/// A register number as gdb's `p`/`P` packets give it: an index into [`REGISTERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemRegId(pub usize);

impl RegId for SystemRegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let &(_, size) = REGISTERS.get(id)?;
        Some((SystemRegId(id), NonZeroUsize::new(size)))
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{Regs, Segment};

    fn sample() -> Regs {
        let mut r = Regs::default();
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        r.rip = 0x7c00;
        r.cr0 = 0x8000_0011;
        r.cr4 = 0x20;
        r.cr3 = 0x2fe0;
        r.efer = 0;
        r.seg[CS] = Segment {
            selector: 8,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xc09b,
        };
        r
    }

    #[test]
    fn general_registers_map_to_gdb_order() {
        let g = SystemRegs::from_trace(&sample());
        // gdb: rax rbx rcx rdx rsi rdi rbp rsp; hardware: rax rcx rdx rbx rsp rbp rsi rdi.
        assert_eq!(
            &g.gpr[..8],
            &[0x1000, 0x1003, 0x1001, 0x1002, 0x1006, 0x1007, 0x1005, 0x1004]
        );
        assert_eq!(g.sel[0], 8);
    }

    #[test]
    fn serialize_then_deserialize_round_trips() {
        let g = SystemRegs::from_trace(&sample());
        let mut bytes = Vec::new();
        let mut unavailable = 0;
        g.gdb_serialize(|b| match b {
            Some(b) => bytes.push(b),
            None => {
                unavailable += 1;
                bytes.push(0)
            }
        });
        assert_eq!(unavailable, 8 * 10 + 8 * 4 + 16 * 16 + 4);
        let mut back = SystemRegs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, g);
        assert!(back.gdb_deserialize(&bytes[1..]).is_err());
    }

    #[test]
    fn pc_is_linear_in_real_mode_and_folds_back() {
        let mut r = Regs::default();
        r.seg[CS] = Segment {
            selector: 0x1000,
            base: 0x10000,
            limit: 0xffff,
            attrs: 0x9b,
        };
        r.rip = 0x10;
        let mut g = SystemRegs::from_trace(&r);
        assert_eq!(g.rip, 0x10010);
        g.rip = 0x10020;
        g.apply_to(&mut r);
        assert_eq!(r.rip, 0x20);
    }
}
