//! The x86 paging architecture and a model of KVM's role-tracked MMU.
//! (overview written below once modules exist)

pub mod paging;
pub mod regs;

pub use paging::fault::{pfec, Fault, Gp};
pub use paging::mode::{efer_after_cr0_write, lma_after_cr0_write, PagingMode};
pub use paging::pdpte::load_pdptrs;
pub use paging::perm::{Access, AccessRequest, EffectiveRights, PermInputs};
pub use paging::rsvd::{RsvdInputs, TableFormat};
pub use paging::transition::{
    apply_write, apply_write_with, check_write, check_write_with, CrReg, WriteContext,
};
pub use paging::walk::{
    walk, walk_mut, walk_with, AdUpdate, Translated, Walk, WalkConfig, WalkLevel,
};
pub use regs::{bits, ControlRegs, CpuModel, FlatMemory, GuestMemory, GuestMemoryMut};
