//! The Unicorn backend against the `Backend` contract, with small hand-made guests.

use iced_x86::code_asm::*;
use mmurr_emu::EmuBackend;
use recorder::{Backend, Exit, Written};
use traces::{Blob, GuestSpec, Load, Regs};

const RAM: u64 = 4 << 20;

fn guest(code: Vec<u8>, at: u64, extra: Vec<(u64, Vec<u8>)>, entry: Regs) -> GuestSpec {
    let mut blobs = vec![Blob {
        hash: 0,
        name: "code".into(),
        data: code,
    }];
    let mut loads = vec![Load { blob: 0, gpa: at }];
    for (i, (gpa, data)) in extra.into_iter().enumerate() {
        blobs.push(Blob {
            hash: i as u64 + 1,
            name: format!("data{i}"),
            data,
        });
        loads.push(Load {
            blob: i as u32 + 1,
            gpa,
        });
    }
    GuestSpec {
        ram_size: RAM,
        blobs,
        loads,
        entry,
        origin: "test".into(),
        ..GuestSpec::default()
    }
}

fn asm(bits: u32, at: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(at).unwrap()
}

fn loaded(g: &GuestSpec) -> EmuBackend {
    let mut b = EmuBackend::new().expect("open unicorn");
    b.load(g).expect("load");
    b
}

#[test]
fn real_mode_entry_is_exact() {
    let code = asm(16, 0x7c00, |a| a.hlt());
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![], entry.clone()));
    assert_eq!(b.regs().unwrap(), entry);
    assert!(b.entry_fixups.is_empty(), "{:?}", b.entry_fixups);
}

#[test]
fn real_mode_steps_one_instruction() {
    let code = asm(16, 0x7c00, |a| {
        a.mov(ax, 0x1234u32)?;
        a.mov(bx, ax)?;
        a.add(bx, 1)?;
        a.mov(word_ptr(0x500), bx)?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![], entry));
    let mut rips = vec![];
    loop {
        let r = b.step().unwrap();
        rips.push(b.regs().unwrap().rip);
        if r.exit == Exit::Halted {
            break;
        }
        if rips.len() == 4 {
            assert_eq!(r.written, Written::Ranges(vec![(0x500, 2)]));
        }
        assert!(rips.len() < 10);
    }
    assert_eq!(rips, vec![0x7c03, 0x7c05, 0x7c08, 0x7c0c, 0x7c0d]);
    let mut m = [0u8; 2];
    assert!(b.read_phys(0x500, &mut m));
    assert_eq!(u16::from_le_bytes(m), 0x1235);
}

fn raw(code: Vec<u8>, at: u64, mode: guests::loader::EntryMode) -> (EmuBackend, GuestSpec) {
    let g = guests::loader::load_raw(&code, at, at, mode, RAM).expect("load_raw");
    (loaded(&g), g)
}

const CODE: u64 = 0x10000;

#[test]
fn protected_entry_is_exact() {
    let code = asm(32, CODE, |a| a.hlt());
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Protected);
    assert_eq!(b.regs().unwrap(), g.entry);
    assert!(b.entry_fixups.is_empty(), "{:?}", b.entry_fixups);
}

#[test]
fn long_entry_is_exact() {
    let code = asm(64, CODE, |a| a.hlt());
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Long);
    assert_eq!(b.regs().unwrap(), g.entry);
    assert!(b.entry_fixups.is_empty(), "{:?}", b.entry_fixups);
}

/// A kernel's state: long mode at a high address that is no physical address (Linux runs at
/// 0xffffffff81000000). The entry trampoline runs before paging is on, so it must not jump to
/// the entry RIP itself: re-executing a run of the Linux boot failed here with a fetch from
/// unmapped memory.
#[test]
fn long_entry_at_a_high_kernel_address_is_exact() {
    use guests::tables::{Tables, P, RW};
    const HIGH: u64 = 0xffff_ffff_8000_0000;
    let (pml4, pdpt, pd) = (0x1000, 0x2000, 0x3000);
    let mut t = Tables::new(pml4, 0x3000);
    t.set64(pml4, 511, pdpt | P | RW).unwrap();
    t.set64(pdpt, 510, pd | P | RW).unwrap();
    // One 2 MiB page: HIGH -> physical 0.
    t.set64(pd, 0, P | RW | (1 << 7)).unwrap();
    let code = asm(64, HIGH + CODE, |a| {
        a.mov(eax, 0x1234)?;
        a.hlt()
    });
    let entry = guests::image::long_entry(HIGH + CODE, 0x8000, pml4);
    let g = guest(code, CODE, vec![(pml4, t.into_bytes())], entry);
    let mut b = loaded(&g);
    assert_eq!(b.regs().unwrap(), g.entry);
    assert!(b.entry_fixups.is_empty(), "{:?}", b.entry_fixups);
    b.step().unwrap();
    let r = b.regs().unwrap();
    assert_eq!((r.rip, r.gpr[0]), (HIGH + CODE + 5, 0x1234));
}

#[test]
fn entry_memory_is_the_guest_spec_exactly() {
    // The trampoline runs outside RAM: nothing but the loads is non-zero at step 0.
    let code = asm(64, CODE, |a| a.hlt());
    let (b, g) = raw(code, CODE, guests::loader::EntryMode::Long);
    let mut expect = vec![0u8; RAM as usize];
    for l in &g.loads {
        let d = &g.blobs[l.blob as usize].data;
        expect[l.gpa as usize..l.gpa as usize + d.len()].copy_from_slice(d);
    }
    assert!(
        b.ram().unwrap() == &expect[..],
        "guest memory differs from the spec at entry"
    );
}

