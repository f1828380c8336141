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
    let mode = PagingMode::of_regs(regs);
    let wide_mask = ((1u64 << cpu.phys_bits().min(52)) - 1) & !0xfff;
    let mut out = Vec::new();
    // (table page, level of its entries, entry bytes)
    let mut todo: Vec<(u64, u8, u8)> = match mode {
        PagingMode::Real | PagingMode::Unpaged => return Some(out),
        PagingMode::Bits32 => vec![(regs.cr3 & 0xffff_f000, 2, 4)],
        PagingMode::Pae => regs
            .pdptrs
            .iter()
            .filter(|p| *p & 1 != 0)
            .map(|p| (p & wide_mask, 2, 8))
            .collect(),
        PagingMode::Level4 => vec![(regs.cr3 & wide_mask, 4, 8)],
        PagingMode::Level5 => vec![(regs.cr3 & wide_mask, 5, 8)],
    };
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
            let entry = match bytes {
                4 => u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]])),
                _ => u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]),
            };
            if entry & 1 == 0 {
                continue;
            }
            // PS maps a large page at the PDE (and, in IA-32e paging, the PDPTE) level; with
            // 32-bit paging only when CR4.PSE allows it.
            let large = entry & (1 << 7) != 0
                && match level {
                    2 => bytes == 8 || regs.pse(),
                    3 => bytes == 8,
                    _ => false,
                };
            if large {
                continue;
            }
            let next = if bytes == 4 {
                entry & 0xffff_f000
            } else {
                entry & wide_mask
            };
            todo.push((next, level - 1, bytes));
        }
    }
    out.sort_unstable();
    Some(out)
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
