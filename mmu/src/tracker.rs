//! The role-tracked MMU as a state machine: one [`Tracker`] per policy, fed control-register
//! writes and other events, returning a [`Decision`] for each (sheet §5).

use crate::context::{architectural_context, ContextDiff, MmuContext};
use crate::ept::Eptp;
use crate::paging::fault::Gp;
use crate::paging::transition::{check_write_with, CrReg, WriteContext};
use crate::policy::{
    compare_key_for, derive_roles, CpuidRule, Flavour, Policy, Roles, RootCacheRule,
};
use crate::regs::bits::*;
use crate::regs::{ControlRegs, CpuModel, GuestMemory};
use crate::roles::{CpuRole, Field, PageRole, Word};
use crate::root_cache::{CachedRoot, RootCache, RootCacheLookup};
use crate::stale::{stale_context, StaleContext};

/// One input to the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// MOV to CR0 (guest-initiated).
    Cr0 {
        old: u64,
        new: u64,
    },
    /// MOV to CR3; with CR4.PCIDE=1 bit 63 of `new` is the NOFLUSH hint.
    Cr3 {
        old: u64,
        new: u64,
    },
    Cr4 {
        old: u64,
        new: u64,
    },
    /// Guest WRMSR to EFER.
    Efer {
        old: u64,
        new: u64,
    },
    /// Host-initiated EFER write (KVM_SET_MSRS): no CPUID or "LME change with PG=1" checks.
    EferHost {
        old: u64,
        new: u64,
    },
    /// INIT or RESET (`kvm_vcpu_reset`).
    Init,
    SmmEnter,
    SmmExit,
    /// Guest CPUID set to the same CPU model (see [`Tracker::set_cpuid`] to change it).
    SetCpuid,
    /// KVM_SET_SREGS / SREGS2 from the VMM: `after` holds the new registers. No legality
    /// checks (host-initiated); the vendor setters bypass the post-write hooks.
    SetSregs,
    /// Nested NPT's `guest_mmu` initialised for L2 (`nested_svm_init_mmu_context` →
    /// `kvm_init_shadow_npt_mmu`, sheet §4.5): at VMRUN, or from KVM_SET_NESTED_STATE
    /// (`set_nested_state`). `after` holds L1's registers (vmcb01), `vcpu` the vCPU's, which
    /// are L2's. No unload: the roles are compared as for shadow paging.
    NestedNptInit {
        vcpu: ControlRegs,
        set_nested_state: bool,
    },
    /// Nested EPT's `guest_mmu` initialised for L2 at VMLAUNCH/VMRESUME with EPT
    /// (`nested_ept_init_mmu_context` → `kvm_init_shadow_ept_mmu`, sheet §4.6): the roles come
    /// from `eptp` ([`crate::Eptp`]), the early return compares the CPU role only, and
    /// `kvm_mmu_new_pgd(eptp)` runs whether or not it re-initialised. An EPTP whose walk
    /// length is neither 4 nor 5 fails VM-entry: nothing changes. Only a
    /// [`Flavour::ShadowEpt`] tracker takes it; the other MMUs ignore it.
    NestedEptInit {
        eptp: u64,
    },
    /// A nested VM-entry or VM-exit loads the vCPU's registers (`nested_vmx_load_cr3`,
    /// `nested_svm_load_cr3`): `kvm_mmu_new_pgd` on a new CR3, then `kvm_init_mmu` without
    /// unloading roots (sheet §5.5). `after` holds the registers loaded: L2's at entry (for
    /// the nested walker), L1's at exit. `leaves_nested_ept` is L2's CR3 when the exit leaves
    /// an L2 that ran with nested EPT: `nested_ept_uninit_mmu_context` made root_mmu current
    /// again while the vCPU still holds that CR3.
    NestedLoadCr3 {
        leaves_nested_ept: Option<u64>,
    },
}

