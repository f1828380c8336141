//! Arbitrary record sequences survive a write and read back equal, by iteration and by
//! random access.

mod common;

use common::*;
use proptest::prelude::*;
use traces::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn write_then_read_back((ops, with_end) in ops(120)) {
        let header = synth::header("prop", 7);
        let (records, flushes) = records_from(&ops, with_end);
        let (bytes, summary) = write(&header, &records, &flushes);
        prop_assert_eq!(summary.records, records.len() as u64);
        prop_assert_eq!(summary.file_bytes, bytes.len() as u64);

        let mut reader = Reader::from_bytes(bytes).expect("open");
        prop_assert!(reader.is_complete());
        prop_assert_eq!(reader.header(), &header);
        prop_assert_eq!(reader.format_version(), FORMAT_VERSION);
        prop_assert_eq!(read_all(&mut reader), records.clone());
        prop_assert_eq!(reader.record_count(), records.len() as u64);
        prop_assert_eq!(reader.event_counts(), &counts_of(&records));
        let end = records.iter().find_map(|r| match r { Record::End(e) => Some(e.clone()), _ => None });
        prop_assert_eq!(reader.end(), end.as_ref());
        let last = records.iter().map(Record::step).max().unwrap_or(0);
        prop_assert_eq!(reader.total_steps(), end.map_or(last, |e| e.step));
        check_random_access(&mut reader, &records);
    }

    /// The same records without `finish`: the rebuilt index answers the same questions.
    #[test]
    fn unfinished_writer_is_recovered((ops, with_end) in ops(80)) {
        let header = synth::header("prop", 8);
        let (records, flushes) = records_from(&ops, with_end);
        let mut w = Writer::new(Vec::new(), &header).expect("writer");
        for (i, r) in records.iter().enumerate() {
            if flushes.contains(&i) { w.flush_chunk().expect("flush"); }
            w.append(r).expect("append");
        }
        w.flush_chunk().expect("flush");
        // Take the bytes without writing the index: what a killed recorder leaves.
        let (bytes, _) = w.finish().expect("finish");
        let complete = Reader::from_bytes(bytes.clone()).expect("open");
        let cut = complete
            .chunks()
            .last()
            .map_or(complete.preamble().records_start(), |c| c.offset + c.header.file_len());
        let mut reader = Reader::from_bytes(bytes[..cut as usize].to_vec()).expect("open cut");
        prop_assert!(!reader.is_complete());
        let rec = reader.recovery().cloned().expect("recovery");
        prop_assert_eq!(rec.lost_bytes, 0);
        prop_assert_eq!(rec.chunks, complete.chunks().len());
        prop_assert_eq!(read_all(&mut reader), records.clone());
        prop_assert_eq!(reader.event_counts(), &counts_of(&records));
        check_random_access(&mut reader, &records);
    }
}

#[test]
fn writer_refuses_invalid_sequences() {
    let header = synth::header("x", 1);
    let mut w = Writer::new(Vec::new(), &header).unwrap();
    let ev = |id| {
        Record::Event(Event {
            id,
            step: 0,
            rip: 0,
            kind: EventKind::Transition {
                from: PagingMode::Real,
                to: PagingMode::Unpaged,
            },
        })
    };
    assert!(matches!(w.append(&ev(1)), Err(Error::InvalidRecord(_))));
    w.append(&ev(0)).unwrap();
    let step = |s| {
        Record::Step(StepRecord {
            step: s,
            rip: 0,
            regs: vec![],
            mem: vec![],
        })
    };
    w.append(&step(5)).unwrap();
    assert!(matches!(w.append(&step(4)), Err(Error::InvalidRecord(_))));
    let end = Record::End(EndRecord {
        step: 6,
        reason: EndReason::Halted,
        message: String::new(),
        self_check_failures: vec![],
    });
    w.append(&end).unwrap();
    assert!(matches!(w.append(&step(7)), Err(Error::InvalidRecord(_))));
    let (bytes, summary) = w.finish().unwrap();
    assert_eq!(summary.records, 3);
    assert_eq!(summary.events, 1);
    let r = Reader::from_bytes(bytes).unwrap();
    assert_eq!(r.total_steps(), 6);
    assert_eq!(r.end().map(|e| e.reason.clone()), Some(EndReason::Halted));
}

