//! Role derivation (sheet §3.2, §4.3, §4.4, §6.1) and the compare key (§5.9), driven by a
//! [`Policy`]'s data.

use super::{CompareKey, Flavour, GpteRule, Policy};
use crate::ept::Eptp;
use crate::regs::{ControlRegs, CpuModel};
use crate::roles::{CpuRole, ExtRole, Field, GpteSense, Layout, PageRole, Word};

/// The roles KVM computes for one register state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Roles {
    /// `cpu_role` (v5.19+) or `mmu_role` (≤ v5.18, whose base is the root's role).
    pub cpu_role: CpuRole,
    /// `root_role` (v5.19+) or `mmu_role.base` (≤ v5.18).
    pub root_role: PageRole,
}

/// TDP root level, VMX rule (`kvm_mmu_get_tdp_level`, sheet §4.8): 5 only with 5-level EPT
/// and guest MAXPHYADDR > 48. The CPU model's `la57` stands for host 5-level EPT support.
pub fn tdp_level(cpu: &CpuModel) -> u8 {
    if cpu.la57 && cpu.maxphyaddr > 48 {
        5
    } else {
        4
    }
}

struct B<'a> {
    l: &'a Layout,
    base: u32,
    ext: u32,
}

impl B<'_> {
    fn b(&mut self, f: Field, v: impl Into<u64>) {
        self.base = self.l.set(Word::Base, self.base, f, v.into() as u32);
    }
    fn e(&mut self, f: Field, v: impl Into<u64>) {
        self.ext = self.l.set(Word::Ext, self.ext, f, v.into() as u32);
    }
}

fn gpte_bit(rule: GpteRule, regs: &ControlRegs) -> bool {
    match rule {
        GpteRule::Cr4Pae => regs.pae(),
        GpteRule::PgAndPae => regs.pg() && regs.pae(),
        GpteRule::PgAndNotPae => regs.pg() && !regs.pae(),
    }
}

/// The stored value of bit 4 that means "8-byte guest PTEs" in this layout.
fn eight_byte_value(layout: &Layout) -> bool {
    !matches!(layout.gpte, GpteSense::Has4Byte)
}

fn guest_level(regs: &ControlRegs) -> u8 {
    crate::PagingMode::of_regs(regs).level()
}

/// Compute the roles `policy` derives from `regs` for `flavour`.
pub fn derive_roles(
    policy: &Policy,
    flavour: Flavour,
    regs: &ControlRegs,
    cpu: &CpuModel,
) -> Roles {
    match flavour {
        Flavour::ShadowNpt => return derive_shadow_npt(policy, regs, cpu),
        Flavour::ShadowEpt => return derive_shadow_ept(policy, Eptp(regs.cr3)),
        Flavour::NestedWalker => return derive_nested_walker(policy, regs, cpu),
        Flavour::Tdp | Flavour::Shadow => {}
    }
    if policy.roles.split_cpu_root_role {
        derive_split(policy, flavour, regs, cpu)
    } else {
        derive_mmu_role(policy, flavour, regs, cpu)
    }
}

/// `kvm_init_shadow_npt_mmu` (sheet §4.5): the shadow roles of L1's NPT view, with the root
/// at the host's NPT level (`regs` are L1's).
fn derive_shadow_npt(policy: &Policy, regs: &ControlRegs, cpu: &CpuModel) -> Roles {
    let l = policy.layout;
    let view = regs.nested_npt_view();
    let level = u32::from(tdp_level(cpu));
    if policy.roles.split_cpu_root_role {
        let cpu_role = derive_split(policy, Flavour::Shadow, &view, cpu).cpu_role;
        // 84e5ffd045f3 (v5.19): a 5-level host shadowing L1's 4-level NPT marks its root, whose
        // entry 0 points to L1's PML4, as passthrough.
        let passthrough = level == 5 && cpu_role.base().level() == 4;
        Roles {
            cpu_role,
            root_role: cpu_role.base().with(l, Field::Level, level).with(
                l,
                Field::Passthrough,
                u32::from(passthrough),
            ),
        }
    } else {
        // One mmu_role, whose base is the root's role.
        let r = derive_mmu_role(policy, Flavour::Shadow, &view, cpu);
        let base = r.cpu_role.base().with(l, Field::Level, level);
        Roles {
            cpu_role: CpuRole::new(base, r.cpu_role.ext()),
            root_role: base,
        }
    }
}

/// KVM offers L1 execute-only EPT entries where the host has them (`nested_vmx_setup_ctls_msrs`);
/// the model takes it as offered, a capability fixed for the VM's life.
const EPT_EXECONLY: bool = true;

