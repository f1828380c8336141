//! The vCPU register file as a trace stores it.
//!
//! Keyframes and the entry state carry a whole [`Regs`]; step records carry only the
//! registers that changed, as `(RegId, u64)` pairs. Every register is one `u64` slot so a
//! delta is uniform: a segment is four slots (selector, base, limit, access rights).

use serde::{Deserialize, Serialize};

/// One segment register as KVM's `kvm_segment` describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Access rights in VMX layout: type[3:0] S[4] DPL[6:5] P[7] AVL[12] L[13] D/B[14] G[15],
    /// bit 16 = unusable.
    pub attrs: u32,
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// The full architectural state a trace records for one vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Regs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (hardware encoding order).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS (hardware encoding order).
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub xcr0: u64,
    pub kernel_gs_base: u64,
    pub pkru: u32,
    /// The PAE PDPTE registers, meaningful only while PAE paging is active.
    pub pdptrs: [u64; 4],
}

/// Index of a segment register in [`Regs::seg`].
pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

/// Names a single `u64` slot of [`Regs`]; a step record's delta is a list of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum RegId {
    Gpr(u8),
    Rip,
    Rflags,
    /// Segment `n` of [`Regs::seg`] (0..6), 6 = LDTR, 7 = TR.
    SegSelector(u8),
    SegBase(u8),
    SegLimit(u8),
    SegAttrs(u8),
    GdtBase,
    GdtLimit,
    IdtBase,
    IdtLimit,
    Cr0,
    Cr2,
    Cr3,
    Cr4,
    Cr8,
    Efer,
    Xcr0,
    KernelGsBase,
    Pkru,
    Pdptr(u8),
}

impl Regs {
    fn segment(&self, n: u8) -> Option<&Segment> {
        match n {
            0..=5 => self.seg.get(n as usize),
            6 => Some(&self.ldtr),
            7 => Some(&self.tr),
            _ => None,
        }
    }

    fn segment_mut(&mut self, n: u8) -> Option<&mut Segment> {
        match n {
            0..=5 => self.seg.get_mut(n as usize),
            6 => Some(&mut self.ldtr),
            7 => Some(&mut self.tr),
            _ => None,
        }
    }

    /// Reads one slot; `None` for an index out of range (possible in a corrupt trace).
    pub fn get(&self, id: RegId) -> Option<u64> {
        Some(match id {
            RegId::Gpr(n) => *self.gpr.get(n as usize)?,
            RegId::Rip => self.rip,
            RegId::Rflags => self.rflags,
            RegId::SegSelector(n) => self.segment(n)?.selector as u64,
            RegId::SegBase(n) => self.segment(n)?.base,
            RegId::SegLimit(n) => self.segment(n)?.limit as u64,
            RegId::SegAttrs(n) => self.segment(n)?.attrs as u64,
            RegId::GdtBase => self.gdtr.base,
            RegId::GdtLimit => self.gdtr.limit as u64,
            RegId::IdtBase => self.idtr.base,
            RegId::IdtLimit => self.idtr.limit as u64,
            RegId::Cr0 => self.cr0,
            RegId::Cr2 => self.cr2,
            RegId::Cr3 => self.cr3,
            RegId::Cr4 => self.cr4,
            RegId::Cr8 => self.cr8,
            RegId::Efer => self.efer,
            RegId::Xcr0 => self.xcr0,
            RegId::KernelGsBase => self.kernel_gs_base,
            RegId::Pkru => self.pkru as u64,
            RegId::Pdptr(n) => *self.pdptrs.get(n as usize)?,
        })
    }

