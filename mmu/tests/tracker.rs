//! The role-tracked MMU: the seed bug and the other modelled regressions, reset triggers per
//! policy, prev_roots, INIT/SMM/CPUID.

mod common;
use common::*;
use mmu::bits::*;
use mmu::*;

fn cpu() -> CpuModel {
    CpuModel::default_x86_64()
}

fn p(name: &str) -> &'static Policy {
    policy(name).unwrap_or_else(|| panic!("no policy {name}"))
}

/// Drive a tracker with a guest write, computing `after` with the architectural rules.
fn write(t: &mut Tracker, reg: CrReg, value: u64, m: &FlatMemory) -> Decision {
    let before = *t.regs();
    let after = apply_write(reg, &before, value, t.cpu(), m).unwrap_or(before);
    let input = match reg {
        CrReg::Cr0 => Input::Cr0 {
            old: before.cr0,
            new: value,
        },
        CrReg::Cr3 => Input::Cr3 {
            old: before.cr3,
            new: value,
        },
        CrReg::Cr4 => Input::Cr4 {
            old: before.cr4,
            new: value,
        },
        CrReg::Efer => Input::Efer {
            old: before.efer,
            new: value,
        },
    };
    t.apply(&input, &after, m)
}

/// Seed memory: CR3 = 0x1000 is a valid 32-bit page directory and a valid PDPT.
/// 32-bit view: PDE0 = 0x2001 -> PT at 0x2000: PTE0 = 0x3003, PTE5 = 0x9003.
/// PAE view: PDPTE0 = 0x2001 -> PD at 0x2000: PDE0 = 0x3003 -> PT at 0x3000: PTE5 = 0x7003.
fn seed_memory() -> FlatMemory {
    let mut m = mem();
    m.write_u64(0x1000, 0x2001);
    m.write_u64(0x2000, 0x3003);
    m.write_u32(0x2000 + 4 * 5, 0x9003);
    m.write_u64(0x3000 + 8 * 5, 0x7003);
    m
}

fn seed_start() -> ControlRegs {
    regs(CR0_PAGED, CR4_PSE, 0, 0x1000)
}

#[test]
fn seed_memory_is_both_formats() {
    let m = seed_memory();
    let c = cpu();
    let r32 = seed_start();
    let w = walk(
        &r32,
        &c,
        &m,
        0x5000,
        &AccessRequest::supervisor(Access::Read),
    );
    assert_eq!(w.result.unwrap().gpa, 0x9000);
    let pae = apply_write(CrReg::Cr4, &r32, CR4_PSE | CR4_PAE, &c, &m).unwrap();
    assert_eq!(pae.pdptrs, [0x2001, 0, 0, 0]);
    let w = walk(
        &pae,
        &c,
        &m,
        0x5000,
        &AccessRequest::supervisor(Access::Read),
    );
    assert_eq!(w.result.unwrap().gpa, 0x7000);
}

#[test]
fn seed_bug_v5_1_rc3_tdp() {
    let m = seed_memory();
    let mut t = Tracker::new(p("v5.1-rc3"), Flavour::Tdp, cpu(), &seed_start());
    assert_eq!(t.context().root_level, 2);
    let d = write(&mut t, CrReg::Cr4, CR4_PSE | CR4_PAE, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged, "{}", d.describe());
    assert_eq!(d.trigger_bits, CR4_PAE);
    assert!(d.roots_unloaded);
    assert_eq!(d.old_cpu_role, d.new_cpu_role);
    assert!(d.context_changes.is_empty());
    // The kept context is still the 2-level, 32-bit walker.
    assert_eq!(t.context().root_level, 2);
    assert_eq!(t.context().walker, WalkerKind::Paging32);
    let stale = d.stale.expect("stale context");
    let names = stale.names();
    assert!(
        names.contains(&"root_level") && names.contains(&"walker"),
        "{names:?}"
    );
    assert_eq!(stale.correct.root_level, 3);
    assert_eq!(stale.correct.walker, WalkerKind::Paging64Pae);
    // Concrete translations differ.
    let after = *t.regs();
    let diffs = compare_translations(
        &stale.kept,
        &stale.correct,
        &after,
        &cpu(),
        &m,
        &[
            (0x5000, Access::Read),
            (0x0, Access::Read),
            (0x5000, Access::Write),
        ],
    );
    assert_eq!(diffs.len(), 3, "{diffs:#?}");
    assert_eq!(diffs[0].kept, TranslationResult::Phys { gpa: 0x9000 });
    assert_eq!(diffs[0].correct, TranslationResult::Phys { gpa: 0x7000 });
    assert_eq!(
        diffs[0].architectural,
        TranslationResult::Phys { gpa: 0x7000 }
    );
    // VA 0: the 32-bit view maps it, the PAE view has a not-present PTE.
    assert_eq!(diffs[1].kept, TranslationResult::Phys { gpa: 0x3000 });
    assert_eq!(
        diffs[1].correct,
        TranslationResult::PageFault { error_code: 0 }
    );
    assert_eq!(diffs[2].correct, TranslationResult::Phys { gpa: 0x7000 });
    // The kept walk explains itself: 2 levels of 4-byte entries from CR3.
    assert_eq!(diffs[0].kept_walk.levels.len(), 2);
    assert_eq!(diffs[0].kept_walk.levels[0].entry_bytes, 4);
    assert_eq!(diffs[0].correct_walk.levels.len(), 3);
}