/// `kvm_calc_shadow_ept_root_page_role` (sheet §4.6): built from the EPTP alone. Before
/// 552c69b1dc71 (v5.1) the role also inherited `quadrant` and `invalid` from root_mmu's, which
/// are 0 on every root, so there is nothing more to derive for it.
fn derive_shadow_ept(policy: &Policy, eptp: Eptp) -> Roles {
    let l = policy.layout;
    let r = &policy.roles;
    let mut b = B { l, base: 0, ext: 0 };
    b.b(Field::Access, 7u8);
    // An EPTP of another length fails VM-entry before any role is computed (the tracker never
    // stores one); 4 keeps this function total.
    b.b(Field::Level, eptp.levels().unwrap_or(4));
    b.b(Field::AdDisabled, !eptp.ad_enabled());
    b.b(Field::GuestMode, true);
    // 47c42e6b4192: EPT entries are 8 bytes (before it, cr4_pae stayed 0 here).
    if r.tdp_gpte_forced_8_bytes {
        b.b(Field::Gpte, eight_byte_value(l));
    }
    if r.shadow_ept_marker {
        b.b(Field::Cr0Wp, true);
        b.b(Field::SmapAndnotWp, true);
    }
    b.e(Field::Valid, true);
    b.e(Field::Execonly, EPT_EXECONLY);
    let cpu_role = CpuRole::new(PageRole(b.base), ExtRole(b.ext));
    Roles {
        cpu_role,
        root_role: cpu_role.base(),
    }
}

/// `init_kvm_nested_mmu`'s role (sheet §4.7) for the vCPU's registers `regs` (L2's), with L2
/// active: from v5.19 `kvm_calc_cpu_role`; before, the nested `mmu_role` (\[I\]: the sheet
/// gives only the compare rule; the forms are those of the kernels' role helpers). Its root
/// role is unused (the walker has no roots): zero.
fn derive_nested_walker(policy: &Policy, regs: &ControlRegs, cpu: &CpuModel) -> Roles {
    let l2 = ControlRegs {
        guest_mode: true,
        ..*regs
    };
    let cpu_role = if policy.roles.split_cpu_root_role {
        derive_split(policy, Flavour::NestedWalker, &l2, cpu).cpu_role
    } else {
        derive_mmu_role(policy, Flavour::NestedWalker, &l2, cpu).cpu_role
    };
    Roles {
        cpu_role,
        root_role: PageRole::default(),
    }
}

/// ≤ v5.18: one `mmu_role` (kvm_calc_mmu_role_common + ext + per-flavour root fields).
fn derive_mmu_role(policy: &Policy, flavour: Flavour, regs: &ControlRegs, cpu: &CpuModel) -> Roles {
    let r = &policy.roles;
    let mut b = B {
        l: policy.layout,
        base: 0,
        ext: 0,
    };
    let pg = regs.pg();
    let lma = regs.lma();
    let record = pg || !r.pg0_records_nothing;
    b.b(Field::Access, 7u8);
    b.b(Field::Smm, u8::from(regs.smm));
    b.b(Field::GuestMode, regs.guest_mode);
    b.e(Field::Valid, true);
    b.e(Field::Maxphyaddr, cpu.maxphyaddr & 0x3f);
    let (mut smep, mut smap) = (false, false);
    if record {
        b.b(Field::EferNx, regs.nxe());
        b.b(Field::Cr0Wp, regs.wp());
        b.e(Field::Cr0Pg, pg);
        b.e(Field::Cr4Pae, regs.pae());
        b.e(Field::Cr4Pse, regs.pse());
        b.e(Field::Cr4Smep, regs.smep());
        b.e(Field::Cr4Smap, regs.smap());
        let need = r.pke_la57_need_lma;
        b.e(Field::Cr4Pke, regs.pke() && (lma || !need));
        b.e(Field::Cr4La57, regs.la57() && (lma || !need));
        b.e(Field::EferLma, lma);
        smep = regs.smep();
        smap = regs.smap();
    }
    match flavour {
        Flavour::Tdp => {
            b.b(Field::Level, tdp_level(cpu));
            b.b(Field::Direct, true);
            let g = if r.tdp_gpte_forced_8_bytes {
                eight_byte_value(policy.layout)
            } else {
                gpte_bit(r.gpte, regs)
            };
            b.b(Field::Gpte, g);
        }
        // kvm_calc_nested_mmu_role (v5.14–v5.18): the shadow role's common part, the guest's
        // own paging level, and direct=1 ("no shadow pages of its own").
        Flavour::NestedWalker if r.nested_role_from_shadow_common => {
            let wp = record && regs.wp();
            b.b(Field::SmepAndnotWp, smep && !wp);
            b.b(Field::SmapAndnotWp, smap && !wp);
            b.b(Field::Gpte, gpte_bit(r.gpte, regs));
            b.b(Field::Level, guest_level(regs));
            b.b(Field::Direct, true);
        }
        // ≤ v5.13: the common role only (kvm_calc_mmu_role_common): no level; bit 4 carried
        // CR4.PAE there until 47c42e6b4192 moved it to the shadow and TDP roles alone.
        Flavour::NestedWalker => {
            if !r.tdp_gpte_forced_8_bytes {
                b.b(Field::Gpte, gpte_bit(r.gpte, regs));
            }
        }
        Flavour::Shadow | Flavour::ShadowNpt | Flavour::ShadowEpt => {
            let wp = record && regs.wp();
            b.b(Field::SmepAndnotWp, smep && !wp);
            b.b(Field::SmapAndnotWp, smap && !wp);
            b.b(Field::Gpte, gpte_bit(r.gpte, regs));
            b.b(Field::Direct, !pg);
            let level = if !lma {
                3
            } else if regs.la57() {
                5
            } else {
                4
            };
            b.b(Field::Level, level as u8);
            if r.shadow_efer_nx_forced {
                b.b(Field::EferNx, true);
            }
        }
    }
    Roles {
        cpu_role: CpuRole::new(PageRole(b.base), ExtRole(b.ext)),
        root_role: PageRole(b.base),
    }
}

