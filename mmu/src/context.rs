//! The MMU context KVM keeps (sheet §0.2 item 3, §5.6): guest root level, the software walker
//! picked for `gva_to_gpa`, and the inputs of the reserved-bit table, the permission bitmask and
//! the PKRU mask. [`architectural_context`] is what a correct re-init produces;
//! [`translate_with_context`] walks the way KVM's software walker would with a given context.

use crate::ept::Eptp;
use crate::paging::mode::PagingMode;
use crate::paging::perm::{AccessRequest, PermInputs};
use crate::paging::rsvd::RsvdInputs;
use crate::paging::walk::{walk_with, Walk, WalkConfig};
use crate::policy::{tdp_level, Flavour};
use crate::regs::{ControlRegs, CpuModel, GuestMemory};

/// KVM's `gva_to_gpa` walker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkerKind {
    /// `nonpaging_gva_to_gpa`: GVA = GPA.
    None,
    /// paging32: 2 levels of 4-byte entries from CR3.
    Paging32,
    /// paging64 at root level 3: PDPTE registers, then 8-byte entries.
    Paging64Pae,
    /// paging64 at root level 4 or 5.
    Paging64,
    /// The EPT walker (`paging_tmpl.h` as `PTTYPE_EPT`): nested EPT's walk of L1's EPT
    /// tables, 4 or 5 levels.
    Ept,
}

impl WalkerKind {
    pub fn name(self) -> &'static str {
        match self {
            WalkerKind::None => "nonpaging",
            WalkerKind::Paging32 => "paging32",
            WalkerKind::Paging64Pae => "paging64 (PAE)",
            WalkerKind::Paging64 => "paging64",
            WalkerKind::Ept => "ept",
        }
    }
}

/// One MMU context (root_mmu).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmuContext {
    /// Guest paging level the walker uses (KVM's `root_level`, later `cpu_role.base.level`).
    pub root_level: u8,
    pub walker: WalkerKind,
    /// Inputs of `reset_guest_rsvds_bits_mask` (KVM assumes PSE-36: `pse36_phys_bits` = 36).
    pub rsvd: RsvdInputs,
    /// Inputs of `update_permission_bitmask`.
    pub perm: PermInputs,
    /// `pkru_mask` non-zero: CR4.PKE in IA-32e mode (`update_pkru_bitmask`; it also uses WP).
    pub pkru: bool,
    /// KVM's own root level (`shadow_root_level` / `root_role.level`): TDP level, or the
    /// shadow level (at least 3); 0 for the nested walker, which has no roots.
    pub shadow_root_level: u8,
    /// EPT walker only: L1 enabled EPT accessed/dirty flags, so walks set them (`ept_ad`,
    /// set by `kvm_init_shadow_ept_mmu` on a real re-init).
    pub ept_ad: bool,
}

/// One attribute that differs between two contexts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContextDiff {
    pub attribute: &'static str,
    pub kept: String,
    pub correct: String,
}

impl MmuContext {
    /// The [`WalkConfig`] KVM's walker uses with this context. PFEC.I/D is reported when NX or
    /// SMEP is on in the context (`walk_addr_generic`), whatever the mode.
    ///
    /// An EPT context walks the same 4- or 5-level radix structure as IA-32e paging, its
    /// entries read as IA-32e entries with WP, SMEP, SMAP and NX off: EPT's R/W/X and
    /// memory-type bits are not modelled. Shadow-EPT contexts are compared by attribute only; no recording is
    /// evaluated for them ([`Flavour::evaluates_recordings`]).
    pub fn walk_config(&self, regs: &ControlRegs) -> WalkConfig {
        let mode = match self.walker {
            WalkerKind::None => PagingMode::Unpaged,
            WalkerKind::Paging32 => PagingMode::Bits32,
            WalkerKind::Paging64Pae => PagingMode::Pae,
            WalkerKind::Paging64 | WalkerKind::Ept if self.root_level >= 5 => PagingMode::Level5,
            WalkerKind::Paging64 | WalkerKind::Ept => PagingMode::Level4,
        };
        WalkConfig {
            mode,
            rsvd: self.rsvd,
            perm: self.perm,
            pke: self.pkru && self.walker == WalkerKind::Paging64,
            pkru: regs.pkru,
            fetch_in_pfec: self.perm.nx || self.perm.smep,
            check_canonical: true,
        }
    }

