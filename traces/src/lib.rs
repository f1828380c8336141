//! The mmurr trace format.
//!
//! A trace is one self-contained file: a header (the guest, its entry state, the host), then
//! chunks of bincode-encoded [`Record`]s, each chunk zstd-compressed with its own checksum,
//! then an index. This crate is pure: no KVM, no I/O beyond reading and writing the file.
//!
//! | offset            | size      | what                                                     |
//! |-------------------|-----------|----------------------------------------------------------|
//! | 0                 | 64        | preamble: magic, versions, feature flags, header lengths + xxh3, own xxh3 |
//! | 64                | H         | [`Header`]: bincode, zstd                                |
//! | 64 + H            | 80 + C    | chunk: 80-byte chunk header, then C bytes of zstd'd bincode records; repeated |
//! | I                 | X         | index: bincode, zstd (chunk table, event counts, end record) |
//! | I + X             | 48        | trailer: index offset, lengths, xxh3, own xxh3, `MMURREND` |
//!
//! A file without a valid trailer (its writer never finished) is still read: the index is
//! rebuilt by scanning chunk headers (see [`Recovery`]).

mod cache;
pub mod chunk;
mod codec;
pub mod error;
pub mod host;
pub mod host_action;
pub mod index;
pub mod inputs;
pub mod integrity;
mod io;
pub mod preamble;
pub mod reader;
pub mod record;
mod recover;
pub mod regs;
pub mod synth;
pub mod vcpu;
pub mod writer;

pub use error::{Error, Result};
pub use host::{HostEvent, HostEventsStatus, HostMmu, HostRecord, ShadowPage};
pub use host_action::{CpuidModel, HostAction, LoadedRegs};
pub use index::{ChunkInfo, EventCounts};
pub use integrity::{DamagedChunk, Depth, Integrity};
pub use preamble::{Preamble, FORMAT_VERSION, MAX_VCPUS};
pub use reader::{Reader, Records};
pub use record::*;
pub use recover::Recovery;
pub use regs::{DescriptorTable, RegId, Regs, Segment};
pub use vcpu::{Parked, VcpuCursor};
pub use writer::{WriteSummary, Writer};

/// The file extension of traces.
pub const EXTENSION: &str = "mmurr";
