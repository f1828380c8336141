//! Chunks: a run of bincode-encoded records, zstd-compressed, behind a fixed 80-byte header
//! that says what the chunk holds, so the index can be rebuilt from headers alone.

use crate::codec::{self, Fields};
use crate::error::{Error, Result};
use crate::record::{EventId, Record, Step};
use serde::{Deserialize, Serialize};

pub const CHUNK_MAGIC: [u8; 4] = *b"MRCK";
pub const CHUNK_HEADER_LEN: usize = 80;
/// A chunk is closed once its encoded records reach this size...
pub const CHUNK_TARGET_RAW: usize = 256 << 10;
/// ...or this many records.
pub const MAX_CHUNK_RECORDS: u32 = 1 << 16;
/// Hard limit on one chunk's decompressed size: a single keyframe carrying many memory pages
/// may exceed the target and gets a chunk of its own, up to this.
pub const MAX_CHUNK_RAW: usize = 256 << 20;

pub const FLAG_KEYFRAME: u32 = 1;
pub const FLAG_EVENTS: u32 = 2;
pub const FLAG_END: u32 = 4;
const KNOWN_FLAGS: u32 = FLAG_KEYFRAME | FLAG_EVENTS | FLAG_END;

pub fn max_chunk_compressed() -> usize {
    zstd::zstd_safe::compress_bound(MAX_CHUNK_RAW)
}

/// What a chunk holds, stored in front of it and copied into the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub flags: u32,
    pub compressed_len: u32,
    pub raw_len: u32,
    pub record_count: u32,
    pub event_count: u32,
    /// Smallest and largest step of any record in the chunk.
    pub first_step: Step,
    pub last_step: Step,
    /// Id of the chunk's first event (with `event_count == 0`: the next id the trace uses).
    pub first_event: EventId,
    /// Steps of the chunk's first and last keyframe (0 when `FLAG_KEYFRAME` is clear).
    pub first_keyframe: Step,
    pub last_keyframe: Step,
    /// xxh3-64 of the compressed payload.
    pub payload_hash: u64,
}