#[test]
fn seed_sequence_fixed_and_shadow() {
    let m = seed_memory();
    for (name, fl) in [
        ("v5.1", Flavour::Tdp),
        ("v6.14", Flavour::Tdp),
        ("v5.1-rc3", Flavour::Shadow),
        ("v6.14", Flavour::Shadow),
    ] {
        let mut t = Tracker::new(p(name), fl, cpu(), &seed_start());
        let d = write(&mut t, CrReg::Cr4, CR4_PSE | CR4_PAE, &m);
        assert_eq!(d.outcome, Outcome::Reinit, "{name} {fl:?}");
        assert_eq!(t.context().root_level, 3);
        assert_eq!(t.context().walker, WalkerKind::Paging64Pae);
        assert!(d.stale.is_none(), "{name}");
        assert!(d.context_changes.contains(&"root_level".to_string()));
        assert!(d.context_changes.contains(&"walker".to_string()));
        assert!(!d.needless_reset);
    }
    // Only v5.1-rc3 under TDP is affected, and clearing PAE again is skipped as well.
    for pol in policies() {
        for fl in [Flavour::Tdp, Flavour::Shadow] {
            let mut t = Tracker::new(pol, fl, cpu(), &seed_start());
            let d = write(&mut t, CrReg::Cr4, CR4_PSE | CR4_PAE, &m);
            let buggy = pol.name == "v5.1-rc3" && fl == Flavour::Tdp;
            assert_eq!(d.stale.is_some(), buggy, "{} {fl:?}", pol.name);
            let d = write(&mut t, CrReg::Cr4, CR4_PSE, &m);
            assert!(d.stale.is_none(), "{} back to 32-bit", pol.name);
        }
    }
}

#[test]
fn smap_toggle_v5_9_rc_vs_v5_9() {
    let mut m = mem();
    map4(&mut m, 0x40_0000, 0x8000, [7, 7, 7, 7]);
    let start = regs(CR0_PAGED, CR4_PAE, EFER_LONG | EFER_NXE, 0x1000);
    let mut rc = Tracker::new(p("v5.9-rc"), Flavour::Tdp, cpu(), &start);
    let d = write(&mut rc, CrReg::Cr4, CR4_PAE | CR4_SMAP, &m);
    assert_eq!(d.outcome, Outcome::NoTrigger);
    assert_eq!(d.trigger_bits, 0);
    let st = d.stale.expect("stale permission inputs");
    assert_eq!(st.names(), vec!["perm.smap"]);
    let diffs = compare_translations(
        &st.kept,
        &st.correct,
        rc.regs(),
        &cpu(),
        &m,
        &[(0x40_0000, Access::Read), (0x40_0000, Access::Fetch)],
    );
    assert_eq!(diffs.len(), 1);
    assert_eq!(diffs[0].kept, TranslationResult::Phys { gpa: 0x8000 });
    assert_eq!(
        diffs[0].correct,
        TranslationResult::PageFault { error_code: 1 }
    );
    // PKE is dropped as well.
    let d = write(&mut rc, CrReg::Cr4, CR4_PAE | CR4_SMAP | CR4_PKE, &m);
    assert_eq!(d.outcome, Outcome::NoTrigger);
    assert!(d.stale.unwrap().names().contains(&"pkru"));

    let mut fixed = Tracker::new(p("v5.9"), Flavour::Tdp, cpu(), &start);
    let d = write(&mut fixed, CrReg::Cr4, CR4_PAE | CR4_SMAP, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    assert_eq!(d.trigger_bits, CR4_SMAP);
    assert_eq!(d.context_changes, vec!["perm.smap".to_string()]);
    assert!(d.stale.is_none());
}

#[test]
fn cr4_writes_with_paging_off() {
    let m = mem();
    let start = regs(CR0_PROT, 0, 0, 0);
    for pol in policies() {
        let before_514 = policies().iter().position(|x| x.name == pol.name)
            < policies().iter().position(|x| x.name == "v5.14");
        // CR4.PAE with PG=0: under v5.1-rc3 TDP the PAE bit is in no role at all.
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &start);
        let d = write(&mut t, CrReg::Cr4, CR4_PAE, &m);
        assert_eq!(d.trigger_bits, CR4_PAE, "{}", pol.name);
        let want = if before_514 && pol.name != "v5.1-rc3" {
            Outcome::Reinit
        } else {
            Outcome::SkippedRoleUnchanged
        };
        assert_eq!(d.outcome, want, "{}", pol.name);
        assert_eq!(d.needless_reset, want == Outcome::Reinit, "{}", pol.name);
        // CR4.PSE with PG=0: ext.cr4_pse was recorded raw before v5.14.
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &start);
        let d = write(&mut t, CrReg::Cr4, CR4_PSE, &m);
        assert_eq!(d.trigger_bits, CR4_PSE, "{}", pol.name);
        if before_514 {
            assert_eq!(d.outcome, Outcome::Reinit, "{}", pol.name);
            assert!(d.needless_reset, "{}", pol.name);
        } else {
            assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged, "{}", pol.name);
            assert!(!d.needless_reset, "{}", pol.name);
        }
        assert!(d.stale.is_none());
    }
}

