//! # mmu: the x86 paging architecture and KVM's role-tracked MMU
//!
//! Pure Rust, no I/O, no `unsafe`. Guest memory is reached through [`GuestMemory`] (and
//! [`GuestMemoryMut`] for accessed/dirty updates). The KVM facts modelled here come from the
//! project's reference sheet (`shared/reference/kvm-mmu-roles.md`); comments cite kernel
//! commits; no kernel code is copied.
//!
//! ## Architecture (Intel SDM Vol. 3A ch. 4): [`paging`]
//! - [`PagingMode::of`]`(cr0, cr4, efer)`; [`efer_after_cr0_write`] / [`lma_after_cr0_write`].
//! - [`walk`]`(regs, cpu, mem, gva, &AccessRequest) -> Walk`: every mode (none, 32-bit with
//!   PSE/PSE-36, PAE using the PDPTE registers in `regs.pdptrs`, 4- and 5-level); U/S, R/W with
//!   CR0.WP, NX, SMEP, SMAP with RFLAGS.AC and implicit supervisor accesses, protection keys;
//!   reserved bits by mode and MAXPHYADDR (AMD bit 8, GBPAGES); canonical checks; the exact
//!   #PF error code. [`Walk::levels`] lists every entry visited. [`walk_mut`] also sets A/D.
//! - [`load_pdptrs`]`(cr3, mem, maxphyaddr) -> Result<[u64; 4], Gp>`.
//! - [`check_write`]`(CrReg, &before, value, cpu, mem) -> Result<(), Gp>` and [`apply_write`]
//!   (the registers after a legal write: LMA, PDPTE reload, ET).
//!
//! ## KVM's MMU model
//! - Roles: [`PageRole`], [`ExtRole`], [`CpuRole`] (`#[repr(transparent)]` words) printed and
//!   diffed field by field through a per-version [`Layout`].
//! - Policies: [`policies`]`()`, [`policy()`]`("v5.1-rc3")`: one [`Policy`] value per modelled
//!   kernel (v4.20 … v6.14), each with a summary and commits; role rules, compare key, reset
//!   triggers, event rules, re-init rules and root-cache rule are all data.
//! - [`Tracker`]`::new(policy, flavour, cpu, &initial)` for a [`Flavour`]: `Tdp`, `Shadow`,
//!   `ShadowNpt` (nested NPT's `guest_mmu`, fed [`Input::NestedNptInit`]), `ShadowEpt`
//!   (nested EPT's `guest_mmu`, whose `cr3` is the [`Eptp`], fed [`Input::NestedEptInit`]) or
//!   `NestedWalker` (`nested_mmu`, fed L2's registers; [`Input::NestedLoadCr3`]), then
//!   [`Tracker::apply`]`(&Input, &after, mem) -> Decision` for CR0/CR3/CR4/EFER writes, INIT,
//!   SMM entry/exit and CPUID updates. A [`Decision`] gives the [`Outcome`], trigger bits,
//!   old/new `cpu_role` and `root_role`, the context attributes a re-init changed, the
//!   prev_roots lookup of a CR3 load, the TLB flush requested, and the findings: stale context
//!   ([`StaleContext`]) and needless reset.
//! - [`MmuContext`]: root level, walker kind, reserved-bit and permission inputs, PKRU.
//!   [`architectural_context`] is what a correct re-init builds; [`translate_with_context`]
//!   walks the way KVM's software walker would with a given context; [`compare_translations`]
//!   lists the addresses whose translation differs between a kept and a correct context.
//!
//! - Host truth: [`root_of_pages`] (the root a group of host shadow pages stands for) and
//!   [`policy_for_release`] (the policy a host kernel release behaves as).
//!
//! Before v5.19 KVM had a single 64-bit `mmu_role`; the tracker reports it as `cpu_role` and
//! its base half as `root_role`.
//!
//! ## Example: the seed bug (47c42e6b4192)
//!
//! ```
//! use mmu::{bits::*, *};
//! // CR3 = 0x1000 is both a 32-bit page directory and a valid PDPT.
//! let mut mem = FlatMemory::new(0, 0x10_0000);
//! mem.write_u64(0x1000, 0x2001); // PDE0 / PDPTE0 -> 0x2000
//! mem.write_u64(0x2000, 0x3003); // 32-bit PTE0 -> 0x3000 / PAE PDE0 -> PT at 0x3000
//! let cpu = CpuModel::default_x86_64();
//! let before = ControlRegs { cr0: CR0_PE | CR0_PG, cr3: 0x1000, ..Default::default() };
//! let mut t = Tracker::new(policy("v5.1-rc3").unwrap(), Flavour::Tdp, cpu, &before);
//! // The guest sets CR4.PAE with paging on; the architecture reloads the PDPTEs.
//! let after = apply_write(CrReg::Cr4, &before, CR4_PAE, &cpu, &mem).unwrap();
//! let d = t.apply(&Input::Cr4 { old: 0, new: CR4_PAE }, &after, &mem);
//! assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
//! let stale = d.stale.expect("KVM kept the 2-level walker");
//! assert_eq!((stale.kept.root_level, stale.correct.root_level), (2, 3));
//! let diffs = compare_translations(&stale.kept, &stale.correct, &after, &cpu, &mem,
//!                                  &[(0x0, Access::Read)]);
//! assert_eq!(diffs[0].kept, TranslationResult::Phys { gpa: 0x3000 });
//! assert_eq!(diffs[0].correct, TranslationResult::PageFault { error_code: 0 });
//! ```

pub mod context;
pub mod ept;
pub mod host_roots;
pub mod paging;
pub mod policy;
pub mod regs;
pub mod roles;
pub mod root_cache;
pub mod stale;
pub mod tracker;

pub use context::{
    architectural_context, translate_with_context, walker_for_level, ContextDiff, MmuContext,
    WalkerKind,
};
pub use ept::Eptp;
pub use host_roots::{policy_for_release, root_of_pages};
pub use paging::fault::{pfec, Fault, Gp};
pub use paging::mappings::{mappings, Mapping, TooManyTables};
pub use paging::mode::{efer_after_cr0_write, lma_after_cr0_write, PagingMode};
pub use paging::pdpte::{load_pdptrs, pdpt_address};
pub use paging::perm::{Access, AccessRequest, EffectiveRights, PermInputs};
pub use paging::rsvd::{RsvdInputs, TableFormat};
pub use paging::tables::{structure_pages, Rights};
pub use paging::transition::{
    apply_write, apply_write_with, check_write, check_write_with, CrReg, WriteContext,
};
pub use paging::walk::{
    apply_ad_updates, walk, walk_mut, walk_with, AdUpdate, Translated, Walk, WalkConfig, WalkLevel,
};
pub use policy::{
    compare_key, compare_key_for, derive_roles, policies, policy, tdp_level, CompareKey, CpuidRule,
    EventRules, Flavour, GpteRule, Policy, ReinitRules, ResetTriggers, RoleRules, Roles,
    RootCacheRule,
};
pub use regs::{bits, ControlRegs, CpuModel, FlatMemory, GuestMemory, GuestMemoryMut};
pub use roles::{CpuRole, ExtRole, Field, FieldDef, FieldDiff, GpteSense, Layout, PageRole, Word};
pub use root_cache::{CachedRoot, RootCache, RootCacheLookup, RootSlot, NUM_PREV_ROOTS};
pub use stale::{
    compare_translations, compare_translations_as, stale_context, StaleContext, TranslationDiff,
    TranslationResult,
};
pub use tracker::{Decision, Input, Outcome, TlbFlush, Tracker};
