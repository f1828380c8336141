//! The random-access reader. Opening reads the preamble, header and index (or rebuilds the
//! index when the file is incomplete); records are decoded a chunk at a time on demand.

use crate::cache::ChunkCache;
use crate::chunk::{self, ChunkHeader, CHUNK_HEADER_LEN};
use crate::error::{Error, Result};
use crate::index::{self, ChunkInfo, EventCounts, Index, Trailer, MAX_INDEX_RAW, TRAILER_LEN};
use crate::integrity::{DamagedChunk, Depth, Integrity};
use crate::io::Source;
use crate::preamble::{self, Preamble, PREAMBLE_LEN};
use crate::record::{EndRecord, Event, EventId, Header, Keyframe, Record, Step};
use crate::recover::{self, Recovery};
use crate::regs::Regs;
use crate::vcpu::Parked;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;
use std::sync::Arc;

pub struct Reader<R> {
    src: Source<R>,
    preamble: Preamble,
    header: Header,
    index: Index,
    recovery: Option<Recovery>,
    cache: ChunkCache,
}

impl Reader<BufReader<File>> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Reader::new(BufReader::with_capacity(64 << 10, file))
    }
}

impl Reader<Cursor<Vec<u8>>> {
    /// Reads a trace held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Reader::new(Cursor::new(bytes))
    }
}