#[test]
fn cr0_wp_only_toggles() {
    let mut m = mem();
    map4(&mut m, 0x40_0000, 0x8000, [7, 7, 7, 5]);
    // PG=0: v6.4 ignores it entirely; v5.19 resets (and skips: PG=0 records no WP).
    let prot = regs(CR0_PROT, 0, 0, 0);
    let mut t = Tracker::new(p("v6.4"), Flavour::Tdp, cpu(), &prot);
    let d = write(&mut t, CrReg::Cr0, CR0_PROT | CR0_WP, &m);
    assert_eq!(d.outcome, Outcome::NoTrigger);
    assert_eq!(d.trigger_bits, 0);
    assert!(!d.roots_unloaded);
    let mut t = Tracker::new(p("v5.19"), Flavour::Tdp, cpu(), &prot);
    let d = write(&mut t, CrReg::Cr0, CR0_PROT | CR0_WP, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
    assert_eq!(d.trigger_bits, CR0_WP);
    assert!(d.roots_unloaded);
    // PG=1: v6.4 TDP re-inits without unloading; shadow resets.
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let mut t = Tracker::new(p("v6.4"), Flavour::Tdp, cpu(), &long);
    let d = write(&mut t, CrReg::Cr0, CR0_PAGED & !CR0_WP, &m);
    assert_eq!(d.outcome, Outcome::InitOnly);
    assert!(!d.roots_unloaded);
    assert_eq!(d.context_changes, vec!["perm.wp".to_string()]);
    assert!(!t.context().perm.wp);
    assert!(d.stale.is_none());
    let mut t = Tracker::new(p("v6.4"), Flavour::Shadow, cpu(), &long);
    let d = write(&mut t, CrReg::Cr0, CR0_PAGED & !CR0_WP, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    assert!(d.roots_unloaded);
    // WP together with another bit is not "WP-only".
    let mut t = Tracker::new(p("v6.4"), Flavour::Tdp, cpu(), &prot);
    let d = write(&mut t, CrReg::Cr0, CR0_PROT | CR0_WP | CR0_TS, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
}

#[test]
fn efer_lme_host_write_v5_18() {
    let mut m = mem();
    m.write_u64(0x1000, 0x2001);
    let pae = apply_write(
        CrReg::Cr0,
        &regs(CR0_PROT, CR4_PAE, 0, 0x1000),
        CR0_PAGED,
        &cpu(),
        &m,
    )
    .unwrap();
    for (name, trig) in [("v5.16", false), ("v5.18", true), ("v6.14", true)] {
        let mut t = Tracker::new(p(name), Flavour::Tdp, cpu(), &pae);
        // The guest may not change LME with paging on.
        let d = t.apply(
            &Input::Efer {
                old: 0,
                new: EFER_LME,
            },
            &pae,
            &m,
        );
        assert_eq!(d.outcome, Outcome::Gp);
        assert_eq!(d.gp, Some(Gp::EferLmeChangeWithPaging));
        // The host may.
        let after = ControlRegs {
            efer: EFER_LME,
            ..pae
        };
        let d = t.apply(
            &Input::EferHost {
                old: 0,
                new: EFER_LME,
            },
            &after,
            &m,
        );
        if trig {
            assert_eq!(d.trigger_bits, EFER_LME, "{name}");
            assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged, "{name}");
            assert!(d.roots_unloaded);
        } else {
            assert_eq!(d.trigger_bits, 0, "{name}");
            assert_eq!(d.outcome, Outcome::NoTrigger, "{name}");
            assert!(!d.roots_unloaded);
        }
        assert!(d.stale.is_none(), "LMA unchanged: still PAE paging");
    }
}

#[test]
fn efer_nx_toggle_resets_everywhere() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    for pol in policies() {
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &long);
        let d = write(&mut t, CrReg::Efer, EFER_LONG | EFER_NXE, &m);
        assert_eq!(d.trigger_bits, EFER_NXE, "{}", pol.name);
        assert_eq!(d.outcome, Outcome::Reinit, "{}", pol.name);
        assert!(t.context().perm.nx && t.context().rsvd.nx);
    }
}

fn lookup(d: &Decision) -> (bool, Option<RootSlot>) {
    let l = d.root_cache.expect("CR3 load consults the root cache");
    (l.hit, l.slot)
}

#[test]
fn cr3_prev_roots_v6_14_shadow() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let mut t = Tracker::new(p("v6.14"), Flavour::Shadow, cpu(), &long);
    let d = write(&mut t, CrReg::Cr3, 0x5000, &m);
    assert_eq!(d.outcome, Outcome::NewPgd);
    assert_eq!(lookup(&d), (false, None));
    assert_eq!(d.root_cache.unwrap().role_word, t.root_role().0);
    assert_eq!(d.tlb_flush, TlbFlush::Current);
    let d = write(&mut t, CrReg::Cr3, 0x1000, &m);
    assert_eq!(lookup(&d), (true, Some(RootSlot::Prev(0))));
    let d = write(&mut t, CrReg::Cr3, 0x9000, &m);
    assert_eq!(lookup(&d), (false, None));
    let d = write(&mut t, CrReg::Cr3, 0x5000, &m);
    assert_eq!(lookup(&d), (true, Some(RootSlot::Prev(1))));
    assert_eq!(t.roots().len(), 3);
    // A reset empties the cache.
    let d = write(&mut t, CrReg::Cr4, CR4_PAE | CR4_SMEP, &m);
    assert!(d.roots_unloaded);
    assert_eq!(t.roots().len(), 1);
    let d = write(&mut t, CrReg::Cr3, 0x1000, &m);
    assert_eq!(lookup(&d), (false, None));
    // Same CR3 value: no kvm_mmu_new_pgd, still a flush.
    let d = write(&mut t, CrReg::Cr3, 0x1000, &m);
    assert_eq!(d.outcome, Outcome::NoTrigger);
    assert!(d.root_cache.is_none());
    assert_eq!(d.tlb_flush, TlbFlush::Current);
}

#[test]
fn cr3_tdp_current_root_and_pcid_noflush() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE | CR4_PCIDE, EFER_LONG, 0x1000);
    let mut t = Tracker::new(p("v6.14"), Flavour::Tdp, cpu(), &long);
    // Direct roots ignore the PGD: the current root is reused.
    let d = write(&mut t, CrReg::Cr3, 0x5001, &m);
    assert_eq!(lookup(&d), (true, Some(RootSlot::Current)));
    assert_eq!(d.tlb_flush, TlbFlush::Guest);
    let d = write(&mut t, CrReg::Cr3, CR3_NOFLUSH | 0x6002, &m);
    assert_eq!(d.tlb_flush, TlbFlush::None);
    assert_eq!(t.regs().cr3, 0x6002);
}

