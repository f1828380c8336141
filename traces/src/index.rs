//! The index written after the last chunk and the fixed trailer that points at it; also the
//! lookups (step, event id, keyframe → chunk) the reader answers from it.

use crate::chunk::ChunkHeader;
use crate::codec::{self, Fields};
use crate::error::{Error, Result};
use crate::record::{EndRecord, Event, EventId, EventKind, MmuOutcome, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const TRAILER_MAGIC: [u8; 8] = *b"MMURREND";
pub const TRAILER_LEN: usize = 48;
/// Decompressed index limit: about a million chunks, i.e. far beyond any trace we record.
pub const MAX_INDEX_RAW: usize = 64 << 20;

/// One chunk: where it is and what its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// File offset of the chunk header.
    pub offset: u64,
    pub header: ChunkHeader,
}

/// Event counts by kind, kept so `info` need not read the records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// By [`EventKind::name`] (`cr0`, `cr3`, ..., `transition`, `mmu`, `finding`, `io`, ...).
    pub by_kind: BTreeMap<String, u64>,
    /// MMU decisions by [`MmuOutcome::name`].
    pub mmu_outcomes: BTreeMap<String, u64>,
    /// Findings by [`crate::record::FindingKind::name`].
    pub findings: BTreeMap<String, u64>,
}

impl EventCounts {
    pub fn add(&mut self, event: &Event) {
        *self
            .by_kind
            .entry(event.kind.name().to_string())
            .or_default() += 1;
        match &event.kind {
            EventKind::Mmu(d) => {
                *self
                    .mmu_outcomes
                    .entry(d.outcome.name().to_string())
                    .or_default() += 1
            }
            EventKind::Finding(f) => {
                *self.findings.entry(f.kind.name().to_string()).or_default() += 1
            }
            _ => {}
        }
    }

    /// Events of one kind, by [`EventKind::name`].
    pub fn kind(&self, name: &str) -> u64 {
        self.by_kind.get(name).copied().unwrap_or(0)
    }

    /// MMU decisions with one outcome.
    pub fn outcome(&self, outcome: MmuOutcome) -> u64 {
        self.mmu_outcomes.get(outcome.name()).copied().unwrap_or(0)
    }

    /// MMU context resets: decisions that re-initialised the context (with or without unload).
    pub fn resets(&self) -> u64 {
        self.outcome(MmuOutcome::Reinit) + self.outcome(MmuOutcome::InitOnly)
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().fold(0, |a, b| a.saturating_add(*b))
    }
}

/// Everything the reader needs to find its way without scanning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub chunks: Vec<ChunkInfo>,
    pub counts: EventCounts,
    pub end: Option<EndRecord>,
}

impl Index {
    pub fn record_count(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| c.header.record_count as u64)
            .sum()
    }

    pub fn event_count(&self) -> u64 {
        self.chunks.last().map_or(0, |c| c.header.end_event())
    }

    /// The largest step any record carries.
    pub fn last_step(&self) -> Step {
        self.chunks
            .iter()
            .map(|c| c.header.last_step)
            .max()
            .unwrap_or(0)
    }

    /// Chunks (in file order) holding at least one record whose step range covers `step`.
    pub fn chunks_covering(&self, step: Step) -> impl Iterator<Item = usize> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter(move |(_, c)| (c.header.first_step..=c.header.last_step).contains(&step))
            .map(|(i, _)| i)
    }

    /// The chunk holding event `id`.
    pub fn chunk_of_event(&self, id: EventId) -> Option<usize> {
        // Event ranges are contiguous and ascending (checked by `validate`).
        let i = self.chunks.partition_point(|c| c.header.end_event() <= id);
        let c = self.chunks.get(i)?;
        (c.header.first_event <= id && id < c.header.end_event()).then_some(i)
    }

    /// The last chunk holding a keyframe at or before `step`.
    pub fn chunk_of_keyframe_at_or_before(&self, step: Step) -> Option<usize> {
        // Keyframe steps ascend in file order (checked by `validate`), so the chunks whose
        // first keyframe is at or before `step` form a prefix of those with keyframes.
        self.chunks
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, c)| c.header.has_keyframe())
            .find(|(_, c)| c.header.first_keyframe <= step)
            .map(|(i, _)| i)
    }

    /// Checks that the chunks tile the records region `start..end` in order, that event ids are
    /// dense and keyframes ascend: the invariants the lookups rely on.
    pub fn validate(&self, start: u64, end: u64, index_offset: u64) -> Result<()> {
        let mut pos = start;
        let mut next_event: EventId = 0;
        let mut last_keyframe: Option<Step> = None;
        for (i, c) in self.chunks.iter().enumerate() {
            let h = &c.header;
            let bad = |detail: String| Err(Error::corrupt("index", index_offset, detail));
            if c.offset != pos {
                return bad(format!(
                    "chunk {i} at offset {} where {pos} was expected",
                    c.offset
                ));
            }
            h.check(c.offset)?;
            pos = match pos.checked_add(h.file_len()) {
                Some(p) if p <= end => p,
                _ => return bad(format!("chunk {i} extends past the records region")),
            };
            if h.first_event != next_event {
                return bad(format!(
                    "chunk {i} starts at event {} not {next_event}",
                    h.first_event
                ));
            }
            next_event = h.end_event();
            if h.has_keyframe() {
                if last_keyframe.is_some_and(|k| h.first_keyframe < k) {
                    return bad(format!("chunk {i}'s keyframes go back in time"));
                }
                last_keyframe = Some(h.last_keyframe);
            }
            if h.has_end() && i + 1 != self.chunks.len() {
                return bad(format!(
                    "chunk {i} holds the end record but is not the last"
                ));
            }
        }
        if pos != end {
            return Err(Error::corrupt(
                "index",
                index_offset,
                format!("{} bytes between the last chunk and the index", end - pos),
            ));
        }
        Ok(())
    }
}

