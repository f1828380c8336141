//! Arbitrary bytes as a trace: opening, iterating and random access must never panic, hang
//! or allocate without bound; every failure is a typed error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use traces::{Reader, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = (reader.header(), reader.is_complete(), reader.recovery());
    let _ = (reader.total_steps(), reader.record_count(), reader.end());
    let counts = reader.event_counts().clone();
    let _ = counts.resets();

    let mut last_step = 0;
    for record in reader.records() {
        match record {
            Ok(r) => last_step = last_step.max(r.step()),
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }

    // Random access around the chunk boundaries the index claims, and at a few fixed points.
    let mut steps = vec![0, 1, last_step, last_step / 2, u64::MAX];
    for c in reader.chunks().iter().take(16) {
        steps.extend([
            c.header.first_step,
            c.header.last_step,
            c.header.first_keyframe,
        ]);
    }
    for step in steps {
        if let Ok(records) = reader.records_at_step(step) {
            assert!(records.iter().all(|r| r.step() == step));
        }
        if let Ok(Some(k)) = reader.keyframe_at_or_before(step) {
            assert!(k.step <= step);
        }
    }
    for id in (0..reader.event_count().min(32)).chain([reader.event_count(), u64::MAX]) {
        if let Ok(Some(e)) = reader.event(id) {
            assert_eq!(e.id, id);
        }
    }
    let chunks = reader.chunks().to_vec();
    for (i, info) in chunks.iter().enumerate().take(16) {
        if let Ok(records) = reader.chunk_records(i) {
            assert_eq!(records.len(), info.header.record_count as usize);
            let ends = records
                .iter()
                .filter(|r| matches!(r, Record::End(_)))
                .count();
            assert_eq!(ends, info.header.has_end() as usize);
        }
    }
    assert!(reader.chunk_records(chunks.len()).is_err());
});
