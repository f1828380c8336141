//! The paging-structure pages a walk under a set of control registers can read: where the
//! processor may set accessed/dirty bits (SDM Vol. 3A §4.8). A superset is harmless to its
//! users (the emu backend diffs these pages after running many instructions at once, since
//! the engine's walker sets A/D bits without reporting a write); missing one is not. Entries
//! are followed when present; reserved bits are not checked (a walk through such an entry
//! faults, so its subtree is never read, but listing it costs only a page compare).

use super::mode::PagingMode;
use crate::regs::{ControlRegs, CpuModel, GuestMemory};

/// The guest-physical, page-aligned addresses of every paging-structure page reachable from
/// CR3 (or the PDPTE registers, in PAE paging), ascending; `None` when there are more than
/// `limit`. Empty without paging.
pub fn structure_pages(
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    limit: usize,
) -> Option<Vec<u64>> {
    let wide_mask = wide_mask(cpu);
    let mut out = Vec::new();
    // (table page, level of its entries, entry bytes)
    let mut todo: Vec<(u64, u8, u8)> = roots(regs, cpu)
        .into_iter()
        .map(|r| (r.table, r.level, r.bytes))
        .collect();
    let mut page = [0u8; 4096];
    while let Some((gpa, level, bytes)) = todo.pop() {
        if out.contains(&gpa) {
            continue;
        }
        if out.len() >= limit {
            return None;
        }
        out.push(gpa);
        if level == 1 || !mem.read(gpa, &mut page) {
            continue;
        }
        for e in page.chunks_exact(bytes as usize) {
            let entry = entry_of(e);
            if entry & 1 == 0 || is_large(regs, level, bytes, entry) {
                continue;
            }
            todo.push((frame_of(entry, bytes, wide_mask), level - 1, bytes));
        }
    }
    out.sort_unstable();
    Some(out)
}

/// A table a walk starts at: CR3's, or one per present PAE PDPTE register.
pub(crate) struct Root {
    pub table: u64,
    /// The level of the table's entries (1 = page-table entries).
    pub level: u8,
    /// Entry size: 4 (32-bit paging) or 8.
    pub bytes: u8,
    /// The linear address the table's first entry maps.
    pub linear: u64,
    /// The rights the entry pointing here grants (a PAE PDPTE has no R/W, U/S or XD bits).
    pub rights: Rights,
}

/// What a path of entries allows: writes and user access only if every entry allows them,
/// execution unless one sets XD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    pub write: bool,
    pub user: bool,
    pub execute: bool,
}

impl Rights {
    pub(crate) const ALL: Rights = Rights {
        write: true,
        user: true,
        execute: true,
    };

    /// These rights narrowed by `entry` (bit 1 R/W, bit 2 U/S, bit 63 XD when EFER.NXE).
    pub(crate) fn and(self, entry: u64, nxe: bool) -> Rights {
        Rights {
            write: self.write && entry & 2 != 0,
            user: self.user && entry & 4 != 0,
            execute: self.execute && !(nxe && entry >> 63 != 0),
        }
    }
}

/// Physical-address bits of an 8-byte entry's frame.
pub(crate) fn wide_mask(cpu: &CpuModel) -> u64 {
    ((1u64 << cpu.phys_bits().min(52)) - 1) & !0xfff
}

/// The tables walks start at in the paging mode of `regs` (none without paging).
pub(crate) fn roots(regs: &ControlRegs, cpu: &CpuModel) -> Vec<Root> {
    let wide = wide_mask(cpu);
    let root = |table, level, bytes| Root {
        table,
        level,
        bytes,
        linear: 0,
        rights: Rights::ALL,
    };
    match PagingMode::of_regs(regs) {
        PagingMode::Real | PagingMode::Unpaged => Vec::new(),
        PagingMode::Bits32 => vec![root(regs.cr3 & 0xffff_f000, 2, 4)],
        PagingMode::Pae => regs
            .pdptrs
            .iter()
            .enumerate()
            .filter(|(_, p)| *p & 1 != 0)
            .map(|(i, p)| Root {
                linear: (i as u64) << 30,
                ..root(p & wide, 2, 8)
            })
            .collect(),
        PagingMode::Level4 => vec![root(regs.cr3 & wide, 4, 8)],
        PagingMode::Level5 => vec![root(regs.cr3 & wide, 5, 8)],
    }
}

/// A paging-structure entry from its 4 or 8 little-endian bytes.
pub(crate) fn entry_of(e: &[u8]) -> u64 {
    match *e {
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e4, f, g, h] => u64::from_le_bytes([a, b, c, d, e4, f, g, h]),
        _ => 0,
    }
}

/// Whether a present entry at `level` maps a page (PS) rather than pointing to a table: at the
/// PDE level, and in the 8-byte formats at the PDPTE level (1 GiB; the PAE PDPTE registers are
/// never leaves and are not walked here); with 32-bit paging only when CR4.PSE allows it.
pub(crate) fn is_large(regs: &ControlRegs, level: u8, bytes: u8, entry: u64) -> bool {
    entry & (1 << 7) != 0
        && match level {
            2 => bytes == 8 || regs.pse(),
            3 => bytes == 8,
            _ => false,
        }
}

/// The page-aligned frame an entry points to (its table, or its 4 KiB page).
pub(crate) fn frame_of(entry: u64, bytes: u8, wide_mask: u64) -> u64 {
    if bytes == 4 {
        entry & 0xffff_f000
    } else {
        entry & wide_mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::FlatMemory;

    fn put(mem: &mut FlatMemory, gpa: u64, v: u64) {
        assert!(mem.write_u64(gpa, v));
    }

    #[test]
    fn four_level_tables_follow_present_non_leaf_entries() {
        let mut mem = FlatMemory::new(0, 0x10_0000);
        // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; a 2 MiB leaf in the PD and
        // a 1 GiB leaf in the PDPT lead nowhere; a non-present PML4E neither.
        put(&mut mem, 0x1000, 0x2003);
        put(&mut mem, 0x1008, 0x7002); // not present
        put(&mut mem, 0x2000, 0x3003);
        put(&mut mem, 0x2008, 0x4000_0083); // 1 GiB page
        put(&mut mem, 0x3000, 0x4003);
        put(&mut mem, 0x3008, 0x20_0083); // 2 MiB page
        let regs = ControlRegs {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        };
        let cpu = CpuModel::default();
        let pages = structure_pages(&regs, &cpu, &mem, 16);
        assert_eq!(pages, Some(vec![0x1000, 0x2000, 0x3000, 0x4000]));
        assert_eq!(structure_pages(&regs, &cpu, &mem, 3), None);
    }

    #[test]
    fn thirty_two_bit_large_pages_need_pse() {
        let mut mem = FlatMemory::new(0, 0x10_0000);
        assert!(mem.write_u32(0x1000, 0x5083));
        let mut regs = ControlRegs {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            ..Default::default()
        };
        let cpu = CpuModel::default();
        assert_eq!(
            structure_pages(&regs, &cpu, &mem, 16),
            Some(vec![0x1000, 0x5000])
        );
        regs.cr4 = 0x10; // PSE
        assert_eq!(structure_pages(&regs, &cpu, &mem, 16), Some(vec![0x1000]));
        regs.cr0 = 0x11;
        assert_eq!(structure_pages(&regs, &cpu, &mem, 16), Some(vec![]));
    }
}
