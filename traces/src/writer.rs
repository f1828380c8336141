//! The streaming writer: memory stays bounded by one chunk plus one small index entry per
//! chunk, and every full chunk reaches the file at once, so a killed recorder loses at most
//! the chunk it was filling.

use crate::chunk::{ChunkBuilder, CHUNK_TARGET_RAW, MAX_CHUNK_RAW, MAX_CHUNK_RECORDS};
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{self, ChunkInfo, EventCounts, Index};
use crate::preamble;
use crate::record::{EventId, Header, Record, Step, VcpuSwitch};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// What `finish` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub records: u64,
    pub events: u64,
    pub chunks: u64,
    /// Largest step written.
    pub last_step: Step,
    /// Encoded record bytes before compression, and the chunk bytes they took in the file.
    pub raw_record_bytes: u64,
    pub compressed_record_bytes: u64,
    /// Total file size.
    pub file_bytes: u64,
}

/// Writes a trace to any byte sink, starting at its current position.
pub struct Writer<W: Write> {
    out: Option<W>,
    /// Bytes written so far: the offset of the next chunk.
    pos: u64,
    chunk: ChunkBuilder,
    index: Index,
    next_event: EventId,
    /// Step of the last Step/Keyframe/End record: these must not go back in time.
    timeline: Step,
    ended: bool,
    summary: WriteSummary,
    scratch: Vec<u8>,
    /// vCPUs of the trace ([`Header::vcpu_count`]) and the one the records now belong to:
    /// with several, each chunk starts with a [`Record::Vcpu`] naming it.
    vcpus: u32,
    vcpu: u32,
    /// A keyframe of a multi-vCPU trace waits for its [`Record::Vcpus`]: the two stay in one
    /// chunk, so that a reader finds every vCPU's registers where it finds the keyframe.
    keyframe_open: bool,
}

impl Writer<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: impl AsRef<Path>, header: &Header) -> Result<Self> {
        let path = path.as_ref();
        let file =
            File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Writer::new(BufWriter::with_capacity(1 << 20, file), header)
    }
}

