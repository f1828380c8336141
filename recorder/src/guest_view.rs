//! The guest as the MMU model sees it: control registers, CPU model and memory, taken from a
//! backend and the trace's register file.

use crate::Backend;

/// A backend's RAM as the page walker's memory.
pub struct BackendMemory<'a>(pub &'a dyn Backend);

impl mmu::GuestMemory for BackendMemory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.0.read_phys(gpa, buf)
    }
}

pub use insn::{control_regs, cpl, cpu_model};

pub use history::to_trace::mode_of as paging_mode;

#[cfg(test)]
mod tests {
    use super::*;
    use traces::CpuidEntry;

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
