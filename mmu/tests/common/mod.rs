#![allow(dead_code)]
//! Page-table building helpers shared by the integration tests.

use mmu::bits::*;
use mmu::{ControlRegs, FlatMemory};

pub const P: u64 = 1;
pub const W: u64 = 2;
pub const U: u64 = 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const XD: u64 = 1 << 63;

pub fn mem() -> FlatMemory {
    FlatMemory::new(0, 0x40_0000)
}

pub fn regs(cr0: u64, cr4: u64, efer: u64, cr3: u64) -> ControlRegs {
    ControlRegs {
        cr0,
        cr3,
        cr4,
        efer,
        ..Default::default()
    }
}

/// Protected mode with paging, CR0.WP=1.
pub const CR0_PAGED: u64 = CR0_PE | CR0_ET | CR0_PG | CR0_WP;
pub const CR0_PROT: u64 = CR0_PE | CR0_ET;
pub const EFER_LONG: u64 = EFER_LME | EFER_LMA;

/// 4-level: map `gva` with 4 KiB page at `gpa`, tables at 0x1000 (PML4), 0x2000, 0x3000, 0x4000
/// (indices per address, so only one mapping chain per distinct upper index is supported).
pub fn map4(m: &mut FlatMemory, gva: u64, gpa: u64, flags: [u64; 4]) {
    let idx = |l: u32| (gva >> (12 + 9 * (l - 1))) & 0x1ff;
    m.write_u64(0x1000 + 8 * idx(4), 0x2000 | flags[0]);
    m.write_u64(0x2000 + 8 * idx(3), 0x3000 | flags[1]);
    m.write_u64(0x3000 + 8 * idx(2), 0x4000 | flags[2]);
    m.write_u64(0x4000 + 8 * idx(1), gpa | flags[3]);
}

/// 32-bit: PD at 0x1000, PT at 0x2000.
pub fn map32(m: &mut FlatMemory, gva: u64, gpa: u64, pde: u32, pte: u32) {
    let di = (gva >> 22) & 0x3ff;
    let ti = (gva >> 12) & 0x3ff;
    m.write_u32(0x1000 + 4 * di, 0x2000 | pde);
    m.write_u32(0x2000 + 4 * ti, gpa as u32 | pte);
}
