//! Hand-made guests for the kvm backend's tests and the bench.
#![allow(dead_code)]

use traces::{Blob, GuestSpec, Load, Regs, Segment};

pub const CODE: u64 = 0x10_0000;
const PML4: u64 = 0x1000;

/// Why /dev/kvm cannot be used here, or `None` when it can.
pub fn kvm_unusable() -> Option<String> {
    recorder_kvm::probe().usable.err()
}

/// Skips the calling test (with a clear line) where /dev/kvm is not usable, or fails it under
/// `MMURR_REQUIRE_KVM=1` (the shared rule, `recorder::test_support`).
#[macro_export]
macro_rules! require_kvm {
    () => {
        recorder::require_kvm!(common::kvm_unusable())
    };
}

fn blob(name: &str, data: Vec<u8>) -> Blob {
    Blob {
        hash: xxhash_rust::xxh3::xxh3_64(&data),
        name: name.into(),
        data,
    }
}

/// Identity-mapped (2 MiB pages, first 64 MiB) 64-bit guest entering at `CODE` with `code`.
pub fn long_mode_guest(code: &[u8]) -> GuestSpec {
    let mut tables = vec![0u8; 0x3000];
    let put =
        |t: &mut Vec<u8>, off: usize, v: u64| t[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut tables, 0, (PML4 + 0x1000) | 3); // PML4[0] -> PDPT
    put(&mut tables, 0x1000, (PML4 + 0x2000) | 3); // PDPT[0] -> PD
    for i in 0..32u64 {
        put(&mut tables, 0x2000 + 8 * i as usize, (i << 21) | 0x83);
    }
    let mut gdt = vec![0u8; 24];
    gdt[8..16].copy_from_slice(&0x00af_9b00_0000_ffffu64.to_le_bytes());
    gdt[16..24].copy_from_slice(&0x00cf_9300_0000_ffffu64.to_le_bytes());
    let code_seg = Segment {
        selector: 8,
        base: 0,
        limit: 0xffff_ffff,
        attrs: 0xa09b,
    };
    let data_seg = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        attrs: 0xc093,
    };
    let mut entry = Regs {
        rip: CODE,
        rflags: 2,
        cr0: 0x8000_0033,
        cr3: PML4,
        cr4: 0x20,
        efer: 0x500,
        ..Regs::default()
    };
    entry.gpr[4] = 0x8_0000;
    entry.seg = [data_seg, code_seg, data_seg, data_seg, data_seg, data_seg];
    entry.tr = Segment {
        selector: 0,
        base: 0,
        limit: 0x67,
        attrs: 0x8b,
    };
    entry.ldtr = Segment {
        attrs: 1 << 16,
        ..Segment::default()
    };
    entry.gdtr = traces::DescriptorTable {
        base: 0x500,
        limit: 23,
    };
    GuestSpec {
        ram_size: 64 << 20,
        blobs: vec![
            blob("page tables", tables),
            blob("gdt", gdt),
            blob("code", code.to_vec()),
        ],
        loads: vec![
            Load { blob: 0, gpa: PML4 },
            Load {
                blob: 1,
                gpa: 0x500,
            },
            Load { blob: 2, gpa: CODE },
        ],
        entry,
        origin: "test long-mode guest".into(),
        ..GuestSpec::default()
    }
}

/// Assembles 64-bit code at `CODE`.
pub fn asm64(build: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler)) -> Vec<u8> {
    let mut a = iced_x86::code_asm::CodeAssembler::new(64).unwrap();
    build(&mut a);
    a.assemble(CODE).unwrap()
}
