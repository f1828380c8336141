//! Every way reading or writing a trace can fail, each naming where and what.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A trace error. Reading untrusted files only ever fails with one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "not an mmurr trace: the file does not start with the trace magic (found {found:02x?})"
    )]
    NotATrace { found: Vec<u8> },
    #[error(
        "this trace needs a reader of format version {needed} or later (written as version \
         {written}); this mmurr reads up to version {supported}: upgrade mmurr"
    )]
    TooNew {
        written: u16,
        needed: u16,
        supported: u16,
    },
    #[error(
        "this trace uses required features {flags:#x} that this mmurr does not know: upgrade mmurr"
    )]
    UnknownFeatures { flags: u32 },
    #[error(
        "{what} at offset {offset} is truncated: it needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error(
        "{what} at offset {offset} is corrupt: checksum {computed:#018x} does not match the \
         stored {stored:#018x}"
    )]
    Checksum {
        what: &'static str,
        offset: u64,
        stored: u64,
        computed: u64,
    },
    #[error("{what} at offset {offset} declares {declared} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        offset: u64,
        declared: u64,
        limit: u64,
    },
    #[error("{what} at offset {offset} is corrupt: {detail}")]
    Corrupt {
        what: &'static str,
        offset: u64,
        detail: String,
    },
    #[error("cannot write this record: {0}")]
    InvalidRecord(String),
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("the writer failed earlier or was finished; no more records can be written")]
    WriterClosed,
    #[error("no chunk {index}: the trace has {count} chunks")]
    NoSuchChunk { index: usize, count: usize },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            offset,
            detail: detail.into(),
        }
    }
}
