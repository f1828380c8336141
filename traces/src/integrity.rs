//! How much of a trace can be read: the one account of what a truncated or damaged trace lost,
//! and the one wording of it. Every command that reads a trace says this first (the CLI prints
//! [`Integrity::problems`] and puts the serialized value in its `--json`), so a partial trace
//! never passes as a whole one.

use crate::error::Error;
use crate::record::{EventId, Step};
use crate::recover::Recovery;
use serde::{Serialize, Serializer};

/// How deeply [`crate::Reader::verify`] checks each chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Depth {
    /// Header checksum, agreement with the index, payload checksum: reads every byte once,
    /// decompresses nothing. Catches truncation and flipped bits.
    Checksums,
    /// Also decompresses and decodes every record (what reading the whole trace does).
    Records,
}

/// A chunk listed in the index that fails verification: the records it held are lost.
#[derive(Debug, Serialize)]
pub struct DamagedChunk {
    /// Position in the chunk table.
    pub chunk: usize,
    /// File offset of its header.
    pub offset: u64,
    /// Bytes it takes in the file, header included, as the index says.
    pub bytes: u64,
    /// The steps and event ids its records covered, as the index says.
    pub first_step: Step,
    pub last_step: Step,
    pub first_event: EventId,
    /// One past its last event id (equal to `first_event` when it held none).
    pub end_event: EventId,
    #[serde(serialize_with = "as_text")]
    pub error: Error,
}

/// What reading a trace found. `complete` is true only when every record is readable: every
/// chunk passed verification, and the file ended in a valid index or (its index lost) the
/// scan that rebuilt the index reached the end record.
#[derive(Debug, Serialize)]
pub struct Integrity {
    pub complete: bool,
    /// How the chunks were checked.
    pub verified: Depth,
    pub file_bytes: u64,
    /// Chunks the index lists (rebuilt or not).
    pub chunks: usize,
    /// The index was missing or damaged and was rebuilt by scanning; what that kept and lost.
    #[serde(serialize_with = "recovery_json")]
    pub recovery: Option<Recovery>,
    pub damaged: Vec<DamagedChunk>,
    /// The last step and the number of events the readable chunks reach.
    pub last_step: Step,
    pub events: EventId,
    /// An end record survived (how the run ended is known).
    pub has_end: bool,
    /// Bytes that could not be used: after the last good chunk, plus every damaged chunk.
    pub lost_bytes: u64,
}

impl Integrity {
    pub(crate) fn new(
        verified: Depth,
        file_bytes: u64,
        chunks: usize,
        recovery: Option<Recovery>,
        damaged: Vec<DamagedChunk>,
        (last_step, events, has_end): (Step, EventId, bool),
    ) -> Integrity {
        let lost_bytes = recovery.as_ref().map_or(0, |r| r.lost_bytes)
            + damaged.iter().map(|d| d.bytes).sum::<u64>();
        // The scan stops at the first bad chunk, so a recovered end record means every
        // record survived and only the index was lost.
        let records_whole = recovery.is_none() || has_end;
        Integrity {
            complete: records_whole && damaged.is_empty(),
            verified,
            file_bytes,
            chunks,
            recovery,
            damaged,
            last_step,
            events,
            has_end,
            lost_bytes,
        }
    }

    /// One line for a status field: `complete ...`, or what is wrong first.
    pub fn status(&self) -> String {
        if !self.complete {
            return self.problems().join("; ");
        }
        let how = match self.verified {
            Depth::Checksums => "checksums",
            Depth::Records => "records",
        };
        let mut s = format!("complete (all {} chunks' {how} verified)", self.chunks);
        if let Some(rec) = &self.recovery {
            s += &format!(
                "; only the index was lost and has been rebuilt by scanning ({})",
                rec.reason
            );
        }
        s
    }

    /// What a command must say before anything else about a trace it cannot read whole, one
    /// line per problem; empty for a complete trace.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rec) = self.recovery.as_ref().filter(|_| !self.has_end) {
            let mut s = format!(
                "INCOMPLETE: the index was rebuilt by scanning ({}); kept {} chunks ({} bytes) \
                 reaching step {} and {} events",
                rec.reason, rec.chunks, rec.valid_bytes, self.last_step, self.events
            );
            if rec.lost_bytes > 0 {
                s += &format!("; lost the last {} bytes", rec.lost_bytes);
                if let Some(why) = &rec.stopped_at {
                    s += &format!(" ({why})");
                }
            }
            s += &format!(
                "; no end record: whatever the guest did after step {} is lost, and how the \
                 run ended is unknown",
                self.last_step
            );
            out.push(s);
        }
        for d in &self.damaged {
            let events = if d.end_event > d.first_event {
                format!("events {}..={}", d.first_event, d.end_event - 1)
            } else {
                "no events".to_string()
            };
            out.push(format!(
                "CORRUPT: chunk {} of {} at offset {} ({} bytes: steps {}..={}, {events}) is \
                 unreadable: {}",
                d.chunk, self.chunks, d.offset, d.bytes, d.first_step, d.last_step, d.error
            ));
        }
        out
    }
}

fn as_text<S: Serializer>(e: &Error, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

fn recovery_json<S: Serializer>(r: &Option<Recovery>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Json<'a> {
        reason: &'a str,
        chunks_kept: usize,
        valid_bytes: u64,
        lost_bytes: u64,
        stopped_at: &'a Option<String>,
    }
    r.as_ref()
        .map(|r| Json {
            reason: &r.reason,
            chunks_kept: r.chunks,
            valid_bytes: r.valid_bytes,
            lost_bytes: r.lost_bytes,
            stopped_at: &r.stopped_at,
        })
        .serialize(s)
}
