//! The modelled kernel versions (sheet §5.9, §6, §8). Each entry only lists what differs from
//! the previous one.

use super::*;
use crate::regs::bits::*;
use crate::roles::layout::*;

const CR0_ROLE: u64 = CR0_PG | CR0_WP;
const CR4_OLD: u64 = CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE;

const V4_20: Policy = Policy {
    name: "v4.20",
    summary:
        "extended role introduced; re-init skipped when the masked base + ext role is unchanged",
    commits: &["7dcd57552008", "9fa72119b24d", "0be0226f07d1"],
    layout: &LAYOUT_V4_20,
    roles: RoleRules {
        pg0_records_nothing: false,
        gpte: GpteRule::Cr4Pae,
        tdp_gpte_forced_8_bytes: false,
        direct_page_clears_cr4_pae: true,
        pke_la57_need_lma: false,
        split_cpu_root_role: false,
        shadow_efer_nx_forced: false,
        npt_smep_from_vcpu: true,
        npt_roles_from_vcpu_after_set_nested_state: true,
        shadow_ept_marker: false,
        nested_role_from_shadow_common: false,
    },
    compare: CompareKey::MaskedBase,
    triggers: ResetTriggers {
        cr0: CR0_ROLE,
        cr4: CR4_OLD,
        efer: EFER_NXE,
        cr4_pcide_clear: true,
        cr0_wp_only_special: false,
    },
    events: EventRules {
        init_resets_when_paging: false,
        cpuid: CpuidRule::ResetOnly,
        explicit_tlb_flushes: false,
        pdptr_change_frees_shadow_root: false,
    },
    reinit: ReinitRules {
        metadata_skipped_when_pg0: false,
    },
    root_cache: RootCacheRule::Legacy64BitOnly {
        direct_ignores_pgd: false,
        files_current_under_vcpu_cr3: true,
    },
};

const V5_0: Policy = Policy {
    name: "v5.0",
    summary: "ext.maxphyaddr added so a CPUID MAXPHYADDR change re-initialises; roots filed \
              under the CR3 they were loaded for",
    commits: &["de3ccd26fafc", "ad7dc69aeb23"],
    layout: &LAYOUT_V5_0,
    root_cache: RootCacheRule::Legacy64BitOnly {
        direct_ignores_pgd: false,
        files_current_under_vcpu_cr3: false,
    },
    ..V4_20
};

const V5_1_RC3: Policy = Policy {
    name: "v5.1-rc3",
    summary: "SEED BUG: cr4_pae becomes gpte_is_8_bytes, forced 1 for TDP; CR4.PAE no longer in the TDP key",
    // 552c69b1dc71 (v5.1 merge window) is here too: nested EPT's root role stopped inheriting
    // quadrant/invalid from root_mmu, which are 0 on every root (a no-op, per its commit).
    commits: &["47c42e6b4192", "552c69b1dc71"],
    layout: &LAYOUT_V5_1_RC3,
    roles: RoleRules {
        tdp_gpte_forced_8_bytes: true,
        direct_page_clears_cr4_pae: false,
        shadow_ept_marker: true,
        ..V5_0.roles
    },
    ..V5_0
};

const V5_1: Policy = Policy {
    name: "v5.1",
    summary:
        "fix: ext.cr4_pae added, so a PAE toggle with CR0.PG=1 re-initialises (Vitaly Kuznetsov)",
    // Upstream id unverified (sheet §9 item 1); 0699c64a4be6 is an unconfirmed recollection.
    commits: &[
        "47c42e6b4192",
        "\"x86/kvm/mmu: reset MMU context when 32-bit guest switches PAE\" (id [U], 0699c64a4be6?)",
    ],
    layout: &LAYOUT_V5_1,
    ..V5_1_RC3
};

const V5_7: Policy = Policy {
    name: "v5.7",
    summary:
        "compare key is the full mmu_role (level/direct no longer masked); ext.cr4_la57 dropped",
    commits: &[
        "8053f924cad3",
        "\"Don't drop level/direct from MMU role calculation\" (id [U])",
    ],
    layout: &LAYOUT_V5_7,
    compare: CompareKey::Full,
    root_cache: RootCacheRule::Legacy64BitOnly {
        direct_ignores_pgd: true,
        files_current_under_vcpu_cr3: false,
    },
    ..V5_1
};

const V5_9_RC: Policy = Policy {
    name: "v5.9-rc",
    summary: "REGRESSION: CR4.SMAP/PKE dropped from the reset mask with the PDPTR mask",
    commits: &["427890aff855", "cb957adb4ea4"],
    triggers: ResetTriggers {
        cr4: CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP,
        ..V5_7.triggers
    },
    ..V5_7
};

const V5_9: Policy = Policy {
    name: "v5.9",
    summary: "fix: separate role mask, CR4.SMAP/PKE reset the MMU again",
    commits: &["8d214c481611"],
    triggers: V5_7.triggers,
    ..V5_9_RC
};

