//! `union kvm_cpu_role` (v5.19+) / `union kvm_mmu_role` (v4.20–v5.18): base in the low 32 bits,
//! ext in the high 32 bits (sheet §0.2 item 2).

use super::ext_role::ExtRole;
use super::layout::{FieldDiff, Layout};
use super::page_role::PageRole;

/// A 64-bit CPU role (`as_u64`). Before v5.19 this is the `mmu_role` whose base half is also
/// the root's page role.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuRole(pub u64);

impl CpuRole {
    pub fn new(base: PageRole, ext: ExtRole) -> CpuRole {
        CpuRole(u64::from(base.0) | (u64::from(ext.0) << 32))
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
    pub fn base(self) -> PageRole {
        PageRole(self.0 as u32)
    }
    pub fn ext(self) -> ExtRole {
        ExtRole((self.0 >> 32) as u32)
    }
    /// Base fields then ext fields (ext names carry an `ext.` prefix).
    pub fn fields(self, layout: &Layout) -> Vec<(&'static str, u64)> {
        let mut v = self.base().fields(layout);
        v.extend(self.ext().fields(layout));
        v
    }
    pub fn diff(self, other: CpuRole, layout: &Layout) -> Vec<FieldDiff> {
        let mut v = self.base().diff(other.base(), layout);
        v.extend(self.ext().diff(other.ext(), layout));
        v
    }
    pub fn describe(self, layout: &Layout) -> String {
        super::page_role::describe(&self.fields(layout))
    }
}
