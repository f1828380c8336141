//! Damaged files: truncation at every byte offset and a bit flip at every byte. The reader
//! must recover what is intact, report what is lost, and never panic or return wrong data.

mod common;

use common::*;
use traces::*;

/// A small trace with several chunks.
fn sample() -> (Header, Vec<Record>, Vec<u8>) {
    let header = synth::header("small", 11);
    let records: Vec<Record> = synth::Synth::new(11, 120, 30, 20).collect();
    let flushes: Vec<usize> = (1..records.len()).filter(|i| i % 40 == 0).collect();
    let (bytes, _) = write(&header, &records, &flushes);
    (header, records, bytes)
}

#[test]
fn truncation_at_every_offset_keeps_every_complete_chunk() {
    let (header, records, bytes) = sample();
    let full = Reader::from_bytes(bytes.clone()).unwrap();
    let chunks = full.chunks().to_vec();
    assert!(chunks.len() >= 4, "the sample needs several chunks");
    let records_start = full.preamble().records_start();
    let records_end = chunks
        .last()
        .map(|c| c.offset + c.header.file_len())
        .unwrap();
    for cut in 0..bytes.len() {
        let result = Reader::from_bytes(bytes[..cut].to_vec());
        if (cut as u64) < records_start {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("cut {cut}: opened without a header"));
            assert!(!err.to_string().is_empty());
            continue;
        }
        let mut reader = result.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert!(!reader.is_complete(), "cut {cut}");
        assert_eq!(reader.header(), &header);
        let whole: Vec<&ChunkInfo> = chunks
            .iter()
            .filter(|c| c.offset + c.header.file_len() <= cut as u64)
            .collect();
        let kept_end = whole
            .last()
            .map_or(records_start, |c| c.offset + c.header.file_len());
        let rec = reader.recovery().unwrap().clone();
        assert_eq!(rec.chunks, whole.len(), "cut {cut}");
        assert_eq!(rec.valid_bytes, kept_end, "cut {cut}");
        assert_eq!(rec.lost_bytes, cut as u64 - kept_end, "cut {cut}");
        assert_eq!(
            rec.stopped_at.is_some(),
            rec.lost_bytes > 0,
            "cut {cut}: {rec:?}"
        );
        let n: usize = whole.iter().map(|c| c.header.record_count as usize).sum();
        let got = read_all(&mut reader);
        assert_eq!(got, records[..n], "cut {cut}");
        assert_eq!(reader.event_counts(), &counts_of(&got));
        // The end record lives in the last chunk: present only when that chunk survived.
        assert_eq!(
            reader.end().is_some(),
            cut as u64 >= records_end,
            "cut {cut}"
        );
        check_random_access(&mut reader, &got);
    }
    // The whole file is complete and reads the same.
    let mut reader = Reader::from_bytes(bytes).unwrap();
    assert!(reader.is_complete());
    assert_eq!(read_all(&mut reader), records);
}

