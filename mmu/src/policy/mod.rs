//! Kernel-version policies as data. A [`Policy`] bundles the four things that vary between
//! kernel versions (sheet §0.2 item 4): (a) role derivation ([`RoleRules`] + [`Layout`]),
//! (b) the compare key ([`CompareKey`]), (c) reset triggers ([`ResetTriggers`], [`EventRules`]),
//! (d) what a real re-init recomputes ([`ReinitRules`]), plus the root-cache rule. The
//! [`crate::Tracker`] only interprets these values; adding a policy means adding a value to
//! [`catalogue`].

pub mod catalogue;
pub mod derive;

pub use catalogue::{policies, policy};
pub use derive::{compare_key, compare_key_for, derive_roles, tdp_level, Roles};

use crate::roles::Layout;

/// Which MMU the roles are for: L1's (shadow paging, or two-dimensional paging: EPT/NPT),
/// or a nested one (sheet §4.5–4.7).
///
/// The nested walker is a flavour of its own rather than a second MMU carried by the nested
/// flavours: KVM keeps it as a separate object (`nested_mmu`) with inputs of its own (the
/// vCPU's registers, which are L2's), its own early return (cpu_role only) and no roots, and
/// it is initialised by `kvm_init_mmu` whether L0 shadows L1's EPT or NPT (sheet §4.2, §4.7).
/// A tracker of it is fed L2's writes, as a shadow-npt tracker is fed L1's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Flavour {
    #[default]
    Tdp,
    Shadow,
    /// nSVM's `guest_mmu` while L2 runs with nested NPT: shadows L1's NPT tables, which have
    /// the format of L1's own paging mode (`kvm_init_shadow_npt_mmu`). Its inputs are L1's
    /// CR4 and EFER (vmcb01) with CR0 forced to PG and CR4.PKE cleared
    /// ([`crate::ControlRegs::nested_npt_view`]); its root level is the host's NPT level.
    ShadowNpt,
    /// nVMX's `guest_mmu` while L2 runs with nested EPT: shadows L1's EPT tables
    /// (`kvm_init_shadow_ept_mmu`, sheet §4.6). Its roles come from the EPTP L1 loads, not from
    /// CR0/CR4/EFER: a tracker's `cr3` is that EPTP ([`crate::Eptp`]), set by
    /// [`crate::Input::NestedEptInit`]; its root level is the EPT's.
    ShadowEpt,
    /// `nested_mmu`: the walker of L2's page tables while L2 runs with nested TDP
    /// (`init_kvm_nested_mmu`, sheet §4.7). A tracker's registers are the vCPU's (L2's); the
    /// early return compares `cpu_role` only; it has no roots.
    NestedWalker,
}

impl Flavour {
    /// Every flavour, in the order `mmurr` lists them.
    pub const ALL: [Flavour; 5] = [
        Flavour::Tdp,
        Flavour::Shadow,
        Flavour::ShadowNpt,
        Flavour::ShadowEpt,
        Flavour::NestedWalker,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Tdp => "tdp",
            Flavour::Shadow => "shadow",
            Flavour::ShadowNpt => "shadow-npt",
            Flavour::ShadowEpt => "shadow-ept",
            Flavour::NestedWalker => "nested-walker",
        }
    }
    pub fn parse(s: &str) -> Option<Flavour> {
        match s {
            "tdp" | "ept" | "npt" => Some(Flavour::Tdp),
            "shadow" | "soft" => Some(Flavour::Shadow),
            "shadow-npt" | "nested-npt" => Some(Flavour::ShadowNpt),
            "shadow-ept" | "nested-ept" => Some(Flavour::ShadowEpt),
            "nested-walker" | "nested-mmu" => Some(Flavour::NestedWalker),
            _ => None,
        }
    }
    /// Whether a recorded guest's control-register writes can be evaluated for this flavour.
    /// Shadow EPT's only input is the EPTP L1 loads at VM-entry, which no recording has (a
    /// recorded guest runs no L2): its scenarios are model-level.
    pub fn evaluates_recordings(self) -> bool {
        self != Flavour::ShadowEpt
    }
    /// The MMU has roots of its own (the nested walker has none: sheet §4.7).
    pub fn has_roots(self) -> bool {
        self != Flavour::NestedWalker
    }
}