#[test]
fn cr3_legacy_fast_switch() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    // 47c42e6b4192's motivation: before it, a direct root's page had cr4_pae=0 while the
    // required role had CR4.PAE=1, so cached TDP roots never matched.
    for (name, second_hit) in [
        ("v4.20", false),
        ("v5.0", false),
        ("v5.1-rc3", true),
        ("v5.18", true),
    ] {
        let mut t = Tracker::new(p(name), Flavour::Tdp, cpu(), &long);
        let d = write(&mut t, CrReg::Cr3, 0x5000, &m);
        assert_eq!(lookup(&d), (false, None), "{name}");
        let d = write(&mut t, CrReg::Cr3, 0x1000, &m);
        assert_eq!(d.root_cache.unwrap().hit, second_hit, "{name}");
        if second_hit {
            assert_eq!(lookup(&d).1, Some(RootSlot::Prev(0)));
        }
    }
    // No fast switch for a 32-bit guest before v5.19.
    let p32 = regs(CR0_PAGED, 0, 0, 0x1000);
    let mut t = Tracker::new(p("v5.18"), Flavour::Shadow, cpu(), &p32);
    let d = write(&mut t, CrReg::Cr3, 0x5000, &m);
    assert!(d.root_cache.unwrap().not_attempted);
    // v5.19+: the PAE root of a 32-bit shadow guest is freed first (uncacheable).
    let mut t = Tracker::new(p("v5.19"), Flavour::Shadow, cpu(), &p32);
    let d = write(&mut t, CrReg::Cr3, 0x5000, &m);
    let l = d.root_cache.unwrap();
    assert!(l.freed_uncacheable_current && !l.hit);
    let d = write(&mut t, CrReg::Cr3, 0x1000, &m);
    assert!(!d.root_cache.unwrap().hit);
}

#[test]
fn init_smm_cpuid() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    // INIT from long mode: v5.14+ resets (0aa1837533e5); before, the context goes stale.
    for (name, resets) in [("v5.9", false), ("v5.14", true), ("v6.14", true)] {
        let mut t = Tracker::new(p(name), Flavour::Shadow, cpu(), &long);
        let after = long.after_init();
        let d = t.apply(&Input::Init, &after, &m);
        if resets {
            assert_eq!(d.outcome, Outcome::Reinit, "{name}");
            assert_eq!(d.trigger_bits, CR0_PG);
            assert!(d.stale.is_none());
        } else {
            assert_eq!(d.outcome, Outcome::NoTrigger, "{name}");
            let st = d.stale.expect("64-bit context kept after INIT");
            assert_eq!(st.kept.root_level, 4);
            assert_eq!(st.correct.walker, WalkerKind::None);
        }
    }
    // SMM entry/exit always reset and change the smm field.
    let mut t = Tracker::new(p("v6.14"), Flavour::Tdp, cpu(), &long);
    let smm = ControlRegs { smm: true, ..long };
    let d = t.apply(&Input::SmmEnter, &smm, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    assert_eq!((d.old_root_role.smm(), d.new_root_role.smm()), (0, 1));
    assert!(!d.needless_reset);
    let d = t.apply(&Input::SmmExit, &long, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    assert_eq!(t.root_role().smm(), 0);
    // CPUID: v5.14+ always re-initialises; before, only if the key changes.
    let mut t = Tracker::new(p("v5.9"), Flavour::Tdp, cpu(), &long);
    assert_eq!(
        t.apply(&Input::SetCpuid, &long, &m).outcome,
        Outcome::SkippedRoleUnchanged
    );
    let no_gb = CpuModel {
        gbpages: false,
        ..cpu()
    };
    let d = t.set_cpuid(no_gb, &long, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
    assert_eq!(d.stale.unwrap().names(), vec!["rsvd.gbpages"]);
    let d = t.set_cpuid(
        CpuModel {
            maxphyaddr: 40,
            ..no_gb
        },
        &long,
        &m,
    );
    assert_eq!(d.outcome, Outcome::Reinit, "ext.maxphyaddr changed");
    let mut t = Tracker::new(p("v4.20"), Flavour::Tdp, cpu(), &long);
    let d = t.set_cpuid(
        CpuModel {
            maxphyaddr: 40,
            ..cpu()
        },
        &long,
        &m,
    );
    assert_eq!(
        d.outcome,
        Outcome::SkippedRoleUnchanged,
        "v4.20 has no ext.maxphyaddr"
    );
    assert!(d.stale.unwrap().names().contains(&"rsvd.maxphyaddr"));
    for name in ["v5.14", "v6.4", "v6.14"] {
        let mut t = Tracker::new(p(name), Flavour::Tdp, cpu(), &long);
        let d = t.apply(&Input::SetCpuid, &long, &m);
        assert_eq!(d.outcome, Outcome::Reinit, "{name}");
        let d = t.set_cpuid(no_gb, &long, &m);
        assert_eq!(d.outcome, Outcome::Reinit, "{name}");
        assert!(d.stale.is_none());
    }
}

#[test]
fn gp_inputs_change_nothing() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let mut t = Tracker::new(p("v6.14"), Flavour::Tdp, cpu(), &long);
    let role = t.cpu_role();
    let d = t.apply(
        &Input::Cr4 {
            old: CR4_PAE,
            new: 0,
        },
        &long,
        &m,
    );
    assert_eq!(d.outcome, Outcome::Gp);
    assert_eq!(d.gp, Some(Gp::Cr4ClearPaeInLongMode));
    assert!(!d.roots_unloaded);
    assert_eq!(t.cpu_role(), role);
    let d = t.apply(
        &Input::Cr3 {
            old: 0x1000,
            new: 1 << 50,
        },
        &long,
        &m,
    );
    assert_eq!(d.outcome, Outcome::Gp);
}

/// Reset trigger masks per policy, written from sheet §5.9 independently of the catalogue.
#[test]
fn reset_trigger_bits_per_policy() {
    let cr0_bits = [
        CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG,
    ];
    let cr4_bits = [
        CR4_VME,
        CR4_PVI,
        CR4_TSD,
        CR4_DE,
        CR4_PSE,
        CR4_PAE,
        CR4_MCE,
        CR4_PGE,
        CR4_PCE,
        CR4_OSFXSR,
        CR4_OSXMMEXCPT,
        CR4_UMIP,
        CR4_LA57,
        CR4_VMXE,
        CR4_SMXE,
        CR4_FSGSBASE,
        CR4_PCIDE,
        CR4_OSXSAVE,
        CR4_SMEP,
        CR4_SMAP,
        CR4_PKE,
    ];
    let efer_bits = [EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE, EFER_SVME];
    let old4 = CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE;
    let rc4 = CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP;
    let v514 = old4 | CR4_LA57;
    let v516 = CR4_PSE | CR4_PAE | CR4_LA57 | CR4_SMEP | CR4_SMAP | CR4_PKE;
    // (policy, cr4 mask, PCIDE 1->0 resets, efer mask)
    let table = [
        ("v4.20", old4, true, EFER_NXE),
        ("v5.0", old4, true, EFER_NXE),
        ("v5.1-rc3", old4, true, EFER_NXE),
        ("v5.1", old4, true, EFER_NXE),
        ("v5.7", old4, true, EFER_NXE),
        ("v5.9-rc", rc4, true, EFER_NXE),
        ("v5.9", old4, true, EFER_NXE),
        ("v5.14", v514, true, EFER_NXE),
        ("v5.16", v516, false, EFER_NXE),
        ("v5.18", v516, false, EFER_NXE | EFER_LME),
        ("v5.19", v516, false, EFER_NXE | EFER_LME),
        ("v6.4", v516, false, EFER_NXE | EFER_LME),
        ("v6.14", v516, false, EFER_NXE | EFER_LME),
    ];
    assert_eq!(table.len(), policies().len());
    for ((name, cr4m, pcide_clear, eferm), pol) in table.iter().zip(policies()) {
        assert_eq!(pol.name, *name);
        for b in cr0_bits {
            let want = if b & (CR0_PG | CR0_WP) != 0 { b } else { 0 };
            assert_eq!(
                pol.reset_trigger(CrReg::Cr0, 0, b),
                want,
                "{name} CR0 {b:#x}"
            );
            assert_eq!(
                pol.reset_trigger(CrReg::Cr0, b, 0),
                want,
                "{name} CR0 {b:#x} clear"
            );
        }
        for b in cr4_bits {
            let want = b & cr4m;
            assert_eq!(
                pol.reset_trigger(CrReg::Cr4, 0, b),
                want,
                "{name} CR4 set {b:#x}"
            );
            let want_clear = if b == CR4_PCIDE && *pcide_clear {
                b
            } else {
                want
            };
            assert_eq!(
                pol.reset_trigger(CrReg::Cr4, b, 0),
                want_clear,
                "{name} CR4 clear {b:#x}"
            );
        }
        for b in efer_bits {
            assert_eq!(
                pol.reset_trigger(CrReg::Efer, 0, b),
                b & eferm,
                "{name} EFER {b:#x}"
            );
        }
        assert_eq!(
            pol.triggers.cr0_wp_only_special,
            matches!(*name, "v6.4" | "v6.14")
        );
    }
}

/// The same masks seen through the tracker: CR4 toggles that are legal in long mode.
#[test]
fn tracker_reports_trigger_bits() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG | EFER_NXE, 0x1000);
    for pol in policies() {
        for b in [CR4_PSE, CR4_PGE, CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_OSXSAVE] {
            let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &long);
            let d = write(&mut t, CrReg::Cr4, CR4_PAE | b, &m);
            assert_eq!(
                d.trigger_bits,
                pol.reset_trigger(CrReg::Cr4, CR4_PAE, CR4_PAE | b),
                "{} {b:#x}",
                pol.name
            );
            assert_eq!(
                d.trigger_bits == 0,
                d.outcome == Outcome::NoTrigger,
                "{} {b:#x}",
                pol.name
            );
        }
    }
}

