//! The committed golden traces in `traces/corpus/` (format version 1) read back exactly.
//! Every later version of the reader must keep passing this test unchanged.

mod common;

use common::*;
use std::path::PathBuf;
use traces::*;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(format!("{name}.mmurr"))
}

/// (name, chunks, records, events, total steps, cr4 writes, transitions, resets, findings)
type Expected = (&'static str, usize, u64, u64, u64, u64, u64, u64, u64);
const EXPECTED: [Expected; 3] = [
    ("pae-toggle", 5, 694, 86, 600, 3, 5, 24, 2),
    ("long-mode", 4, 377, 69, 300, 3, 4, 19, 2),
    ("killed", 3, 360, 40, 316, 2, 2, 11, 1),
];

#[test]
fn golden_traces_read_back_exactly() {
    for g in synth::golden() {
        let mut reader = Reader::open(corpus(g.name)).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_eq!(reader.format_version(), 1, "{}", g.name);
        assert_eq!(reader.header(), &g.header, "{}", g.name);
        let got = read_all(&mut reader);
        let c = reader.event_counts().clone();
        let row = (
            g.name,
            reader.chunks().len(),
            reader.record_count(),
            reader.event_count(),
            reader.total_steps(),
            c.kind("cr4"),
            c.kind("transition"),
            c.resets(),
            c.kind("finding"),
        );
        let expected = EXPECTED.iter().find(|e| e.0 == g.name).copied();
        assert_eq!(Some(row), expected, "{}", g.name);
        if g.killed {
            assert!(!reader.is_complete());
            let rec = reader.recovery().unwrap();
            assert!(rec.lost_bytes > 0 && rec.stopped_at.is_some(), "{rec:?}");
            assert_eq!(got, g.records[..got.len()]);
            assert!(got.len() < g.records.len());
            assert_eq!(reader.end(), None);
        } else {
            assert!(reader.is_complete(), "{}", g.name);
            assert_eq!(got, g.records, "{}", g.name);
            assert!(matches!(
                reader.end().map(|e| &e.reason),
                Some(EndReason::DebugExit { status: 0 })
            ));
        }
        assert_eq!(&c, &counts_of(&got));
        check_random_access(&mut reader, &got);
    }
}

/// The committed recording of `smp-bringup` on four vCPUs (format 5): it reads back with its
/// vCPU count, every chunk names its vCPU, and each vCPU's events are where they were.
#[test]
fn format_5_recording_of_four_vcpus_reads_back() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/recorded/smp-bringup.emu.mmurr");
    let mut reader = Reader::open(&path).unwrap();
    assert_eq!(reader.format_version(), 5);
    assert_eq!(reader.header().vcpu_count(), 4);
    assert!(reader.is_complete());
    assert_eq!(reader.total_steps(), 295);
    assert_eq!(reader.event_count(), 315);
    let records: Vec<Record> = reader.records().map(|r| r.unwrap()).collect();
    assert!(matches!(records.first(), Some(Record::Vcpu(_))));
    let mut cursor = VcpuCursor::new();
    let (mut startups, mut cr_writes) = (Vec::new(), [0u32; 4]);
    for r in &records {
        let v = cursor.observe(r);
        if let Record::Event(e) = r {
            match &e.kind {
                EventKind::Startup { vector } => startups.push((v, *vector)),
                EventKind::CrWrite(_) => cr_writes[v as usize] += 1,
                _ => {}
            }
        }
    }
    assert_eq!(startups, vec![(1, 0x30), (2, 0x30), (3, 0x30)]);
    assert_eq!(cr_writes, [5, 5, 5, 5]);
    // The entry keyframe holds every vCPU's registers: the APs in their INIT state.
    let Some(Record::Vcpus(k)) = records.iter().find(|r| matches!(r, Record::Vcpus(_))) else {
        panic!("no keyframe of every vCPU");
    };
    assert_eq!((k.step, k.current, k.regs.len()), (0, 0, 4));
    assert_eq!(k.regs[2].rip, 0xfff0);
    assert_eq!(k.regs[2].seg[regs::CS].base, 0xffff_0000);
    let (e, v) = reader.event_with_vcpu(171).unwrap().unwrap();
    assert!(
        matches!(e.kind, EventKind::CrWrite(ref w) if w.reg == ControlReg::Cr4 && w.new == 0x20)
    );
    assert_eq!(v, 2);
}

/// The committed trace of the model-level scenario `init-long-mode` (format 6, written by
/// `mmurr scenarios --run init-long-mode -o F`): backend `model`, its one step the INIT host
/// action, then each policy's decision and the stale contexts of the policies before v5.14.
#[test]
fn format_6_model_trace_with_a_host_action_reads_back() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus/recorded/init-long-mode.model.mmurr");
    let mut reader = Reader::open(&path).unwrap();
    assert_eq!(reader.format_version(), 6);
    assert!(reader.is_complete());
    assert_eq!(reader.header().backend.kind, BackendKind::Model);
    assert_eq!(reader.header().mmu_flavour, "shadow");
    assert_eq!(reader.header().scenario.as_deref(), Some("init-long-mode"));
    assert_eq!(reader.total_steps(), 1);
    let records: Vec<Record> = reader.records().map(|r| r.unwrap()).collect();
    let kinds: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.kind.name()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds[0], "host-action");
    assert_eq!(kinds[1], "transition");
    assert_eq!(kinds.iter().filter(|k| **k == "mmu").count(), 13);
    assert_eq!(kinds.iter().filter(|k| **k == "finding").count(), 7);
    let Some(Record::Event(first)) = records.iter().find(|r| matches!(r, Record::Event(_))) else {
        panic!("no event");
    };
    assert_eq!(first.kind, EventKind::HostAction(HostAction::Init));
    assert_eq!(reader.event_counts().kind("host-action"), 1);
    // The step's registers are INIT's: real mode, paging off.
    let Some(Record::Step(s)) = records.iter().find(|r| matches!(r, Record::Step(_))) else {
        panic!("no step");
    };
    assert!(s.regs.contains(&(RegId::Cr0, 0x6000_0010)), "{:?}", s.regs);
}
