//! Host behaviour the backend relies on, step by step.
mod common;

use iced_x86::code_asm::*;
use recorder::{Backend, Exit};
use recorder_kvm::{probe, KvmBackend};

#[test]
fn explore_exits() {
    require_kvm!();
    let code = common::asm64(|a| {
        a.mov(rax, 0x1234u64).unwrap();
        a.mov(qword_ptr(0x8000), rax).unwrap();
        a.mov(dx, 0x3f8u32).unwrap();
        a.mov(al, 0x48u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(dx, 0x3fdu32).unwrap();
        a.in_(al, dx).unwrap();
        a.mov(rbx, rax).unwrap();
        a.mov(rax, cr4).unwrap();
        a.mov(cr4, rax).unwrap();
        a.mov(al, 0x10u32).unwrap();
        a.out(0xf4u32, al).unwrap();
        a.nop().unwrap();
        a.int3().unwrap();
    });
    let mut b = KvmBackend::new(probe()).unwrap();
    b.load(&common::long_mode_guest(&code)).unwrap();
    for i in 0..14 {
        let before = b.regs().unwrap().rip;
        let r = b.step();
        let after = b.regs().unwrap();
        eprintln!(
            "{i}: {before:#x} -> {:#x} {r:?} rax={:#x} rbx={:#x}",
            after.rip, after.gpr[0], after.gpr[3]
        );
        match r {
            Ok(s) => {
                if let Exit::IoIn { .. } = s.exit {
                    b.complete_io_in(0x60).unwrap();
                    let after = b.regs().unwrap();
                    eprintln!(
                        "   completed in: rip {:#x} rax={:#x}",
                        after.rip, after.gpr[0]
                    );
                }
            }
            Err(_) => break,
        }
    }
}

#[test]
fn explore_cpuid() {
    require_kvm!();
    let mut b = KvmBackend::new(probe()).unwrap();
    b.load(&common::long_mode_guest(&[0x90])).unwrap();
    for e in b
        .cpuid()
        .iter()
        .filter(|e| e.function == 0 || e.function == 7 || e.function == 1)
    {
        eprintln!("{e:x?}");
    }
    eprintln!("{:?}", guests::CpuFeatures::from_cpuid(&b.cpuid()));
}

#[test]
fn explore_guest_cpuid() {
    require_kvm!();
    for (leaf, sub) in [
        (0u32, 0u32),
        (1, 0),
        (7, 0),
        (0x8000_0001, 0),
        (0x8000_0008, 0),
    ] {
        let code = common::asm64(|a| {
            a.mov(eax, leaf).unwrap();
            a.mov(ecx, sub).unwrap();
            a.cpuid().unwrap();
            a.nop().unwrap();
        });
        let mut b = KvmBackend::new(probe()).unwrap();
        b.load(&common::long_mode_guest(&code)).unwrap();
        for _ in 0..3 {
            b.step().unwrap();
        }
        let r = b.regs().unwrap();
        let host = unsafe { std::arch::x86_64::__cpuid_count(leaf, sub) };
        let kvm = b
            .cpuid()
            .into_iter()
            .find(|e| e.function == leaf && e.index == sub);
        eprintln!(
            "leaf {leaf:#x}: guest {:x} {:x} {:x} {:x} | host {:x} {:x} {:x} {:x} | kvm {:x?}",
            r.gpr[0],
            r.gpr[3],
            r.gpr[1],
            r.gpr[2],
            host.eax,
            host.ebx,
            host.ecx,
            host.edx,
            kvm.map(|e| (e.eax, e.ebx, e.ecx, e.edx))
        );
    }
}
