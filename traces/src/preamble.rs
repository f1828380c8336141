//! The fixed-size preamble at offset 0 and the compressed [`Header`] right after it.
//!
//! The preamble's layout is frozen forever (its own `OUTER_VERSION` stays 1): any reader can
//! always tell what a file is, which format version wrote it and whether it may read it.

use crate::codec::{self, Fields};
use crate::error::{Error, Result};
use crate::record::Header;

/// `\x89MMURR\r\n`: a high byte and a CR-LF pair catch 7-bit and newline-mangling transfers.
pub const MAGIC: [u8; 8] = *b"\x89MMURR\r\n";
/// Version of the preamble layout itself. Frozen: never changes.
pub const OUTER_VERSION: u16 = 1;
/// Format version this code writes (the record schema and the chunk/index layout).
pub const FORMAT_VERSION: u16 = 6;
/// The oldest reader version able to read what this code writes: version 2 appended enum
/// variants a version-1 reader cannot decode, version 3 `Record::Run`, which a version-2
/// reader cannot decode, version 4 `Header::host` and `Record::Host`, version 5
/// `Header::vcpus`, `Record::Vcpu` and `Record::Vcpus`, version 6 `EventKind::HostAction` and
/// `BackendKind::Model`.
pub const MIN_READER_VERSION: u16 = 6;
/// The first format whose header has [`Header::host`].
const HOST_SINCE: u16 = 4;
/// The first format whose header has [`Header::vcpus`].
const VCPUS_SINCE: u16 = 5;
/// The most vCPUs a trace may declare (KVM's own `KVM_MAX_VCPUS` is 1024 to 4096; a guest
/// recorded one instruction at a time never has that many).
pub const MAX_VCPUS: u32 = 256;
/// Required-feature bits this reader understands (a file setting others is refused).
pub const KNOWN_REQUIRED_FEATURES: u32 = 0;
pub const PREAMBLE_LEN: usize = 64;
/// Decompressed header limit: guest images and boot blobs can be large.
pub const MAX_HEADER_RAW: usize = 256 << 20;

/// The decoded preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    pub outer_version: u16,
    pub format_version: u16,
    pub min_reader_version: u16,
    /// Features a reader must understand to read the file.
    pub required_features: u32,
    /// Features a reader may ignore.
    pub optional_features: u32,
    pub header_compressed_len: u64,
    pub header_raw_len: u64,
    /// xxh3-64 of the compressed header bytes.
    pub header_hash: u64,
}

impl Preamble {
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        let mut v = Vec::with_capacity(PREAMBLE_LEN);
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&self.outer_version.to_le_bytes());
        v.extend_from_slice(&self.format_version.to_le_bytes());
        v.extend_from_slice(&self.min_reader_version.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&self.required_features.to_le_bytes());
        v.extend_from_slice(&self.optional_features.to_le_bytes());
        v.extend_from_slice(&self.header_compressed_len.to_le_bytes());
        v.extend_from_slice(&self.header_raw_len.to_le_bytes());
        v.extend_from_slice(&self.header_hash.to_le_bytes());
        v.extend_from_slice(&[0u8; 8]);
        let h = codec::hash(&v);
        v.extend_from_slice(&h.to_le_bytes());
        out.copy_from_slice(&v);
        out
    }

    /// Parses and checks a preamble; `bytes` is the start of the file (any length).
    pub fn decode(bytes: &[u8]) -> Result<Preamble> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::NotATrace {
                found: bytes.iter().take(MAGIC.len()).copied().collect(),
            });
        }
        let Some(bytes) = bytes.get(..PREAMBLE_LEN) else {
            return Err(Error::Truncated {
                what: "preamble",
                offset: 0,
                needed: PREAMBLE_LEN as u64,
                available: bytes.len() as u64,
            });
        };
        let mut f = Fields::new(bytes);
        let _magic: [u8; 8] = f.bytes();
        let outer_version = f.u16();
        let format_version = f.u16();
        let min_reader_version = f.u16();
        let _pad = f.u16();
        let required_features = f.u32();
        let optional_features = f.u32();
        let header_compressed_len = f.u64();
        let header_raw_len = f.u64();
        let header_hash = f.u64();
        let _reserved = f.u64();
        let stored = f.u64();
        let computed = codec::hash(&bytes[..PREAMBLE_LEN - 8]);
        if !codec::checksum_ok(stored, computed) {
            return Err(Error::Checksum {
                what: "preamble",
                offset: 0,
                stored,
                computed,
            });
        }
        if outer_version != OUTER_VERSION {
            return Err(Error::corrupt(
                "preamble",
                0,
                format!("unknown outer version {outer_version} (the preamble layout is frozen at {OUTER_VERSION})"),
            ));
        }
        if min_reader_version > FORMAT_VERSION {
            return Err(Error::TooNew {
                written: format_version,
                needed: min_reader_version,
                supported: FORMAT_VERSION,
            });
        }
        let unknown = required_features & !KNOWN_REQUIRED_FEATURES;
        if unknown != 0 {
            return Err(Error::UnknownFeatures { flags: unknown });
        }
        if header_raw_len > MAX_HEADER_RAW as u64 {
            return Err(Error::TooLarge {
                what: "header",
                offset: PREAMBLE_LEN as u64,
                declared: header_raw_len,
                limit: MAX_HEADER_RAW as u64,
            });
        }
        let max_compressed = zstd::zstd_safe::compress_bound(MAX_HEADER_RAW) as u64;
        if header_compressed_len > max_compressed {
            return Err(Error::TooLarge {
                what: "compressed header",
                offset: PREAMBLE_LEN as u64,
                declared: header_compressed_len,
                limit: max_compressed,
            });
        }
        Ok(Preamble {
            outer_version,
            format_version,
            min_reader_version,
            required_features,
            optional_features,
            header_compressed_len,
            header_raw_len,
            header_hash,
        })
    }

    /// File offset just past the header: where the first chunk starts.
    pub fn records_start(&self) -> u64 {
        PREAMBLE_LEN as u64 + self.header_compressed_len
    }
}