#[test]
fn policy_catalogue() {
    let names: Vec<_> = policies().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "v4.20", "v5.0", "v5.1-rc3", "v5.1", "v5.7", "v5.9-rc", "v5.9", "v5.14", "v5.16",
            "v5.18", "v5.19", "v6.4", "v6.14"
        ]
    );
    for pol in policies() {
        assert!(
            !pol.summary.is_empty() && !pol.commits.is_empty(),
            "{}",
            pol.name
        );
    }
    assert!(policy("5.1-rc3").is_some());
    assert!(policy("v9.9").is_none());
    assert!(p("v5.1-rc3").commits.contains(&"47c42e6b4192"));
}

#[test]
fn set_sregs() {
    let mut m = mem();
    m.write_u64(0x1000, 0x2001);
    let prot = regs(CR0_PROT, 0, 0, 0);
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    // The VMM loads long-mode state directly: a reset that re-initialises.
    let mut t = Tracker::new(p("v6.14"), Flavour::Tdp, cpu(), &prot);
    let d = t.apply(&Input::SetSregs, &long, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    assert_eq!(t.context().root_level, 4);
    // Same registers again: nothing.
    let d = t.apply(&Input::SetSregs, &long, &m);
    assert_eq!(d.outcome, Outcome::NoTrigger);
    // In PAE paging the PDPTEs are reloaded, which always resets.
    let mut pae = regs(CR0_PAGED, CR4_PAE, 0, 0x1000);
    pae.pdptrs = load_pdptrs(0x1000, &m, 46).unwrap();
    let d = t.apply(&Input::SetSregs, &pae, &m);
    assert_eq!(d.outcome, Outcome::Reinit);
    let d = t.apply(&Input::SetSregs, &pae, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
    assert!(d.roots_unloaded);
}

#[test]
fn seed_bug_clearing_pae_keeps_3_level_walker() {
    let m = seed_memory();
    let c = cpu();
    let pae = apply_write(CrReg::Cr4, &seed_start(), CR4_PSE | CR4_PAE, &c, &m).unwrap();
    let mut t = Tracker::new(p("v5.1-rc3"), Flavour::Tdp, c, &pae);
    assert_eq!(t.context().walker, WalkerKind::Paging64Pae);
    let d = write(&mut t, CrReg::Cr4, CR4_PSE, &m);
    assert_eq!(d.outcome, Outcome::SkippedRoleUnchanged);
    let st = d.stale.unwrap();
    assert_eq!((st.kept.root_level, st.correct.root_level), (3, 2));
    let diffs = compare_translations(
        &st.kept,
        &st.correct,
        t.regs(),
        &c,
        &m,
        &[(0x5000, Access::Read)],
    );
    assert_eq!(diffs[0].kept, TranslationResult::Phys { gpa: 0x7000 });
    assert_eq!(diffs[0].correct, TranslationResult::Phys { gpa: 0x9000 });
}

#[test]
fn legacy_direct_roots_ignore_cr3_from_v5_7() {
    let m = mem();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    for (name, third_hit) in [("v5.1", false), ("v5.7", true)] {
        let mut t = Tracker::new(p(name), Flavour::Tdp, cpu(), &long);
        write(&mut t, CrReg::Cr3, 0x5000, &m);
        // A new CR3: only a direct root that ignores the PGD can be reused.
        let d = write(&mut t, CrReg::Cr3, 0x9000, &m);
        assert_eq!(d.root_cache.unwrap().hit, third_hit, "{name}");
    }
}

/// SDM MOV CRn (64-bit mode exceptions) and `kvm_set_cr0`: clearing CR0.PG in 64-bit code is
/// #GP; in compatibility mode it leaves long mode. CS.L comes with the write.
#[test]
fn clearing_pg_in_64_bit_mode_is_gp_for_every_policy() {
    let m = mem();
    let long = regs(
        CR0_PE | CR0_ET | CR0_PG,
        CR4_PAE,
        EFER_LME | EFER_LMA,
        0x1000,
    );
    let input = Input::Cr0 {
        old: long.cr0,
        new: CR0_PE | CR0_ET,
    };
    for pol in policies() {
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &long);
        let ctx = WriteContext {
            cs_l: Some(true),
            host_initiated: false,
        };
        let d = t.apply_with(&input, &ctx, &long, &m);
        assert_eq!(d.gp, Some(Gp::Cr0ClearPgIn64BitMode), "{}", pol.name);
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &long);
        let compat = WriteContext {
            cs_l: Some(false),
            host_initiated: false,
        };
        let after = apply_write(CrReg::Cr0, &long, CR0_PE | CR0_ET, t.cpu(), &m).unwrap();
        assert_eq!(
            t.apply_with(&input, &compat, &after, &m).gp,
            None,
            "{}",
            pol.name
        );
    }
}

