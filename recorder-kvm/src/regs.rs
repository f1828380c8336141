//! Conversion between the trace's register file and KVM's `kvm_regs` / `kvm_sregs`.

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use traces::{DescriptorTable, Regs, Segment};

/// `kvm_segment` → the trace's VMX access-rights layout.
pub fn segment_from_kvm(s: &kvm_segment) -> Segment {
    let attrs = (s.type_ as u32 & 0xf)
        | (s.s as u32 & 1) << 4
        | (s.dpl as u32 & 3) << 5
        | (s.present as u32 & 1) << 7
        | (s.avl as u32 & 1) << 12
        | (s.l as u32 & 1) << 13
        | (s.db as u32 & 1) << 14
        | (s.g as u32 & 1) << 15
        | (s.unusable as u32 & 1) << 16;
    Segment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        attrs,
    }
}

pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attrs;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: (a >> 4 & 1) as u8,
        dpl: (a >> 5 & 3) as u8,
        present: (a >> 7 & 1) as u8,
        avl: (a >> 12 & 1) as u8,
        l: (a >> 13 & 1) as u8,
        db: (a >> 14 & 1) as u8,
        g: (a >> 15 & 1) as u8,
        unusable: (a >> 16 & 1) as u8,
        padding: 0,
    }
}

fn dtable_from_kvm(d: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

fn dtable_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

/// Fills the general-purpose and system parts of `out` from KVM's structures; the registers
/// KVM keeps elsewhere (XCR0, KERNEL_GS_BASE, PKRU, PDPTRs) are left as they are.
pub fn regs_from_kvm(r: &kvm_regs, s: &kvm_sregs, out: &mut Regs) {
    out.gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    out.rip = r.rip;
    out.rflags = r.rflags;
    out.seg = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs].map(|seg| segment_from_kvm(&seg));
    out.ldtr = segment_from_kvm(&s.ldt);
    out.tr = segment_from_kvm(&s.tr);
    out.gdtr = dtable_from_kvm(&s.gdt);
    out.idtr = dtable_from_kvm(&s.idt);
    out.cr0 = s.cr0;
    out.cr2 = s.cr2;
    out.cr3 = s.cr3;
    out.cr4 = s.cr4;
    out.cr8 = s.cr8;
    out.efer = s.efer;
}

pub fn kvm_regs_of(r: &Regs) -> kvm_regs {
    let g = &r.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: r.rip,
        // Bit 1 of RFLAGS is fixed to 1; KVM refuses entry without it.
        rflags: r.rflags | 2,
    }
}

/// System registers of `r` over `base` (which keeps KVM's apic_base and interrupt bitmap).
pub fn kvm_sregs_of(r: &Regs, base: &kvm_sregs) -> kvm_sregs {
    let mut s = *base;
    let [es, cs, ss, ds, fs, gs] = r.seg.map(|seg| segment_to_kvm(&seg));
    (s.es, s.cs, s.ss, s.ds, s.fs, s.gs) = (es, cs, ss, ds, fs, gs);
    s.ldt = segment_to_kvm(&r.ldtr);
    s.tr = segment_to_kvm(&r.tr);
    s.gdt = dtable_to_kvm(&r.gdtr);
    s.idt = dtable_to_kvm(&r.idtr);
    s.cr0 = r.cr0;
    s.cr2 = r.cr2;
    s.cr3 = r.cr3;
    s.cr4 = r.cr4;
    s.cr8 = r.cr8;
    s.efer = r.efer;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attributes_round_trip() {
        // 64-bit code: type 0xb, S, DPL 0, P, L, G.
        let seg = Segment {
            selector: 8,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xa09b,
        };
        let k = segment_to_kvm(&seg);
        assert_eq!(
            (k.type_, k.s, k.present, k.l, k.db, k.g),
            (0xb, 1, 1, 1, 0, 1)
        );
        assert_eq!(segment_from_kvm(&k), seg);
        let unusable = Segment {
            attrs: 1 << 16,
            ..Segment::default()
        };
        assert_eq!(segment_from_kvm(&segment_to_kvm(&unusable)), unusable);
    }

    #[test]
    fn registers_round_trip_through_kvm_structures() {
        let mut r = Regs::default();
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = i as u64 * 3 + 1;
        }
        r.rip = 0x1000;
        r.rflags = 0x202;
        r.cr0 = 0x8000_0011;
        r.cr3 = 0x9000;
        r.cr4 = 0x20;
        r.efer = 0x500;
        r.seg[1] = Segment {
            selector: 8,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xa09b,
        };
        r.gdtr = DescriptorTable {
            base: 0x500,
            limit: 23,
        };
        let mut back = Regs::default();
        regs_from_kvm(
            &kvm_regs_of(&r),
            &kvm_sregs_of(&r, &kvm_sregs::default()),
            &mut back,
        );
        assert_eq!(back, r);
    }
}
