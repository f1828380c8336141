//! The built-in model-level scenarios, one per history entry they reproduce (sheet §6.2).
//!
//! Memory (2 MiB, shared by every script):
//!
//! | gpa | contents |
//! |---|---|
//! | `0x1000` | PML4: entry 0 → `0x2000` |
//! | `0x2000` | PDPT: entry 0 → `0x3000` |
//! | `0x3000` | PD: entry 0 maps 0..2 MiB with a 2 MiB page |
//! | `0x4000` | PML5: entry 0 → `0x1000` |
//! | `0x5000` | PAE PDPT: PDPTE 0 → `0x3000`, PDPTE 1 not present |
//! | `0x6000` | PD for PDPTE 1 once a script stores it: entry 0 maps 1 GiB.. with a 2 MiB page |
//!
//! Nested EPT scripts name L1's EPT by its EPTP only (its tables are never walked).

use super::{Action, Expect, Script, Shows};
use mmu::bits::*;
use mmu::{ControlRegs, CpuModel, CrReg, Eptp, FlatMemory, Flavour};

const PML4: u64 = 0x1000;
const PML5: u64 = 0x4000;
const PAE_PDPT: u64 = 0x5000;
const PD_HIGH: u64 = 0x6000;
const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 0x80;

const CR0_PAGED: u64 = CR0_PE | CR0_ET | CR0_PG;
const EFER_LONG: u64 = EFER_LME | EFER_LMA;

// Policy ranges, oldest first (`mmu::policies`).
const UP_TO_V5_1: &[&str] = &["v4.20", "v5.0", "v5.1-rc3", "v5.1"];
const UP_TO_V5_9: &[&str] = &[
    "v4.20", "v5.0", "v5.1-rc3", "v5.1", "v5.7", "v5.9-rc", "v5.9",
];
const UP_TO_V5_14: &[&str] = &[
    "v4.20", "v5.0", "v5.1-rc3", "v5.1", "v5.7", "v5.9-rc", "v5.9", "v5.14",
];
const UP_TO_V5_16: &[&str] = &[
    "v4.20", "v5.0", "v5.1-rc3", "v5.1", "v5.7", "v5.9-rc", "v5.9", "v5.14", "v5.16",
];
const V5_7_TO_V5_9: &[&str] = &["v5.7", "v5.9-rc", "v5.9"];
const FROM_V5_16: &[&str] = &["v5.16", "v5.18", "v5.19", "v6.4", "v6.14"];
const FROM_V6_4: &[&str] = &["v6.4", "v6.14"];

/// A model-level scenario's builder.
pub type Builder = fn() -> Script;

/// (name, builder) of every model-level scenario, in presentation order.
pub const ALL: &[(&str, Builder)] = &[
    ("cpuid-maxphyaddr", cpuid_maxphyaddr),
    ("cpuid-gbpages-amd", cpuid_gbpages_amd),
    ("init-long-mode", init_long_mode),
    ("sregs-la57", sregs_la57),
    ("sregs-pae-to-long", sregs_pae_to_long),
    ("sregs-pae-to-long-shadow", sregs_pae_to_long_shadow),
    ("msrs-efer-lme", msrs_efer_lme),
    ("cr4-pge-pcide", cr4_pge_pcide),
    ("pdpte-change-shadow", pdpte_change_shadow),
    ("cr0-wp-only", cr0_wp_only),
    ("cr4-unpaged", cr4_unpaged),
    ("nested-npt-smep", nested_npt_smep),
    ("nested-npt-set-state", nested_npt_set_state),
    ("nested-npt-5-level", nested_npt_5_level),
    ("nested-ept-5-level", nested_ept_5_level),
    ("nested-exit-la57", nested_exit_la57),
    ("nested-ept-exit", nested_ept_exit),
];

fn memory() -> FlatMemory {
    let mut m = FlatMemory::new(0, 2 << 20);
    m.write_u64(PML4, 0x2000 | P | RW);
    m.write_u64(0x2000, 0x3000 | P | RW);
    m.write_u64(0x3000, P | RW | PS);
    m.write_u64(PML5, PML4 | P | RW);
    m.write_u64(PAE_PDPT, 0x3000 | P);
    m.write_u64(PD_HIGH, (1 << 30) | P | RW | PS);
    m
}

fn long_mode() -> ControlRegs {
    ControlRegs {
        cr0: CR0_PAGED,
        cr3: PML4,
        cr4: CR4_PAE,
        efer: EFER_LONG,
        ..Default::default()
    }
}

