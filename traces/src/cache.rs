//! A small LRU of decoded chunks: random access around one step touches the same chunk
//! repeatedly, and replaying forward moves to the next one.

use crate::record::Record;
use std::sync::Arc;

/// Decoded chunks kept at most.
pub const CACHE_CHUNKS: usize = 8;
/// Decompressed bytes kept at most (the newest chunk is kept even if larger).
pub const CACHE_BYTES: usize = 64 << 20;

pub struct ChunkCache {
    /// Most recently used last.
    entries: Vec<(usize, usize, Arc<Vec<Record>>)>,
    /// Chunks kept at most (at least 1).
    limit: usize,
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache {
            entries: Vec::new(),
            limit: CACHE_CHUNKS,
        }
    }
}

impl ChunkCache {
    /// Keep at most `chunks` decoded chunks (at least 1): a decoded chunk of a busy trace is
    /// several megabytes, so a long-lived reader beside others may want fewer.
    pub fn set_limit(&mut self, chunks: usize) {
        self.limit = chunks.max(1);
        while self.entries.len() > self.limit {
            self.entries.remove(0);
        }
    }

    pub fn get(&mut self, chunk: usize) -> Option<Arc<Vec<Record>>> {
        let pos = self.entries.iter().position(|e| e.0 == chunk)?;
        let entry = self.entries.remove(pos);
        let records = entry.2.clone();
        self.entries.push(entry);
        Some(records)
    }

    pub fn insert(&mut self, chunk: usize, raw_len: usize, records: Arc<Vec<Record>>) {
        self.entries.retain(|e| e.0 != chunk);
        self.entries.push((chunk, raw_len, records));
        let mut bytes: usize = self.entries.iter().map(|e| e.1).sum();
        while self.entries.len() > 1 && (self.entries.len() > self.limit || bytes > CACHE_BYTES) {
            bytes -= self.entries.remove(0).1;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = ChunkCache::default();
        for i in 0..CACHE_CHUNKS {
            c.insert(i, 10, Arc::new(Vec::new()));
        }
        assert!(c.get(0).is_some()); // 0 becomes the most recent
        c.insert(100, 10, Arc::new(Vec::new()));
        assert_eq!(c.len(), CACHE_CHUNKS);
        assert!(c.get(1).is_none(), "1 was the least recently used");
        assert!(c.get(0).is_some());
        c.insert(200, CACHE_BYTES, Arc::new(Vec::new()));
        assert_eq!(c.len(), 1, "the byte budget evicts all older chunks");
        assert!(c.get(200).is_some());
        c.insert(201, 10, Arc::new(Vec::new()));
        c.set_limit(1);
        assert_eq!(c.len(), 1);
        assert!(c.get(201).is_some(), "the limit keeps the most recent");
    }
}
