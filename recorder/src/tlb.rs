//! The translations the tracer's planning walked, kept while nothing a walk read has changed:
//! the same control registers, CPL and RFLAGS.AC, and no recorded write to a page holding a
//! paging-structure entry it read. The fetch and the operands of a loop walk the same pages
//! step after step; a walk (with its allocations) cost more than the KVM_RUN it plans for
//! grows with the step rate.
//!
//! Exact only while every change to guest memory passes [`Tlb::observe`]: the tracer clears
//! the cache whenever that may not hold (inferred memory, a debugger in the loop, a self-check
//! that found a missed write, a step interrupted before its writes were reported).

use crate::accesses::{self, LinearAccess};
use traces::{MemWrite, Regs};

/// At most this many translations are kept (a loop touches a handful of pages).
const ENTRIES: usize = 16;

#[derive(Default)]
pub struct Tlb {
    /// What every walk depends on besides memory.
    key: Option<(mmu::ControlRegs, u8, bool)>,
    entries: Vec<Entry>,
    /// The next entry to replace when full.
    next: usize,
    /// Guest-physical page numbers of the paging-structure entries the cached walks read.
    table_pages: Vec<u64>,
}

struct Entry {
    linear_page: u64,
    access: mmu::Access,
    gpa_page: u64,
    /// Entries whose accessed/dirty bits the access would set (still clear when walked).
    ad_entries: Vec<(u64, u8)>,
}

impl Tlb {
    pub fn clear(&mut self) {
        self.key = None;
        self.entries.clear();
        self.next = 0;
        self.table_pages.clear();
    }

    /// The recorded writes of a step: a write to a page the cached walks read ends them all.
    pub fn observe(&mut self, writes: &[MemWrite]) {
        let hit = writes.iter().any(|w| {
            let first = w.gpa >> 12;
            let last = (w.gpa + (w.data.len() as u64).max(1) - 1) >> 12;
            self.table_pages
                .iter()
                .any(|&p| (first..=last).contains(&p))
        });
        if hit {
            self.clear();
        }
    }

    /// [`accesses::translate_range`] through the cache (paging on; else as it is).
    pub fn translate_range(
        &mut self,
        regs: &Regs,
        cpu: &mmu::CpuModel,
        mem: &dyn mmu::GuestMemory,
        a: &LinearAccess,
        ad_entries: &mut Vec<(u64, u8)>,
    ) -> Option<Vec<(u64, u64)>> {
        if regs.cr0 & (1 << 31) == 0 {
            return accesses::translate_range(
                regs, cpu, mem, a.linear, a.len, a.access, ad_entries,
            );
        }
        let key = (
            crate::guest_view::control_regs(regs),
            crate::guest_view::cpl(regs),
            regs.rflags & (1 << 18) != 0,
        );
        if self.key != Some(key) {
            self.clear();
            self.key = Some(key);
        }
        accesses::split(a.linear, a.len, |at| {
            self.translate(regs, cpu, mem, at, a.access, ad_entries)
        })
    }

    fn translate(
        &mut self,
        regs: &Regs,
        cpu: &mmu::CpuModel,
        mem: &dyn mmu::GuestMemory,
        at: u64,
        access: mmu::Access,
        ad_entries: &mut Vec<(u64, u8)>,
    ) -> Option<u64> {
        let linear_page = at >> 12;
        let offset = at & 0xfff;
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.linear_page == linear_page && e.access == access)
        {
            ad_entries.extend_from_slice(&e.ad_entries);
            return Some(e.gpa_page | offset);
        }
        let walk = accesses::walk(regs, cpu, mem, at, access);
        let ad: Vec<(u64, u8)> = walk.ad_updates.iter().map(|u| (u.gpa, u.bytes)).collect();
        ad_entries.extend_from_slice(&ad);
        // A fault is walked again next time (it ends the run or enters a handler anyway).
        let gpa = walk.result.ok()?.gpa;
        for l in walk.levels.iter().filter(|l| !l.from_register) {
            let page = l.entry_gpa >> 12;
            if !self.table_pages.contains(&page) {
                self.table_pages.push(page);
            }
        }
        let entry = Entry {
            linear_page,
            access,
            gpa_page: gpa & !0xfff,
            ad_entries: ad,
        };
        if self.entries.len() < ENTRIES {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % ENTRIES;
        }
        Some(gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4-level paging of the first 2 MiB with one large page: PML4 at 0x1000, PDPT at 0x2000,
    /// PD at 0x3000 (accessed bits already set, so walks set none).
    fn setup() -> (Regs, mmu::FlatMemory) {
        let mut bytes = vec![0u8; 0x10000];
        let mut put = |at: usize, v: u64| bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(0x1000, 0x2000 | 0x23);
        put(0x2000, 0x3000 | 0x23);
        put(0x3000, 0x83 | 0x60);
        let regs = crate::cr_watch::tests::long_mode();
        (regs, mmu::FlatMemory { base: 0, bytes })
    }

    fn access(linear: u64) -> LinearAccess {
        LinearAccess {
            linear,
            len: 8,
            access: mmu::Access::Write,
        }
    }

    #[test]
    fn cached_translations_match_fresh_walks_until_a_table_changes() {
        let (regs, mut mem) = setup();
        let cpu = mmu::CpuModel::default();
        let mut tlb = Tlb::default();
        let mut ad = Vec::new();
        let fresh = |mem: &mmu::FlatMemory, linear| {
            accesses::translate_range(
                &regs,
                &cpu,
                mem,
                linear,
                8,
                mmu::Access::Write,
                &mut Vec::new(),
            )
        };
        for linear in [0x8000, 0x8ffc, 0x8010] {
            let got = tlb.translate_range(&regs, &cpu, &mem, &access(linear), &mut ad);
            assert_eq!(got, fresh(&mem, linear));
        }
        assert_eq!(tlb.entries.len(), 2, "pages 8 and 9");
        assert!(ad.is_empty());
        // The PD entry now maps elsewhere: a recorded write to its page ends the cache.
        mem.bytes[0x3000..0x3008].copy_from_slice(&(0x20_0000u64 | 0xe3).to_le_bytes());
        tlb.observe(&[MemWrite {
            gpa: 0x4000,
            data: vec![1],
        }]);
        assert_eq!(tlb.entries.len(), 2, "a write elsewhere keeps it");
        tlb.observe(&[MemWrite {
            gpa: 0x3000,
            data: vec![0xe3],
        }]);
        let got = tlb.translate_range(&regs, &cpu, &mem, &access(0x8000), &mut ad);
        assert_eq!(got, Some(vec![(0x20_8000, 8)]));
        assert_eq!(got, fresh(&mem, 0x8000));
        // Other control registers: walked afresh.
        let mut other = regs.clone();
        other.cr3 = 0x5000;
        assert_eq!(
            tlb.translate_range(&other, &cpu, &mem, &access(0x8000), &mut ad),
            None
        );
    }
}