fn pae_paging() -> ControlRegs {
    ControlRegs {
        cr0: CR0_PAGED,
        cr3: PAE_PDPT,
        cr4: CR4_PAE,
        efer: 0,
        ..Default::default()
    }
}

fn script(
    name: &'static str,
    description: &'static str,
    flavour: Flavour,
    entry: ControlRegs,
    actions: Vec<Action>,
    expects: Vec<Expect>,
) -> Script {
    Script {
        name,
        description,
        flavour,
        cpu: CpuModel::default_x86_64(),
        entry,
        memory: memory(),
        actions,
        expects,
    }
}

fn needless(at: usize, policies: &'static [&'static str]) -> Expect {
    Expect {
        at,
        shows: Shows::NeedlessReset,
        policies,
    }
}

fn stale(at: usize, policies: &'static [&'static str]) -> Expect {
    Expect {
        at,
        shows: Shows::Stale,
        policies,
    }
}

/// #8 de3ccd26fafc (v5.0): KVM_SET_CPUID2 lowers MAXPHYADDR in long mode under TDP. v4.20's
/// key has no MAXPHYADDR, so the reserved-bit table keeps 46 bits; v5.0 puts it in the
/// extended role, v5.14 (49c6f8756cdf) invalidates the roles on every CPUID update.
fn cpuid_maxphyaddr() -> Script {
    let cpu = CpuModel {
        maxphyaddr: 40,
        ..CpuModel::default_x86_64()
    };
    script(
        "cpuid-maxphyaddr",
        "long mode (TDP): KVM_SET_CPUID2 lowers MAXPHYADDR from 46 to 40",
        Flavour::Tdp,
        long_mode(),
        vec![Action::SetCpuid(cpu)],
        vec![stale(0, &["v4.20"])],
    )
}

/// #17 49c6f8756cdf (v5.14): CPUID changes that no role tracks (1 GiB pages, the AMD vendor
/// whose bit 8 is reserved in PML4Es) leave the reserved-bit table stale until v5.14 forces
/// every MMU to re-initialise.
fn cpuid_gbpages_amd() -> Script {
    let no_gb = CpuModel {
        gbpages: false,
        ..CpuModel::default_x86_64()
    };
    let amd = CpuModel { amd: true, ..no_gb };
    script(
        "cpuid-gbpages-amd",
        "long mode (TDP): KVM_SET_CPUID2 drops GBPAGES, then turns the vendor to AMD",
        Flavour::Tdp,
        long_mode(),
        vec![Action::SetCpuid(no_gb), Action::SetCpuid(amd)],
        vec![stale(0, UP_TO_V5_9), stale(1, UP_TO_V5_9)],
    )
}

/// #15 0aa1837533e5 (v5.14): INIT from long mode under shadow paging. Before v5.14 the generic
/// INIT path did not reset the MMU: the 64-bit context (and root) stayed while the vCPU is
/// back in real mode.
fn init_long_mode() -> Script {
    script(
        "init-long-mode",
        "long mode (shadow): INIT",
        Flavour::Shadow,
        long_mode(),
        vec![Action::Init],
        vec![stale(0, UP_TO_V5_9)],
    )
}

/// #16 f71a53d1180d (v5.14), reverting 8053f924cad3 (v5.7, part of #13): the VMM loads CR4
/// with LA57 set in long mode (as a nested VM-exit loads L1's CR4) without passing through
/// CR0.PG=0. Under TDP the root level does not follow the guest, so v5.7–v5.9, whose
/// extended role lost `cr4_la57`, keep the 4-level walker.
fn sregs_la57() -> Script {
    let mut s = script(
        "sregs-la57",
        "long mode (TDP): KVM_SET_SREGS switches 4-level to 5-level paging (CR4.LA57)",
        Flavour::Tdp,
        long_mode(),
        vec![Action::SetSregs {
            cr0: CR0_PAGED,
            cr3: PML5,
            cr4: CR4_PAE | CR4_LA57,
            efer: EFER_LONG,
        }],
        vec![stale(0, V5_7_TO_V5_9)],
    );
    s.cpu.la57 = true;
    s
}

