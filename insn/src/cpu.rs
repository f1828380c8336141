//! The guest CPU as the MMU model needs it, read from a CPUID table.

use mmu::CpuModel;
use traces::CpuidEntry;

/// The paging features a guest's CPUID table offers. Leaves the table lacks count as absent
/// (MAXPHYADDR then defaults to 36, as the SDM does without leaf 0x80000008).
pub fn cpu_model(cpuid: &[CpuidEntry]) -> CpuModel {
    let leaf = |f: u32, i: u32| cpuid.iter().find(|e| e.function == f && e.index == i);
    let bit = |v: Option<u32>, n: u32| v.is_some_and(|v| v >> n & 1 != 0);
    let l1 = leaf(1, 0);
    let l7 = leaf(7, 0);
    let ext1 = leaf(0x8000_0001, 0);
    // "AuthenticAMD" / "HygonGenuine": EBX spells "Auth" / "Hygo" (KVM's amd_or_hygon test).
    let amd = leaf(0, 0).is_some_and(|e| {
        e.ebx == u32::from_le_bytes(*b"Auth") || e.ebx == u32::from_le_bytes(*b"Hygo")
    });
    CpuModel {
        maxphyaddr: leaf(0x8000_0008, 0).map_or(36, |e| (e.eax & 0xff) as u8),
        amd,
        gbpages: bit(ext1.map(|e| e.edx), 26),
        la57: bit(l7.map(|e| e.ecx), 16),
        pku: bit(l7.map(|e| e.ecx), 3),
        smep: bit(l7.map(|e| e.ebx), 7),
        smap: bit(l7.map(|e| e.ebx), 20),
        nx: bit(ext1.map(|e| e.edx), 20),
        pcid: bit(l1.map(|e| e.ecx), 17),
    }
}
