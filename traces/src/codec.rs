//! The three primitives every part of the file is built from: bincode encoding with a size
//! limit, zstd compression with a capped decompression, and xxh3 checksums.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

/// zstd level: 3 is zstd's default and keeps the recorder's per-step cost low.
pub const ZSTD_LEVEL: i32 = 3;

pub fn hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Whether a stored checksum matches. Fuzz builds (`cfg(fuzzing)`, set by cargo-fuzz) accept
/// any checksum so the fuzzer reaches the decoders behind them instead of stopping at xxh3.
pub fn checksum_ok(stored: u64, computed: u64) -> bool {
    cfg!(fuzzing) || stored == computed
}

/// bincode's standard configuration (little endian, variable-length integers), with a limit
/// on the bytes any one decode may claim, so a hostile length prefix cannot allocate freely.
pub fn config<const LIMIT: usize>() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
> {
    bincode::config::standard().with_limit::<LIMIT>()
}

pub fn encode<T: Serialize, const LIMIT: usize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let bytes =
        bincode::serde::encode_to_vec(value, config::<LIMIT>()).map_err(|e| Error::Encode {
            what,
            detail: e.to_string(),
        })?;
    if bytes.len() > LIMIT {
        return Err(Error::Encode {
            what,
            detail: format!("{} bytes encoded, over the limit of {LIMIT}", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Decodes exactly one value that must fill `bytes` entirely.
pub fn decode_exact<T: DeserializeOwned, const LIMIT: usize>(
    what: &'static str,
    offset: u64,
    bytes: &[u8],
) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config::<LIMIT>())
        .map_err(|e| Error::corrupt(what, offset, format!("cannot decode: {e}")))?;
    if used != bytes.len() {
        return Err(Error::corrupt(
            what,
            offset,
            format!(
                "{} trailing bytes after the encoded value",
                bytes.len() - used
            ),
        ));
    }
    Ok(value)
}

pub fn compress(what: &'static str, raw: &[u8]) -> Result<Vec<u8>> {
    compress_at(what, raw, ZSTD_LEVEL)
}

pub fn compress_at(what: &'static str, raw: &[u8], level: i32) -> Result<Vec<u8>> {
    zstd::bulk::compress(raw, level).map_err(|e| Error::Encode {
        what,
        detail: format!("zstd: {e}"),
    })
}

/// Decompresses a zstd frame whose declared size `raw_len` the caller has already bounded.
/// The frame must itself declare that size (checked before allocating) and produce exactly it.
pub fn decompress(
    what: &'static str,
    offset: u64,
    compressed: &[u8],
    raw_len: usize,
) -> Result<Vec<u8>> {
    match zstd::zstd_safe::get_frame_content_size(compressed) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => {
            return Err(Error::corrupt(
                what,
                offset,
                format!("the zstd frame holds {n} bytes but {raw_len} were declared"),
            ))
        }
        Ok(None) | Err(_) => {
            return Err(Error::corrupt(
                what,
                offset,
                "not a zstd frame with a content size",
            ))
        }
    }
    let raw = zstd::bulk::decompress(compressed, raw_len)
        .map_err(|e| Error::corrupt(what, offset, format!("zstd: {e}")))?;
    if raw.len() != raw_len {
        return Err(Error::corrupt(
            what,
            offset,
            format!(
                "decompressed to {} bytes, {raw_len} were declared",
                raw.len()
            ),
        ));
    }
    Ok(raw)
}

/// Little-endian field access on fixed-size structures whose length the caller has checked.
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // Callers size `bytes` to the structure; a short slice reads as zeros, never panics.
        if let Some(src) = self.bytes.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        self.take::<N>()
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}
