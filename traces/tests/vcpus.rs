//! Format 5: traces of several vCPUs. Records belong to the vCPU of the last `Record::Vcpu`
//! before them; every chunk of such a trace starts with one; one-vCPU traces carry none.

use traces::*;

fn step(step: Step, rip: u64) -> Record {
    Record::Step(StepRecord {
        step,
        rip,
        regs: vec![(RegId::Rip, rip + 1)],
        mem: Vec::new(),
    })
}

fn event(id: EventId, step: Step) -> Record {
    Record::Event(Event {
        id,
        step,
        rip: 0,
        kind: EventKind::Retired { count: 2 },
    })
}

/// Steps 1..=`steps` round robin over `vcpus` vCPUs, one event per step.
fn round_robin(vcpus: u32, steps: Step) -> Vec<Record> {
    let regs = Regs::default();
    let mut out = vec![
        Record::Keyframe(Keyframe {
            step: 0,
            regs: regs.clone(),
            pages: Vec::new(),
            carries_pages: true,
            memory_hash: 0,
        }),
        Record::Vcpus(VcpusKeyframe {
            step: 0,
            current: 0,
            regs: vec![regs; vcpus as usize],
        }),
    ];
    for s in 1..=steps {
        let vcpu = ((s - 1) % vcpus as u64) as u32;
        if vcpu != ((s.max(2) - 2) % vcpus as u64) as u32 || s == 1 && vcpu != 0 {
            out.push(Record::Vcpu(VcpuSwitch { step: s - 1, vcpu }));
        }
        out.push(step(s, 0x1000 * (vcpu as u64 + 1) + s));
        out.push(event(s - 1, s));
    }
    out
}

fn header(vcpus: u32) -> Header {
    Header {
        vcpus,
        ..synth::header("smp", 7)
    }
}

fn write(header: &Header, records: &[Record], flush_every: usize) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), header).unwrap();
    for (i, r) in records.iter().enumerate() {
        w.append(r).unwrap();
        if (i + 1) % flush_every == 0 {
            w.flush_chunk().unwrap();
        }
    }
    w.finish().unwrap().0
}

#[test]
fn every_record_keeps_its_vcpu_across_chunks() {
    let records = round_robin(3, 40);
    let bytes = write(&header(3), &records, 7);
    let mut r = Reader::from_bytes(bytes).unwrap();
    assert!(
        r.format_version() >= 5,
        "written with the vCPU records of format 5"
    );
    assert_eq!(r.header().vcpu_count(), 3);
    // Each chunk starts with the switch naming its vCPU; attributing chunk by chunk gives
    // every step record to the vCPU that ran it.
    for c in 0..r.chunks().len() {
        let chunk = r.chunk_records(c).unwrap();
        assert!(matches!(chunk.first(), Some(Record::Vcpu(_))), "chunk {c}");
        for (vcpu, rec) in vcpu::attribute(&chunk) {
            if let Record::Step(s) = rec {
                assert_eq!(vcpu as u64, (s.step - 1) % 3, "step {}", s.step);
                assert_eq!(s.rip, 0x1000 * (vcpu as u64 + 1) + s.step);
            }
        }
    }
    for id in 0..40 {
        let (e, vcpu) = r.event_with_vcpu(id).unwrap().unwrap();
        assert_eq!(e.step, id + 1);
        assert_eq!(vcpu as u64, id % 3, "event {id}");
    }
    // Without the chunk heads, the records are exactly those written.
    let read: Vec<Record> = r.records().map(|r| r.unwrap()).collect();
    let mut cursor = VcpuCursor::new();
    let mut without_heads = Vec::new();
    for rec in &read {
        let before = cursor.current();
        let now = cursor.observe(rec);
        let redundant = matches!(rec, Record::Vcpu(_)) && before == now;
        if !redundant {
            without_heads.push(rec.clone());
        }
    }
    assert_eq!(without_heads, records);
}

#[test]
fn one_vcpu_traces_carry_no_vcpu_records() {
    let records: Vec<Record> = synth::Synth::new(5, 300, 50, 20).collect();
    let bytes = write(&synth::header("one", 5), &records, 30);
    let mut r = Reader::from_bytes(bytes).unwrap();
    assert_eq!(r.header().vcpu_count(), 1);
    let read: Vec<Record> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(read, records);
}

#[test]
fn switches_and_keyframes_naming_absent_vcpus_are_refused() {
    let mut w = Writer::new(Vec::new(), &header(2)).unwrap();
    let e = w
        .append(&Record::Vcpu(VcpuSwitch { step: 0, vcpu: 2 }))
        .unwrap_err();
    assert!(e.to_string().contains("vCPU 2 in a trace of 2"), "{e}");
    let e = w
        .append(&Record::Vcpus(VcpusKeyframe {
            step: 0,
            current: 0,
            regs: vec![Regs::default()],
        }))
        .unwrap_err();
    assert!(e.to_string().contains("keyframe of 1 vCPU"), "{e}");
}

#[test]
fn a_header_declaring_too_many_vcpus_is_a_typed_error() {
    let bytes = write(&header(MAX_VCPUS + 1), &[], 1);
    let e = Reader::from_bytes(bytes).err().expect("refused");
    assert!(e.to_string().contains("vCPUs declared"), "{e}");
}