const V5_14: Policy = Policy {
    name: "v5.14",
    summary: "role_regs; CR0.PG=0 records no paging bits; PKE/LA57 need LMA; ext.cr4_la57 back, \
              ext.maxphyaddr out; CPUID invalidates roles; INIT resets",
    commits: &[
        "594e91a100cc",
        "ca8d664f5099",
        "84c679f5f52c",
        "167f8a5cae99",
        "20f632bd0060",
        "f71a53d1180d",
        "6c032f12dd1e",
        "49c6f8756cdf",
        "0aa1837533e5",
        "8626c120baef",
        "ef318b9edf66",
        "00a669780ffa",
    ],
    layout: &LAYOUT_V5_14,
    roles: RoleRules {
        pg0_records_nothing: true,
        gpte: GpteRule::PgAndPae,
        pke_la57_need_lma: true,
        npt_smep_from_vcpu: false,
        npt_roles_from_vcpu_after_set_nested_state: false,
        shadow_ept_marker: false,
        nested_role_from_shadow_common: true,
        ..V5_9.roles
    },
    triggers: ResetTriggers {
        cr4: CR4_OLD | CR4_LA57,
        ..V5_9.triggers
    },
    events: EventRules {
        init_resets_when_paging: true,
        cpuid: CpuidRule::InvalidateRoles,
        ..V5_9.events
    },
    ..V5_9
};

const V5_16: Policy = Policy {
    name: "v5.16",
    summary: "ext.efer_lma added; CR4.PGE and PCIDE 1->0 only flush the guest TLB",
    commits: &[
        "b8453cdcf260",
        "a91a7c709600",
        "552617382c19",
        "509bfe3d9796",
    ],
    layout: &LAYOUT_V5_16,
    triggers: ResetTriggers {
        cr4: CR4_PSE | CR4_PAE | CR4_LA57 | CR4_SMEP | CR4_SMAP | CR4_PKE,
        cr4_pcide_clear: false,
        ..V5_14.triggers
    },
    events: EventRules {
        explicit_tlb_flushes: true,
        ..V5_14.events
    },
    ..V5_14
};

const V5_18: Policy = Policy {
    name: "v5.18",
    summary: "EFER.LME joins the reset mask (host-initiated writes); has_4_byte_gpte (inverted)",
    commits: &["d6174299365d", "bb3b394d35e8", "6b123c3a89a9"],
    layout: &LAYOUT_V5_17,
    roles: RoleRules {
        gpte: GpteRule::PgAndNotPae,
        ..V5_16.roles
    },
    triggers: ResetTriggers {
        efer: EFER_LME | EFER_NXE,
        ..V5_16.triggers
    },
    events: EventRules {
        pdptr_change_frees_shadow_root: true,
        ..V5_16.events
    },
    ..V5_16
};

const V5_19: Policy = Policy {
    name: "v5.19",
    summary: "cpu_role split from root_role; both compared; shadow root efer_nx forced; \
              passthrough; PAE roots freed on PGD switch",
    commits: &[
        "e5ed0fb01004",
        "7a458f0e1ba1",
        "faf729621c96",
        "362505deb8e2",
        "84e5ffd045f3",
        "5499ea73e7db",
    ],
    layout: &LAYOUT_V5_19,
    roles: RoleRules {
        split_cpu_root_role: true,
        shadow_efer_nx_forced: true,
        ..V5_18.roles
    },
    compare: CompareKey::CpuRoleAndRootRole,
    reinit: ReinitRules {
        metadata_skipped_when_pg0: true,
    },
    root_cache: RootCacheRule::KeepCurrent,
    ..V5_18
};

const V6_4: Policy = Policy {
    name: "v6.4",
    summary: "CR0.WP-only toggles: ignored with PG=0, kvm_init_mmu without unload under TDP",
    commits: &[
        "01b31714bd90",
        "e40bcf9f3a18",
        "fb509f76acc8",
        "cf9f4c0eb169",
    ],
    triggers: ResetTriggers {
        cr0_wp_only_special: true,
        ..V5_19.triggers
    },
    ..V5_19
};

const V6_14: Policy = Policy {
    name: "v6.14",
    summary: "current upstream: is_mirror in the page role; CPUID update sets root_role.invalid",
    commits: &["1bc26cb90902", "is_mirror (TDX mirror roots, id [U])"],
    layout: &LAYOUT_V6_14,
    events: EventRules {
        cpuid: CpuidRule::InvalidateRolesInvalidBit,
        ..V6_4.events
    },
    ..V6_4
};

static POLICIES: [Policy; 13] = [
    V4_20, V5_0, V5_1_RC3, V5_1, V5_7, V5_9_RC, V5_9, V5_14, V5_16, V5_18, V5_19, V6_4, V6_14,
];

/// Every modelled policy, oldest first.
pub fn policies() -> &'static [Policy] {
    &POLICIES
}

/// A policy by release name (`v5.1-rc3`); also accepts the name without the leading `v`.
pub fn policy(name: &str) -> Option<&'static Policy> {
    let n = name.strip_prefix('v').unwrap_or(name);
    POLICIES.iter().find(|p| &p.name[1..] == n)
}
