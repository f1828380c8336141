//! The architectural reference: paging modes, the page walker, PDPTE loading, reserved-bit and
//! permission rules, and the legality of control-register writes (Intel SDM Vol. 3A ch. 4).

pub mod fault;
pub mod mappings;
pub mod mode;
pub mod pdpte;
pub mod perm;
pub mod rsvd;
pub mod tables;
pub mod transition;
pub mod walk;
