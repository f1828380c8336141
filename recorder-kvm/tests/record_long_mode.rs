//! Recording hand-made long-mode guests on /dev/kvm and reading the traces back.
mod common;

use iced_x86::code_asm::*;
use recorder::{record, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use traces::{ControlReg, EndReason, EventKind, Reader, Record, WriteVia};

fn record_code(
    code: &[u8],
    opts: RecordOptions,
) -> (
    recorder::RecordSummary,
    Reader<std::io::BufReader<std::fs::File>>,
) {
    let mut backend = KvmBackend::new(probe()).unwrap();
    let summary = record(&mut backend, &common::long_mode_guest(code), &opts).unwrap();
    let reader = Reader::open(&opts.output).unwrap();
    (summary, reader)
}

#[test]
fn cr_writes_io_and_memory_are_recorded() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let code = common::asm64(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
        a.mov(qword_ptr(0x8000), rax).unwrap();
        a.push(rax).unwrap();
        a.mov(dx, 0x3f8u32).unwrap();
        a.mov(al, b'K' as u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(dx, 0x3fdu32).unwrap();
        a.in_(al, dx).unwrap();
        a.mov(rax, cr3).unwrap();
        a.mov(cr3, rax).unwrap(); // same value: still a write
        a.mov(rax, cr4).unwrap();
        a.or(rax, 0x80).unwrap(); // PGE
        a.mov(cr4, rax).unwrap();
        a.mov(al, 0x10u32).unwrap();
        a.out(0xf4u32, al).unwrap();
    });
    let mut opts = RecordOptions::new(dir.path().join("t.mmurr"));
    opts.keyframe_interval = 4;
    opts.self_check_every = 2;
    let (summary, mut reader) = record_code(&code, opts);
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0x10 },
        "{}",
        summary.end.message
    );
    assert_eq!(summary.exit_code, Some(0x21));
    assert_eq!(summary.serial_output, b"K");
    assert!(
        summary.end.self_check_failures.is_empty(),
        "{:?}",
        summary.end.self_check_failures
    );
    assert_eq!(summary.steps, 15);
    assert!(reader.is_complete());

    let records: Vec<Record> = reader.records().collect::<Result<_, _>>().unwrap();
    let writes: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => match &e.kind {
                EventKind::CrWrite(w) => Some(w.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        (writes[0].reg, writes[0].via, writes[0].old, writes[0].new),
        (ControlReg::Cr3, WriteVia::MovCr, 0x1000, 0x1000)
    );
    assert_eq!(
        (writes[1].reg, writes[1].old, writes[1].new),
        (ControlReg::Cr4, 0x20, 0xa0)
    );
    // One MMU decision per policy for each write.
    let decisions = records
        .iter()
        .filter(|r| matches!(r, Record::Event(e) if matches!(e.kind, EventKind::Mmu(_))))
        .count();
    assert_eq!(decisions, 2 * mmu::policies().len());
    let io: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => match e.kind {
                EventKind::Io(io) => Some((io.port, io.write, io.data)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        io,
        vec![
            (0x3f8, true, b'K' as u32),
            (0x3fd, false, 0x60),
            (0xf4, true, 0x10)
        ]
    );
    // The store and the push are in the step records.
    let mem: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s.mem.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(mem
        .iter()
        .any(|w| w.gpa == 0x8000 && w.data == 0x1122_3344_5566_7788u64.to_le_bytes()));
    assert!(mem
        .iter()
        .any(|w| w.gpa == 0x7fff8 && w.data == 0x1122_3344_5566_7788u64.to_le_bytes()));
    assert!(matches!(records.last(), Some(Record::End(_))));
}

#[test]
fn emulation_failures_name_the_instruction_and_keep_the_trace() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let code = common::asm64(|a| {
        a.nop().unwrap();
        a.int3().unwrap();
    });
    let (summary, reader) = record_code(&code, RecordOptions::new(dir.path().join("t.mmurr")));
    if probe().pvm {
        assert_eq!(summary.end.reason, EndReason::Error);
        assert!(
            summary.end.message.contains("int3") && summary.end.message.contains("--backend emu"),
            "{}",
            summary.end.message
        );
        assert_eq!(summary.steps, 1);
    }
    assert!(reader.is_complete());
}