/// v5.19+: `kvm_calc_cpu_role` plus the TDP or shadow root role.
fn derive_split(policy: &Policy, flavour: Flavour, regs: &ControlRegs, cpu: &CpuModel) -> Roles {
    let l = policy.layout;
    let mut b = B { l, base: 0, ext: 0 };
    b.b(Field::Access, 7u8);
    b.b(Field::Smm, u8::from(regs.smm));
    b.b(Field::GuestMode, regs.guest_mode);
    b.e(Field::Valid, true);
    if !regs.pg() {
        b.b(Field::Direct, true);
    } else {
        let lma = regs.lma();
        let wp = regs.wp();
        b.b(Field::EferNx, regs.nxe());
        b.b(Field::Cr0Wp, wp);
        b.b(Field::SmepAndnotWp, regs.smep() && !wp);
        b.b(Field::SmapAndnotWp, regs.smap() && !wp);
        b.b(Field::Gpte, gpte_bit(policy.roles.gpte, regs));
        b.b(Field::Level, guest_level(regs));
        b.e(Field::Cr4Pse, regs.pse());
        b.e(Field::Cr4Smep, regs.smep());
        b.e(Field::Cr4Smap, regs.smap());
        b.e(Field::Cr4Pke, lma && regs.pke());
        b.e(Field::Cr4La57, lma && regs.la57());
        b.e(Field::EferLma, lma);
    }
    let cpu_role = CpuRole::new(PageRole(b.base), ExtRole(b.ext));
    let root_role = match flavour {
        Flavour::Tdp => {
            let mut r = B { l, base: 0, ext: 0 };
            r.b(Field::Access, 7u8);
            r.b(Field::Cr0Wp, true);
            r.b(Field::EferNx, true);
            r.b(Field::Direct, true);
            // has_4_byte_gpte = 0: TDP tables are 8-byte.
            r.b(Field::Gpte, !matches!(l.gpte, GpteSense::Has4Byte));
            r.b(Field::Smm, u8::from(regs.smm));
            r.b(Field::GuestMode, regs.guest_mode);
            r.b(Field::Level, tdp_level(cpu));
            PageRole(r.base)
        }
        Flavour::Shadow | Flavour::ShadowNpt | Flavour::ShadowEpt | Flavour::NestedWalker => {
            let base = cpu_role.base();
            let mut r = base.with(l, Field::Level, u32::from(base.level().max(3)));
            if policy.roles.shadow_efer_nx_forced {
                r = r.with(l, Field::EferNx, 1);
            }
            r
        }
    };
    Roles {
        cpu_role,
        root_role,
    }
}

/// The value compared by the early return of `kvm_init_mmu`'s TDP/shadow paths, and of nested
/// EPT's and the nested walker's, which compare the CPU role only (sheet §5.6): see
/// [`compare_key_for`].
pub fn compare_key(policy: &Policy, roles: &Roles) -> (u64, u32) {
    match policy.compare {
        CompareKey::MaskedBase => {
            let l = policy.layout;
            let mut mask = 0u32;
            for f in [
                Field::Cr0Wp,
                Field::Gpte,
                Field::EferNx,
                Field::SmepAndnotWp,
                Field::SmapAndnotWp,
                Field::Smm,
                Field::GuestMode,
                Field::AdDisabled,
            ] {
                if let Some(d) = l.def(Word::Base, f) {
                    mask |= d.mask();
                }
            }
            let base = roles.cpu_role.base().0 & mask;
            (
                u64::from(base) | (u64::from(roles.cpu_role.ext().0) << 32),
                0,
            )
        }
        CompareKey::Full => (roles.cpu_role.0, 0),
        CompareKey::CpuRoleAndRootRole => (roles.cpu_role.0, roles.root_role.0),
    }
}

/// [`compare_key`] for one flavour: `kvm_init_shadow_ept_mmu` and `init_kvm_nested_mmu` return
/// early on an unchanged CPU role alone (sheet §5.6), masked as the policy masks it (the v4.20
/// mask applied to every MMU's role, 7dcd57552008: nested EPT's `level` was dropped with it,
/// sheet §6.2 #13).
pub fn compare_key_for(policy: &Policy, flavour: Flavour, roles: &Roles) -> (u64, u32) {
    let key = compare_key(policy, roles);
    match flavour {
        Flavour::ShadowEpt | Flavour::NestedWalker => (key.0, 0),
        Flavour::Tdp | Flavour::Shadow | Flavour::ShadowNpt => key,
    }
}
