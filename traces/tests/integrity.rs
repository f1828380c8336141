//! `Reader::verify`: every chunk checked on its own, the damage named by chunk, offset, steps
//! and events, and `complete` true only when every record can be read.

mod common;

use common::*;
use traces::*;

/// A small trace with several chunks, and its chunk table.
fn sample() -> (Vec<u8>, Vec<ChunkInfo>) {
    let header = synth::header("small", 11);
    let records: Vec<Record> = synth::Synth::new(11, 120, 30, 20).collect();
    let flushes: Vec<usize> = (1..records.len()).filter(|i| i % 40 == 0).collect();
    let (bytes, _) = write(&header, &records, &flushes);
    let chunks = Reader::from_bytes(bytes.clone()).unwrap().chunks().to_vec();
    assert!(chunks.len() >= 4, "the sample needs several chunks");
    (bytes, chunks)
}

#[test]
fn a_whole_trace_verifies_at_both_depths() {
    let (bytes, chunks) = sample();
    let mut r = Reader::from_bytes(bytes).unwrap();
    for depth in [Depth::Checksums, Depth::Records] {
        let i = r.verify(depth);
        assert!(i.complete, "{:?}", i.problems());
        assert!(i.problems().is_empty());
        assert_eq!(i.chunks, chunks.len());
        assert_eq!(i.lost_bytes, 0);
        assert!(i.has_end);
        assert!(i.status().starts_with("complete"), "{}", i.status());
    }
}

#[test]
fn every_flipped_byte_of_every_chunk_names_exactly_that_chunk() {
    let (bytes, chunks) = sample();
    for (n, c) in chunks.iter().enumerate() {
        let len = c.header.file_len();
        // The chunk header's first and last byte, the payload's first, middle and last.
        for at in [0, 79, 80, 80 + (len - 80) / 2, len - 1] {
            let mut damaged = bytes.clone();
            damaged[(c.offset + at) as usize] ^= 0x40;
            let mut r = Reader::from_bytes(damaged).unwrap();
            assert!(r.is_complete(), "the index is intact");
            for depth in [Depth::Checksums, Depth::Records] {
                let i = r.verify(depth);
                assert!(!i.complete, "chunk {n} byte {at}");
                assert_eq!(
                    i.damaged.len(),
                    1,
                    "chunk {n} byte {at}: {:?}",
                    i.problems()
                );
                let d = &i.damaged[0];
                assert_eq!((d.chunk, d.offset, d.bytes), (n, c.offset, len));
                assert_eq!(
                    (d.first_step, d.last_step, d.first_event, d.end_event),
                    (
                        c.header.first_step,
                        c.header.last_step,
                        c.header.first_event,
                        c.header.end_event()
                    )
                );
                assert_eq!(i.lost_bytes, len);
                let line = &i.problems()[0];
                assert!(
                    line.starts_with(&format!(
                        "CORRUPT: chunk {n} of {} at offset {}",
                        chunks.len(),
                        c.offset
                    )),
                    "{line}"
                );
                assert!(matches!(
                    d.error,
                    Error::Checksum { .. } | Error::Corrupt { .. }
                ));
            }
        }
    }
}

#[test]
fn a_truncated_trace_says_what_it_kept_and_lost() {
    let (bytes, chunks) = sample();
    // Cut in the middle of the third chunk: two chunks survive.
    let c = chunks[2];
    let cut = (c.offset + c.header.file_len() / 2) as usize;
    let mut r = Reader::from_bytes(bytes[..cut].to_vec()).unwrap();
    let i = r.verify(Depth::Checksums);
    assert!(!i.complete);
    assert!(!i.has_end);
    assert!(
        i.damaged.is_empty(),
        "the rebuilt index lists only good chunks"
    );
    assert_eq!(i.chunks, 2);
    assert_eq!(i.last_step, chunks[1].header.last_step);
    assert_eq!(i.events, chunks[1].header.end_event());
    assert_eq!(i.lost_bytes, cut as u64 - c.offset);
    let line = &i.problems()[0];
    assert!(
        line.starts_with("INCOMPLETE: the index was rebuilt"),
        "{line}"
    );
    assert!(
        line.contains(&format!("lost the last {} bytes", i.lost_bytes)),
        "{line}"
    );
    assert!(line.contains("no end record"), "{line}");
}

#[test]
fn a_lost_index_alone_loses_no_records() {
    let (bytes, chunks) = sample();
    let last = chunks.last().unwrap();
    let records_end = (last.offset + last.header.file_len()) as usize;
    // Everything up to the end record's chunk, none of the index or trailer.
    let mut r = Reader::from_bytes(bytes[..records_end].to_vec()).unwrap();
    assert!(!r.is_complete(), "the index had to be rebuilt");
    let i = r.verify(Depth::Records);
    assert!(i.complete, "{:?}", i.problems());
    assert!(i.has_end);
    assert!(
        i.status().contains("only the index was lost"),
        "{}",
        i.status()
    );
}