#[test]
fn step_budget_and_halt_end_the_run() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let spin = common::asm64(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.inc(rcx).unwrap();
        a.jmp(top).unwrap();
    });
    let mut opts = RecordOptions::new(dir.path().join("spin.mmurr"));
    opts.max_steps = 1000;
    let (summary, reader) = record_code(&spin, opts);
    assert_eq!(summary.end.reason, EndReason::StepBudget);
    assert_eq!(summary.steps, 1000);
    assert_eq!(reader.total_steps(), 1000);

    let halt = common::asm64(|a| {
        a.cli().unwrap();
        a.hlt().unwrap();
    });
    let (summary, _) = record_code(&halt, RecordOptions::new(dir.path().join("hlt.mmurr")));
    assert_eq!(
        summary.end.reason,
        EndReason::Halted,
        "{}",
        summary.end.message
    );
    assert_eq!(summary.steps, 1);
}

#[test]
fn a_page_fault_is_an_exception_event_with_cr2() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // IDT at 0x9000 with a #PF gate (vector 14) to `handler`, which exits with status 0x0e.
    let code = common::asm64(|a| {
        let mut handler = a.create_label();
        let mut idt_ptr = a.create_label();
        a.lidt(qword_ptr(idt_ptr)).unwrap();
        a.mov(rax, qword_ptr(0x40_0000_0000u64)).unwrap(); // unmapped: #PF
        a.hlt().unwrap();
        a.set_label(&mut handler).unwrap();
        a.mov(al, 0x0eu32).unwrap();
        a.out(0xf4u32, al).unwrap();
        a.set_label(&mut idt_ptr).unwrap();
        a.dw(&[0xfff]).unwrap();
        a.dq(&[0x9000]).unwrap();
    });
    // The handler sits right after `hlt`: find it by decoding the assembled bytes.
    let mut handler = 0;
    let mut d = iced_x86::Decoder::with_ip(64, &code, common::CODE, 0);
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == iced_x86::Mnemonic::Hlt {
            handler = i.next_ip();
            break;
        }
    }
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&8u16.to_le_bytes());
    gate[5] = 0x8e; // present, DPL0, 64-bit interrupt gate
    gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    let mut guest = common::long_mode_guest(&code);
    guest.blobs.push(traces::Blob {
        hash: 0,
        name: "idt".into(),
        data: gate.to_vec(),
    });
    guest.loads.push(traces::Load {
        blob: 3,
        gpa: 0x9000 + 14 * 16,
    });
    let opts = RecordOptions::new(dir.path().join("pf.mmurr"));
    let mut backend = KvmBackend::new(probe()).unwrap();
    let s = record(&mut backend, &guest, &opts).unwrap();
    assert_eq!(
        s.end.reason,
        EndReason::DebugExit { status: 0x0e },
        "{}",
        s.end.message
    );
    assert!(
        s.end.self_check_failures.is_empty(),
        "{:?}",
        s.end.self_check_failures
    );
    let mut reader = Reader::open(&opts.output).unwrap();
    let exc: Vec<_> = reader
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Event(e) => match e.kind {
                EventKind::Exception(x) => Some(x),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(exc.len(), 1, "{exc:?}");
    assert_eq!((exc[0].vector, exc[0].cr2), (14, Some(0x40_0000_0000)));
}

#[test]
fn a_triple_fault_ends_the_run_as_shutdown() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // No IDT (limit 0): #UD cannot be delivered, nor the #GP and #DF after it.
    let code = common::asm64(|a| {
        a.ud2().unwrap();
    });
    let opts = RecordOptions::new(dir.path().join("tf.mmurr"));
    let (summary, reader) = record_code(&code, opts);
    assert_eq!(
        summary.end.reason,
        EndReason::Shutdown,
        "{}",
        summary.end.message
    );
    assert!(reader.is_complete());
}