impl Input {
    pub fn name(&self) -> &'static str {
        match self {
            Input::Cr0 { .. } => "CR0",
            Input::Cr3 { .. } => "CR3",
            Input::Cr4 { .. } => "CR4",
            Input::Efer { .. } => "EFER",
            Input::EferHost { .. } => "EFER (host)",
            Input::Init => "INIT",
            Input::SmmEnter => "SMM entry",
            Input::SmmExit => "SMM exit",
            Input::SetCpuid => "CPUID",
            Input::SetSregs => "SET_SREGS",
            Input::NestedNptInit {
                set_nested_state: false,
                ..
            } => "VMRUN (nested NPT)",
            Input::NestedNptInit { .. } => "SET_NESTED_STATE (nested NPT)",
            Input::NestedEptInit { .. } => "VMLAUNCH/VMRESUME (nested EPT)",
            Input::NestedLoadCr3 { .. } => "nested VM-entry/exit",
        }
    }
}

/// What KVM did with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `kvm_mmu_reset_context` ran and the context was rebuilt.
    Reinit,
    /// A reset was triggered (roots unloaded) but the compare key was unchanged: early return.
    SkippedRoleUnchanged,
    /// Nothing MMU-related happened (possibly a TLB flush).
    NoTrigger,
    /// The write raises #GP; no state change.
    Gp,
    /// `kvm_init_mmu` without unloading roots (v6.4 CR0.WP-only toggle under TDP, a nested
    /// VM-entry or VM-exit); `Decision::context_changes` says whether it re-initialised.
    InitOnly,
    /// A CR3 load handled by `kvm_mmu_new_pgd`.
    NewPgd,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Reinit => "reinit",
            Outcome::SkippedRoleUnchanged => "skipped (role unchanged)",
            Outcome::NoTrigger => "no trigger",
            Outcome::Gp => "#GP",
            Outcome::InitOnly => "init only",
            Outcome::NewPgd => "new pgd",
        }
    }
}

/// TLB flush requested by x86.c.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlbFlush {
    #[default]
    None,
    /// KVM_REQ_TLB_FLUSH_CURRENT.
    Current,
    /// KVM_REQ_TLB_FLUSH_GUEST (all PCIDs).
    Guest,
}

/// The tracker's verdict on one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Register bits whose change triggered the reset (INIT: CR0.PG).
    pub trigger_bits: u64,
    pub old_cpu_role: CpuRole,
    /// The role KVM computed (equal to the old one when nothing was computed).
    pub new_cpu_role: CpuRole,
    pub old_root_role: PageRole,
    pub new_root_role: PageRole,
    /// Context attributes a real re-init changed.
    pub context_changes: Vec<String>,
    /// CR3 loads: the prev_roots lookup.
    pub root_cache: Option<RootCacheLookup>,
    pub tlb_flush: TlbFlush,
    /// The context kept differs from what the architecture requires after this input.
    pub stale: Option<StaleContext>,
    /// A re-init rebuilt a context identical to the old one (same SMM / guest-mode root).
    pub needless_reset: bool,
    /// Why the write raises #GP.
    pub gp: Option<Gp>,
    /// `kvm_mmu_unload` ran: every root and prev_root was freed.
    pub roots_unloaded: bool,
    /// Only the current root was freed (PDPTE change under shadow paging, v5.17+).
    pub current_root_freed: bool,
}

impl Decision {
    /// `cpu_role` fields that differ between the old and the newly computed role, named by
    /// the policy's layout.
    pub fn cpu_role_diff(&self, layout: &crate::roles::Layout) -> Vec<crate::roles::FieldDiff> {
        self.old_cpu_role.diff(self.new_cpu_role, layout)
    }

    /// `root_role` fields that differ.
    pub fn root_role_diff(&self, layout: &crate::roles::Layout) -> Vec<crate::roles::FieldDiff> {
        self.old_root_role.diff(self.new_root_role, layout)
    }