/// Nested NPT's guest_mmu (sheet §4.5): L1's CR4/EFER with CR0 forced to PG and CR4.PKE
/// cleared; L2 active; rooted at the host's NPT level.
#[test]
fn shadow_npt_roles_and_context() {
    let m = mem();
    let l1 = regs(CR0_PAGED, CR4_PAE | CR4_PKE | CR4_SMEP, EFER_LONG, 0x1000);
    for name in ["v5.9", "v5.19", "v6.14"] {
        let pol = p(name);
        let roles = derive_roles(pol, Flavour::ShadowNpt, &l1, &cpu());
        let base = roles.cpu_role.base();
        assert_eq!(
            base.get(pol.layout, Field::Cr0Wp),
            Some(0),
            "{name}: NPT ignores WP"
        );
        assert!(base.guest_mode(), "{name}");
        assert_eq!(roles.root_role.level(), tdp_level(&cpu()), "{name}");
        assert_eq!(
            roles.cpu_role.ext().get(pol.layout, Field::Cr4Pke),
            Some(0),
            "{name}: PKE cleared"
        );
        let t = Tracker::new(pol, Flavour::ShadowNpt, cpu(), &l1);
        let c = t.context();
        assert_eq!((c.root_level, c.perm.wp, c.pkru), (4, false, false));
        assert!(c.perm.smep && t.stale().is_none());
    }
    // ef318b9edf66 (v5.14): before it the walker took SMEP from the vCPU (L2's CR4).
    let l1_no_smep = ControlRegs { cr4: CR4_PAE, ..l1 };
    let l2 = regs(CR0_PAGED, CR4_PAE | CR4_SMEP, EFER_LONG, 0x2000);
    for (name, stale) in [("v5.9", true), ("v5.14", false)] {
        let mut t = Tracker::new(p(name), Flavour::ShadowNpt, cpu(), &l1_no_smep);
        let input = Input::NestedNptInit {
            vcpu: l2,
            set_nested_state: false,
        };
        let d = t.apply(&input, &l1_no_smep, &m);
        assert_eq!(d.stale.map(|s| s.names()), stale.then(|| vec!["perm.smep"]));
    }
}

/// 84e5ffd045f3 (v5.19): with 5-level host NPT over L1's 4-level tables, the root is marked
/// passthrough; before it, and for a 5-level L1, it is not.
#[test]
fn shadow_npt_passthrough_root() {
    let five = CpuModel {
        la57: true,
        maxphyaddr: 52,
        ..cpu()
    };
    let l1 = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let l1_57 = regs(CR0_PAGED, CR4_PAE | CR4_LA57, EFER_LONG, 0x1000);
    for (name, regs, cpu, want) in [
        ("v5.19", &l1, five, Some(1)),
        ("v6.14", &l1, five, Some(1)),
        ("v6.14", &l1_57, five, Some(0)),
        ("v6.14", &l1, cpu(), Some(0)),
        ("v5.18", &l1, five, None),
    ] {
        let pol = p(name);
        let r = derive_roles(pol, Flavour::ShadowNpt, regs, &cpu).root_role;
        assert_eq!(r.level(), tdp_level(&cpu), "{name}");
        assert_eq!(r.get(pol.layout, Field::Passthrough), want, "{name}");
    }
}