    /// Writes one slot (narrow slots are truncated); `false` for an index out of range.
    pub fn set(&mut self, id: RegId, v: u64) -> bool {
        let slot: &mut u64 = match id {
            RegId::Gpr(n) => match self.gpr.get_mut(n as usize) {
                Some(s) => s,
                None => return false,
            },
            RegId::Rip => &mut self.rip,
            RegId::Rflags => &mut self.rflags,
            RegId::SegSelector(n) | RegId::SegLimit(n) | RegId::SegAttrs(n) => {
                let Some(s) = self.segment_mut(n) else {
                    return false;
                };
                match id {
                    RegId::SegSelector(_) => s.selector = v as u16,
                    RegId::SegLimit(_) => s.limit = v as u32,
                    _ => s.attrs = v as u32,
                }
                return true;
            }
            RegId::SegBase(n) => match self.segment_mut(n) {
                Some(s) => &mut s.base,
                None => return false,
            },
            RegId::GdtBase => &mut self.gdtr.base,
            RegId::IdtBase => &mut self.idtr.base,
            RegId::GdtLimit => {
                self.gdtr.limit = v as u16;
                return true;
            }
            RegId::IdtLimit => {
                self.idtr.limit = v as u16;
                return true;
            }
            RegId::Cr0 => &mut self.cr0,
            RegId::Cr2 => &mut self.cr2,
            RegId::Cr3 => &mut self.cr3,
            RegId::Cr4 => &mut self.cr4,
            RegId::Cr8 => &mut self.cr8,
            RegId::Efer => &mut self.efer,
            RegId::Xcr0 => &mut self.xcr0,
            RegId::KernelGsBase => &mut self.kernel_gs_base,
            RegId::Pkru => {
                self.pkru = v as u32;
                return true;
            }
            RegId::Pdptr(n) => match self.pdptrs.get_mut(n as usize) {
                Some(s) => s,
                None => return false,
            },
        };
        *slot = v;
        true
    }

    /// Every slot, in a fixed order.
    pub fn all_ids() -> Vec<RegId> {
        let mut ids: Vec<RegId> = (0..16).map(RegId::Gpr).collect();
        ids.extend([RegId::Rip, RegId::Rflags]);
        for n in 0..8 {
            ids.extend([
                RegId::SegSelector(n),
                RegId::SegBase(n),
                RegId::SegLimit(n),
                RegId::SegAttrs(n),
            ]);
        }
        ids.extend([
            RegId::GdtBase,
            RegId::GdtLimit,
            RegId::IdtBase,
            RegId::IdtLimit,
            RegId::Cr0,
            RegId::Cr2,
            RegId::Cr3,
            RegId::Cr4,
            RegId::Cr8,
            RegId::Efer,
            RegId::Xcr0,
            RegId::KernelGsBase,
            RegId::Pkru,
        ]);
        ids.extend((0..4).map(RegId::Pdptr));
        ids
    }

    /// The slots whose value differs from `before`, with their new values.
    pub fn delta_from(&self, before: &Regs) -> Vec<(RegId, u64)> {
        Self::all_ids()
            .into_iter()
            .filter_map(|id| {
                let new = self.get(id)?;
                (before.get(id) != Some(new)).then_some((id, new))
            })
            .collect()
    }

    /// Applies a delta; `false` if any id was out of range (the rest are still applied).
    pub fn apply_delta(&mut self, delta: &[(RegId, u64)]) -> bool {
        delta
            .iter()
            .fold(true, |ok, &(id, v)| self.set(id, v) && ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_round_trips_every_slot() {
        let before = Regs::default();
        let mut after = Regs::default();
        for (i, id) in Regs::all_ids().into_iter().enumerate() {
            assert!(after.set(id, i as u64 + 1), "{id:?}");
        }
        let delta = after.delta_from(&before);
        assert_eq!(delta.len(), Regs::all_ids().len());
        let mut rebuilt = before.clone();
        assert!(rebuilt.apply_delta(&delta));
        assert_eq!(rebuilt, after);
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        let mut r = Regs::default();
        assert!(!r.set(RegId::Gpr(16), 1));
        assert!(!r.set(RegId::SegBase(8), 1));
        assert_eq!(r.get(RegId::Pdptr(4)), None);
        assert_eq!(r, Regs::default());
    }
}
