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

/// `cpuid`'s EAX, EBX, ECX, EDX for leaf `function` as vCPU `apic_id` of a machine of several
/// sees them: its initial APIC ID in leaf 1 EBX[31:24] and its x2APIC ID in EDX of the
/// topology leaves 0xB and 0x1F (SDM vol. 2A, CPUID). Unicorn's CPU model, and a table from
/// another machine, say 0 on every vCPU, and KVM leaves them to userspace
/// (Documentation/virt/kvm/api.rst, KVM_GET_SUPPORTED_CPUID): both backends set them here. The
/// guest matches them against the APIC ID register and the ACPI MADT (Linux's
/// `generic_processor_info`, `detect_extended_topology`).
pub fn with_apic_id(function: u32, mut out: [u32; 4], apic_id: u32) -> [u32; 4] {
    match function {
        1 => out[1] = (out[1] & 0x00ff_ffff) | ((apic_id & 0xff) << 24),
        0xb | 0x1f => out[3] = apic_id,
        _ => {}
    }
    out
}

/// The smallest CPUID table [`cpu_model`] reads back as `cpu`: the vendor (leaf 0), the
/// feature bits of leaves 1, 7 and 0x80000001, and MAXPHYADDR (leaf 0x80000008). For traces
/// made without a CPU to ask (model-level scenarios).
pub fn cpuid_entries(cpu: &CpuModel) -> Vec<CpuidEntry> {
    let bit = |on: bool, n: u32| u32::from(on) << n;
    let leaf = |function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32| CpuidEntry {
        function,
        index: 0,
        eax,
        ebx,
        ecx,
        edx,
    };
    let vendor = if cpu.amd {
        *b"AuthcAMDenti"
    } else {
        *b"GenuntelineI"
    };
    let word =
        |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
    vec![
        // EBX, EDX, ECX spell the vendor: "Auth" "enti" "cAMD", "Genu" "ineI" "ntel".
        leaf(0, 0xd, word(0), word(4), word(8)),
        leaf(1, 0, 0, bit(cpu.pcid, 17), 0),
        leaf(
            7,
            0,
            bit(cpu.smep, 7) | bit(cpu.smap, 20),
            bit(cpu.pku, 3) | bit(cpu.la57, 16),
            0,
        ),
        leaf(0x8000_0000, 0x8000_0008, 0, 0, 0),
        leaf(0x8000_0001, 0, 0, 0, bit(cpu.nx, 20) | bit(cpu.gbpages, 26)),
        leaf(0x8000_0008, u32::from(cpu.maxphyaddr), 0, 0, 0),
    ]
}

/// `table` with the fields [`cpu_model`] reads set to `cpu`'s and every other bit kept: the
/// CPUID a KVM_SET_CPUID2 to `cpu` gives a guest that had `table` (leaves the table lacks are
/// added from [`cpuid_entries`]).
pub fn with_cpu_model(table: &[CpuidEntry], cpu: &CpuModel) -> Vec<CpuidEntry> {
    let mut out = table.to_vec();
    for want in cpuid_entries(cpu) {
        let e = match out
            .iter_mut()
            .position(|e| e.function == want.function && e.index == want.index)
        {
            Some(i) => &mut out[i],
            None => {
                out.push(want);
                continue;
            }
        };
        let set = |reg: &mut u32, n: u32, from: u32| *reg = (*reg & !(1 << n)) | (from & (1 << n));
        match want.function {
            0 => (e.ebx, e.ecx, e.edx) = (want.ebx, want.ecx, want.edx),
            1 => set(&mut e.ecx, 17, want.ecx),
            7 => {
                for n in [7, 20] {
                    set(&mut e.ebx, n, want.ebx);
                }
                for n in [3, 16] {
                    set(&mut e.ecx, n, want.ecx);
                }
            }
            0x8000_0001 => {
                for n in [20, 26] {
                    set(&mut e.edx, n, want.edx);
                }
            }
            0x8000_0008 => e.eax = (e.eax & !0xff) | want.eax,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_model_patched_into_a_table_reads_back_and_keeps_the_rest() {
        let intel = CpuModel::default_x86_64();
        let mut table = cpuid_entries(&intel);
        table[1].edx = 1 << 6; // PAE, which the model does not read
        table[5].eax |= 0x3000; // linear address bits
        let amd = CpuModel {
            amd: true,
            gbpages: false,
            maxphyaddr: 40,
            ..intel
        };
        let patched = with_cpu_model(&table, &amd);
        assert_eq!(cpu_model(&patched), amd);
        assert_eq!(patched[1].edx, 1 << 6);
        assert_eq!(patched[5].eax, 0x3000 | 40);
        assert_eq!(cpu_model(&with_cpu_model(&[], &amd)), amd);
    }

    #[test]
    fn cpuid_entries_read_back_as_the_same_cpu() {
        let intel = CpuModel::default_x86_64();
        assert_eq!(cpu_model(&cpuid_entries(&intel)), intel);
        let amd = CpuModel {
            amd: true,
            gbpages: false,
            la57: true,
            pcid: false,
            maxphyaddr: 40,
            ..intel
        };
        assert_eq!(cpu_model(&cpuid_entries(&amd)), amd);
    }
}