#[test]
fn string_stores_forward_and_backward_are_recorded_exactly() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let code = common::asm64(|a| {
        a.mov(rdi, 0x9000u64).unwrap();
        a.mov(rcx, 300u64).unwrap();
        a.mov(al, 0xabu32).unwrap();
        a.rep().stosb().unwrap();
        a.std().unwrap();
        a.mov(rdi, 0xa000u64).unwrap();
        a.mov(rcx, 40u64).unwrap();
        a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
        a.rep().stosq().unwrap();
        a.cld().unwrap();
        a.mov(rsi, 0x9000u64).unwrap();
        a.mov(rdi, 0xb000u64).unwrap();
        a.mov(rcx, 16u64).unwrap();
        a.rep().movsd().unwrap();
        a.mov(al, 0u32).unwrap();
        a.out(0xf4u32, al).unwrap();
    });
    let mut opts = RecordOptions::new(dir.path().join("rep.mmurr"));
    opts.keyframe_interval = 50;
    opts.self_check_every = 1;
    let (summary, mut reader) = record_code(&code, opts);
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        summary.end.message
    );
    assert!(
        summary.end.self_check_failures.is_empty(),
        "{:?}",
        summary.end.self_check_failures
    );
    // Rebuild memory from the step records alone and compare with what the guest wrote.
    let mut mem = vec![0u8; 0x10000];
    for r in reader.records() {
        if let Record::Step(s) = r.unwrap() {
            for w in s.mem {
                if (w.gpa as usize) < mem.len() {
                    mem[w.gpa as usize..w.gpa as usize + w.data.len()].copy_from_slice(&w.data);
                }
            }
        }
    }
    assert!(mem[0x9000..0x9000 + 300].iter().all(|&b| b == 0xab));
    assert_eq!(mem[0x9000 + 300], 0);
    let q = 0x0102_0304_0506_0708u64.to_le_bytes();
    for k in 0..40 {
        let at = 0xa000 - 8 * k;
        assert_eq!(mem[at..at + 8], q, "qword {k}");
    }
    assert_eq!(mem[0xa000 - 8 * 40..0xa000 - 8 * 40 + 8], [0; 8]);
    assert!(mem[0xb000..0xb000 + 64].iter().all(|&b| b == 0xab));
}

#[test]
fn mmio_outside_ram_reads_all_ones_and_is_summarised() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let code = common::asm64(|a| {
        a.mov(eax, dword_ptr(0x300_0000)).unwrap(); // 48 MiB: mapped, but RAM ends at 32 MiB
        a.mov(ebx, eax).unwrap();
        a.mov(dword_ptr(0x300_0010), ebx).unwrap();
        a.mov(al, 0u32).unwrap();
        a.out(0xf4u32, al).unwrap();
    });
    let mut guest = common::long_mode_guest(&code);
    guest.ram_size = 32 << 20;
    let opts = RecordOptions::new(dir.path().join("mmio.mmurr"));
    let mut backend = KvmBackend::new(probe()).unwrap();
    let s = record(&mut backend, &guest, &opts).unwrap();
    assert_eq!(
        s.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        s.end.message
    );
    assert_eq!(
        s.unhandled,
        vec![
            ("MMIO read at 0x3000000".to_string(), 1),
            ("MMIO write at 0x3000010".to_string(), 1)
        ]
    );
    let mut reader = Reader::open(&opts.output).unwrap();
    let mmio: Vec<_> = reader
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Event(e) => match e.kind {
                EventKind::Mmio(m) => Some((m.gpa, m.write, m.size, m.data)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        mmio,
        vec![
            (0x300_0000, false, 4, 0xffff_ffff),
            (0x300_0010, true, 4, 0xffff_ffff)
        ]
    );
}