/// Steps until HLT, checking that every step advanced RIP by exactly the decoded length.
fn steps_are_single_instructions(bits: u32, mode: guests::loader::EntryMode) {
    let code = asm(bits, CODE, |a| {
        a.nop()?;
        a.mov(eax, 0x1234_5678u32)?;
        a.lea(ecx, ptr(eax + 8))?;
        a.xor(edx, edx)?;
        a.add(ecx, edx)?;
        a.inc(ecx)?;
        a.hlt()
    });
    let (mut b, g) = raw(code.clone(), CODE, mode);
    let mut rip = g.entry.rip;
    let mut dec = iced_x86::Decoder::with_ip(bits, &code, CODE, iced_x86::DecoderOptions::NONE);
    loop {
        let insn = dec.decode();
        let r = b.step().unwrap();
        let after = b.regs().unwrap();
        assert_eq!(after.rip, rip + insn.len() as u64, "{bits}-bit: {insn}");
        rip = after.rip;
        if r.exit == Exit::Halted {
            assert_eq!(insn.mnemonic(), iced_x86::Mnemonic::Hlt);
            break;
        }
        assert_eq!(r.exit, Exit::Stepped);
    }
    assert_eq!(b.regs().unwrap().gpr[1] & 0xffff_ffff, 0x1234_5681);
}

#[test]
fn one_step_is_one_instruction_in_protected_mode() {
    steps_are_single_instructions(32, guests::loader::EntryMode::Protected);
}

#[test]
fn one_step_is_one_instruction_in_long_mode() {
    steps_are_single_instructions(64, guests::loader::EntryMode::Long);
}

#[test]
fn port_io_exits() {
    let code = asm(16, 0x7c00, |a| {
        a.in_(al, 0x60)?;
        a.mov(dx, 0x3f8u32)?;
        a.in_(ax, dx)?;
        a.out(dx, ax)?;
        a.out(0xe9, al)?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![], entry));
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoIn {
            port: 0x60,
            size: 1
        }
    );
    assert_eq!(
        b.regs().unwrap().rip,
        0x7c00,
        "an `in` has not executed before its value is known"
    );
    assert!(
        b.step().is_err(),
        "stepping with an unanswered `in` is refused"
    );
    b.complete_io_in(0x5a).unwrap();
    let r = b.regs().unwrap();
    assert_eq!((r.rip, r.gpr[0] & 0xff), (0x7c02, 0x5a));
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoIn {
            port: 0x3f8,
            size: 2
        }
    );
    b.complete_io_in(0xbeef).unwrap();
    assert_eq!(b.regs().unwrap().gpr[0] & 0xffff, 0xbeef);
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoOut {
            port: 0x3f8,
            size: 2,
            data: 0xbeef
        }
    );
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoOut {
            port: 0xe9,
            size: 1,
            data: 0xef
        }
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
    assert_eq!(b.regs().unwrap().rip, 0x7c0a, "HLT retired");
}

#[test]
fn rep_movsb_steps_once_per_iteration_like_kvm() {
    let code = asm(16, 0x7c00, |a| {
        a.mov(si, 0x600u32)?;
        a.mov(di, 0x700u32)?;
        a.mov(cx, 3u32)?;
        a.rep().movsb()?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![(0x600, vec![1, 2, 3])], entry));
    for _ in 0..3 {
        b.step().unwrap();
    }
    let rep = b.regs().unwrap().rip;
    let mut rips = vec![];
    let mut written = vec![];
    for _ in 0..3 {
        let r = b.step().unwrap();
        rips.push(b.regs().unwrap().rip);
        written.push(r.written);
    }
    assert_eq!(
        rips,
        vec![rep, rep, rep + 2],
        "RIP stays on `rep movsb` until the last iteration"
    );
    assert_eq!(
        written,
        vec![
            Written::Ranges(vec![(0x700, 1)]),
            Written::Ranges(vec![(0x701, 1)]),
            Written::Ranges(vec![(0x702, 1)])
        ]
    );
    assert_eq!(b.regs().unwrap().gpr[1] & 0xffff, 0);
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn real_mode_int_goes_through_the_ivt() {
    let code = asm(16, 0x7c00, |a| {
        a.mov(sp, 0x7000u32)?;
        a.int(0x21)?;
        a.hlt()
    });
    // IVT[0x21] = 0x0800:0x0010 -> linear 0x8010: mov ax, 0x4242; iret
    let ivt = (0x21 * 4, vec![0x10, 0x00, 0x00, 0x08]);
    let handler = (0x8010, vec![0xb8, 0x42, 0x42, 0xcf]);
    let mut entry = guests::image::real_mode_entry(0x7c00);
    entry.rflags = 0x202;
    let mut b = loaded(&guest(code, 0x7c00, vec![ivt, handler], entry));
    b.step().unwrap();
    let r = b.step().unwrap();
    let regs = b.regs().unwrap();
    assert_eq!(
        (regs.seg[1].selector, regs.seg[1].base, regs.rip),
        (0x800, 0x8000, 0x10)
    );
    assert_eq!(regs.gpr[4] & 0xffff, 0x7000 - 6);
    assert_eq!(regs.rflags & 0x200, 0, "IF cleared");
    assert_eq!(
        r.written,
        Written::Ranges(vec![(0x6ffe, 2), (0x6ffc, 2), (0x6ffa, 2)])
    );
    let mut frame = [0u8; 6];
    assert!(b.read_phys(0x6ffa, &mut frame));
    assert_eq!(
        frame,
        [0x05, 0x7c, 0, 0, 0x02, 0x02],
        "IP after int, CS, FLAGS"
    );
    b.step().unwrap(); // mov ax
    b.step().unwrap(); // iret
    let regs = b.regs().unwrap();
    assert_eq!(
        (regs.seg[1].selector, regs.rip, regs.gpr[0] & 0xffff),
        (0, 0x7c05, 0x4242)
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

/// A 64-bit IDT with one interrupt gate per vector, all pointing at `handler`.
fn idt64(handler: u64, code_sel: u16) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..32 {
        let lo = (handler & 0xffff)
            | ((code_sel as u64) << 16)
            | (0x8eu64 << 40)
            | (((handler >> 16) & 0xffff) << 48);
        v.extend_from_slice(&lo.to_le_bytes());
        v.extend_from_slice(&(handler >> 32).to_le_bytes());
    }
    v
}

#[test]
fn long_mode_page_fault_is_delivered_with_error_code_and_cr2() {
    let handler = CODE + 0x100;
    let code = asm(64, CODE, |a| {
        a.mov(rsp, 0x9000u64)?;
        a.mov(rax, 0x1_2345_6000u64 * 64)?; // far beyond the identity map: not present
        a.mov(qword_ptr(rax), rcx)?;
        a.hlt()
    });
    let mut code = code;
    code.resize(0x100, 0x90);
    code.extend([0xf4]); // handler: hlt
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Long);
    assert!(b.write_phys(0x20000, &idt64(handler, g.entry.seg[1].selector)));
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 16 - 1,
    };
    b.set_regs(&r).unwrap();
    b.step().unwrap();
    b.step().unwrap();
    let before = b.regs().unwrap();
    b.step().unwrap();
    let after = b.regs().unwrap();
    assert_eq!(after.rip, handler);
    assert_eq!(after.cr2, 0x1_2345_6000u64 * 64);
    let mut frame = [0u8; 48];
    assert!(b.read_phys(after.gpr[4], &mut frame));
    let q = |i: usize| u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(
        q(0),
        0b10,
        "error code: write to a not-present page at CPL0"
    );
    assert_eq!(q(1), before.rip, "faulting RIP");
    assert_eq!(q(2), before.seg[1].selector as u64);
    assert_eq!(q(4), 0x9000, "old RSP");
    assert_eq!(after.gpr[4], 0x9000 - 48);
    assert_eq!(
        b.delivered.last().map(|d| (d.vector, d.error_code)),
        Some((14, Some(2)))
    );
}