    /// `kvm_mmu_reset_context` ran: the roots were unloaded, whether or not the recompute then
    /// short-circuited on an unchanged role. `kvm_init_mmu` alone (v6.4+ CR0.WP under TDP)
    /// and a CR3 load are not resets.
    pub fn is_reset(&self) -> bool {
        self.roots_unloaded
            || matches!(
                self.outcome,
                Outcome::Reinit | Outcome::SkippedRoleUnchanged
            )
    }

    /// One line for logs and the TUI.
    pub fn describe(&self) -> String {
        let mut s = self.outcome.name().to_string();
        if let Some(gp) = &self.gp {
            s += &format!(": {gp}");
        }
        if self.trigger_bits != 0 {
            s += &format!(" trigger={:#x}", self.trigger_bits);
        }
        if !self.context_changes.is_empty() {
            s += &format!(" changed=[{}]", self.context_changes.join(","));
        }
        if let Some(l) = &self.root_cache {
            s += if l.hit {
                " prev_roots hit"
            } else {
                " prev_roots miss"
            };
        }
        match self.tlb_flush {
            TlbFlush::None => {}
            TlbFlush::Current => s += " flush=current",
            TlbFlush::Guest => s += " flush=guest",
        }
        if self.needless_reset {
            s += " NEEDLESS";
        }
        if let Some(st) = &self.stale {
            s += &format!(" STALE[{}]", st.names().join(","));
        }
        s
    }
}

/// KVM's root_mmu under one policy and flavour.
#[derive(Clone, Debug)]
pub struct Tracker {
    policy: &'static Policy,
    flavour: Flavour,
    cpu: CpuModel,
    regs: ControlRegs,
    roles: Roles,
    key: (u64, u32),
    context: MmuContext,
    roots: RootCache,
}

impl Tracker {
    /// A tracker whose MMU was initialised at `initial` (as at vCPU creation).
    pub fn new(
        policy: &'static Policy,
        flavour: Flavour,
        cpu: CpuModel,
        initial: &ControlRegs,
    ) -> Tracker {
        // Nested EPT's guest_mmu starts with an all-zero role, which no computed role (ext.valid
        // set) matches: the first VM-entry with EPT always re-initialises.
        let roles = if flavour == Flavour::ShadowEpt {
            Roles::default()
        } else {
            derive_roles(policy, flavour, initial, &cpu)
        };
        let mut t = Tracker {
            policy,
            flavour,
            cpu,
            regs: *initial,
            roles,
            key: compare_key_for(policy, flavour, &roles),
            context: architectural_context(initial, &cpu, flavour),
            roots: RootCache::default(),
        };
        t.ensure_root();
        t
    }

