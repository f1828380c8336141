//! CR events per second per policy, and page walks per second per paging mode.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mmu::bits::*;
use mmu::*;
use std::hint::black_box;

const CR0_PROT: u64 = CR0_PE | CR0_ET;
const CR0_PAGED: u64 = CR0_PROT | CR0_PG | CR0_WP;

/// Memory with identity-ish tables for every mode: 32-bit PD at 0x1000, PAE PDPT at 0x2000,
/// 4-level PML4 at 0x3000, 5-level PML5 at 0x8000.
fn memory() -> FlatMemory {
    let mut m = FlatMemory::new(0, 0x20_0000);
    // 32-bit: PD[0] -> PT 0x10000, PT[5] -> 0x50000
    m.write_u32(0x1000, 0x10007);
    m.write_u32(0x10000 + 4 * 5, 0x50007);
    // PAE: PDPTE0 -> PD 0x11000 -> PT 0x12000 -> 0x50000
    m.write_u64(0x2000, 0x11001);
    m.write_u64(0x11000, 0x12007);
    m.write_u64(0x12000 + 8 * 5, 0x50007);
    // 4-level: PML4 0x3000 -> 0x4000 -> 0x5000 -> 0x6000 -> 0x50000
    m.write_u64(0x3000, 0x4007);
    m.write_u64(0x4000, 0x5007);
    m.write_u64(0x5000, 0x6007);
    m.write_u64(0x6000 + 8 * 5, 0x50007);
    // 5-level: PML5 0x8000 -> the 4-level PML4
    m.write_u64(0x8000, 0x3007);
    m
}

/// A boot-like sequence: enter PAE paging, toggle PAE with paging on (the seed transition),
/// go through PG=0 into long mode, switch CR3 between two address spaces, toggle SMEP/SMAP/WP.
fn events(m: &FlatMemory, cpu: &CpuModel) -> (ControlRegs, Vec<(Input, ControlRegs)>) {
    let start = ControlRegs {
        cr0: CR0_PROT,
        cr3: 0x1000,
        ..Default::default()
    };
    let mut regs = start;
    let mut out = Vec::new();
    let mut push = |reg: CrReg, v: u64, regs: &mut ControlRegs| {
        let after = apply_write(reg, regs, v, cpu, m).unwrap_or(*regs);
        let input = match reg {
            CrReg::Cr0 => Input::Cr0 {
                old: regs.cr0,
                new: v,
            },
            CrReg::Cr3 => Input::Cr3 {
                old: regs.cr3,
                new: v,
            },
            CrReg::Cr4 => Input::Cr4 {
                old: regs.cr4,
                new: v,
            },
            CrReg::Efer => Input::Efer {
                old: regs.efer,
                new: v,
            },
        };
        out.push((input, after));
        *regs = after;
    };
    push(CrReg::Cr4, CR4_PSE, &mut regs);
    push(CrReg::Cr0, CR0_PAGED, &mut regs);
    push(CrReg::Cr3, 0x2000, &mut regs);
    push(CrReg::Cr4, CR4_PSE | CR4_PAE, &mut regs);
    push(CrReg::Cr3, 0x2000, &mut regs);
    push(CrReg::Cr0, CR0_PROT, &mut regs);
    push(CrReg::Efer, EFER_LME | EFER_NXE, &mut regs);
    push(CrReg::Cr3, 0x3000, &mut regs);
    push(CrReg::Cr0, CR0_PAGED, &mut regs);
    for i in 0..8u64 {
        push(CrReg::Cr3, 0x3000 + (i & 1) * 0x5000, &mut regs);
    }
    push(CrReg::Cr4, CR4_PSE | CR4_PAE | CR4_SMEP, &mut regs);
    push(
        CrReg::Cr4,
        CR4_PSE | CR4_PAE | CR4_SMEP | CR4_SMAP,
        &mut regs,
    );
    push(CrReg::Cr0, CR0_PAGED & !CR0_WP, &mut regs);
    push(CrReg::Cr0, CR0_PAGED, &mut regs);
    (start, out)
}

fn bench_events(c: &mut Criterion) {
    let m = memory();
    let cpu = CpuModel::default_x86_64();
    let (start, evs) = events(&m, &cpu);
    let mut g = c.benchmark_group("cr_events");
    g.throughput(Throughput::Elements(evs.len() as u64));
    for pol in policies() {
        for fl in [Flavour::Tdp, Flavour::Shadow] {
            g.bench_with_input(
                BenchmarkId::new(fl.name(), pol.name),
                &(pol, fl),
                |b, &(pol, fl)| {
                    b.iter(|| {
                        let mut t = Tracker::new(pol, fl, cpu, &start);
                        for (input, after) in &evs {
                            black_box(t.apply(input, after, &m));
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_walks(c: &mut Criterion) {
    let m = memory();
    let cpu = CpuModel {
        la57: true,
        ..CpuModel::default_x86_64()
    };
    let long = EFER_LME | EFER_LMA | EFER_NXE;
    let mut pae = ControlRegs {
        cr0: CR0_PAGED,
        cr3: 0x2000,
        cr4: CR4_PAE,
        ..Default::default()
    };
    pae.pdptrs = load_pdptrs(0x2000, &m, 46).unwrap();
    let modes = [
        (
            "unpaged",
            ControlRegs {
                cr0: CR0_PROT,
                ..Default::default()
            },
        ),
        (
            "32-bit",
            ControlRegs {
                cr0: CR0_PAGED,
                cr3: 0x1000,
                ..Default::default()
            },
        ),
        ("PAE", pae),
        (
            "4-level",
            ControlRegs {
                cr0: CR0_PAGED,
                cr3: 0x3000,
                cr4: CR4_PAE,
                efer: long,
                ..Default::default()
            },
        ),
        (
            "5-level",
            ControlRegs {
                cr0: CR0_PAGED,
                cr3: 0x8000,
                cr4: CR4_PAE | CR4_LA57,
                efer: long,
                ..Default::default()
            },
        ),
    ];
    let req = AccessRequest::user(Access::Write);
    let mut g = c.benchmark_group("walk");
    g.throughput(Throughput::Elements(1));
    for (name, regs) in modes {
        assert_eq!(
            walk(&regs, &cpu, &m, 0x5123, &req).result.map(|t| t.gpa),
            Ok(if name == "unpaged" { 0x5123 } else { 0x50123 }),
            "{name}"
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(walk(&regs, &cpu, &m, black_box(0x5123), &req)))
        });
    }
    let ctx = architectural_context(&modes[3].1, &cpu, Flavour::Tdp);
    g.bench_function("4-level (KVM context)", |b| {
        b.iter(|| black_box(translate_with_context(&ctx, &modes[3].1, &m, 0x5123, &req)))
    });
    g.finish();
}

criterion_group!(benches, bench_events, bench_walks);
criterion_main!(benches);