#[test]
fn protected_mode_fault_without_idt_is_a_triple_fault() {
    let code = asm(32, CODE, |a| a.ud2());
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Protected);
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable { base: 0, limit: 0 };
    b.set_regs(&r).unwrap();
    assert_eq!(b.step().unwrap().exit, Exit::Shutdown);
}

#[test]
fn protected_mode_ud_is_delivered_through_a_32_bit_gate() {
    let handler = (CODE + 0x80) as u32;
    let mut code = asm(32, CODE, |a| {
        a.mov(esp, 0x9000u32)?;
        a.ud2()
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Protected);
    let code_sel = g.entry.seg[1].selector as u64;
    let gate = (handler as u64 & 0xffff)
        | (code_sel << 16)
        | (0x8eu64 << 40)
        | ((handler as u64 >> 16) << 48);
    let idt: Vec<u8> = (0..32).flat_map(|_| gate.to_le_bytes()).collect();
    assert!(b.write_phys(0x20000, &idt));
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 8 - 1,
    };
    b.set_regs(&r).unwrap();
    b.step().unwrap();
    let before = b.regs().unwrap();
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    let after = b.regs().unwrap();
    assert_eq!(after.rip, handler as u64);
    assert_eq!(
        after.gpr[4],
        0x9000 - 12,
        "EFLAGS, CS, EIP; #UD has no error code"
    );
    let mut frame = [0u8; 4];
    assert!(b.read_phys(0x9000 - 12, &mut frame));
    assert_eq!(u32::from_le_bytes(frame) as u64, before.rip);
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn mmio_reads_and_writes_exit() {
    let code = asm(32, CODE, |a| {
        a.mov(eax, dword_ptr(0xfed0_0010u32))?;
        a.mov(dword_ptr(0xfed0_0020u32), eax)?;
        a.hlt()
    });
    let mut g =
        guests::loader::load_raw(&code, CODE, CODE, guests::loader::EntryMode::Protected, RAM)
            .unwrap();
    g.regions.push(traces::MemRegion {
        gpa: 0xfed0_0000,
        size: 0x1000,
        kind: traces::RegionKind::Mmio,
        name: "dev".into(),
    });
    let mut b = loaded(&g);
    assert_eq!(
        b.step().unwrap().exit,
        Exit::MmioRead {
            gpa: 0xfed0_0010,
            size: 4
        }
    );
    assert_eq!(b.regs().unwrap().rip, CODE, "the read has not retired");
    b.complete_mmio_read(0xcafe_f00d).unwrap();
    assert_eq!(b.regs().unwrap().gpr[0], 0xcafe_f00d);
    assert_eq!(
        b.step().unwrap().exit,
        Exit::MmioWrite {
            gpa: 0xfed0_0020,
            size: 4,
            data: 0xcafe_f00d
        }
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn set_regs_round_trips() {
    let code = asm(64, CODE, |a| a.hlt());
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Long);
    let mut r = b.regs().unwrap();
    for (i, g) in r.gpr.iter_mut().enumerate() {
        *g = 0x1111_0000_0000_0000 * (i as u64 % 7) + i as u64;
    }
    r.seg[4].base = 0xffff_8000_1234_0000;
    r.seg[5].base = 0x7fff_0000_0000;
    r.kernel_gs_base = 0xffff_9000_0000_0000;
    r.cr2 = 0xdead_b000;
    r.rflags = 0x246;
    r.xcr0 = 3;
    b.set_regs(&r).unwrap();
    assert_eq!(b.regs().unwrap(), r);
}

/// A protected-mode guest under PAE paging: PDPT at 0x30000 whose entry 0 points at a page
/// directory at 0x31000 mapping the first 2 MiB with one large page. Returns the backend after
/// the host has switched paging on. `code` runs at CODE.
fn pae_guest(code: Vec<u8>) -> EmuBackend {
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Protected);
    let mut pdpt = vec![0u8; 32];
    pdpt[..8].copy_from_slice(&(0x31000u64 | 1).to_le_bytes());
    assert!(b.write_phys(0x30000, &pdpt));
    assert!(b.write_phys(0x31000, &(0x83u64).to_le_bytes())); // 2 MiB page at 0, P|RW|PS
                                                              // A second page directory mapping linear 0 to 2 MiB.
    assert!(b.write_phys(0x32000, &(0x20_0083u64).to_le_bytes()));
    // IDT: every vector -> CODE + 0x80 (hlt), 32-bit interrupt gates.
    let handler = CODE + 0x80;
    let gate = (handler & 0xffff) | (0x08u64 << 16) | (0x8eu64 << 40) | ((handler >> 16) << 48);
    let idt: Vec<u8> = (0..32).flat_map(|_| gate.to_le_bytes()).collect();
    assert!(b.write_phys(0x20000, &idt));
    let mut r = b.regs().unwrap();
    assert_eq!(
        r.seg[1].selector, 0x08,
        "the raw loader's flat code selector"
    );
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 8 - 1,
    };
    r.cr4 = 0x20;
    r.cr3 = 0x30000;
    r.cr0 |= 0x8000_0000;
    r.pdptrs = [0x31001, 0, 0, 0];
    r.gpr[4] = 0x9000;
    b.set_regs(&r).unwrap();
    b
}

