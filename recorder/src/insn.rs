//! Decoding the guest's instructions: the shared `insn` crate, under the name the recorder's
//! modules (and the backends) have always used.

pub use ::insn::{bitness, decode, describe, format};
