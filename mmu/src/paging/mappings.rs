//! Every mapping of the current address space, as QEMU's `info mem` / `info tlb` list them:
//! the leaves of the paging structures reachable from CR3 (or the PAE PDPTE registers), with
//! the linear range each maps, its physical frame and the rights its whole path grants.
//! Present entries are followed; reserved bits are not checked (the walker says what a walk
//! through such an entry does).

use super::tables::{entry_of, frame_of, is_large, roots, wide_mask, Rights, Root};
use crate::regs::{ControlRegs, CpuModel, GuestMemory};

/// Linear `[linear, linear + len)` maps physical `[phys, phys + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub linear: u64,
    pub phys: u64,
    pub len: u64,
    pub rights: Rights,
}

/// There are more table pages than the caller allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyTables(pub usize);

/// The leaves in ascending linear order; with `coalesce`, neighbours contiguous in both linear
/// and physical addresses with the same rights are merged. Linear addresses of 4- and 5-level
/// paging are canonical (sign-extended). At most `table_limit` table pages are read.
pub fn mappings(
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    coalesce: bool,
    table_limit: usize,
) -> Result<Vec<Mapping>, TooManyTables> {
    let roots = roots(regs, cpu);
    let mut walk = Walk {
        regs,
        mem,
        wide: wide_mask(cpu),
        top_bit: match roots.first() {
            Some(r) if r.bytes == 8 && r.level >= 4 => 12 + 9 * u32::from(r.level),
            _ => 64,
        },
        coalesce,
        tables_left: table_limit,
        out: Vec::new(),
    };
    for root in &roots {
        walk.table(root).map_err(|()| TooManyTables(table_limit))?;
    }
    Ok(walk.out)
}

/// A depth-first walk of the tables, in ascending linear order (at most 5 levels deep).
struct Walk<'a> {
    regs: &'a ControlRegs,
    mem: &'a dyn GuestMemory,
    wide: u64,
    top_bit: u32,
    coalesce: bool,
    tables_left: usize,
    out: Vec<Mapping>,
}

impl Walk<'_> {
    fn table(&mut self, t: &Root) -> Result<(), ()> {
        self.tables_left = self.tables_left.checked_sub(1).ok_or(())?;
        let mut page = [0u8; 4096];
        if !self.mem.read(t.table, &mut page) {
            return Ok(());
        }
        let per_entry_bits = if t.bytes == 4 { 10 } else { 9 };
        let shift = 12 + per_entry_bits * (u32::from(t.level) - 1);
        for (i, e) in page.chunks_exact(t.bytes as usize).enumerate() {
            let entry = entry_of(e);
            if entry & 1 == 0 {
                continue;
            }
            let linear = canonical(t.linear + ((i as u64) << shift), self.top_bit);
            let rights = t.rights.and(entry, self.regs.nxe());
            if t.level > 1 && !is_large(self.regs, t.level, t.bytes, entry) {
                self.table(&Root {
                    table: frame_of(entry, t.bytes, self.wide),
                    level: t.level - 1,
                    bytes: t.bytes,
                    linear,
                    rights,
                })?;
                continue;
            }
            let len = 1u64 << shift;
            let phys = if t.level == 1 {
                frame_of(entry, t.bytes, self.wide)
            } else if t.bytes == 4 {
                // PSE-36: bits 20:13 of a 4 MiB PDE are physical bits 39:32.
                (entry & 0xffc0_0000) | ((entry >> 13) & 0xff) << 32
            } else {
                entry & self.wide & !(len - 1)
            };
            push(
                &mut self.out,
                Mapping {
                    linear,
                    phys,
                    len,
                    rights,
                },
                self.coalesce,
            );
        }
        Ok(())
    }
}

/// Sign-extends bit `top_bit - 1` (64: the address is used as is).
fn canonical(linear: u64, top_bit: u32) -> u64 {
    if top_bit >= 64 {
        return linear;
    }
    let unused = 64 - top_bit;
    (((linear << unused) as i64) >> unused) as u64
}

