//! The kvm backend's exits on this host, instruction by instruction, and the CPUID it reports.
mod common;

use iced_x86::code_asm::*;
use recorder::{Backend, BackendError, Exit};
use recorder_kvm::{probe, KvmBackend};

#[test]
fn out_in_and_cr_writes_are_one_step_each() {
    require_kvm!();
    let code = common::asm64(|a| {
        a.mov(dx, 0x3f8u32).unwrap();
        a.mov(al, 0x48u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(dx, 0x3fdu32).unwrap();
        a.in_(al, dx).unwrap();
        a.mov(rax, cr4).unwrap();
        a.mov(cr4, rax).unwrap();
        a.nop().unwrap();
    });
    let mut b = KvmBackend::new(probe()).unwrap();
    b.load(&common::long_mode_guest(&code)).unwrap();
    let mut exits = Vec::new();
    let mut rips = vec![b.regs().unwrap().rip];
    for _ in 0..7 {
        let s = b.step().unwrap();
        if let Exit::IoIn { .. } = s.exit {
            b.complete_io_in(0x60).unwrap();
        }
        exits.push(s.exit);
        rips.push(b.regs().unwrap().rip);
    }
    assert_eq!(
        exits[2],
        Exit::IoOut {
            port: 0x3f8,
            size: 1,
            data: 0x48
        }
    );
    assert_eq!(
        exits[4],
        Exit::IoIn {
            port: 0x3fd,
            size: 1
        }
    );
    assert!(
        exits
            .iter()
            .enumerate()
            .all(|(i, e)| i == 2 || i == 4 || *e == Exit::Stepped),
        "{exits:?}"
    );
    // Every step retired exactly one instruction.
    let mut d = iced_x86::Decoder::with_ip(64, &code, common::CODE, 0);
    let ends: Vec<u64> = (0..7).map(|_| d.decode().next_ip()).collect();
    assert_eq!(rips[1..], ends[..]);
    assert_eq!(
        b.regs().unwrap().gpr[0] & 0xff,
        0x20,
        "`in` got its data, then mov rax, cr4"
    );
}

#[test]
fn the_reported_cpuid_is_what_the_guest_reads() {
    require_kvm!();
    for (leaf, sub) in [(0u32, 0u32), (7, 0), (0x8000_0001, 0), (0x8000_0008, 0)] {
        let code = common::asm64(|a| {
            a.mov(eax, leaf).unwrap();
            a.mov(ecx, sub).unwrap();
            a.cpuid().unwrap();
        });
        let mut b = KvmBackend::new(probe()).unwrap();
        b.load(&common::long_mode_guest(&code)).unwrap();
        for _ in 0..3 {
            b.step().unwrap();
        }
        let r = b.regs().unwrap();
        let seen = (
            r.gpr[0] as u32,
            r.gpr[3] as u32,
            r.gpr[1] as u32,
            r.gpr[2] as u32,
        );
        let e = b
            .cpuid()
            .into_iter()
            .find(|e| e.function == leaf && e.index == sub)
            .unwrap();
        assert_eq!(seen, (e.eax, e.ebx, e.ecx, e.edx), "leaf {leaf:#x}");
    }
}

#[test]
fn int3_at_cpl0_is_reported_with_the_instruction() {
    require_kvm!();
    if !probe().pvm {
        eprintln!("SKIP: int3 is emulated fine on non-PVM hosts");
        return;
    }
    let code = common::asm64(|a| {
        a.int3().unwrap();
    });
    let mut b = KvmBackend::new(probe()).unwrap();
    b.load(&common::long_mode_guest(&code)).unwrap();
    match b.step() {
        Err(BackendError::EngineAt(m)) => {
            assert!(
                m.contains("\"int3\" (cc)")
                    && m.contains("RIP 0x100000")
                    && m.contains("--backend emu"),
                "{m}"
            )
        }
        other => panic!("expected an engine failure, got {other:?}"),
    }
}
