//! Bounded reads from the trace source: every read is checked against the file length first,
//! so a hostile length can never make us allocate more than the file holds.

use crate::error::{Error, Result};
use std::io::{Read, Seek, SeekFrom};

pub(crate) struct Source<R> {
    inner: R,
    len: u64,
}

impl<R: Read + Seek> Source<R> {
    pub fn new(mut inner: R) -> Result<Self> {
        let len = inner
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("finding the trace length", e))?;
        Ok(Source { inner, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Reads `len` bytes at `offset`, which must lie inside the file.
    pub fn read_at(&mut self, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>> {
        let available = self.len.saturating_sub(offset);
        if len > available {
            return Err(Error::Truncated {
                what,
                offset,
                needed: len,
                available,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.inner.read_exact(&mut buf))
            .map_err(|e| Error::io(format!("reading the {what} at offset {offset}"), e))?;
        Ok(buf)
    }

    pub fn read_array<const N: usize>(
        &mut self,
        offset: u64,
        what: &'static str,
    ) -> Result<[u8; N]> {
        let v = self.read_at(offset, N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }
}