#[test]
fn large_records_get_chunks_of_their_own_and_chunks_stay_bounded() {
    let header = synth::header("x", 1);
    let mut w = Writer::new(Vec::new(), &header).unwrap();
    let mut records = Vec::new();
    let mut rng = synth::Rng::new(5);
    for s in 1..=30_000u64 {
        records.push(Record::Step(synth::step(&mut rng, s, 0x1000 + s)));
    }
    // A 3 MiB keyframe: bigger than the chunk target, so it is alone in its chunk.
    let pages = (0..768)
        .map(|i| Page {
            gpa: i * 4096,
            data: (0..4096)
                .map(|j| (rng.next_u64() as u8) ^ (j as u8))
                .collect(),
        })
        .collect();
    records.push(Record::Keyframe(Keyframe {
        step: 30_000,
        regs: Regs::default(),
        pages,
        carries_pages: true,
        memory_hash: 1,
    }));
    for r in &records {
        w.append(r).unwrap();
    }
    let (bytes, summary) = w.finish().unwrap();
    let mut reader = Reader::from_bytes(bytes).unwrap();
    assert_eq!(summary.chunks as usize, reader.chunks().len());
    let big = reader.chunks().last().unwrap().header;
    assert_eq!(big.record_count, 1);
    assert!(big.raw_len as usize > chunk::CHUNK_TARGET_RAW);
    for c in &reader.chunks()[..reader.chunks().len() - 1] {
        assert!(c.header.raw_len as usize <= chunk::CHUNK_TARGET_RAW);
        assert!(c.header.record_count <= chunk::MAX_CHUNK_RECORDS);
    }
    assert_eq!(read_all(&mut reader), records);
    let k = reader.keyframe_at_or_before(u64::MAX).unwrap().unwrap();
    assert_eq!(k.pages.len(), 768);
}

#[test]
fn writes_to_a_file_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.mmurr");
    let header = synth::header("file", 4);
    let records: Vec<Record> = synth::Synth::new(4, 2_000, 100, 50).collect();
    let mut w = Writer::create(&path, &header).unwrap();
    for r in &records {
        w.append(r).unwrap();
    }
    let (_, summary) = w.finish().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.file_bytes);
    let mut reader = Reader::open(&path).unwrap();
    assert!(reader.is_complete());
    assert_eq!(read_all(&mut reader), records);
    assert_eq!(reader.total_steps(), 2_000);
}

#[test]
fn a_dropped_writer_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.mmurr");
    let header = synth::header("drop", 5);
    let records: Vec<Record> = synth::Synth::new(5, 500, 100, 50).take(300).collect();
    {
        let mut w = Writer::create(&path, &header).unwrap();
        for (i, r) in records.iter().enumerate() {
            w.append(r).unwrap();
            if i == 100 {
                w.flush_chunk().unwrap();
            }
        }
    }
    let mut reader = Reader::open(&path).unwrap();
    assert!(!reader.is_complete());
    assert_eq!(reader.recovery().unwrap().lost_bytes, 0);
    assert_eq!(reader.chunks().len(), 2);
    assert_eq!(read_all(&mut reader), records);
    assert_eq!(reader.end(), None);
}

/// A sink that accepts `room` bytes and then fails, like a full disk.
struct FullDisk {
    bytes: Vec<u8>,
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.room - self.bytes.len());
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ));
        }
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_sink_is_a_typed_error_and_what_was_written_is_recoverable() {
    let header = synth::header("full", 6);
    let records: Vec<Record> = synth::Synth::new(6, 400, 100, 50).collect();
    let mut sink = FullDisk {
        bytes: Vec::new(),
        room: usize::MAX,
    };
    let mut w = Writer::new(&mut sink, &header).unwrap();
    let mut boundary = 0;
    for (i, r) in records.iter().enumerate() {
        w.append(r).unwrap();
        if i == 150 {
            w.flush_chunk().unwrap();
            boundary = i + 1;
        }
    }
    drop(w);
    // Replay into a disk that fills up in the middle of the second chunk.
    let full = sink.bytes.clone();
    let first_chunk_end = {
        let r = Reader::from_bytes(full.clone()).unwrap();
        let c = r.chunks()[0];
        (c.offset + c.header.file_len()) as usize
    };
    let mut sink = FullDisk {
        bytes: Vec::new(),
        room: first_chunk_end + 100,
    };
    let mut w = Writer::new(&mut sink, &header).unwrap();
    for r in &records[..boundary] {
        w.append(r).unwrap();
    }
    w.flush_chunk().unwrap();
    for r in &records[boundary..] {
        w.append(r).unwrap();
    }
    let err = w.flush_chunk().err().unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(matches!(w.append(&records[0]), Err(Error::WriterClosed)));
    assert!(matches!(w.finish(), Err(Error::WriterClosed)));
    let mut reader = Reader::from_bytes(sink.bytes.clone()).unwrap();
    let rec = reader.recovery().unwrap().clone();
    assert_eq!(rec.chunks, 1);
    assert_eq!(rec.lost_bytes, 100);
    assert_eq!(read_all(&mut reader), records[..boundary]);
}