impl ChunkHeader {
    pub fn has_keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }
    pub fn has_end(&self) -> bool {
        self.flags & FLAG_END != 0
    }
    /// Event ids `first_event..end_event()`.
    pub fn end_event(&self) -> EventId {
        self.first_event.saturating_add(self.event_count as u64)
    }
    /// Bytes the chunk takes in the file, header included.
    pub fn file_len(&self) -> u64 {
        CHUNK_HEADER_LEN as u64 + self.compressed_len as u64
    }

    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut v = Vec::with_capacity(CHUNK_HEADER_LEN);
        v.extend_from_slice(&CHUNK_MAGIC);
        for x in [
            self.flags,
            self.compressed_len,
            self.raw_len,
            self.record_count,
            self.event_count,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [
            self.first_step,
            self.last_step,
            self.first_event,
            self.first_keyframe,
            self.last_keyframe,
            self.payload_hash,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let h = codec::hash(&v);
        v.extend_from_slice(&h.to_le_bytes());
        let mut out = [0u8; CHUNK_HEADER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Parses and sanity-checks a chunk header found at `offset`.
    pub fn decode(bytes: &[u8; CHUNK_HEADER_LEN], offset: u64) -> Result<ChunkHeader> {
        let what = "chunk header";
        let mut f = Fields::new(bytes);
        let magic: [u8; 4] = f.bytes();
        if magic != CHUNK_MAGIC {
            return Err(Error::corrupt(
                what,
                offset,
                format!("bad chunk magic {magic:02x?}"),
            ));
        }
        let h = ChunkHeader {
            flags: f.u32(),
            compressed_len: f.u32(),
            raw_len: f.u32(),
            record_count: f.u32(),
            event_count: f.u32(),
            first_step: f.u64(),
            last_step: f.u64(),
            first_event: f.u64(),
            first_keyframe: f.u64(),
            last_keyframe: f.u64(),
            payload_hash: f.u64(),
        };
        let stored = f.u64();
        let computed = codec::hash(&bytes[..CHUNK_HEADER_LEN - 8]);
        if !codec::checksum_ok(stored, computed) {
            return Err(Error::Checksum {
                what,
                offset,
                stored,
                computed,
            });
        }
        h.check(offset)?;
        Ok(h)
    }

    /// Internal consistency of the declared values (limits and ranges).
    pub fn check(&self, offset: u64) -> Result<()> {
        let what = "chunk header";
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(
                what,
                offset,
                format!("unknown flags {:#x}", self.flags),
            ));
        }
        if self.raw_len as usize > MAX_CHUNK_RAW {
            return Err(Error::TooLarge {
                what: "chunk",
                offset,
                declared: self.raw_len as u64,
                limit: MAX_CHUNK_RAW as u64,
            });
        }
        if self.compressed_len as usize > max_chunk_compressed() {
            return Err(Error::TooLarge {
                what: "compressed chunk",
                offset,
                declared: self.compressed_len as u64,
                limit: max_chunk_compressed() as u64,
            });
        }
        let bad = |detail: String| Err(Error::corrupt(what, offset, detail));
        if self.record_count == 0 || self.record_count > MAX_CHUNK_RECORDS {
            return bad(format!(
                "record count {} out of 1..={MAX_CHUNK_RECORDS}",
                self.record_count
            ));
        }
        if self.event_count > self.record_count {
            return bad(format!(
                "{} events in {} records",
                self.event_count, self.record_count
            ));
        }
        if (self.event_count > 0) != (self.flags & FLAG_EVENTS != 0) {
            return bad("event flag disagrees with the event count".into());
        }
        if self
            .first_event
            .checked_add(self.event_count as u64)
            .is_none()
        {
            return bad("event ids overflow".into());
        }
        if self.first_step > self.last_step {
            return bad(format!(
                "step range {}..={} is reversed",
                self.first_step, self.last_step
            ));
        }
        if self.has_keyframe() {
            let in_range = |s| (self.first_step..=self.last_step).contains(&s);
            if self.first_keyframe > self.last_keyframe
                || !in_range(self.first_keyframe)
                || !in_range(self.last_keyframe)
            {
                return bad("keyframe steps outside the chunk's step range".into());
            }
        }
        Ok(())
    }
}

/// Accumulates encoded records for the writer until the chunk is full.
#[derive(Default)]
pub struct ChunkBuilder {
    raw: Vec<u8>,
    header: ChunkHeader,
}

impl ChunkBuilder {
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Adds one already-encoded record. `next_event` is the trace's next event id, used as the
    /// chunk's first event id while it holds no event.
    pub fn push(&mut self, record: &Record, encoded: &[u8], next_event: EventId) {
        let h = &mut self.header;
        let step = record.step();
        if h.record_count == 0 {
            h.first_step = record.first_step();
            h.last_step = step;
            h.first_event = next_event;
        }
        h.first_step = h.first_step.min(record.first_step());
        h.last_step = h.last_step.max(step);
        h.record_count += 1;
        match record {
            Record::Event(_) => {
                h.event_count += 1;
                h.flags |= FLAG_EVENTS;
            }
            Record::Keyframe(k) => {
                if !h.has_keyframe() {
                    h.first_keyframe = k.step;
                }
                h.last_keyframe = k.step;
                h.flags |= FLAG_KEYFRAME;
            }
            Record::End(_) => h.flags |= FLAG_END,
            Record::Step(_)
            | Record::Run(_)
            | Record::Host(_)
            | Record::Vcpu(_)
            | Record::Vcpus(_) => {}
        }
        self.raw.extend_from_slice(encoded);
    }