/// #20 b8453cdcf260 (v5.16): KVM_SET_SREGS moves the vCPU from PAE paging to long mode with
/// CR0 and CR4 unchanged (the KVM_SET_SREGS + KVM_SET_NESTED_STATE sequence of the commit).
/// Under TDP nothing but EFER.LMA tells the two apart, and `ext.efer_lma` only came in v5.16.
fn sregs_pae_to_long() -> Script {
    script(
        "sregs-pae-to-long",
        "PAE paging (TDP): KVM_SET_SREGS loads long mode with the same CR0/CR4",
        Flavour::Tdp,
        pae_paging(),
        vec![Action::SetSregs {
            cr0: CR0_PAGED,
            cr3: PML4,
            cr4: CR4_PAE,
            efer: EFER_LONG,
        }],
        vec![stale(0, UP_TO_V5_14)],
    )
}

/// #13 "Don't drop level/direct from MMU role calculation" (v5.7): the same load under shadow
/// paging, where the root level (3 for PAE, 4 for long mode) is in the base role. v4.20–v5.1
/// masked `level` out of the compare key, so they keep the PAE context; v5.7 compares it.
fn sregs_pae_to_long_shadow() -> Script {
    Script {
        name: "sregs-pae-to-long-shadow",
        description: "PAE paging (shadow): KVM_SET_SREGS loads long mode with the same CR0/CR4",
        flavour: Flavour::Shadow,
        expects: vec![stale(0, UP_TO_V5_1)],
        ..sregs_pae_to_long()
    }
}

/// #24 d6174299365d (v5.18): the VMM clears EFER.LME with CR0.PG=1 (KVM_SET_MSRS skips the
/// guest's "no LME change while paging" check). Before v5.18 only EFER.NX reset the MMU.
/// LMA is kept, so no role changes: the verdict is the reset itself.
fn msrs_efer_lme() -> Script {
    script(
        "msrs-efer-lme",
        "long mode (TDP): KVM_SET_MSRS clears EFER.LME with paging on, then sets it again",
        Flavour::Tdp,
        long_mode(),
        vec![Action::SetMsrEfer(EFER_LMA), Action::SetMsrEfer(EFER_LONG)],
        vec![
            Expect {
                at: 0,
                shows: Shows::NoReset,
                policies: UP_TO_V5_16,
            },
            Expect {
                at: 1,
                shows: Shows::NoReset,
                policies: UP_TO_V5_16,
            },
        ],
    )
}

/// #22 a91a7c709600, 552617382c19 (v5.16): CR4.PGE toggles and CR4.PCIDE 1→0 become TLB
/// flushes instead of MMU resets.
fn cr4_pge_pcide() -> Script {
    let no_reset = |at| Expect {
        at,
        shows: Shows::NoReset,
        policies: FROM_V5_16,
    };
    script(
        "cr4-pge-pcide",
        "long mode (TDP): CR4.PGE set and cleared, CR4.PCIDE set and cleared",
        Flavour::Tdp,
        long_mode(),
        vec![
            Action::Write(CrReg::Cr4, CR4_PAE | CR4_PGE),
            Action::Write(CrReg::Cr4, CR4_PAE),
            Action::Write(CrReg::Cr4, CR4_PAE | CR4_PCIDE),
            Action::Write(CrReg::Cr4, CR4_PAE),
        ],
        vec![no_reset(0), no_reset(1), no_reset(3)],
    )
}

/// #23 6b123c3a89a9 (v5.17, modelled from v5.18): under shadow paging in PAE mode the guest
/// rewrites a PDPTE and reloads CR3 with the same value. The PDPTE registers change but the
/// role and CR3 do not; from v5.17 KVM frees the current (PAE) root so it is rebuilt from
/// the new PDPTEs, before it kept shadowing the old ones.
fn pdpte_change_shadow() -> Script {
    script(
        "pdpte-change-shadow",
        "PAE paging (shadow): the guest rewrites PDPTE 1 and reloads the same CR3",
        Flavour::Shadow,
        pae_paging(),
        vec![
            Action::Store {
                gpa: PAE_PDPT + 8,
                value: PD_HIGH | P,
            },
            Action::Write(CrReg::Cr3, PAE_PDPT),
        ],
        vec![Expect {
            at: 1,
            shows: Shows::RootKept,
            policies: UP_TO_V5_16,
        }],
    )
}