/// The fixed-size end of a complete file, pointing at the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub index_offset: u64,
    pub index_compressed_len: u64,
    pub index_raw_len: u64,
    /// xxh3-64 of the compressed index.
    pub index_hash: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut v = Vec::with_capacity(TRAILER_LEN);
        for x in [
            self.index_offset,
            self.index_compressed_len,
            self.index_raw_len,
            self.index_hash,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let h = codec::hash(&v);
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&TRAILER_MAGIC);
        let mut out = [0u8; TRAILER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Parses the trailer found at `offset` (the last `TRAILER_LEN` bytes of the file).
    pub fn decode(bytes: &[u8; TRAILER_LEN], offset: u64) -> Result<Trailer> {
        let what = "trailer";
        if bytes[TRAILER_LEN - 8..] != TRAILER_MAGIC {
            return Err(Error::corrupt(
                what,
                offset,
                "no trailer magic (the writer did not finish)",
            ));
        }
        let mut f = Fields::new(bytes);
        let t = Trailer {
            index_offset: f.u64(),
            index_compressed_len: f.u64(),
            index_raw_len: f.u64(),
            index_hash: f.u64(),
        };
        let stored = f.u64();
        let computed = codec::hash(&bytes[..32]);
        if !codec::checksum_ok(stored, computed) {
            return Err(Error::Checksum {
                what,
                offset,
                stored,
                computed,
            });
        }
        if t.index_raw_len > MAX_INDEX_RAW as u64 {
            return Err(Error::TooLarge {
                what: "index",
                offset: t.index_offset,
                declared: t.index_raw_len,
                limit: MAX_INDEX_RAW as u64,
            });
        }
        if t.index_offset.checked_add(t.index_compressed_len) != Some(offset) {
            return Err(Error::corrupt(
                what,
                offset,
                format!(
                    "index at {} of {} bytes does not end where the trailer starts",
                    t.index_offset, t.index_compressed_len
                ),
            ));
        }
        Ok(t)
    }
}

pub fn encode_index(index: &Index, index_offset: u64) -> Result<Vec<u8>> {
    let raw = codec::encode::<_, MAX_INDEX_RAW>("index", index)?;
    let compressed = codec::compress("index", &raw)?;
    let trailer = Trailer {
        index_offset,
        index_compressed_len: compressed.len() as u64,
        index_raw_len: raw.len() as u64,
        index_hash: codec::hash(&compressed),
    };
    let mut out = compressed;
    out.extend_from_slice(&trailer.encode());
    Ok(out)
}

pub fn decode_index(trailer: &Trailer, compressed: &[u8]) -> Result<Index> {
    let offset = trailer.index_offset;
    let computed = codec::hash(compressed);
    if !codec::checksum_ok(trailer.index_hash, computed) {
        return Err(Error::Checksum {
            what: "index",
            offset,
            stored: trailer.index_hash,
            computed,
        });
    }
    let raw = codec::decompress("index", offset, compressed, trailer.index_raw_len as usize)?;
    codec::decode_exact::<Index, MAX_INDEX_RAW>("index", offset, &raw)
}
