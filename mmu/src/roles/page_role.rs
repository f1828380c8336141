//! `union kvm_mmu_page_role` (sheet §1).

use super::layout::{Field, FieldDiff, Layout, Word};

/// A 32-bit page role (`role.word`). Compared as a whole word, as KVM does.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageRole(pub u32);

impl PageRole {
    pub fn word(self) -> u32 {
        self.0
    }
    pub fn get(self, layout: &Layout, f: Field) -> Option<u32> {
        layout.get(Word::Base, self.0, f)
    }
    #[must_use]
    pub fn with(self, layout: &Layout, f: Field, v: u32) -> PageRole {
        PageRole(layout.set(Word::Base, self.0, f, v))
    }
    // Positions that never moved (sheet §1): usable without a layout.
    pub fn level(self) -> u8 {
        (self.0 & 0xf) as u8
    }
    pub fn direct(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    pub fn access(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    pub fn invalid(self) -> bool {
        self.0 & (1 << 11) != 0
    }
    pub fn cr0_wp(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    pub fn guest_mode(self) -> bool {
        self.0 & (1 << 17) != 0
    }
    pub fn smm(self) -> u8 {
        (self.0 >> 24) as u8
    }
    pub fn fields(self, layout: &Layout) -> Vec<(&'static str, u64)> {
        layout.fields(Word::Base, self.0)
    }
    pub fn diff(self, other: PageRole, layout: &Layout) -> Vec<FieldDiff> {
        layout.diff(Word::Base, self.0, other.0)
    }
    /// `name=value` pairs of the non-zero fields.
    pub fn describe(self, layout: &Layout) -> String {
        describe(&self.fields(layout))
    }
}

pub(crate) fn describe(fields: &[(&'static str, u64)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    parts.join(" ")
}