impl<R: Read + Seek> Reader<R> {
    /// Reads the preamble, the header and the index; rebuilds the index by scanning when the
    /// trailer or index is missing or damaged (see [`Reader::recovery`]).
    pub fn new(inner: R) -> Result<Self> {
        let mut src = Source::new(inner)?;
        let head_len = src.len().min(PREAMBLE_LEN as u64);
        let head = src.read_at(0, head_len, "preamble")?;
        let preamble = Preamble::decode(&head)?;
        let compressed = src.read_at(
            PREAMBLE_LEN as u64,
            preamble.header_compressed_len,
            "header",
        )?;
        let header = preamble::decode_header(&preamble, &compressed)?;
        drop(compressed);
        let start = preamble.records_start();
        let (index, recovery) = match read_index(&mut src, start) {
            Ok(index) => (index, None),
            Err(why) => {
                let (index, recovery) = recover::rebuild(&mut src, start, why.to_string());
                (index, Some(recovery))
            }
        };
        Ok(Reader {
            src,
            preamble,
            header,
            index,
            recovery,
            cache: ChunkCache::default(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn preamble(&self) -> &Preamble {
        &self.preamble
    }

    /// The format version the file was written with.
    pub fn format_version(&self) -> u16 {
        self.preamble.format_version
    }

    /// True when the file ended in a valid index; false when the index was rebuilt.
    pub fn is_complete(&self) -> bool {
        self.recovery.is_none()
    }

    /// What recovery found, when the index had to be rebuilt.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    pub fn file_len(&self) -> u64 {
        self.src.len()
    }

    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.index.chunks
    }

    pub fn event_counts(&self) -> &EventCounts {
        &self.index.counts
    }

    pub fn record_count(&self) -> u64 {
        self.index.record_count()
    }

    pub fn event_count(&self) -> u64 {
        self.index.event_count()
    }

    /// Steps executed: the end record's step, or the last step recorded if there is none.
    pub fn total_steps(&self) -> Step {
        self.index
            .end
            .as_ref()
            .map_or(self.index.last_step(), |e| e.step)
    }

    /// The end record of a trace that has one (a complete recording, or a recovered one whose
    /// last chunk survived).
    pub fn end(&self) -> Option<&EndRecord> {
        self.index.end.as_ref()
    }

    /// Every record in file order, one chunk decoded at a time. Stops after the first error.
    pub fn records(&mut self) -> Records<'_, R> {
        Records {
            reader: self,
            next_chunk: 0,
            current: Vec::new().into_iter(),
            failed: false,
        }
    }

    /// Keep at most `chunks` decoded chunks in the cache (at least 1; 8 by default).
    pub fn set_cache_chunks(&mut self, chunks: usize) {
        self.cache.set_limit(chunks);
    }

    /// The records of chunk `chunk` (cached).
    pub fn chunk_records(&mut self, chunk: usize) -> Result<Arc<Vec<Record>>> {
        if let Some(records) = self.cache.get(chunk) {
            return Ok(records);
        }
        let records = Arc::new(self.read_chunk(chunk)?);
        let raw_len = self
            .index
            .chunks
            .get(chunk)
            .map_or(0, |c| c.header.raw_len as usize);
        self.cache.insert(chunk, raw_len, records.clone());
        Ok(records)
    }

    /// The first chunk holding a record of `step`.
    pub fn chunk_for_step(&self, step: Step) -> Option<usize> {
        self.index.chunks_covering(step).next()
    }

    /// Every record of `step`, in file order (they may span chunks).
    pub fn records_at_step(&mut self, step: Step) -> Result<Vec<Record>> {
        let chunks: Vec<usize> = self.index.chunks_covering(step).collect();
        let mut out = Vec::new();
        for c in chunks {
            let records = self.chunk_records(c)?;
            out.extend(records.iter().filter(|r| r.step() == step).cloned());
        }
        Ok(out)
    }

    /// The last keyframe at or before `step`: where a seek to `step` starts.
    pub fn keyframe_at_or_before(&mut self, step: Step) -> Result<Option<Keyframe>> {
        let Some(c) = self.index.chunk_of_keyframe_at_or_before(step) else {
            return Ok(None);
        };
        let records = self.chunk_records(c)?;
        let found = records.iter().rev().find_map(|r| match r {
            Record::Keyframe(k) if k.step <= step => Some(k.clone()),
            _ => None,
        });
        match found {
            Some(k) => Ok(Some(k)),
            None => Err(self.disagrees(c, "holds no keyframe its header promises")),
        }
    }

    /// [`Reader::keyframe_at_or_before`] with every vCPU's registers there (format 5): the
    /// registers of the keyframe's vCPU and the others' parked, ready to follow the records
    /// after it.
    pub fn keyframe_cpus_at_or_before(
        &mut self,
        step: Step,
    ) -> Result<Option<(Step, Regs, Parked)>> {
        let Some(k) = self.keyframe_at_or_before(step)? else {
            return Ok(None);
        };
        let mut regs = k.regs;
        let mut parked = Parked::new(self.header.vcpu_count());
        if self.header.vcpu_count() > 1 {
            let c = self.index.chunk_of_keyframe_at_or_before(step).unwrap_or(0);
            let records = self.chunk_records(c)?;
            let all = records.iter().find_map(|r| match r {
                Record::Vcpus(v) if v.step == k.step => Some(v.clone()),
                _ => None,
            });
            let Some(all) = all else {
                return Err(self.disagrees(c, "holds a keyframe without every vCPU's registers"));
            };
            parked
                .keyframe(&all, &mut regs)
                .map_err(|e| self.disagrees(c, &e))?;
        }
        Ok(Some((k.step, regs, parked)))
    }

    /// Event `id`, or `None` past the last event.
    pub fn event(&mut self, id: EventId) -> Result<Option<Event>> {
        let Some(c) = self.index.chunk_of_event(id) else {
            return Ok(None);
        };
        let records = self.chunk_records(c)?;
        let found = records.iter().find_map(|r| match r {
            Record::Event(e) if e.id == id => Some(e.clone()),
            _ => None,
        });
        match found {
            Some(e) => Ok(Some(e)),
            None => Err(self.disagrees(c, "lacks an event its header promises")),
        }
    }

    /// Event `id` with the vCPU it belongs to (0 in one-vCPU traces), or `None` past the last.
    pub fn event_with_vcpu(&mut self, id: EventId) -> Result<Option<(Event, u32)>> {
        let Some(c) = self.index.chunk_of_event(id) else {
            return Ok(None);
        };
        let records = self.chunk_records(c)?;
        let found = crate::vcpu::attribute(&records).find_map(|(vcpu, r)| match r {
            Record::Event(e) if e.id == id => Some((e.clone(), vcpu)),
            _ => None,
        });
        match found {
            Some(e) => Ok(Some(e)),
            None => Err(self.disagrees(c, "lacks an event its header promises")),
        }
    }

    fn disagrees(&self, chunk: usize, detail: &str) -> Error {
        let offset = self.index.chunks.get(chunk).map_or(0, |c| c.offset);
        Error::corrupt("chunk", offset, detail.to_string())
    }

    /// Checks one chunk without keeping its records: its header (own checksum, agreement with
    /// the index) and its payload checksum, and with [`Depth::Records`] also that the payload
    /// decompresses and decodes into the records the header promises.
    pub fn verify_chunk(&mut self, chunk: usize, depth: Depth) -> Result<()> {
        let (header, offset, payload) = self.read_payload(chunk)?;
        match depth {
            Depth::Checksums => chunk::verify_payload(&header, &payload, offset),
            Depth::Records => chunk::decode_payload(&header, &payload, offset).map(drop),
        }
    }

    /// Checks every chunk the index lists (see [`Reader::verify_chunk`]) and returns the
    /// account of what this trace lost: the rebuilt index, if any, and each damaged chunk.
    /// It never stops at the first damaged chunk: each is checked on its own.
    pub fn verify(&mut self, depth: Depth) -> Integrity {
        let mut damaged = Vec::new();
        for i in 0..self.index.chunks.len() {
            if let Err(error) = self.verify_chunk(i, depth) {
                let info = self.index.chunks[i];
                damaged.push(DamagedChunk {
                    chunk: i,
                    offset: info.offset,
                    bytes: info.header.file_len(),
                    first_step: info.header.first_step,
                    last_step: info.header.last_step,
                    first_event: info.header.first_event,
                    end_event: info.header.end_event(),
                    error,
                });
            }
        }
        Integrity::new(
            depth,
            self.file_len(),
            self.index.chunks.len(),
            self.recovery.clone(),
            damaged,
            (
                self.total_steps(),
                self.event_count(),
                self.index.end.is_some(),
            ),
        )
    }

    /// Reads, checks and decodes one chunk, bypassing the cache.
    fn read_chunk(&mut self, chunk: usize) -> Result<Vec<Record>> {
        let (header, offset, payload) = self.read_payload(chunk)?;
        chunk::decode_payload(&header, &payload, offset)
    }

    /// The header (checked against the index) and the still compressed payload of a chunk.
    fn read_payload(&mut self, chunk: usize) -> Result<(ChunkHeader, u64, Vec<u8>)> {
        let Some(info) = self.index.chunks.get(chunk).copied() else {
            return Err(Error::NoSuchChunk {
                index: chunk,
                count: self.index.chunks.len(),
            });
        };
        let head = self
            .src
            .read_array::<CHUNK_HEADER_LEN>(info.offset, "chunk header")?;
        let header = ChunkHeader::decode(&head, info.offset)?;
        if header != info.header {
            return Err(Error::corrupt(
                "chunk header",
                info.offset,
                "disagrees with the index entry for it",
            ));
        }
        let payload = self.src.read_at(
            info.offset + CHUNK_HEADER_LEN as u64,
            header.compressed_len as u64,
            "chunk payload",
        )?;
        Ok((header, info.offset, payload))
    }
}

/// Reads and checks the trailer and the index it points at.
fn read_index<R: Read + Seek>(src: &mut Source<R>, start: u64) -> Result<Index> {
    let len = src.len();
    if len < start + TRAILER_LEN as u64 {
        return Err(Error::Truncated {
            what: "trailer",
            offset: start,
            needed: TRAILER_LEN as u64,
            available: len - start,
        });
    }
    let at = len - TRAILER_LEN as u64;
    let trailer = Trailer::decode(&src.read_array::<TRAILER_LEN>(at, "trailer")?, at)?;
    if trailer.index_offset < start {
        return Err(Error::corrupt(
            "trailer",
            at,
            "the index starts inside the header",
        ));
    }
    let max = zstd::zstd_safe::compress_bound(MAX_INDEX_RAW) as u64;
    if trailer.index_compressed_len > max {
        return Err(Error::TooLarge {
            what: "compressed index",
            offset: trailer.index_offset,
            declared: trailer.index_compressed_len,
            limit: max,
        });
    }
    let compressed = src.read_at(trailer.index_offset, trailer.index_compressed_len, "index")?;
    let index = index::decode_index(&trailer, &compressed)?;
    index.validate(start, trailer.index_offset, trailer.index_offset)?;
    Ok(index)
}

/// Iterator over every record; see [`Reader::records`].
pub struct Records<'a, R> {
    reader: &'a mut Reader<R>,
    next_chunk: usize,
    current: std::vec::IntoIter<Record>,
    failed: bool,
}

impl<R: Read + Seek> Iterator for Records<'_, R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(Ok(r));
            }
            if self.failed || self.next_chunk >= self.reader.index.chunks.len() {
                return None;
            }
            let chunk = self.next_chunk;
            self.next_chunk += 1;
            match self.reader.read_chunk(chunk) {
                Ok(records) => self.current = records.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