    /// Every attribute, for display (`ept.ad` only for the EPT walker).
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = vec![
            ("root_level", self.root_level.to_string()),
            ("walker", self.walker.name().to_string()),
            ("rsvd.maxphyaddr", self.rsvd.maxphyaddr.to_string()),
            ("rsvd.nx", self.rsvd.nx.to_string()),
            ("rsvd.pse", self.rsvd.pse.to_string()),
            ("rsvd.gbpages", self.rsvd.gbpages.to_string()),
            ("rsvd.amd", self.rsvd.amd.to_string()),
            (
                "rsvd.pse36_phys_bits",
                self.rsvd.pse36_phys_bits.to_string(),
            ),
            ("perm.wp", self.perm.wp.to_string()),
            ("perm.smep", self.perm.smep.to_string()),
            ("perm.smap", self.perm.smap.to_string()),
            ("perm.nx", self.perm.nx.to_string()),
            ("pkru", self.pkru.to_string()),
            ("shadow_root_level", self.shadow_root_level.to_string()),
        ];
        if self.walker == WalkerKind::Ept {
            a.push(("ept.ad", self.ept_ad.to_string()));
        }
        a
    }

    /// Every attribute that differs (what a re-init changed).
    pub fn diff_all(&self, other: &MmuContext) -> Vec<ContextDiff> {
        if self == other {
            return Vec::new();
        }
        self.attributes()
            .into_iter()
            .zip(other.attributes())
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| ContextDiff {
                attribute: a.0,
                kept: a.1,
                correct: b.1,
            })
            .collect()
    }

    /// Attributes that can change a software walk's result, given the walkers in use:
    /// metadata does not matter without paging, PSE only for paging32, GBPAGES/AMD only for
    /// 4/5-level tables, NX/MAXPHYADDR reserved bits only for 8-byte entries.
    pub fn effective_diff(&self, other: &MmuContext) -> Vec<ContextDiff> {
        let walkers = [self.walker, other.walker];
        let uses = |f: &dyn Fn(WalkerKind) -> bool| walkers.iter().any(|w| f(*w));
        let paged = uses(&|w| w != WalkerKind::None);
        let mut names: Vec<&'static str> = vec!["root_level", "walker"];
        if paged {
            if uses(&|w| matches!(w, WalkerKind::Paging64Pae | WalkerKind::Paging64)) {
                names.extend(["rsvd.maxphyaddr", "rsvd.nx"]);
            }
            if uses(&|w| w == WalkerKind::Paging32) {
                names.extend(["rsvd.pse", "rsvd.pse36_phys_bits"]);
            }
            if uses(&|w| w == WalkerKind::Paging64) {
                names.extend(["rsvd.gbpages", "rsvd.amd", "pkru"]);
            }
            if uses(&|w| w == WalkerKind::Ept) {
                names.extend(["rsvd.maxphyaddr", "rsvd.gbpages", "ept.ad"]);
            }
            names.extend(["perm.wp", "perm.smep", "perm.smap", "perm.nx"]);
        }
        self.diff_all(other)
            .into_iter()
            .filter(|d| names.contains(&d.attribute))
            .collect()
    }
}

/// The walker KVM picks for a guest level.
pub fn walker_for_level(level: u8) -> WalkerKind {
    match level {
        0 => WalkerKind::None,
        2 => WalkerKind::Paging32,
        3 => WalkerKind::Paging64Pae,
        _ => WalkerKind::Paging64,
    }
}

/// The context a correct re-init produces for these registers (KVM's rules, e.g. PSE-36 is
/// assumed for 4 MiB pages).
pub fn architectural_context(regs: &ControlRegs, cpu: &CpuModel, flavour: Flavour) -> MmuContext {
    match flavour {
        Flavour::ShadowNpt => {
            // L1's NPT tables in L1's paging format, walked with WP and PKE off; rooted at the
            // host's NPT level.
            return MmuContext {
                shadow_root_level: tdp_level(cpu),
                ..architectural_context(&regs.nested_npt_view(), cpu, Flavour::Shadow)
            };
        }
        Flavour::ShadowEpt => return shadow_ept_context(Eptp(regs.cr3), cpu),
        Flavour::NestedWalker => {
            // The walker picked from the vCPU's (L2's) state; no roots.
            return MmuContext {
                shadow_root_level: 0,
                ..architectural_context(regs, cpu, Flavour::Shadow)
            };
        }
        Flavour::Tdp | Flavour::Shadow => {}
    }
    let mode = PagingMode::of_regs(regs);
    let level = mode.level();
    MmuContext {
        root_level: level,
        walker: walker_for_level(level),
        rsvd: RsvdInputs {
            maxphyaddr: cpu.phys_bits(),
            nx: regs.nxe(),
            pse: regs.pse(),
            gbpages: cpu.gbpages,
            amd: cpu.amd,
            pse36_phys_bits: 36,
        },
        perm: PermInputs {
            wp: regs.wp(),
            smep: regs.smep(),
            smap: regs.smap(),
            nx: regs.nxe(),
        },
        pkru: regs.pke() && regs.lma(),
        shadow_root_level: match flavour {
            Flavour::Tdp | Flavour::ShadowNpt => tdp_level(cpu),
            Flavour::Shadow | Flavour::ShadowEpt | Flavour::NestedWalker => level.max(3),
        },
        ept_ad: false,
    }
}

/// Nested EPT's context (`kvm_init_shadow_ept_mmu`, sheet §4.6): the EPT walker at the EPTP's
/// level, the EPT reserved-bit table (MAXPHYADDR, 1 GiB pages; no NX, PSE or vendor rules),
/// the permission bitmask in EPT mode (WP, SMEP, SMAP and NX ignored), `pkru_mask` = 0; KVM's
/// root is at the same level (root role = CPU role).
fn shadow_ept_context(eptp: Eptp, cpu: &CpuModel) -> MmuContext {
    let level = eptp.levels().unwrap_or(4);
    MmuContext {
        root_level: level,
        walker: WalkerKind::Ept,
        rsvd: RsvdInputs {
            maxphyaddr: cpu.phys_bits(),
            nx: false,
            pse: false,
            gbpages: cpu.gbpages,
            amd: false,
            pse36_phys_bits: 36,
        },
        perm: PermInputs::default(),
        pkru: false,
        shadow_root_level: level,
        ept_ad: eptp.ad_enabled(),
    }
}

/// Translate `gva` the way KVM's software walker (`gva_to_gpa`) would with context `ctx`: the
/// walker, root level and tables of the context, over the guest's current CR3, PDPTE
/// registers and PKRU. No A/D updates.
pub fn translate_with_context(
    ctx: &MmuContext,
    regs: &ControlRegs,
    mem: &dyn GuestMemory,
    gva: u64,
    req: &AccessRequest,
) -> Walk {
    walk_with(&ctx.walk_config(regs), regs, mem, gva, req)
}