#[test]
fn pdpte_registers_are_architectural_even_though_unicorn_rereads_the_pdpt() {
    let mut code = asm(32, CODE, |a| {
        a.mov(eax, 0x30000u32)?;
        a.mov(cr3, eax)?;
        a.mov(ebx, cr3)?;
        a.mov(ecx, dword_ptr(0x20_1000u32))?;
        a.mov(eax, 0x30000u32)?;
        a.mov(cr3, eax)?;
        a.mov(edx, dword_ptr(0x20_1000u32))?;
        a.hlt()
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let mut b = pae_guest(code);
    // Old directory (0x31000): linear 2 MiB -> physical 2 MiB. New one (0x32000): the code's
    // first 2 MiB identity-mapped as before, linear 2 MiB + 4 KiB -> physical 0x5000.
    assert!(b.write_phys(0x31008, &0x20_0083u64.to_le_bytes()));
    assert!(b.write_phys(0x32000, &0x83u64.to_le_bytes()));
    assert!(b.write_phys(0x32008, &0x33003u64.to_le_bytes()));
    assert!(b.write_phys(0x33008, &0x5003u64.to_le_bytes()));
    assert!(b.write_phys(0x20_1000, &0x1111u32.to_le_bytes()));
    assert!(b.write_phys(0x5000, &0x2222u32.to_le_bytes()));
    b.step().unwrap();
    b.step().unwrap();
    assert_eq!(
        b.regs().unwrap().pdptrs,
        [0x31001, 0, 0, 0],
        "loaded by MOV to CR3"
    );
    b.step().unwrap();
    assert_eq!(
        b.regs().unwrap().gpr[3],
        0x30000,
        "MOV from CR3 reads the guest's CR3"
    );
    // Repoint PDPTE 0 in memory to the new directory without reloading CR3.
    assert!(b.write_phys(0x30000, &(0x32001u64).to_le_bytes()));
    let r = b.regs().unwrap();
    assert_eq!(
        (r.pdptrs[0], r.cr3),
        (0x31001, 0x30000),
        "the PDPTE registers keep the loaded value"
    );
    let cpu = recorder::guest_view::cpu_model(&b.cpuid());
    let ctl = recorder::guest_view::control_regs(&r);
    struct M<'a>(&'a [u8]);
    impl mmu::GuestMemory for M<'_> {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let s = gpa as usize;
            self.0
                .get(s..s + buf.len())
                .map(|src| buf.copy_from_slice(src))
                .is_some()
        }
    }
    let w = mmu::walk(
        &ctl,
        &cpu,
        &M(b.ram().unwrap()),
        0x20_1000,
        &mmu::AccessRequest::supervisor(mmu::Access::Read),
    );
    assert_eq!(
        w.result.unwrap().gpa,
        0x20_1000,
        "architecture: through the PDPTE register"
    );
    assert_eq!(
        b.engine_translate(0x20_1000, mmu::Access::Read),
        Some(0x20_1000),
        "the engine agrees"
    );
    b.step().unwrap();
    assert_eq!(
        b.regs().unwrap().gpr[1],
        0x1111,
        "the guest reads through the registers"
    );
    b.step().unwrap();
    b.step().unwrap(); // CR3 reload: the new PDPTE is loaded
    assert_eq!(b.regs().unwrap().pdptrs[0], 0x32001);
    b.step().unwrap();
    assert_eq!(
        b.regs().unwrap().gpr[2],
        0x2222,
        "and after the reload through the new one"
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn pae_cr3_load_with_reserved_pdpte_bits_raises_gp() {
    let mut code = asm(32, CODE, |a| {
        a.mov(eax, 0x30000u32)?;
        a.mov(cr3, eax)?;
        a.hlt()
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let mut b = pae_guest(code);
    // R/W is reserved in a PAE PDPTE.
    assert!(b.write_phys(0x30000, &(0x31003u64).to_le_bytes()));
    b.step().unwrap();
    let before = b.regs().unwrap();
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    let after = b.regs().unwrap();
    assert_eq!(after.rip, CODE + 0x80, "#GP delivered");
    assert_eq!(
        after.cr3, before.cr3,
        "the faulting write did not take effect"
    );
    assert_eq!(
        b.delivered.last().map(|d| (d.vector, d.error_code)),
        Some((13, Some(0)))
    );
    let mut frame = [0u8; 8];
    assert!(b.read_phys(after.gpr[4], &mut frame));
    assert_eq!(
        u32::from_le_bytes(frame[..4].try_into().unwrap()),
        0,
        "error code 0"
    );
    assert_eq!(
        u32::from_le_bytes(frame[4..].try_into().unwrap()) as u64,
        before.rip,
        "faulting EIP"
    );
}

#[test]
fn reserved_cr4_bit_raises_gp_instead_of_being_ignored() {
    let mut code = asm(32, CODE, |a| {
        a.mov(esp, 0x9000u32)?;
        a.mov(eax, 1u32 << 31)?;
        a.mov(cr4, eax)?;
        a.hlt()
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let mut b = pae_guest(code);
    let mut r = b.regs().unwrap();
    r.cr0 &= !0x8000_0000;
    r.cr4 = 0;
    b.set_regs(&r).unwrap();
    for _ in 0..3 {
        b.step().unwrap();
    }
    let after = b.regs().unwrap();
    assert_eq!((after.rip, after.cr4), (CODE + 0x80, 0));
}

#[test]
fn interrupt_shadow_instructions_are_single_steps() {
    // mov ss and sti inhibit interrupts for one instruction; QEMU ends its block there, and a
    // step must still be exactly one instruction.
    let code = asm(16, 0x7c00, |a| {
        a.mov(ax, 0x50u32)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x100u32)?;
        a.sti()?;
        a.nop()?;
        a.push(ax)?;
        a.pop(ss)?;
        a.nop()?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code.clone(), 0x7c00, vec![], entry));
    let mut dec = iced_x86::Decoder::with_ip(16, &code, 0x7c00, iced_x86::DecoderOptions::NONE);
    let mut rip = 0x7c00;
    loop {
        let insn = dec.decode();
        let r = b.step().unwrap();
        let regs = b.regs().unwrap();
        assert_eq!(regs.rip, rip + insn.len() as u64, "{insn}");
        rip = regs.rip;
        if insn.mnemonic() == iced_x86::Mnemonic::Mov
            && insn.op0_register() == iced_x86::Register::SS
        {
            assert_eq!((regs.seg[2].selector, regs.seg[2].base), (0x50, 0x500));
        }
        if r.exit == Exit::Halted {
            break;
        }
    }
}

#[test]
fn host_writes_over_code_take_effect() {
    let code = asm(16, 0x7c00, |a| {
        a.nop()?;
        a.mov(ax, 1u32)?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![], entry));
    b.step().unwrap(); // translates the block that holds the next instructions too
    assert!(b.write_phys(0x7c02, &[2, 0])); // mov ax, 2
    b.step().unwrap();
    assert_eq!(b.regs().unwrap().gpr[0] & 0xffff, 2);
}

/// A long-mode guest running at CPL3: own GDT (kernel code 0x08, kernel data 0x10, user code
/// 0x1b, user data 0x23, 64-bit TSS 0x28 with RSP0 = 0x8000), user-accessible identity map,
/// IDT whose gates (DPL3) all point at CODE + 0x100 (hlt) in the kernel code segment.
fn user_mode_guest(user_code: Vec<u8>) -> EmuBackend {
    let mut code = user_code;
    code.resize(0x100, 0x90);
    code.push(0xf4);
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Long);
    let tss_base: u64 = 0x40000;
    let gdt: [u64; 7] = [
        0,
        0x00af_9b00_0000_ffff, // kernel code64
        0x00cf_9300_0000_ffff, // kernel data
        0x00af_fb00_0000_ffff, // user code64, DPL3
        0x00cf_f300_0000_ffff, // user data, DPL3
        0x0000_8b00_0000_0067 | ((tss_base & 0xff_ffff) << 16) | (((tss_base >> 24) & 0xff) << 56),
        tss_base >> 32,
    ];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    assert!(b.write_phys(0x41000, &gdt_bytes));
    let mut tss = vec![0u8; 0x68];
    tss[4..12].copy_from_slice(&0x8000u64.to_le_bytes());
    tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes()); // no I/O bitmap
    assert!(b.write_phys(tss_base, &tss));
    let handler = CODE + 0x100;
    let mut idt = Vec::new();
    for _ in 0..256 {
        let lo = (handler & 0xffff)
            | (0x08u64 << 16)
            | (0xeeu64 << 40)
            | (((handler >> 16) & 0xffff) << 48);
        idt.extend_from_slice(&lo.to_le_bytes());
        idt.extend_from_slice(&(handler >> 32).to_le_bytes());
    }
    assert!(b.write_phys(0x42000, &idt));
    // Make the identity map user-accessible: PML4E 0, PDPTE 0 and the first PDEs get U/S.
    let set_user = |b: &mut EmuBackend, gpa: u64| {
        let mut e = [0u8; 8];
        assert!(b.read_phys(gpa, &mut e));
        let v = u64::from_le_bytes(e) | 4;
        assert!(b.write_phys(gpa, &v.to_le_bytes()));
        v & 0x000f_ffff_ffff_f000
    };
    let pdpt = set_user(&mut b, g.entry.cr3);
    let pd = set_user(&mut b, pdpt);
    for i in 0..4 {
        set_user(&mut b, pd + 8 * i);
    }
    let mut r = b.regs().unwrap();
    r.gdtr = traces::DescriptorTable {
        base: 0x41000,
        limit: 7 * 8 - 1,
    };
    r.idtr = traces::DescriptorTable {
        base: 0x42000,
        limit: 256 * 16 - 1,
    };
    r.tr = traces::Segment {
        selector: 0x28,
        base: tss_base,
        limit: 0x67,
        attrs: 0x8b,
    };
    r.seg[1] = traces::Segment {
        selector: 0x1b,
        base: 0,
        limit: 0xffff_ffff,
        attrs: 0xa0fb,
    };
    for n in [0usize, 2, 3, 4, 5] {
        r.seg[n] = traces::Segment {
            selector: 0x23,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xc0f3,
        };
    }
    r.gpr[4] = 0x7_0000;
    r.rflags = 0x202;
    b.set_regs(&r).unwrap();
    b
}

#[test]
fn user_mode_int_switches_to_the_kernel_stack() {
    let mut b = user_mode_guest(asm(64, CODE, |a| a.int(0x80)));
    let before = b.regs().unwrap();
    assert_eq!(before.seg[2].attrs >> 5 & 3, 3, "CPL3");
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    let r = b.regs().unwrap();
    assert_eq!(r.rip, CODE + 0x100);
    assert_eq!(
        (r.seg[1].selector, r.seg[2].selector),
        (0x08, 0),
        "kernel CS, null SS with RPL 0"
    );
    assert_eq!(r.gpr[4], 0x8000 - 40, "RSP0 from the TSS, five pushes");
    assert_eq!(r.rflags & 0x200, 0, "interrupt gate cleared IF");
    let mut frame = [0u8; 40];
    assert!(b.read_phys(0x8000 - 40, &mut frame));
    let q = |i: usize| u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(
        [q(0), q(1), q(2), q(3), q(4)],
        [CODE + 2, 0x1b, 0x202, 0x7_0000, 0x23]
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn user_mode_port_io_without_permission_raises_gp() {
    let mut b = user_mode_guest(asm(64, CODE, |a| a.in_(al, 0x60)));
    assert_eq!(
        b.step().unwrap().exit,
        Exit::Stepped,
        "not an I/O exit: the `in` faults"
    );
    let r = b.regs().unwrap();
    assert_eq!(r.rip, CODE + 0x100);
    assert_eq!(
        b.delivered.last().map(|d| (d.vector, d.error_code)),
        Some((13, Some(0)))
    );
}

#[test]
fn four_gib_of_ram_leaves_no_hole_and_still_enters_exactly() {
    // RAM fills the low 4 GiB: the trampoline borrows RAM and restores it.
    let code = asm(32, CODE, |a| a.hlt());
    let g = guests::loader::load_raw(
        &code,
        CODE,
        CODE,
        guests::loader::EntryMode::Protected,
        4 << 30,
    )
    .unwrap();
    let mut b = loaded(&g);
    assert_eq!(b.regs().unwrap(), g.entry);
    let mut window = vec![0u8; 0x2_0000];
    assert!(b.read_phys(0x10_0000, &mut window));
    assert!(
        window.iter().all(|&x| x == 0),
        "the borrowed window is restored"
    );
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn bits32_page_fault_on_a_data_read_is_delivered() {
    let mut code = asm(32, CODE, |a| {
        a.mov(esp, 0x9000u32)?;
        a.mov(eax, 0x7d27_e2a0u32)?;
        a.mov(al, byte_ptr(eax))?;
        a.hlt()
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Protected);
    // Page directory at 0x30000: PDE 0 = 4 MiB page at 0 (PSE); everything else not present.
    assert!(b.write_phys(0x30000, &(0x83u32).to_le_bytes()));
    let handler = CODE + 0x80;
    let gate = (handler & 0xffff) | (0x08u64 << 16) | (0x8eu64 << 40) | ((handler >> 16) << 48);
    let idt: Vec<u8> = (0..32).flat_map(|_| gate.to_le_bytes()).collect();
    assert!(b.write_phys(0x20000, &idt));
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 8 - 1,
    };
    r.cr4 = 0x10;
    r.cr3 = 0x30000;
    r.cr0 |= 0x8000_0000;
    b.set_regs(&r).unwrap();
    b.step().unwrap();
    b.step().unwrap();
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    let after = b.regs().unwrap();
    assert_eq!((after.rip, after.cr2), (handler, 0x7d27_e2a0));
    assert_eq!(
        b.delivered.last().map(|d| (d.vector, d.error_code)),
        Some((14, Some(0)))
    );
}

#[test]
fn a_branch_to_an_unmapped_page_faults_on_the_next_step() {
    // Hardware single-step: the jmp retires (RIP = target), then the fetch at the target
    // faults. Unicorn faults while looking up the target block in the same run; the backend
    // must still report two steps and leave CR2 alone until the fault is delivered.
    let mut code = asm(32, CODE, |a| {
        a.mov(esp, 0x9000u32)?;
        a.mov(eax, 0x7d27_e000u32)?;
        a.jmp(eax)
    });
    code.resize(0x80, 0x90);
    code.push(0xf4);
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Protected);
    assert!(b.write_phys(0x30000, &(0x83u32).to_le_bytes()));
    let handler = CODE + 0x80;
    let gate = (handler & 0xffff) | (0x08u64 << 16) | (0x8eu64 << 40) | ((handler >> 16) << 48);
    let idt: Vec<u8> = (0..32).flat_map(|_| gate.to_le_bytes()).collect();
    assert!(b.write_phys(0x20000, &idt));
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 8 - 1,
    };
    r.cr4 = 0x10;
    r.cr3 = 0x30000;
    r.cr0 |= 0x8000_0000;
    r.cr2 = 0x1234;
    b.set_regs(&r).unwrap();
    b.step().unwrap();
    b.step().unwrap();
    b.step().unwrap(); // jmp eax
    let mid = b.regs().unwrap();
    assert_eq!(
        (mid.rip, mid.cr2),
        (0x7d27_e000, 0x1234),
        "the jmp retired; no fault yet"
    );
    assert!(b.delivered.is_empty());
    b.step().unwrap(); // the fetch fault
    let after = b.regs().unwrap();
    assert_eq!((after.rip, after.cr2), (handler, 0x7d27_e000));
    assert_eq!(
        b.delivered.last().map(|d| (d.vector, d.error_code)),
        Some((14, Some(0)))
    );
}

#[test]
fn rep_string_port_io_exits_once_per_iteration() {
    let code = asm(16, 0x7c00, |a| {
        a.mov(si, 0x600u32)?;
        a.mov(di, 0x700u32)?;
        a.mov(dx, 0xe9u32)?;
        a.mov(cx, 2u32)?;
        a.rep().outsb()?;
        a.mov(cx, 2u32)?;
        a.rep().insb()?;
        a.hlt()
    });
    let entry = guests::image::real_mode_entry(0x7c00);
    let mut b = loaded(&guest(code, 0x7c00, vec![(0x600, b"hi".to_vec())], entry));
    for _ in 0..4 {
        b.step().unwrap();
    }
    let outs = b.regs().unwrap().rip;
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoOut {
            port: 0xe9,
            size: 1,
            data: b'h' as u32
        }
    );
    assert_eq!(b.regs().unwrap().rip, outs);
    assert_eq!(
        b.step().unwrap().exit,
        Exit::IoOut {
            port: 0xe9,
            size: 1,
            data: b'i' as u32
        }
    );
    assert_eq!(
        b.regs().unwrap().rip,
        outs + 2,
        "the last iteration retires the instruction"
    );
    b.step().unwrap(); // mov cx, 2
    let ins = b.regs().unwrap().rip;
    for (i, v) in [0x41u32, 0x42].into_iter().enumerate() {
        assert_eq!(
            b.step().unwrap().exit,
            Exit::IoIn {
                port: 0xe9,
                size: 1
            }
        );
        b.complete_io_in(v).unwrap();
        let rip = b.regs().unwrap().rip;
        assert_eq!(rip, if i == 0 { ins } else { ins + 2 });
    }
    let mut m = [0u8; 2];
    assert!(b.read_phys(0x700, &mut m));
    assert_eq!(&m, b"AB");
    assert_eq!(b.step().unwrap().exit, Exit::Halted);
}

#[test]
fn cr8_is_a_register_the_guest_can_read_back() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, 9u64)?;
        a.mov(cr8, rax)?;
        a.mov(rbx, cr8)?;
        a.hlt()
    });
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Long);
    for _ in 0..3 {
        b.step().unwrap();
    }
    let r = b.regs().unwrap();
    assert_eq!((r.cr8, r.gpr[3]), (9, 9));
}

