//! The guest CPU a trace ran on, as the MMU model needs it: read from the CPUID table and
//! MAXPHYADDR the trace header carries.

use mmu::CpuModel;
use traces::GuestSpec;

/// The `mmu` CPU model of a recorded guest. A trace without a CPUID table (hand-made, or
/// from an engine that reports none) gets the model's default CPU with the trace's MAXPHYADDR.
pub fn cpu_model(guest: &GuestSpec) -> CpuModel {
    let mut cpu = if guest.cpuid.is_empty() {
        CpuModel::default_x86_64()
    } else {
        insn::cpu_model(&guest.cpuid)
    };
    if guest.maxphyaddr != 0 {
        cpu.maxphyaddr = guest.maxphyaddr;
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::CpuidEntry;

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
