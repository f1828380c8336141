//! The mmurr trace format.
//!
//! A trace is one self-contained file: a header (the guest, its entry state, the host), then
//! chunks of bincode-encoded [`Record`]s, each chunk zstd-compressed with its own checksum,
//! then an index. This crate is pure: no KVM, no I/O beyond reading and writing the file.

pub mod record;
pub mod regs;

pub use record::*;
pub use regs::{DescriptorTable, RegId, Regs, Segment};