/// How the base-role bit 4 (`cr4_pae` / `gpte_is_8_bytes` / `has_4_byte_gpte`) is computed
/// for a role derived from the guest's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpteRule {
    /// The raw CR4.PAE, even with CR0.PG=0 (≤ v5.13).
    Cr4Pae,
    /// CR0.PG && CR4.PAE (`gpte_is_8_bytes`, v5.14–v5.16).
    PgAndPae,
    /// CR0.PG && !CR4.PAE (`has_4_byte_gpte`, v5.17+, bb3b394d35e8).
    PgAndNotPae,
}

/// Role derivation rules (sheet §3, §4, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoleRules {
    /// CR0.PG=0 records no paging bits (nx, wp, ext CR4 bits, cr0_pg): ca8d664f5099, v5.14.
    pub pg0_records_nothing: bool,
    /// Bit 4 of roles derived from guest registers.
    pub gpte: GpteRule,
    /// TDP (direct) roles carry the "8-byte gpte" value whatever the guest does:
    /// 47c42e6b4192. Before it, the common role put CR4.PAE into every MMU's role.
    pub tdp_gpte_forced_8_bytes: bool,
    /// Before 47c42e6b4192 `kvm_mmu_get_page` cleared `cr4_pae` on direct pages, so a direct
    /// root's page never matched a role with CR4.PAE=1 (the fast-switch miss it fixed).
    pub direct_page_clears_cr4_pae: bool,
    /// ext.cr4_pke / ext.cr4_la57 only with EFER.LMA: 84c679f5f52c, v5.14.
    pub pke_la57_need_lma: bool,
    /// Separate `cpu_role` and `root_role` (e5ed0fb01004, v5.19). Before, `mmu_role` is one
    /// 64-bit value whose base is the root's page role.
    pub split_cpu_root_role: bool,
    /// Shadow root role has efer_nx forced to 1: 362505deb8e2, v5.19.
    pub shadow_efer_nx_forced: bool,
    /// Nested NPT's walker reads CR4.SMEP from the vCPU, which holds L2's state, instead of
    /// the MMU role (fixed by ef318b9edf66, v5.14).
    pub npt_smep_from_vcpu: bool,
    /// After KVM_SET_NESTED_STATE, nested NPT's roles and context are computed from the vCPU
    /// registers (L2's) instead of L1's (fixed when roles came from the passed registers:
    /// 594e91a100cc, 8626c120baef, v5.14).
    pub npt_roles_from_vcpu_after_set_nested_state: bool,
    /// Nested EPT's role carries the "impossible" cr0_wp=1 + smap_andnot_wp=1 pair that tells
    /// its pages from every shadow page (47c42e6b4192, v5.1-rc3; dropped in v5.14 by
    /// 00a669780ffa).
    pub shadow_ept_marker: bool,
    /// The nested walker's role is the shadow role's common part with the guest's paging
    /// level (`kvm_calc_nested_mmu_role`, the v5.14 role_regs series \[I\]); before, it was
    /// `kvm_calc_mmu_role_common`, which has no level.
    pub nested_role_from_shadow_common: bool,
}

/// What `init_kvm_tdp_mmu` / `shadow_mmu_init_context` compare before returning early
/// (sheet §5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareKey {
    /// v4.20–v5.6: base masked to {cr0_wp, gpte, nx, smep/smap_andnot_wp, smm, guest_mode,
    /// ad_disabled} plus the whole ext role (7dcd57552008); `level` and `direct` are dropped.
    MaskedBase,
    /// v5.7–v5.18: the whole `mmu_role.as_u64`.
    Full,
    /// v5.19+: `cpu_role.as_u64` and `root_role.word` (e5ed0fb01004, 7a458f0e1ba1).
    CpuRoleAndRootRole,
}

/// Bits whose change calls `kvm_mmu_reset_context` (sheet §5.1–5.4, §5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResetTriggers {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CR4.PCIDE 1→0 also resets (until v5.16, a91a7c709600/552617382c19).
    pub cr4_pcide_clear: bool,
    /// v6.4 (01b31714bd90, e40bcf9f3a18): a CR0 write changing only WP is ignored with PG=0
    /// and, under TDP, runs `kvm_init_mmu` without unloading roots.
    pub cr0_wp_only_special: bool,
}

/// How a guest CPUID update reaches the MMU (sheet §5.5, §6.2 #17, #29).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuidRule {
    /// `kvm_mmu_reset_context` only; the compare key decides (\[U\] for the exact call site).
    ResetOnly,
    /// 49c6f8756cdf (v5.14): clear ext.valid of the stored role and zero the root role word,
    /// then reset, so re-init always happens.
    InvalidateRoles,
    /// 1bc26cb90902 (v6.9): as above but sets `root_role.invalid` instead of zeroing the word.
    InvalidateRolesInvalidBit,
}

