//! `union kvm_mmu_extended_role` (sheet §2).

use super::layout::{Field, FieldDiff, Layout, Word};

/// A 32-bit extended role.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtRole(pub u32);

impl ExtRole {
    pub fn word(self) -> u32 {
        self.0
    }
    /// `valid` has been bit 0 in every version.
    pub fn valid(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn get(self, layout: &Layout, f: Field) -> Option<u32> {
        layout.get(Word::Ext, self.0, f)
    }
    #[must_use]
    pub fn with(self, layout: &Layout, f: Field, v: u32) -> ExtRole {
        ExtRole(layout.set(Word::Ext, self.0, f, v))
    }
    pub fn fields(self, layout: &Layout) -> Vec<(&'static str, u64)> {
        layout.fields(Word::Ext, self.0)
    }
    pub fn diff(self, other: ExtRole, layout: &Layout) -> Vec<FieldDiff> {
        layout.diff(Word::Ext, self.0, other.0)
    }
}
