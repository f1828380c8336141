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
