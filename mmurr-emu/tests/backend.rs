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
