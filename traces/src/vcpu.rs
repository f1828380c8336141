//! Which vCPU each record belongs to (format 5): the one named by the last [`Record::Vcpu`]
//! before it. Every chunk of a multi-vCPU trace starts with one, so a chunk is attributed on
//! its own; one-vCPU traces have none and everything is vCPU 0's.

use crate::record::Record;

/// Follows the current vCPU through records in file order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuCursor {
    current: u32,
}

impl VcpuCursor {
    /// Starting at vCPU 0 (the start of a chunk or of the trace).
    pub fn new() -> VcpuCursor {
        VcpuCursor::default()
    }

    /// The vCPU `record` belongs to; a switch belongs to the vCPU it switches to.
    pub fn observe(&mut self, record: &Record) -> u32 {
        if let Record::Vcpu(v) = record {
            self.current = v.vcpu;
        }
        self.current
    }

    pub fn current(&self) -> u32 {
        self.current
    }
}

/// Each record of one chunk with its vCPU.
pub fn attribute(records: &[Record]) -> impl Iterator<Item = (u32, &Record)> {
    let mut cursor = VcpuCursor::new();
    records.iter().map(move |r| (cursor.observe(r), r))
}