    /// Compresses the chunk; returns its header and the bytes to write (header + payload), and
    /// leaves the builder empty for the next chunk (keeping its buffer's capacity).
    pub fn seal(&mut self) -> Result<(ChunkHeader, Vec<u8>)> {
        let payload = codec::compress("chunk", &self.raw)?;
        let mut header = std::mem::take(&mut self.header);
        header.raw_len = self.raw.len() as u32;
        header.compressed_len = payload.len() as u32;
        header.payload_hash = codec::hash(&payload);
        self.raw.clear();
        let mut bytes = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        bytes.extend_from_slice(&header.encode());
        bytes.extend_from_slice(&payload);
        Ok((header, bytes))
    }
}

/// Checks a chunk's compressed payload against the checksum its header stores, without
/// decompressing it. `offset` is the chunk header's file offset.
pub fn verify_payload(header: &ChunkHeader, payload: &[u8], offset: u64) -> Result<()> {
    let computed = codec::hash(payload);
    if !codec::checksum_ok(header.payload_hash, computed) {
        return Err(Error::Checksum {
            what: "chunk",
            offset,
            stored: header.payload_hash,
            computed,
        });
    }
    Ok(())
}

/// Checks a chunk's payload against its header and decodes its records, checking that they
/// are what the header says (counts, step range, event ids, keyframes, end record last).
/// `offset` is the chunk header's file offset.
pub fn decode_payload(header: &ChunkHeader, payload: &[u8], offset: u64) -> Result<Vec<Record>> {
    let what = "chunk";
    verify_payload(header, payload, offset)?;
    let raw = codec::decompress(what, offset, payload, header.raw_len as usize)?;
    let mut records = Vec::with_capacity((header.record_count as usize).min(4096));
    let mut pos = 0usize;
    let mut next_event = header.first_event;
    let mut keyframes: Option<(Step, Step)> = None;
    let mut min_step = u64::MAX;
    let mut max_step = 0u64;
    let mut end_seen = false;
    while pos < raw.len() {
        if records.len() as u64 >= header.record_count as u64 {
            return Err(Error::corrupt(
                what,
                offset,
                "more records than the header declares",
            ));
        }
        if end_seen {
            return Err(Error::corrupt(what, offset, "records after the end record"));
        }
        let (record, used): (Record, usize) =
            bincode::serde::decode_from_slice(&raw[pos..], codec::config::<MAX_CHUNK_RAW>())
                .map_err(|e| {
                    Error::corrupt(
                        what,
                        offset,
                        format!("record {} does not decode: {e}", records.len()),
                    )
                })?;
        pos += used.max(1);
        let step = record.step();
        min_step = min_step.min(record.first_step());
        max_step = max_step.max(step);
        match &record {
            Record::Event(e) => {
                if e.id != next_event {
                    return Err(Error::corrupt(
                        what,
                        offset,
                        format!("event id {} where {next_event} was expected", e.id),
                    ));
                }
                next_event += 1;
            }
            Record::Keyframe(k) => {
                keyframes = match keyframes {
                    None => Some((k.step, k.step)),
                    Some((first, last)) if k.step >= last => Some((first, k.step)),
                    Some(_) => {
                        return Err(Error::corrupt(what, offset, "keyframes out of step order"))
                    }
                }
            }
            Record::End(_) => end_seen = true,
            Record::Step(_)
            | Record::Run(_)
            | Record::Host(_)
            | Record::Vcpu(_)
            | Record::Vcpus(_) => {}
        }
        records.push(record);
    }
    let mismatch = |detail: &str| {
        Err(Error::corrupt(
            what,
            offset,
            format!("{detail} disagrees with its header"),
        ))
    };
    if records.len() != header.record_count as usize {
        return mismatch("the record count");
    }
    if (min_step, max_step) != (header.first_step, header.last_step) {
        return mismatch("the step range");
    }
    if next_event != header.end_event() {
        return mismatch("the event count");
    }
    let declared_kf = header
        .has_keyframe()
        .then_some((header.first_keyframe, header.last_keyframe));
    if keyframes != declared_kf {
        return mismatch("the keyframe range");
    }
    if end_seen != header.has_end() {
        return mismatch("the end flag");
    }
    Ok(records)
}