impl<W: Write> Writer<W> {
    /// Writes the preamble and header to `out`.
    pub fn new(mut out: W, header: &Header) -> Result<Self> {
        let head = preamble::encode_header(header)?;
        out.write_all(&head)
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("writing the trace header", e))?;
        Ok(Writer {
            out: Some(out),
            pos: head.len() as u64,
            chunk: ChunkBuilder::default(),
            index: Index::default(),
            next_event: 0,
            timeline: 0,
            ended: false,
            summary: WriteSummary::default(),
            scratch: Vec::with_capacity(256),
            vcpus: header.vcpu_count(),
            vcpu: 0,
            keyframe_open: false,
        })
    }

    /// Appends one record. Event ids must be dense from 0; steps of Step, Keyframe and End
    /// records must not decrease; nothing may follow the End record.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        if self.out.is_none() {
            return Err(Error::WriterClosed);
        }
        if self.ended {
            return Err(Error::InvalidRecord("a record after the end record".into()));
        }
        match record {
            Record::Event(e) if e.id != self.next_event => {
                return Err(Error::InvalidRecord(format!(
                    "event id {} where {} was expected (ids are dense from 0)",
                    e.id, self.next_event
                )))
            }
            Record::Run(r) if r.first > r.step || r.first <= self.timeline => {
                return Err(Error::InvalidRecord(format!(
                    "a run of steps {}..={} after step {}: runs cover at least one new step",
                    r.first, r.step, self.timeline
                )))
            }
            Record::Vcpu(VcpuSwitch { vcpu, .. }) if *vcpu >= self.vcpus => {
                return Err(Error::InvalidRecord(format!(
                    "a switch to vCPU {vcpu} in a trace of {} vCPU(s)",
                    self.vcpus
                )))
            }
            Record::Vcpus(k) if k.current >= self.vcpus || k.regs.len() != self.vcpus as usize => {
                return Err(Error::InvalidRecord(format!(
                    "a keyframe of {} vCPU(s) (current {}) in a trace of {}",
                    k.regs.len(),
                    k.current,
                    self.vcpus
                )))
            }
            Record::Step(_) | Record::Keyframe(_) | Record::End(_)
                if record.step() < self.timeline =>
            {
                return Err(Error::InvalidRecord(format!(
                    "step {} after step {}: steps must not decrease",
                    record.step(),
                    self.timeline
                )))
            }
            _ => {}
        }
        self.encode(record)?;
        let joins_keyframe =
            std::mem::take(&mut self.keyframe_open) && matches!(record, Record::Vcpus(_));
        // A record that would overflow the chunk starts the next one.
        if !self.chunk.is_empty()
            && !joins_keyframe
            && self.chunk.raw_len() + self.scratch.len() > CHUNK_TARGET_RAW
        {
            self.flush_chunk()?;
        }
        if let Record::Vcpu(v) = record {
            self.vcpu = v.vcpu;
        } else if self.vcpus > 1 && self.chunk.is_empty() {
            // Each chunk of a multi-vCPU trace names its vCPU first (see `VcpuSwitch`).
            let head = Record::Vcpu(VcpuSwitch {
                step: self.timeline,
                vcpu: self.vcpu,
            });
            let encoded = std::mem::take(&mut self.scratch);
            self.encode(&head)?;
            self.chunk.push(&head, &self.scratch, self.next_event);
            self.summary.records += 1;
            self.scratch = encoded;
        }
        self.chunk.push(record, &self.scratch, self.next_event);
        match record {
            Record::Event(e) => {
                self.next_event += 1;
                self.index.counts.add(e);
            }
            Record::End(end) => {
                self.ended = true;
                self.index.end = Some(end.clone());
            }
            _ => {}
        }
        if !matches!(record, Record::Event(_)) {
            self.timeline = record.step();
        }
        self.summary.records += 1;
        self.summary.last_step = self.summary.last_step.max(record.step());
        self.keyframe_open = self.vcpus > 1 && matches!(record, Record::Keyframe(_));
        if self.keyframe_open {
            return Ok(());
        }
        if self.chunk.raw_len() >= CHUNK_TARGET_RAW
            || self.chunk.record_count() >= MAX_CHUNK_RECORDS
        {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Encodes `record` into `self.scratch`, refusing one larger than a chunk may hold.
    fn encode(&mut self, record: &Record) -> Result<()> {
        self.scratch.clear();
        bincode::serde::encode_into_std_write(
            record,
            &mut self.scratch,
            codec::config::<MAX_CHUNK_RAW>(),
        )
        .map_err(|e| Error::Encode {
            what: "record",
            detail: e.to_string(),
        })?;
        if self.scratch.len() > MAX_CHUNK_RAW {
            return Err(Error::InvalidRecord(format!(
                "{} bytes encoded, over the chunk limit of {MAX_CHUNK_RAW}",
                self.scratch.len()
            )));
        }
        Ok(())
    }

    /// Compresses and writes the current chunk (if any) and flushes the sink, so everything
    /// appended so far survives the process.
    pub fn flush_chunk(&mut self) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(Error::WriterClosed);
        };
        if self.chunk.is_empty() {
            return Ok(());
        }
        let raw_len = self.chunk.raw_len() as u64;
        let (header, bytes) = self.chunk.seal()?;
        if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
            // The file now ends in a torn chunk; refuse to write after it.
            self.out = None;
            return Err(Error::io(
                format!("writing the chunk at offset {}", self.pos),
                e,
            ));
        }
        self.index.chunks.push(ChunkInfo {
            offset: self.pos,
            header,
        });
        self.pos += bytes.len() as u64;
        self.summary.chunks += 1;
        self.summary.raw_record_bytes += raw_len;
        self.summary.compressed_record_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes the last chunk, the index and the trailer; returns the sink and a summary.
    pub fn finish(mut self) -> Result<(W, WriteSummary)> {
        self.flush_chunk()?;
        let Some(mut out) = self.out.take() else {
            return Err(Error::WriterClosed);
        };
        let tail = index::encode_index(&self.index, self.pos)?;
        out.write_all(&tail)
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("writing the trace index", e))?;
        self.pos += tail.len() as u64;
        let mut summary = std::mem::take(&mut self.summary);
        summary.events = self.next_event;
        summary.file_bytes = self.pos;
        Ok((out, summary))
    }

    /// Event counts so far (a progress line can show them).
    pub fn counts(&self) -> &EventCounts {
        &self.index.counts
    }
}

/// A writer dropped without `finish` (an early return, a panic) still writes the chunk it was
/// filling, so the file keeps every appended record; readers rebuild its index.
impl<W: Write> Drop for Writer<W> {
    fn drop(&mut self) {
        if self.out.is_some() {
            // Errors cannot be reported from drop; the reader will see a torn tail instead.
            let _ = self.flush_chunk();
        }
    }
}