/// Rules for the non-register inputs and side effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventRules {
    /// INIT resets the MMU when CR0.PG was 1 (0aa1837533e5, v5.14). Before, the generic
    /// code did not (\[U\]: vendor reset paths papered over it on some hosts).
    pub init_resets_when_paging: bool,
    pub cpuid: CpuidRule,
    /// x86.c requests explicit TLB flushes for PG 1→0, PGE / PCIDE 1→0 (guest) and PAE /
    /// SMEP 0→1 (current), as separate requests from MMU resets (v5.16, a91a7c709600).
    /// Older kernels relied on the reset's root reload; reported as no explicit flush.
    pub explicit_tlb_flushes: bool,
    /// With shadow paging, a PDPTE reload that changes the PDPTEs frees the current root
    /// (6b123c3a89a9, v5.17).
    pub pdptr_change_frees_shadow_root: bool,
}

/// What a real re-init recomputes (sheet §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReinitRules {
    /// `reset_guest_paging_metadata` is skipped with CR0.PG=0: the reserved-bit table, the
    /// permission bitmask and the PKRU mask keep their previous values (v5.19+:
    /// `reset_guest_paging_metadata` tests `is_cr0_pg(mmu)`, read from the CPU role).
    pub metadata_skipped_when_pg0: bool,
}

/// The prev_roots lookup of `kvm_mmu_new_pgd` (sheet §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootCacheRule {
    /// ≤ v5.18 `fast_cr3_switch` + `cached_root_available` (verified against a v5.1-era
    /// mmu.c): only when the guest root level and KVM's root level are both ≥ 4, otherwise the
    /// current root is freed; the current root is rotated into prev_roots\[0\] without being
    /// tested first; a root matches on CR3 and `role.word`; the required role is recomputed
    /// from the registers (`kvm_mmu_calc_root_page_role`).
    Legacy64BitOnly {
        /// A later patch ("root_cr3 is ignored for direct MMUs") stopped comparing CR3 for
        /// direct roots. First release \[U\]; modelled from v5.7.
        direct_ignores_pgd: bool,
        /// The current root is filed into prev_roots under the CR3 the vCPU holds at the
        /// switch (`mmu->get_cr3()`), not the one it was loaded for. Harmless until
        /// 14c07ad89f4d (v4.20 [I]) gave nested EPT its own guest_mmu: at L2's VM-exit root_mmu
        /// is current again while the vCPU still holds L2's CR3, so L1's root is filed under
        /// L2's CR3 and missed. Fixed by ad7dc69aeb23 (v5.0), which stashes `root_cr3`.
        files_current_under_vcpu_cr3: bool,
    },
    /// v5.19+ `fast_pgd_switch` (5499ea73e7db): roots without a shadow page (PAE roots) are
    /// freed first, the current root is tested first, the PGD is ignored for direct roots, and
    /// the required role is the current `root_role`.
    KeepCurrent,
}

/// One modelled kernel version.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Release name, e.g. `v5.1-rc3`.
    pub name: &'static str,
    /// One line: what distinguishes this version.
    pub summary: &'static str,
    /// Commits whose behaviour the policy models.
    pub commits: &'static [&'static str],
    pub layout: &'static Layout,
    pub roles: RoleRules,
    pub compare: CompareKey,
    pub triggers: ResetTriggers,
    pub events: EventRules,
    pub reinit: ReinitRules,
    pub root_cache: RootCacheRule,
}

impl Policy {
    /// Trigger bits of a CR0/CR4/EFER change under this policy (ignoring the v6.4 WP-only
    /// special case, which the tracker applies on top).
    pub fn reset_trigger(&self, reg: crate::CrReg, old: u64, new: u64) -> u64 {
        use crate::regs::bits::CR4_PCIDE;
        let changed = old ^ new;
        match reg {
            crate::CrReg::Cr0 => changed & self.triggers.cr0,
            crate::CrReg::Cr4 => {
                let mut t = changed & self.triggers.cr4;
                if self.triggers.cr4_pcide_clear && old & CR4_PCIDE != 0 && new & CR4_PCIDE == 0 {
                    t |= CR4_PCIDE;
                }
                t
            }
            crate::CrReg::Efer => changed & self.triggers.efer,
            crate::CrReg::Cr3 => 0,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.summary)
    }
}