#[test]
fn rarely_written_registers_are_read_back() {
    let code = asm(64, CODE, |a| {
        // XCR0 = x87 | SSE (needs CR4.OSXSAVE, set by the host below)
        a.xor(ecx, ecx)?;
        a.mov(eax, 3u32)?;
        a.xor(edx, edx)?;
        a.xsetbv()?;
        // KERNEL_GS_BASE, then swapgs
        a.mov(ecx, 0xc000_0102u32)?;
        a.mov(eax, 0x5000u32)?;
        a.mov(edx, 0xffffu32)?;
        a.wrmsr()?;
        a.swapgs()?;
        // PKRU (needs CR4.PKE)
        a.xor(ecx, ecx)?;
        a.xor(edx, edx)?;
        a.mov(eax, 0xc0u32)?;
        a.wrpkru()?;
        a.hlt()
    });
    let (mut b, _) = raw(code, CODE, guests::loader::EntryMode::Long);
    let mut r = b.regs().unwrap();
    r.cr4 |= (1 << 18) | (1 << 22);
    b.set_regs(&r).unwrap();
    loop {
        if b.step().unwrap().exit == Exit::Halted {
            break;
        }
    }
    let r = b.regs().unwrap();
    assert_eq!(r.xcr0, 3);
    assert_eq!(
        r.seg[5].base, 0xffff_0000_5000,
        "swapgs moved KERNEL_GS_BASE into GS.base"
    );
    assert_eq!(
        r.kernel_gs_base, 0,
        "and the old GS.base into KERNEL_GS_BASE"
    );
    assert_eq!(r.pkru, 0xc0);
}