fn ept_init(t: &mut Tracker, eptp: Eptp, m: &FlatMemory) -> Decision {
    let after = *t.regs();
    t.apply(&Input::NestedEptInit { eptp: eptp.0 }, &after, m)
}

/// Nested EPT's guest_mmu (sheet §4.6): roles from the EPTP alone (level, A/D), guest_mode=1,
/// root role = CPU role's base; the v5.1-rc3..v5.9 marker cr0_wp=1 + smap_andnot_wp=1
/// (47c42e6b4192, gone with 00a669780ffa in v5.14); CR0/CR4/EFER play no part.
#[test]
fn shadow_ept_roles_come_from_the_eptp() {
    let four = Eptp::new(0x10_0000, 4, false);
    let five_ad = Eptp::new(0x10_0000, 5, true);
    assert_eq!((four.levels(), five_ad.levels()), (Some(4), Some(5)));
    assert!(five_ad.ad_enabled() && !four.ad_enabled());
    let l1 = regs(CR0_PAGED | CR0_WP, CR4_PAE | CR4_SMEP, EFER_LONG, four.0);
    for (name, marker) in [
        ("v4.20", false),
        ("v5.0", false),
        ("v5.1-rc3", true),
        ("v5.9", true),
        ("v5.14", false),
        ("v6.14", false),
    ] {
        let pol = p(name);
        let r = derive_roles(pol, Flavour::ShadowEpt, &l1, &cpu());
        let base = r.cpu_role.base();
        assert_eq!(r.root_role, base, "{name}");
        assert_eq!(base.level(), 4, "{name}");
        assert!(base.guest_mode() && !base.direct(), "{name}");
        assert_eq!(base.get(pol.layout, Field::AdDisabled), Some(1), "{name}");
        assert_eq!(base.cr0_wp(), marker, "{name}");
        assert_eq!(
            base.get(pol.layout, Field::SmapAndnotWp),
            Some(u32::from(marker)),
            "{name}"
        );
        // Another L1 CR0/CR4/EFER: the same role.
        let other = regs(CR0_PAGED, CR4_PAE, EFER_LONG, four.0);
        assert_eq!(derive_roles(pol, Flavour::ShadowEpt, &other, &cpu()), r);
        let r5 = derive_roles(
            pol,
            Flavour::ShadowEpt,
            &ControlRegs {
                cr3: five_ad.0,
                ..l1
            },
            &cpu(),
        );
        assert_eq!(r5.cpu_role.base().level(), 5, "{name}");
        assert_eq!(
            r5.cpu_role.base().get(pol.layout, Field::AdDisabled),
            Some(0)
        );
    }
}

/// The first VMLAUNCH with EPT always initialises guest_mmu; the same EPTP again returns
/// early but still loads the pgd (kvm_mmu_new_pgd runs unconditionally); a new EPTP of the
/// same format returns early too; an invalid walk length fails VM-entry.
#[test]
fn shadow_ept_init_and_new_pgd() {
    let m = mem();
    let a = Eptp::new(0x10_0000, 4, true);
    let b = Eptp::new(0x20_0000, 4, true);
    let l1 = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    for pol in policies() {
        let mut t = Tracker::new(pol, Flavour::ShadowEpt, cpu(), &l1);
        let d = ept_init(&mut t, a, &m);
        assert_eq!(d.outcome, Outcome::Reinit, "{}", pol.name);
        assert!(d.root_cache.is_some() && d.stale.is_none(), "{}", pol.name);
        let c = t.context();
        assert_eq!(
            (c.walker, c.root_level, c.ept_ad),
            (WalkerKind::Ept, 4, true)
        );
        assert_eq!(t.regs().cr3, a.0);
        let d = ept_init(&mut t, b, &m);
        assert_eq!(d.outcome, Outcome::NewPgd, "{}", pol.name);
        assert_eq!(d.root_cache.map(|l| l.pgd), Some(b.0));
        // L1's own CR3 write does not move nested EPT's pgd.
        let d = write(&mut t, CrReg::Cr3, 0x3000, &m);
        assert!(d.root_cache.is_none() && d.stale.is_none(), "{}", pol.name);
        assert_eq!(t.regs().cr3, b.0);
        let bad = Eptp(b.0 & !0x38 | (1 << 3));
        let d = ept_init(&mut t, bad, &m);
        assert_eq!(d.outcome, Outcome::NoTrigger);
        assert_eq!(t.regs().cr3, b.0, "{}", pol.name);
    }
}

/// Sheet §6.2 #13: before v5.7 the compare key masked `level`, so L1 switching L2's EPT from
/// 4 to 5 levels returned early and kept the 4-level EPT walker; from v5.7 it re-initialises.
#[test]
fn shadow_ept_level_switch_and_the_masked_key() {
    let m = mem();
    let four = Eptp::new(0x10_0000, 4, false);
    let five = Eptp::new(0x10_0000, 5, false);
    let l1 = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    for pol in policies() {
        let masked = pol.compare == CompareKey::MaskedBase;
        let mut t = Tracker::new(pol, Flavour::ShadowEpt, cpu(), &l1);
        ept_init(&mut t, four, &m);
        let d = ept_init(&mut t, five, &m);
        assert_eq!(d.stale.is_some(), masked, "{}", pol.name);
        if masked {
            let st = d.stale.unwrap();
            assert_eq!((st.kept.root_level, st.correct.root_level), (4, 5));
        }
        // Back to 4 levels: the masked key again returns early, now with the right level.
        let d = ept_init(&mut t, four, &m);
        assert!(d.stale.is_none(), "{}", pol.name);
    }
}