    pub fn cpu_role(&self) -> CpuRole {
        self.roles.cpu_role
    }
    pub fn root_role(&self) -> PageRole {
        self.roles.root_role
    }
    pub fn context(&self) -> &MmuContext {
        &self.context
    }
    pub fn policy(&self) -> &'static Policy {
        self.policy
    }
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }
    pub fn cpu(&self) -> &CpuModel {
        &self.cpu
    }
    pub fn regs(&self) -> &ControlRegs {
        &self.regs
    }
    pub fn roots(&self) -> &RootCache {
        &self.roots
    }
    /// The context the architecture requires now, and what differs from the kept one.
    pub fn stale(&self) -> Option<StaleContext> {
        stale_context(&self.context, &self.regs, &self.cpu, self.flavour)
    }

    fn decision(&self) -> Decision {
        Decision {
            outcome: Outcome::NoTrigger,
            trigger_bits: 0,
            old_cpu_role: self.roles.cpu_role,
            new_cpu_role: self.roles.cpu_role,
            old_root_role: self.roles.root_role,
            new_root_role: self.roles.root_role,
            context_changes: Vec::new(),
            root_cache: None,
            tlb_flush: TlbFlush::None,
            stale: None,
            needless_reset: false,
            gp: None,
            roots_unloaded: false,
            current_root_freed: false,
        }
    }

    /// Feed one input. `after` holds the registers once it took effect (EFER.LMA updated,
    /// PDPTEs reloaded, SMM flag set/cleared, INIT state, ...). CS.L is not known here, so a
    /// CR0 write is judged as from compatibility mode; see [`Tracker::apply_with`].
    pub fn apply(&mut self, input: &Input, after: &ControlRegs, mem: &dyn GuestMemory) -> Decision {
        self.apply_with(input, &WriteContext::default(), after, mem)
    }

    /// [`Tracker::apply`] with what the registers do not say about a guest write: `ctx.cs_l`
    /// (CS.L of the writing code) decides the #GP for clearing CR0.PG in 64-bit mode and for
    /// setting it with CS.L=1 (`kvm_set_cr0`).
    pub fn apply_with(
        &mut self,
        input: &Input,
        ctx: &WriteContext,
        after: &ControlRegs,
        mem: &dyn GuestMemory,
    ) -> Decision {
        let mut d = self.decision();
        let before = self.regs;
        // Nested EPT's pgd is the EPTP: the guest's own CR3 never reaches it.
        let ept_view;
        let after = if self.flavour == Flavour::ShadowEpt {
            let cr3 = match *input {
                Input::NestedEptInit { eptp } => eptp,
                _ => before.cr3,
            };
            ept_view = ControlRegs { cr3, ..*after };
            &ept_view
        } else {
            after
        };
        let fx = self.policy.events.explicit_tlb_flushes;
        match *input {
            Input::Cr0 { old, new } => {
                let b = ControlRegs { cr0: old, ..before };
                let wc = WriteContext {
                    cs_l: ctx.cs_l,
                    host_initiated: false,
                };
                if let Err(gp) = check_write_with(CrReg::Cr0, &b, new, &self.cpu, mem, &wc) {
                    return self.gp(d, gp, after);
                }
                self.pdptr_change(&before, after, &mut d);
                let changed = old ^ new;
                if fx && changed & CR0_PG != 0 && new & CR0_PG == 0 {
                    d.tlb_flush = TlbFlush::Guest;
                }
                // v6.4 01b31714bd90 / e40bcf9f3a18.
                if self.policy.triggers.cr0_wp_only_special && changed == CR0_WP {
                    if new & CR0_PG == 0 {
                        return self.finish(d, after);
                    }
                    if self.flavour == Flavour::Tdp {
                        d.trigger_bits = CR0_WP;
                        self.init_mmu(after, &mut d);
                        d.outcome = Outcome::InitOnly;
                        return self.finish(d, after);
                    }
                }
                d.trigger_bits = self.policy.reset_trigger(CrReg::Cr0, old, new);
                if d.trigger_bits != 0 {
                    self.reset(after, &mut d);
                }
            }
            Input::Cr4 { old, new } => {
                let b = ControlRegs { cr4: old, ..before };
                if let Err(gp) = check_write_with(
                    CrReg::Cr4,
                    &b,
                    new,
                    &self.cpu,
                    mem,
                    &WriteContext::default(),
                ) {
                    return self.gp(d, gp, after);
                }
                self.pdptr_change(&before, after, &mut d);
                d.trigger_bits = self.policy.reset_trigger(CrReg::Cr4, old, new);
                if d.trigger_bits != 0 {
                    self.reset(after, &mut d);
                }
                let changed = old ^ new;
                let pcide_set = new & CR4_PCIDE != 0 && old & CR4_PCIDE == 0;
                let pcide_clear = old & CR4_PCIDE != 0 && new & CR4_PCIDE == 0;
                // kvm_post_set_cr4: PCIDE 0->1 with shadow paging drops prev_roots.
                if pcide_set && self.flavour == Flavour::Shadow {
                    self.roots.unload();
                    d.roots_unloaded = true;
                }
                if fx {
                    if changed & CR4_PGE != 0 || pcide_clear {
                        d.tlb_flush = TlbFlush::Guest;
                    } else if changed & CR4_PAE != 0 || (new & !old) & CR4_SMEP != 0 {
                        d.tlb_flush = TlbFlush::Current;
                    }
                }
            }
            Input::Efer { old, new } | Input::EferHost { old, new } => {
                let host = matches!(input, Input::EferHost { .. });
                let b = ControlRegs {
                    efer: old,
                    ..before
                };
                let wc = WriteContext {
                    cs_l: None,
                    host_initiated: host,
                };
                if let Err(gp) = check_write_with(CrReg::Efer, &b, new, &self.cpu, mem, &wc) {
                    return self.gp(d, gp, after);
                }
                d.trigger_bits = self.policy.reset_trigger(CrReg::Efer, old, new);
                if d.trigger_bits != 0 {
                    self.reset(after, &mut d);
                }
            }
            Input::Cr3 { old, new } => {
                let b = ControlRegs { cr3: old, ..before };
                if let Err(gp) = check_write_with(
                    CrReg::Cr3,
                    &b,
                    new,
                    &self.cpu,
                    mem,
                    &WriteContext::default(),
                ) {
                    return self.gp(d, gp, after);
                }
                self.pdptr_change(&before, after, &mut d);
                let pcide = b.pcide();
                let noflush = pcide && new & CR3_NOFLUSH != 0;
                let v = if pcide { new & !CR3_NOFLUSH } else { new };
                // The nested walker has no roots; nested EPT's are not the guest CR3's.
                if v != old && self.flavour.has_roots() && self.flavour != Flavour::ShadowEpt {
                    d.root_cache = Some(self.new_pgd(v, after));
                    d.outcome = Outcome::NewPgd;
                }
                // kvm_invalidate_pcid ([I] for kernels before v5.16).
                if !noflush {
                    d.tlb_flush = match self.flavour {
                        Flavour::Tdp | Flavour::NestedWalker => TlbFlush::Guest,
                        Flavour::Shadow | Flavour::ShadowNpt | Flavour::ShadowEpt => {
                            TlbFlush::Current
                        }
                    };
                }
            }
            Input::Init => {
                // 0aa1837533e5 (v5.14): INIT always clears PG, so PG before INIT decides.
                if self.policy.events.init_resets_when_paging && before.pg() {
                    d.trigger_bits = CR0_PG;
                    self.reset(after, &mut d);
                }
            }
            Input::SmmEnter | Input::SmmExit => {
                // kvm_smm_changed always resets.
                self.pdptr_change(&before, after, &mut d);
                self.reset(after, &mut d);
            }
            Input::SetCpuid => {
                let cpu = self.cpu;
                return self.set_cpuid(cpu, after, mem);
            }
            Input::NestedNptInit {
                vcpu,
                set_nested_state,
            } => {
                let r = &self.policy.roles;
                // Before v5.14 the KVM_SET_NESTED_STATE path computed the roles from the
                // vCPU (L2) registers (594e91a100cc, 8626c120baef).
                let inputs = if set_nested_state && r.npt_roles_from_vcpu_after_set_nested_state {
                    vcpu
                } else {
                    *after
                };
                if self.init_mmu(&inputs, &mut d).is_some() {
                    d.outcome = Outcome::Reinit;
                }
                // Before ef318b9edf66 (v5.14) the nested NPT walker took SMEP from the vCPU.
                if r.npt_smep_from_vcpu {
                    self.context.perm.smep = vcpu.smep();
                }
            }
            Input::NestedEptInit { eptp } => {
                if self.flavour != Flavour::ShadowEpt {
                    return self.finish(d, after);
                }
                // nested_vmx_check_eptp: VM-entry fails, the registers stay as they were.
                if Eptp(eptp).levels().is_none() {
                    return self.finish(d, &before);
                }
                d.outcome = if self.init_mmu(after, &mut d).is_some() {
                    Outcome::Reinit
                } else {
                    Outcome::NewPgd
                };
                d.root_cache = Some(self.new_pgd(eptp, after));
            }
            Input::NestedLoadCr3 { leaves_nested_ept } => {
                let vcpu_cr3 = leaves_nested_ept.unwrap_or(before.cr3);
                // Nested EPT's guest_mmu is not the exit's: its pgd stays the EPTP.
                let own_pgd = self.flavour.has_roots() && self.flavour != Flavour::ShadowEpt;
                if after.cr3 != vcpu_cr3 && own_pgd {
                    if let (
                        Some(l2_cr3),
                        RootCacheRule::Legacy64BitOnly {
                            files_current_under_vcpu_cr3: true,
                            ..
                        },
                    ) = (leaves_nested_ept, self.policy.root_cache)
                    {
                        if let Some(r) = self.roots.current.as_mut() {
                            r.pgd = l2_cr3;
                        }
                    }
                    d.root_cache = Some(self.new_pgd(after.cr3, after));
                }
                // kvm_init_mmu alone, as a v6.4 CR0.WP-only write under TDP: not a reset.
                self.init_mmu(after, &mut d);
                d.outcome = Outcome::InitOnly;
            }
            Input::SetSregs => {
                // __set_sregs_common: reset if CR0/CR3/CR4/EFER differ, or in PAE paging
                // (the PDPTEs were reloaded).
                let differs = before.cr0 != after.cr0
                    || before.cr3 != after.cr3
                    || before.cr4 != after.cr4
                    || before.efer != after.efer;
                if differs || after.is_pae_paging() {
                    self.reset(after, &mut d);
                }
            }
        }
        // "Needless" judges resets caused by register writes; SET_SREGS reloads by design.
        if matches!(input, Input::SetSregs) {
            d.needless_reset = false;
        }
        self.finish(d, after)
    }

    /// Guest CPUID update (`kvm_mmu_after_set_cpuid`, sheet §5.5) with a new CPU model.
    pub fn set_cpuid(
        &mut self,
        cpu: CpuModel,
        after: &ControlRegs,
        _mem: &dyn GuestMemory,
    ) -> Decision {
        let mut d = self.decision();
        self.cpu = cpu;
        let valid = u64::from(crate::roles::ExtRole(1).0) << 32;
        match self.policy.events.cpuid {
            CpuidRule::ResetOnly => {}
            // 49c6f8756cdf: ext.valid cleared and root role word zeroed.
            CpuidRule::InvalidateRoles => self.key = (self.key.0 & !valid, 0),
            // 1bc26cb90902: root_role.invalid instead of a zero word.
            CpuidRule::InvalidateRolesInvalidBit => {
                let inv = self
                    .policy
                    .layout
                    .def(Word::Base, Field::Invalid)
                    .map_or(0, |f| f.mask());
                self.key = (self.key.0 & !valid, self.key.1 | inv);
            }
        }
        self.reset(after, &mut d);
        // A CPUID update re-initialises on purpose (v5.14+); never "needless".
        d.needless_reset = false;
        self.finish(d, after)
    }

    fn gp(&mut self, mut d: Decision, gp: Gp, after: &ControlRegs) -> Decision {
        d.outcome = Outcome::Gp;
        d.gp = Some(gp);
        self.finish(d, after)
    }

    fn finish(&mut self, mut d: Decision, after: &ControlRegs) -> Decision {
        self.regs = *after;
        self.ensure_root();
        d.stale = stale_context(&self.context, after, &self.cpu, self.flavour);
        d
    }

    /// v5.17 6b123c3a89a9: with shadow paging, changed PDPTEs free the current root.
    fn pdptr_change(&mut self, before: &ControlRegs, after: &ControlRegs, d: &mut Decision) {
        if self.policy.events.pdptr_change_frees_shadow_root
            && self.flavour == Flavour::Shadow
            && after.is_pae_paging()
            && after.pdptrs != before.pdptrs
            && self.roots.current.is_some()
        {
            self.roots.free_current();
            d.current_root_freed = true;
        }
    }

    /// `kvm_mmu_reset_context` = `kvm_mmu_unload` + `kvm_init_mmu`.
    fn reset(&mut self, after: &ControlRegs, d: &mut Decision) {
        self.roots.unload();
        d.roots_unloaded = true;
        match self.init_mmu(after, d) {
            None => d.outcome = Outcome::SkippedRoleUnchanged,
            Some(effective_changes) => {
                d.outcome = Outcome::Reinit;
                let same_space = d.old_root_role.smm() == d.new_root_role.smm()
                    && d.old_root_role.guest_mode() == d.new_root_role.guest_mode();
                d.needless_reset = effective_changes.is_empty() && same_space;
            }
        }
    }

    /// `kvm_init_mmu` (TDP or shadow path): compute the roles, return early if the compare key
    /// is unchanged (`None`), else store them and rebuild the context; returns the attributes
    /// that changed in a way that matters for software walks.
    /// `after` are the registers KVM reads: normally those the context must follow; for the
    /// pre-v5.14 nested NPT paths, the vCPU's.
    fn init_mmu(&mut self, after: &ControlRegs, d: &mut Decision) -> Option<Vec<ContextDiff>> {
        let roles = derive_roles(self.policy, self.flavour, after, &self.cpu);
        d.new_cpu_role = roles.cpu_role;
        d.new_root_role = roles.root_role;
        let key = compare_key_for(self.policy, self.flavour, &roles);
        if key == self.key {
            return None;
        }
        self.roles = roles;
        self.key = key;
        let old = self.context;
        let mut ctx = architectural_context(after, &self.cpu, self.flavour);
        if self.policy.reinit.metadata_skipped_when_pg0 && !after.pg() {
            // reset_guest_paging_metadata returns early without paging.
            ctx.rsvd = old.rsvd;
            ctx.perm = old.perm;
            ctx.pkru = old.pkru;
        }
        self.context = ctx;
        d.context_changes = old
            .diff_all(&ctx)
            .into_iter()
            .map(|c| c.attribute.to_string())
            .collect();
        Some(old.effective_diff(&ctx))
    }

    /// `kvm_mmu_new_pgd`: look for a usable cached root for the new PGD.
    fn new_pgd(&mut self, pgd: u64, after: &ControlRegs) -> RootCacheLookup {
        match self.policy.root_cache {
            RootCacheRule::KeepCurrent => self.roots.lookup_keep_current(pgd, self.roles.root_role),
            RootCacheRule::Legacy64BitOnly {
                direct_ignores_pgd, ..
            } => {
                // kvm_mmu_calc_root_page_role: recomputed from the vCPU registers.
                let role = derive_roles(self.policy, self.flavour, after, &self.cpu).root_role;
                let attempt = self.context.shadow_root_level >= 4 && self.context.root_level >= 4;
                self.roots
                    .lookup_legacy(pgd, role, attempt, direct_ignores_pgd)
            }
        }
    }

    /// `kvm_mmu_load` before the next VM-entry: allocate a root if there is none.
    fn ensure_root(&mut self) {
        if self.roots.current.is_some() || !self.flavour.has_roots() {
            return;
        }
        let mut role = self.roles.root_role;
        // Before 47c42e6b4192 kvm_mmu_get_page cleared cr4_pae on direct pages.
        if role.direct() && self.policy.roles.direct_page_clears_cr4_pae {
            role = role.with(self.policy.layout, Field::Gpte, 0);
        }
        self.roots.current = Some(CachedRoot {
            pgd: self.regs.cr3,
            role,
            // Shadow roots below level 4 live in the per-vCPU pae_root: no shadow page.
            has_shadow_page: role.level() >= 4,
        });
    }
}