/// A CPUID table unlike Unicorn's own (another vendor string, MAXPHYADDR 36, no SMEP).
fn foreign_cpuid() -> Vec<traces::CpuidEntry> {
    let v = *b"ForeignCPUid";
    let r = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    let e = |function, index, a: u32, b: u32, c: u32, d: u32| traces::CpuidEntry {
        function,
        index,
        eax: a,
        ebx: b,
        ecx: c,
        edx: d,
    };
    vec![
        e(0, 0, 7, r(0), r(8), r(4)),
        e(1, 0, 0x906ea, 0x0800, 1 << 26, 0x0781_abfd),
        e(7, 0, 0, 1 << 20, 1 << 3, 0),
        e(7, 1, 0x1234, 0, 0, 0),
        e(0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
        e(0x8000_0008, 0, 0x3024, 0, 0, 0),
    ]
}

#[test]
fn the_guests_cpuid_table_is_what_cpuid_returns() {
    let code = asm(64, CODE, |a| {
        for (leaf, sub) in [
            (0u32, 0u32),
            (7, 1),
            (7, 0),
            (0x8000_0008, 0),
            (0x20, 0),
            (5, 0),
        ] {
            a.mov(eax, leaf)?;
            a.mov(ecx, sub)?;
            a.cpuid()?;
        }
        a.hlt()
    });
    let mut g = guests::loader::load_raw(&code, CODE, CODE, guests::loader::EntryMode::Long, RAM)
        .expect("load_raw");
    g.cpuid = foreign_cpuid();
    let mut b = loaded(&g);
    let mut results = Vec::new();
    for _ in 0..6 {
        for _ in 0..3 {
            b.step().unwrap();
        }
        let r = b.regs().unwrap();
        results.push([r.gpr[0], r.gpr[3], r.gpr[1], r.gpr[2]].map(|v| v as u32));
    }
    let t = foreign_cpuid();
    let regs = |i: usize| [t[i].eax, t[i].ebx, t[i].ecx, t[i].edx];
    assert_eq!(results[0], regs(0), "leaf 0: the table's vendor");
    assert_eq!(results[1], regs(3), "leaf 7 sub-leaf 1");
    // CR4.PKE is clear at entry: OSPKE (leaf 7 ECX bit 4) stays clear.
    assert_eq!(results[2], regs(2), "leaf 7 sub-leaf 0");
    assert_eq!(results[3], regs(5), "MAXPHYADDR 36");
    // Above every class maximum on an Intel-style vendor: the highest basic leaf (7).
    assert_eq!(results[4], regs(2), "out of range: leaf 7, sub-leaf 0");
    assert_eq!(results[5], [0, 0, 0, 0], "an absent leaf within range");
    assert_eq!(b.cpuid(), t, "the trace header gets the table");
    assert!(
        b.warnings.iter().any(|w| w.contains("MAXPHYADDR is 36")),
        "{:?}",
        b.warnings
    );
}

#[test]
fn the_guests_cpuid_table_governs_the_architectural_checks() {
    // The table offers no SMEP: setting CR4.SMEP raises #GP although Unicorn's CPU has it.
    let handler = CODE + 0x100;
    let mut code = asm(64, CODE, |a| {
        a.mov(rax, cr4)?;
        a.or(rax, 1 << 20)?;
        a.mov(cr4, rax)?;
        a.hlt()
    });
    code.resize(0x100, 0x90);
    code.push(0xf4);
    let mut g = guests::loader::load_raw(&code, CODE, CODE, guests::loader::EntryMode::Long, RAM)
        .expect("load_raw");
    g.cpuid = foreign_cpuid();
    let mut b = loaded(&g);
    assert!(b.write_phys(0x20000, &idt64(handler, g.entry.seg[1].selector)));
    let mut r = b.regs().unwrap();
    r.idtr = traces::DescriptorTable {
        base: 0x20000,
        limit: 32 * 16 - 1,
    };
    r.gpr[4] = 0x9000;
    b.set_regs(&r).unwrap();
    let cr4_before = r.cr4;
    for _ in 0..3 {
        b.step().unwrap();
    }
    assert_eq!(b.regs().unwrap().cr4, cr4_before);
    assert_eq!(b.regs().unwrap().rip, handler);
    assert_eq!(
        b.delivered.first().map(|d| (d.vector, d.error_code)),
        Some((13, Some(0)))
    );
}

#[test]
fn accessed_bits_of_the_next_fetch_belong_to_the_next_step() {
    // Long mode is entered with paging on; a jump to a page whose PTE has A clear must show
    // that A bit being set by the step that fetches from the page, as on a CPU, not by the
    // jump (Unicorn translates the target block before it stops).
    // In the second 2 MiB page of the identity map, whose PDE has A clear.
    let target = 0x20_1000u64;
    let code = asm(64, CODE, |a| {
        a.mov(rax, target)?;
        a.jmp(rax)
    });
    let (mut b, g) = raw(code, CODE, guests::loader::EntryMode::Long);
    assert!(b.write_phys(target, &[0x90, 0xf4]));
    // Find the PTE of `target` and clear its A bit.
    let root = g.entry.cr3 & !0xfff;
    let read = |b: &EmuBackend, gpa: u64| {
        let mut x = [0u8; 8];
        assert!(b.read_phys(gpa, &mut x));
        u64::from_le_bytes(x)
    };
    let mut table = root;
    let mut pte_gpa = 0;
    for (level, shift) in [(4, 39), (3, 30), (2, 21), (1, 12)] {
        let gpa = table + ((target >> shift) & 0x1ff) * 8;
        let e = read(&b, gpa);
        if level == 1 || e & 0x80 != 0 {
            pte_gpa = gpa;
            break;
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    let pte = read(&b, pte_gpa);
    assert!(b.write_phys(pte_gpa, &(pte & !0x20).to_le_bytes()));
    let now = b.regs().unwrap();
    b.set_regs(&now).unwrap(); // flushes the TLB
    let covers = |w: &Written| match w {
        Written::Ranges(r) => r.iter().any(|&(g, l)| g <= pte_gpa && pte_gpa < g + l),
        Written::Unknown | Written::DirtyPages(_) => false,
    };
    b.step().unwrap(); // mov rax
    let jmp = b.step().unwrap();
    assert_eq!(b.regs().unwrap().rip, target);
    assert_eq!(
        read(&b, pte_gpa) & 0x20,
        0,
        "A is still clear after the jump"
    );
    assert!(!covers(&jmp.written));
    let nop = b.step().unwrap();
    assert_ne!(read(&b, pte_gpa) & 0x20, 0, "the fetch at the target set A");
    assert!(covers(&nop.written), "{:?}", nop.written);
}

/// SYSCALL as the SDM says (Unicorn alone only skips it): RCX = the next RIP, R11 = RFLAGS,
/// RIP = IA32_LSTAR, RFLAGS masked by IA32_FMASK, CS and SS from IA32_STAR[47:32].
#[test]
fn syscall_enters_the_kernel_at_lstar() {
    let code = asm(64, 0x10_0000, |a| {
        a.mov(ecx, 0xc000_0080u32)?; // EFER: keep LME/LMA, set SCE
        a.rdmsr()?;
        a.or(eax, 1)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0081u32)?; // STAR[47:32] = 0x10
        a.xor(eax, eax)?;
        a.mov(edx, 0x0023_0010u32)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0082u32)?; // LSTAR
        a.mov(eax, 0x10_0800u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0084u32)?; // FMASK: IF, DF, TF
        a.mov(eax, 0x700u32)?;
        a.wrmsr()?;
        a.mov(rax, 12u64)?;
        a.std()?;
        a.syscall()?;
        a.hlt()
    });
    let (mut b, _) = raw(code, 0x10_0000, guests::loader::EntryMode::Long);
    let mut before = b.regs().unwrap();
    for _ in 0..30 {
        before = b.regs().unwrap();
        let mut bytes = [0u8; 2];
        assert!(b.read_phys(before.rip, &mut bytes));
        if bytes == [0x0f, 0x05] {
            break;
        }
        assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    }
    assert_eq!(b.step().unwrap().exit, Exit::Stepped);
    let after = b.regs().unwrap();
    assert_eq!(after.rip, 0x10_0800);
    assert_eq!(after.gpr[1], before.rip + 2, "RCX");
    assert_eq!(after.gpr[11], before.rflags, "R11");
    assert_eq!(after.rflags & 0x700, 0, "RFLAGS masked");
    assert_eq!(after.gpr[0], 12, "RAX untouched");
    assert_eq!(after.seg[traces::regs::CS].selector, 0x10);
    assert_eq!(after.seg[traces::regs::SS].selector, 0x18);
    assert_eq!(after.seg[traces::regs::CS].attrs & 0xa0ff, 0xa09b);
}