/// Headers larger than this (a whole guest state: the replayer's re-executions write one
/// and read it back on every first move into a run) compress at [`BIG_HEADER_LEVEL`].
const BIG_HEADER_RAW: usize = 16 << 20;
/// zstd level 1 compresses guest memory twice as fast as the default level 3 for about 8 %
/// more bytes (measured on a Linux kernel image).
const BIG_HEADER_LEVEL: i32 = 1;

/// The preamble and compressed header bytes for `header`, ready to write.
pub fn encode_header(header: &Header) -> Result<Vec<u8>> {
    let raw = codec::encode::<_, MAX_HEADER_RAW>("header", header)?;
    let compressed = if raw.len() > BIG_HEADER_RAW {
        codec::compress_at("header", &raw, BIG_HEADER_LEVEL)?
    } else {
        codec::compress("header", &raw)?
    };
    let preamble = Preamble {
        outer_version: OUTER_VERSION,
        format_version: FORMAT_VERSION,
        min_reader_version: MIN_READER_VERSION,
        required_features: 0,
        optional_features: 0,
        header_compressed_len: compressed.len() as u64,
        header_raw_len: raw.len() as u64,
        header_hash: codec::hash(&compressed),
    };
    let mut out = Vec::with_capacity(PREAMBLE_LEN + compressed.len());
    out.extend_from_slice(&preamble.encode());
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// Checks and decodes the compressed header bytes a preamble points at.
pub fn decode_header(preamble: &Preamble, compressed: &[u8]) -> Result<Header> {
    let offset = PREAMBLE_LEN as u64;
    let computed = codec::hash(compressed);
    if !codec::checksum_ok(preamble.header_hash, computed) {
        return Err(Error::Checksum {
            what: "header",
            offset,
            stored: preamble.header_hash,
            computed,
        });
    }
    // Both lengths were bounded by `Preamble::decode`.
    let raw = codec::decompress(
        "header",
        offset,
        compressed,
        preamble.header_raw_len as usize,
    )?;
    let mut raw = raw;
    if preamble.format_version < HOST_SINCE {
        // bincode writes struct fields in order with nothing between them, so a format 1–3
        // header is a format 4 header without its last field, `host: Option<HostMmu>`;
        // `None` is one 0 byte.
        raw.push(0);
    }
    if preamble.format_version < VCPUS_SINCE {
        // Likewise `vcpus: u32` (format 5), appended after `host`: 0 (one vCPU) is one 0 byte.
        raw.push(0);
    }
    let header = codec::decode_exact::<Header, MAX_HEADER_RAW>("header", offset, &raw)?;
    if header.vcpus > MAX_VCPUS {
        return Err(Error::corrupt(
            "header",
            offset,
            format!(
                "{} vCPUs declared, more than the {MAX_VCPUS} a trace may have",
                header.vcpus
            ),
        ));
    }
    Ok(header)
}