/// The nested walker (sheet §4.7): compared on the CPU role only, walker chosen from the
/// vCPU's (L2's) registers, no roots; a nested VM-entry loading L2's registers runs
/// kvm_init_mmu without unloading.
#[test]
fn nested_walker_follows_l2_without_roots() {
    let m = mem();
    let l2_long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let l2_32 = regs(CR0_PAGED, CR4_PSE, 0, 0x2000);
    for pol in policies() {
        let mut t = Tracker::new(pol, Flavour::NestedWalker, cpu(), &l2_long);
        assert!(t.roots().is_empty() && t.cpu_role().base().guest_mode());
        assert_eq!(t.root_role(), PageRole::default());
        assert_eq!(
            (t.context().walker, t.context().shadow_root_level),
            (WalkerKind::Paging64, 0)
        );
        let d = t.apply(
            &Input::NestedLoadCr3 {
                leaves_nested_ept: None,
            },
            &l2_32,
            &m,
        );
        assert_eq!(d.outcome, Outcome::InitOnly, "{}", pol.name);
        assert!(!d.is_reset() && d.context_changes.contains(&"walker".to_string()));
        assert!(d.stale.is_none() && d.root_cache.is_none());
        assert_eq!(t.context().walker, WalkerKind::Paging32);
        // A CR3 load: no root cache behind it.
        let d = write(&mut t, CrReg::Cr3, 0x3000, &m);
        assert!(
            d.root_cache.is_none() && t.roots().is_empty(),
            "{}",
            pol.name
        );
    }
}

/// The nested walker's role per era: the common role (no level) before v5.14, so v5.1-rc3's
/// loses CR4.PAE as its TDP role did (47c42e6b4192) and v5.1's ext.cr4_pae restores it; from
/// v5.14 the guest's level is in it (`kvm_calc_nested_mmu_role`), from v5.19 it is
/// `kvm_calc_cpu_role`.
#[test]
fn nested_walker_roles_per_era() {
    let p32 = regs(CR0_PAGED, CR4_PSE, 0, 0x1000);
    let pae = regs(CR0_PAGED, CR4_PSE | CR4_PAE, 0, 0x1000);
    for (name, same_key, level) in [
        ("v4.20", false, 0),
        ("v5.1-rc3", true, 0),
        ("v5.1", false, 0),
        ("v5.14", false, 2),
        ("v6.14", false, 2),
    ] {
        let pol = p(name);
        let key = |r: &ControlRegs| {
            compare_key_for(
                pol,
                Flavour::NestedWalker,
                &derive_roles(pol, Flavour::NestedWalker, r, &cpu()),
            )
        };
        assert_eq!(key(&p32) == key(&pae), same_key, "{name}");
        let role = derive_roles(pol, Flavour::NestedWalker, &p32, &cpu()).cpu_role;
        assert_eq!(role.base().level(), level, "{name}");
        assert!(role.base().guest_mode(), "{name}");
    }
}

/// Every flavour's name parses back to it, and only shadow EPT (whose input is an EPTP) is not
/// evaluated for recordings; only the nested walker has no roots.
#[test]
fn flavour_names_and_capabilities() {
    for f in Flavour::ALL {
        assert_eq!(Flavour::parse(f.name()), Some(f));
        assert_eq!(f.evaluates_recordings(), f != Flavour::ShadowEpt);
        assert_eq!(f.has_roots(), f != Flavour::NestedWalker);
    }
    assert_eq!(Flavour::parse("nested-ept"), Some(Flavour::ShadowEpt));
    assert_eq!(Flavour::parse("l2"), None);
}

/// Sheet §6.2 #7, as its commit (ad7dc69aeb23, fixing 14c07ad89f4d) tells it: L1 (long mode,
/// TDP root_mmu) runs an L2 with nested EPT; at each VM-exit root_mmu becomes current again
/// while the vCPU still holds L2's CR3, and nested_vmx_load_cr3 loads L1's CR3 through the
/// fast switch. With the bug (v4.20) L1's root is filed under L2's CR3 and never found again.
/// No released policy shows it: before 47c42e6b4192 (v5.1-rc3) direct roots were filed with
/// cr4_pae=0 and never matched a long-mode role anyway, so v4.20 and v5.0 miss alike; from
/// v5.1-rc3 the second exit hits (v5.19+ keep the root current). v5.1-rc3 with the bug put
/// back misses like v4.20. Only the cache differs: no context goes stale.
#[test]
fn nested_ept_vm_exit_root_cache() {
    let m = mem();
    let l1 = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let exit = Input::NestedLoadCr3 {
        leaves_nested_ept: Some(0x7000),
    };
    let hits = |pol: &'static Policy| -> Vec<bool> {
        let mut t = Tracker::new(pol, Flavour::Tdp, cpu(), &l1);
        (0..3)
            .map(|_| {
                let d = t.apply(&exit, &l1, &m);
                assert!(d.stale.is_none() && !d.is_reset(), "{}", pol.name);
                d.root_cache.expect("the exit loads L1's CR3").hit
            })
            .collect()
    };
    for pol in policies() {
        let want = match pol.name {
            "v4.20" | "v5.0" => [false, false, false],
            _ if pol.root_cache == RootCacheRule::KeepCurrent => [true, true, true],
            _ => [false, true, true],
        };
        assert_eq!(hits(pol), want, "{}", pol.name);
    }
    let rc3_with_the_bug: &'static Policy = Box::leak(Box::new(Policy {
        root_cache: RootCacheRule::Legacy64BitOnly {
            direct_ignores_pgd: false,
            files_current_under_vcpu_cr3: true,
        },
        ..*p("v5.1-rc3")
    }));
    assert_eq!(hits(rc3_with_the_bug), [false, false, false]);
}
