//! The guest CPU a trace ran on, as the MMU model needs it: read from the CPUID table and
//! MAXPHYADDR the trace header carries.

use mmu::CpuModel;
use traces::{CpuidEntry, GuestSpec};

fn leaf(cpuid: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    cpuid
        .iter()
        .find(|e| e.function == function && e.index == index)
}

/// The `mmu` CPU model of a recorded guest. A trace without a CPUID table (hand-made, or
/// from an engine that reports none) gets the model's default CPU with the trace's MAXPHYADDR.
pub fn cpu_model(guest: &GuestSpec) -> CpuModel {
    let cpuid = &guest.cpuid;
    let mut cpu = CpuModel::default_x86_64();
    if !cpuid.is_empty() {
        let bit = |f: u32, i: u32, reg: fn(&CpuidEntry) -> u32, b: u32| {
            leaf(cpuid, f, i).is_some_and(|e| reg(e) >> b & 1 == 1)
        };
        cpu.amd = leaf(cpuid, 0, 0).is_some_and(|e| {
            // "AuthenticAMD" / "HygonGenuine": EBX spells "Auth" / "Hygo".
            e.ebx == u32::from_le_bytes(*b"Auth") || e.ebx == u32::from_le_bytes(*b"Hygo")
        });
        cpu.pcid = bit(1, 0, |e| e.ecx, 17);
        cpu.smep = bit(7, 0, |e| e.ebx, 7);
        cpu.smap = bit(7, 0, |e| e.ebx, 20);
        cpu.pku = bit(7, 0, |e| e.ecx, 3);
        cpu.la57 = bit(7, 0, |e| e.ecx, 16);
        cpu.nx = bit(0x8000_0001, 0, |e| e.edx, 20);
        cpu.gbpages = bit(0x8000_0001, 0, |e| e.edx, 26);
        if let Some(e) = leaf(cpuid, 0x8000_0008, 0) {
            cpu.maxphyaddr = (e.eax & 0xff) as u8;
        }
    }
    if guest.maxphyaddr != 0 {
        cpu.maxphyaddr = guest.maxphyaddr;
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    #[test]
    fn reads_features_from_cpuid() {
        let guest = GuestSpec {
            cpuid: vec![
                entry(0, 0, 0x10, u32::from_le_bytes(*b"Auth"), 0, 0),
                entry(1, 0, 0, 0, 0, 0),
                entry(7, 0, 0, 1 << 7 | 1 << 20, 0, 0),
                entry(0x8000_0001, 0, 0, 0, 0, 1 << 20),
                entry(0x8000_0008, 0, 48, 0, 0, 0),
            ],
            ..Default::default()
        };
        let cpu = cpu_model(&guest);
        assert!(cpu.amd && cpu.smep && cpu.smap && cpu.nx);
        assert!(!cpu.pku && !cpu.la57 && !cpu.pcid && !cpu.gbpages);
        assert_eq!(cpu.maxphyaddr, 48);
    }

    #[test]
    fn header_maxphyaddr_wins_and_empty_cpuid_gets_the_default() {
        let guest = GuestSpec {
            maxphyaddr: 40,
            ..Default::default()
        };
        let cpu = cpu_model(&guest);
        assert_eq!(cpu.maxphyaddr, 40);
        assert_eq!(
            CpuModel {
                maxphyaddr: 46,
                ..cpu
            },
            CpuModel::default_x86_64()
        );
    }
}