fn push(out: &mut Vec<Mapping>, m: Mapping, coalesce: bool) {
    if coalesce {
        if let Some(last) = out.last_mut() {
            if last.rights == m.rights
                && last.linear.wrapping_add(last.len) == m.linear
                && last.phys.wrapping_add(last.len) == m.phys
            {
                last.len += m.len;
                return;
            }
        }
    }
    out.push(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::FlatMemory;

    fn long_mode(cr3: u64) -> ControlRegs {
        ControlRegs {
            cr0: 0x8000_0011,
            cr3,
            cr4: 0x20,
            efer: 0xd00, // LME, LMA, NXE
            ..Default::default()
        }
    }

    #[test]
    fn four_level_leaves_with_rights_coalesced_and_canonical() {
        let mut mem = FlatMemory::new(0, 0x10_0000);
        let w = |m: &mut FlatMemory, a, v| assert!(m.write_u64(a, v));
        // PML4[0] -> PDPT 0x2000 (user, writable); PML4[511] -> PDPT 0x5000 (supervisor).
        w(&mut mem, 0x1000, 0x2007);
        w(&mut mem, 0x1000 + 511 * 8, 0x5003);
        // PDPT[0] -> PD 0x3000; PD[0] -> PT 0x4000; PD[1] = 2 MiB page at 0x20_0000, NX.
        w(&mut mem, 0x2000, 0x3007);
        w(&mut mem, 0x3000, 0x4007);
        w(&mut mem, 0x3008, 0x8000_0000_0020_0087);
        // PT: pages 0 and 1 identity and writable, page 2 read-only -> 0x9000.
        w(&mut mem, 0x4000, 0x0007);
        w(&mut mem, 0x4008, 0x1007);
        w(&mut mem, 0x4010, 0x9005);
        // PDPT 0x5000 [510] = 1 GiB page at 0x4000_0000 (the kernel's -2 GiB).
        w(&mut mem, 0x5000 + 510 * 8, 0x4000_0083);
        let regs = long_mode(0x1000);
        let cpu = CpuModel::default();
        let all = mappings(&regs, &cpu, &mem, true, 100).unwrap();
        let rw_user = Rights::ALL;
        let ro_user = Rights {
            write: false,
            ..Rights::ALL
        };
        assert_eq!(
            all,
            vec![
                Mapping {
                    linear: 0,
                    phys: 0,
                    len: 0x2000,
                    rights: rw_user
                },
                Mapping {
                    linear: 0x2000,
                    phys: 0x9000,
                    len: 0x1000,
                    rights: ro_user
                },
                Mapping {
                    linear: 0x20_0000,
                    phys: 0x20_0000,
                    len: 0x20_0000,
                    rights: Rights {
                        execute: false,
                        ..Rights::ALL
                    }
                },
                Mapping {
                    linear: 0xffff_ffff_8000_0000,
                    phys: 0x4000_0000,
                    len: 1 << 30,
                    rights: Rights {
                        user: false,
                        ..Rights::ALL
                    }
                },
            ]
        );
        assert_eq!(mappings(&regs, &cpu, &mem, false, 100).unwrap().len(), 5);
        // The architectural walker agrees at the start, middle and end of every mapping.
        for m in &all {
            for off in [0, m.len / 2, m.len - 1] {
                let req = crate::AccessRequest::supervisor(crate::Access::Read);
                let t = crate::walk(&regs, &cpu, &mem, m.linear + off, &req).result;
                assert_eq!(
                    t.map(|t| t.gpa).ok(),
                    Some(m.phys + off),
                    "{m:?} + {off:#x}"
                );
            }
        }
        assert_eq!(mappings(&regs, &cpu, &mem, true, 3), Err(TooManyTables(3)));
    }

    #[test]
    fn thirty_two_bit_and_pae_and_no_paging() {
        let mut mem = FlatMemory::new(0, 0x10_0000);
        // 32-bit: PDE 1 = 4 MiB page with PSE-36 bits (phys 0x1_0040_0000), PDE 0 -> PT.
        assert!(mem.write_u32(0x1000, 0x2003));
        assert!(mem.write_u32(0x1004, 0x0040_2083));
        assert!(mem.write_u32(0x2000 + 4 * 5, 0x7001));
        let mut regs = ControlRegs {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            cr4: 0x10,
            ..Default::default()
        };
        let cpu = CpuModel::default();
        let m = mappings(&regs, &cpu, &mem, true, 100).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.linear, m.phys, m.len))
                .collect::<Vec<_>>(),
            vec![
                (0x5000, 0x7000, 0x1000),
                (0x40_0000, 0x1_0040_0000, 0x40_0000)
            ]
        );
        assert!(!m[0].rights.write && m[1].rights.write);
        // PAE: PDPTE register 1 -> PD 0x3000 whose PDE 0 is a 2 MiB page: linear 1 GiB.
        assert!(mem.write_u64(0x3000, 0x60_0083));
        regs.cr4 = 0x20;
        regs.pdptrs = [0, 0x3001, 0, 0];
        let m = mappings(&regs, &cpu, &mem, true, 100).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.linear, m.phys, m.len))
                .collect::<Vec<_>>(),
            vec![(1 << 30, 0x60_0000, 0x20_0000)]
        );
        regs.cr0 = 0x11;
        assert_eq!(mappings(&regs, &cpu, &mem, true, 100), Ok(vec![]));
    }
}
