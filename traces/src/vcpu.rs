//! Which vCPU each record belongs to (format 5): the one named by the last [`Record::Vcpu`]
//! before it. Every chunk of a multi-vCPU trace starts with one, so a chunk is attributed on
//! its own; one-vCPU traces have none and everything is vCPU 0's.

use crate::record::{Record, VcpusKeyframe};
use crate::regs::Regs;

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

/// The registers of the vCPUs that are not current, while a reader applies the current one's
/// records to its own `Regs`: a switch parks those and takes out the next vCPU's. One-vCPU
/// traces never switch, and their readers never notice this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parked {
    current: u32,
    /// Indexed by vCPU; the current vCPU's entry is stale while it runs.
    regs: Vec<Regs>,
}

impl Parked {
    /// For a trace of `vcpus` vCPUs (the header's count), vCPU 0 current; the others' registers
    /// come from the keyframe at step 0 ([`Record::Vcpus`]).
    pub fn new(vcpus: u32) -> Parked {
        Parked {
            current: 0,
            regs: vec![Regs::default(); vcpus.max(1) as usize],
        }
    }

    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn vcpus(&self) -> u32 {
        self.regs.len() as u32
    }

    /// Makes `vcpu` current: `regs` (the current vCPU's) are parked and become `vcpu`'s.
    pub fn switch(&mut self, vcpu: u32, regs: &mut Regs) -> Result<(), String> {
        if vcpu == self.current {
            return Ok(());
        }
        if vcpu as usize >= self.regs.len() {
            return Err(format!(
                "a switch to vCPU {vcpu} in a trace of {} vCPU(s)",
                self.regs.len()
            ));
        }
        std::mem::swap(&mut self.regs[self.current as usize], regs);
        std::mem::swap(&mut self.regs[vcpu as usize], regs);
        self.current = vcpu;
        Ok(())
    }

    /// Every vCPU's registers at a keyframe: `regs` becomes the current vCPU's.
    pub fn keyframe(&mut self, k: &VcpusKeyframe, regs: &mut Regs) -> Result<(), String> {
        if k.regs.len() != self.regs.len() || k.current as usize >= k.regs.len() {
            return Err(format!(
                "a keyframe of {} vCPU(s) (current {}) in a trace of {}",
                k.regs.len(),
                k.current,
                self.regs.len()
            ));
        }
        self.regs.clone_from(&k.regs);
        self.current = k.current;
        regs.clone_from(&k.regs[k.current as usize]);
        Ok(())
    }

    /// Follows a record read in file order from the start of the trace: switches and
    /// multi-vCPU keyframes (other records are the caller's to apply to `regs`).
    pub fn observe(&mut self, record: &Record, regs: &mut Regs) -> Result<(), String> {
        match record {
            Record::Vcpu(v) => self.switch(v.vcpu, regs),
            Record::Vcpus(k) => self.keyframe(k, regs),
            _ => Ok(()),
        }
    }

    /// The registers of `vcpu`, given the current vCPU's.
    pub fn regs_of<'a>(&'a self, vcpu: u32, current: &'a Regs) -> Option<&'a Regs> {
        if vcpu == self.current {
            Some(current)
        } else {
            self.regs.get(vcpu as usize)
        }
    }
}