/// Every bit of every byte, flipped one at a time.
#[test]
fn bit_flips_anywhere_are_detected() {
    let (header, records, bytes) = sample();
    let mut detected = 0usize;
    for (pos, bit) in (0..bytes.len()).flat_map(|p| (0..8).map(move |b| (p, b))) {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 1 << bit;
        let mut reader = match Reader::from_bytes(damaged) {
            Ok(r) => r,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                detected += 1;
                continue;
            }
        };
        assert_eq!(
            reader.header(),
            &header,
            "flip at {pos}: wrong header accepted"
        );
        let mut got = Vec::new();
        let mut failed = false;
        for r in reader.records() {
            match r {
                Ok(r) => got.push(r),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        // Whatever was returned is exactly what was written, in order.
        assert_eq!(
            got,
            records[..got.len()],
            "flip at {pos}: wrong records returned"
        );
        if reader.is_complete() && !failed {
            assert_eq!(
                got.len(),
                records.len(),
                "flip at {pos}: records silently dropped"
            );
            assert_eq!(reader.event_counts(), &counts_of(&records));
            panic!("flip at {pos} went unnoticed");
        }
        detected += 1;
        // Random access on a damaged file errs or answers correctly; it never panics.
        if bit != pos % 8 {
            continue; // (for one bit per byte: keeps the test quick)
        }
        for step in [0u64, 5, 60, 119, 1_000] {
            if let Ok(at) = reader.records_at_step(step) {
                let expected: Vec<Record> = records
                    .iter()
                    .filter(|r| r.step() == step)
                    .cloned()
                    .collect();
                assert_eq!(at, expected, "flip at {pos}, step {step}");
            }
            let _ = reader.keyframe_at_or_before(step);
        }
        for id in 0..reader.event_count() + 1 {
            if let Ok(Some(e)) = reader.event(id) {
                assert!(
                    records.contains(&Record::Event(e)),
                    "flip at {pos}: wrong event {id}"
                );
            }
        }
    }
    assert_eq!(detected, bytes.len() * 8);
}

#[test]
fn foreign_files_are_refused_clearly() {
    let err = Reader::from_bytes(b"GIF89a, not a trace at all".to_vec())
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotATrace { .. }), "{err}");
    assert!(err.to_string().contains("not an mmurr trace"));
    let err = Reader::from_bytes(Vec::new()).err().unwrap();
    assert!(matches!(err, Error::NotATrace { .. }), "{err}");
}

#[test]
fn newer_format_versions_are_refused_with_advice() {
    let (_, _, bytes) = sample();
    let mut pre = Preamble::decode(&bytes).unwrap();
    pre.min_reader_version = FORMAT_VERSION + 1;
    pre.format_version = FORMAT_VERSION + 1;
    let mut newer = bytes.clone();
    newer[..preamble::PREAMBLE_LEN].copy_from_slice(&pre.encode());
    let err = Reader::from_bytes(newer).err().unwrap();
    assert!(matches!(err, Error::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade mmurr"));

    // A newer writer whose files old readers can still read is accepted.
    let mut pre = Preamble::decode(&bytes).unwrap();
    pre.format_version = FORMAT_VERSION + 1;
    pre.optional_features = 0b1010;
    let mut compatible = bytes.clone();
    compatible[..preamble::PREAMBLE_LEN].copy_from_slice(&pre.encode());
    let r = Reader::from_bytes(compatible).unwrap();
    assert_eq!(r.format_version(), FORMAT_VERSION + 1);

    let mut pre = Preamble::decode(&bytes).unwrap();
    pre.required_features = 1 << 5;
    let mut unknown = bytes;
    unknown[..preamble::PREAMBLE_LEN].copy_from_slice(&pre.encode());
    let err = Reader::from_bytes(unknown).err().unwrap();
    assert!(matches!(err, Error::UnknownFeatures { flags: 32 }), "{err}");
}

#[test]
fn errors_name_the_offset() {
    let (_, _, bytes) = sample();
    let full = Reader::from_bytes(bytes.clone()).unwrap();
    let second = full.chunks()[1];
    // Damage the second chunk's payload: the complete index still points at it.
    let mut damaged = bytes;
    let at = (second.offset + chunk::CHUNK_HEADER_LEN as u64 + 3) as usize;
    damaged[at] ^= 0xff;
    let mut reader = Reader::from_bytes(damaged).unwrap();
    assert!(reader.is_complete());
    let err = reader.chunk_records(1).err().unwrap();
    assert!(matches!(err, Error::Checksum { .. }));
    assert!(
        err.to_string()
            .contains(&format!("offset {}", second.offset)),
        "{err}"
    );
    assert!(reader.chunk_records(0).is_ok());
    assert!(matches!(
        reader.chunk_records(99),
        Err(Error::NoSuchChunk { .. })
    ));
}