/// #28 01b31714bd90, e40bcf9f3a18 (v6.4): a CR0 write that changes only WP no longer unloads
/// the roots under TDP (`kvm_init_mmu` only), and is ignored with CR0.PG=0. With PG=0 the
/// policies before v5.14 also re-initialise needlessly (ca8d664f5099, part of #19).
fn cr0_wp_only() -> Script {
    let no_reset = |at| Expect {
        at,
        shows: Shows::NoReset,
        policies: FROM_V6_4,
    };
    script(
        "cr0-wp-only",
        "long mode (TDP): CR0.WP set and cleared; then unpaged, CR0.WP set and cleared",
        Flavour::Tdp,
        long_mode(),
        vec![
            Action::Write(CrReg::Cr0, CR0_PAGED | CR0_WP),
            Action::Write(CrReg::Cr0, CR0_PAGED),
            Action::SetSregs {
                cr0: CR0_PE | CR0_ET,
                cr3: 0,
                cr4: 0,
                efer: 0,
            },
            Action::Write(CrReg::Cr0, CR0_PE | CR0_ET | CR0_WP),
            Action::Write(CrReg::Cr0, CR0_PE | CR0_ET),
        ],
        vec![
            no_reset(0),
            no_reset(1),
            no_reset(3),
            no_reset(4),
            // Before ca8d664f5099 (v5.14) CR0.WP was in the role even with PG=0.
            needless(3, UP_TO_V5_9),
            needless(4, UP_TO_V5_9),
        ],
    )
}

/// #19 ca8d664f5099 (v5.14, with 84c679f5f52c): with CR0.PG=0 the roles record no paging
/// bits, so CR4 toggles there still reset (the trigger mask is unchanged) but re-initialise
/// nothing. Before v5.14 the raw CR4 bits were in the role and every such toggle rebuilt an
/// identical context.
fn cr4_unpaged() -> Script {
    let unpaged = ControlRegs {
        cr0: CR0_PE | CR0_ET,
        ..Default::default()
    };
    script(
        "cr4-unpaged",
        "protected mode, CR0.PG=0 (TDP): CR4.PSE and CR4.SMEP set and cleared",
        Flavour::Tdp,
        unpaged,
        vec![
            Action::Write(CrReg::Cr4, CR4_PSE),
            Action::Write(CrReg::Cr4, 0),
            Action::Write(CrReg::Cr4, CR4_SMEP),
            Action::Write(CrReg::Cr4, 0),
        ],
        (0..4).map(|at| needless(at, UP_TO_V5_9)).collect(),
    )
}

/// #18 ef318b9edf66 (v5.14): L1 (long mode, CR4.SMEP=0, EFER.NX=0) runs L2 (CR4.SMEP=1) with
/// nested NPT. The nested NPT walker took SMEP from the vCPU, which holds L2's CR4, so walks
/// of L1's NPT tables applied L2's SMEP (and reported PFEC.FETCH in nested #NPFs).
fn nested_npt_smep() -> Script {
    let l1 = ControlRegs {
        efer: EFER_LONG,
        ..long_mode()
    };
    let l2 = ControlRegs {
        cr4: CR4_PAE | CR4_SMEP,
        ..long_mode()
    };
    script(
        "nested-npt-smep",
        "nested NPT (guest_mmu): L1 without SMEP and NX runs L2 with CR4.SMEP=1",
        Flavour::ShadowNpt,
        l1,
        vec![Action::NestedVmrun { l2 }],
        vec![stale(0, UP_TO_V5_9)],
    )
}

/// #19 (594e91a100cc, 8626c120baef; v5.14), nested part: KVM_SET_NESTED_STATE restores L1 in
/// long mode running L2 with 32-bit paging. Before v5.14 that path computed nested NPT's
/// roles from the vCPU registers, L2's: L1's 4-level NPT tables were walked as 32-bit tables
/// until the next VMRUN computed them from L1's. (An L2 in PAE paging would not show it
/// before v5.16: nothing but EFER.LMA tells it from long mode, see #20.)
fn nested_npt_set_state() -> Script {
    let l2 = ControlRegs {
        cr0: CR0_PAGED,
        cr3: 0x7000,
        cr4: CR4_PSE,
        efer: 0,
        ..Default::default()
    };
    script(
        "nested-npt-set-state",
        "nested NPT (guest_mmu): KVM_SET_NESTED_STATE with L1 in long mode, L2 in 32-bit paging; then VMRUN",
        Flavour::ShadowNpt,
        long_mode(),
        vec![Action::SetNestedState { l2 }, Action::NestedVmrun { l2 }],
        vec![stale(0, UP_TO_V5_9)],
    )
}

