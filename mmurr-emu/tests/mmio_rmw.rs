//! An MMIO read-modify-write (`and dword [mmio], imm`) on Unicorn: the read is answered, the
//! write follows, both are Mmio events of the same step (as on kvm, see
//! recorder-kvm/tests/exact_memory.rs), and the guest runs on.

use iced_x86::code_asm::*;
use mmurr_emu::EmuBackend;
use recorder::RecordOptions;
use traces::{EndReason, EventKind, MmioAccess, Reader, Record};

#[test]
fn mmio_read_modify_write_is_one_step_with_a_read_and_a_write() {
    const AT: u64 = 0x1000;
    let mut a = CodeAssembler::new(32).unwrap();
    a.and(dword_ptr(0xfed0_0010u32), 0x1234_5678).unwrap();
    a.mov(al, 0).unwrap();
    a.out(0xf4, al).unwrap();
    let code = a.assemble(AT).unwrap();
    let mut g =
        guests::loader::load_raw(&code, AT, AT, guests::loader::EntryMode::Protected, 2 << 20)
            .unwrap();
    g.regions.push(traces::MemRegion {
        gpa: 0xfed0_0000,
        size: 0x1000,
        kind: traces::RegionKind::Mmio,
        name: "device".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = RecordOptions::new(dir.path().join("rmw.mmurr"));
    let mut backend = EmuBackend::new().expect("open unicorn");
    let summary = recorder::record(&mut backend, &g, &opts).unwrap();
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        summary.end.message
    );
    let mut reader = Reader::open(&opts.output).unwrap();
    let mmio: Vec<(u64, MmioAccess)> = reader
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Event(e) => match e.kind {
                EventKind::Mmio(m) => Some((e.step, m)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // The devices answer an absent address with all ones.
    let read = MmioAccess {
        gpa: 0xfed0_0010,
        write: false,
        size: 4,
        data: 0xffff_ffff,
    };
    let write = MmioAccess {
        data: 0x1234_5678,
        write: true,
        ..read
    };
    assert_eq!(mmio, vec![(1, read), (1, write)]);
    assert_eq!(summary.steps, 3, "and, mov, out");
}
