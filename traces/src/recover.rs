//! Rebuilding the index of a trace whose writer never finished (killed, power loss) or whose
//! index or trailer is damaged: scan chunk headers from the start, keep every complete,
//! checksum-valid chunk in order, and say what was lost.

use crate::chunk::{self, ChunkHeader, CHUNK_HEADER_LEN};
use crate::error::{Error, Result};
use crate::index::{ChunkInfo, Index};
use crate::io::Source;
use crate::record::{EventId, Record, Step};
use std::io::{Read, Seek};

/// What recovery found: how much of the file is good and why the rest is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Why the index had to be rebuilt (missing trailer, bad index checksum, ...).
    pub reason: String,
    /// Complete, valid chunks kept.
    pub chunks: usize,
    /// The good data ends at this offset...
    pub valid_bytes: u64,
    /// ...and this many bytes after it were dropped (a torn or damaged chunk, or a damaged
    /// index).
    pub lost_bytes: u64,
    /// What stopped the scan at `valid_bytes`, when anything was lost.
    pub stopped_at: Option<String>,
}

/// Scans `start..src.len()` for chunks.
pub(crate) fn rebuild<R: Read + Seek>(
    src: &mut Source<R>,
    start: u64,
    reason: String,
) -> (Index, Recovery) {
    let mut index = Index::default();
    let mut pos = start;
    let mut next_event: EventId = 0;
    let mut last_keyframe: Option<Step> = None;
    let stopped_at = loop {
        if pos == src.len() {
            break None;
        }
        match scan_chunk(src, pos, next_event, last_keyframe) {
            Ok((header, records)) => {
                for r in &records {
                    match r {
                        Record::Event(e) => index.counts.add(e),
                        Record::End(e) => index.end = Some(e.clone()),
                        _ => {}
                    }
                }
                next_event = header.end_event();
                if header.has_keyframe() {
                    last_keyframe = Some(header.last_keyframe);
                }
                index.chunks.push(ChunkInfo {
                    offset: pos,
                    header,
                });
                pos += header.file_len();
                if header.has_end() {
                    // Nothing valid follows the end record; what does is the lost index.
                    break (pos != src.len()).then(|| {
                        format!("unreadable index or trailer after the end record at offset {pos}")
                    });
                }
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    let recovery = Recovery {
        reason,
        chunks: index.chunks.len(),
        valid_bytes: pos,
        lost_bytes: src.len() - pos,
        stopped_at,
    };
    (index, recovery)
}

/// Reads and fully checks the chunk at `pos`, which must continue the event ids and keyframe
/// order of the chunks before it.
fn scan_chunk<R: Read + Seek>(
    src: &mut Source<R>,
    pos: u64,
    next_event: EventId,
    last_keyframe: Option<Step>,
) -> Result<(ChunkHeader, Vec<Record>)> {
    let head = src.read_array::<CHUNK_HEADER_LEN>(pos, "chunk header")?;
    let header = ChunkHeader::decode(&head, pos)?;
    let payload_at = pos + CHUNK_HEADER_LEN as u64;
    let payload = src.read_at(payload_at, header.compressed_len as u64, "chunk payload")?;
    let records = chunk::decode_payload(&header, &payload, pos)?;
    if header.first_event != next_event {
        return Err(Error::corrupt(
            "chunk",
            pos,
            format!(
                "starts at event {} where {next_event} was expected",
                header.first_event
            ),
        ));
    }
    if header.has_keyframe() && last_keyframe.is_some_and(|k| header.first_keyframe < k) {
        return Err(Error::corrupt("chunk", pos, "keyframes go back in time"));
    }
    Ok((header, records))
}