/// #26 84e5ffd045f3 (v5.19): a host with 5-level NPT runs L1, whose own NPT is 4-level, and
/// L1 enters L2 twice. From v5.19 the root role is marked `passthrough`; the verdicts are the
/// same before and after (asserted by the catalogue's refactor test).
fn nested_npt_5_level() -> Script {
    let mut s = script(
        "nested-npt-5-level",
        "nested NPT (guest_mmu) on a 5-level NPT host: L1 with 4-level paging enters L2 twice",
        Flavour::ShadowNpt,
        long_mode(),
        vec![
            Action::NestedVmrun { l2: long_mode() },
            Action::NestedVmrun { l2: long_mode() },
        ],
        Vec::new(),
    );
    s.cpu.la57 = true;
    s.cpu.maxphyaddr = 52;
    s
}

/// L2's CR3 in the nested scripts (L2's tables are never walked).
const L2_CR3: u64 = 0x7000;

/// #7 ad7dc69aeb23 (v5.0), fixing 14c07ad89f4d (v4.20 \[I\]): L1 in long mode (TDP root_mmu)
/// takes three VM-exits from an L2 that runs with nested EPT. v4.20 files L1's root under
/// L2's CR3 (mmu `nested_ept_vm_exit_root_cache`), but its direct roots miss prev_roots in
/// long mode anyway until 47c42e6b4192: the verdicts are the same as v5.0's.
fn nested_ept_exit() -> Script {
    let exit = Action::VmExit {
        l1: long_mode(),
        leaves_nested_ept: Some(L2_CR3),
    };
    script(
        "nested-ept-exit",
        "L1 in long mode (TDP) takes three VM-exits from an L2 running with nested EPT",
        Flavour::Tdp,
        long_mode(),
        vec![exit, exit, exit],
        Vec::new(),
    )
}

/// L1's EPT for L2, at `0x10_0000`, without A/D.
fn l1_ept(levels: u8) -> u64 {
    Eptp::new(0x10_0000, levels, false).0
}

/// #13 "Don't drop level/direct from MMU role calculation" (v5.7), nested part: L1 runs L2
/// with a 4-level EPT, then switches it to 5 levels and back. The CPU role of nested EPT's
/// guest_mmu is built from the EPTP (sheet §4.6) and its level is the EPT's; v4.20–v5.1
/// compare it through the mask that drops `level` (7dcd57552008), so the switch to 5 levels
/// returns early and keeps the 4-level EPT walker. Latent before v5.7, whose KVM offered L1
/// no 5-level EPT: it came with the fix's series (sheet §6.2 #13).
fn nested_ept_5_level() -> Script {
    script(
        "nested-ept-5-level",
        "nested EPT (guest_mmu): L1 runs L2 with a 4-level EPT, switches it to 5 levels, then back",
        Flavour::ShadowEpt,
        ControlRegs {
            cr3: l1_ept(4),
            ..long_mode()
        },
        vec![
            Action::VmEntryEpt { eptp: l1_ept(4) },
            Action::VmEntryEpt { eptp: l1_ept(5) },
            Action::VmEntryEpt { eptp: l1_ept(4) },
        ],
        vec![stale(1, UP_TO_V5_1)],
    )
}

/// #16 f71a53d1180d (v5.14), as its commit tells it: L0 and L1 both use TDP, and L2's
/// VM-exit loads L1's host state with CR4.LA57 set where L1 ran 4-level before (a new CR3
/// too) without passing through CR0.PG=0. The exit runs kvm_init_mmu on root_mmu without
/// unloading (`nested_vmx_load_cr3`); v5.7–v5.9, whose extended role lost `cr4_la57`
/// (8053f924cad3), return early and keep the 4-level walker.
fn nested_exit_la57() -> Script {
    let mut s = script(
        "nested-exit-la57",
        "L1 (TDP) enters L2 and takes a VM-exit whose host state switches L1 to 5-level paging",
        Flavour::Tdp,
        long_mode(),
        vec![Action::VmExit {
            l1: ControlRegs {
                cr3: PML5,
                cr4: CR4_PAE | CR4_LA57,
                ..long_mode()
            },
            leaves_nested_ept: Some(L2_CR3),
        }],
        vec![stale(0, V5_7_TO_V5_9)],
    );
    s.cpu.la57 = true;
    s
}

/// The model-level scenario `name`.
pub fn script_named(name: &str) -> Option<Script> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| b())
}
