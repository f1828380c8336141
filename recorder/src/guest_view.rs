//! The guest as the MMU model sees it: control registers, CPU model and memory, taken from a
//! backend and the trace's register file.

use crate::Backend;
use traces::{CpuidEntry, Regs};

/// A backend's RAM as the page walker's memory.
pub struct BackendMemory<'a>(pub &'a dyn Backend);

impl mmu::GuestMemory for BackendMemory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.0.read_phys(gpa, buf)
    }
}

pub fn control_regs(r: &Regs) -> mmu::ControlRegs {
    mmu::ControlRegs {
        cr0: r.cr0,
        cr3: r.cr3,
        cr4: r.cr4,
        efer: r.efer,
        smm: false,
        guest_mode: false,
        pdptrs: r.pdptrs,
        pkru: r.pkru,
    }
}

pub fn paging_mode(r: &Regs) -> traces::PagingMode {
    crate::to_trace::paging_mode(mmu::PagingMode::of(r.cr0, r.cr4, r.efer))
}

/// Current privilege level: CS.DPL outside real mode (SS.DPL would be the same).
pub fn cpl(r: &Regs) -> u8 {
    if r.cr0 & 1 == 0 {
        0
    } else {
        ((r.seg[traces::regs::CS].attrs >> 5) & 3) as u8
    }
}

/// The paging features the guest's CPUID offers.
pub fn cpu_model(cpuid: &[CpuidEntry]) -> mmu::CpuModel {
    let leaf = |f: u32, i: u32| cpuid.iter().find(|e| e.function == f && e.index == i);
    let bit = |v: Option<u32>, n: u32| v.is_some_and(|v| v >> n & 1 != 0);
    let l1 = leaf(1, 0);
    let l7 = leaf(7, 0);
    let ext1 = leaf(0x8000_0001, 0);
    let vendor_amd = leaf(0, 0).is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"));
    let maxphyaddr = leaf(0x8000_0008, 0).map_or(36, |e| (e.eax & 0xff) as u8);
    mmu::CpuModel {
        maxphyaddr,
        amd: vendor_amd,
        gbpages: bit(ext1.map(|e| e.edx), 26),
        la57: bit(l7.map(|e| e.ecx), 16),
        pku: bit(l7.map(|e| e.ecx), 3),
        smep: bit(l7.map(|e| e.ebx), 7),
        smap: bit(l7.map(|e| e.ebx), 20),
        nx: bit(ext1.map(|e| e.edx), 20),
        pcid: bit(l1.map(|e| e.ecx), 17),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_reads_the_feature_bits() {
        let e = |function, eax, ebx, ecx, edx| CpuidEntry {
            function,
            index: 0,
            eax,
            ebx,
            ecx,
            edx,
        };
        let cpuid = [
            e(0, 0xd, u32::from_le_bytes(*b"Genu"), 0, 0),
            e(1, 0, 0, 1 << 17, 0),
            e(7, 0, 1 << 7 | 1 << 20, 0, 0),
            e(0x8000_0001, 0, 0, 0, 1 << 20 | 1 << 26),
            e(0x8000_0008, 0x3027, 0, 0, 0),
        ];
        let m = cpu_model(&cpuid);
        assert_eq!(m.maxphyaddr, 39);
        assert!(m.pcid && m.smep && m.smap && m.nx && m.gbpages);
        assert!(!m.la57 && !m.pku && !m.amd);
        assert_eq!(cpu_model(&[]).maxphyaddr, 36);
    }
}
