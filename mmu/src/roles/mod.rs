//! KVM's MMU roles: `kvm_mmu_page_role` ([`PageRole`]), `kvm_mmu_extended_role` ([`ExtRole`])
//! and the 64-bit CPU role ([`CpuRole`]), with per-version [`Layout`]s that name the fields.

pub mod cpu_role;
pub mod ext_role;
pub mod layout;
pub mod page_role;

pub use cpu_role::CpuRole;
pub use ext_role::ExtRole;
pub use layout::{Field, FieldDef, FieldDiff, GpteSense, Layout, Word};
pub use page_role::PageRole;
