//! Role layouts field by field (sheet §1, §2) and role derivation per policy (§3, §4, §6.1).

mod common;
use common::*;
use mmu::bits::*;
use mmu::roles::layout::*;
use mmu::*;

fn base(
    gpte: &'static str,
    nx: &'static str,
    extra: &[(&'static str, u8, u8)],
) -> Vec<(&'static str, u8, u8)> {
    let mut v = vec![
        ("level", 0, 4),
        (gpte, 4, 1),
        ("quadrant", 5, 2),
        ("direct", 7, 1),
        ("access", 8, 3),
        ("invalid", 11, 1),
        (nx, 12, 1),
        ("cr0_wp", 13, 1),
        ("smep_andnot_wp", 14, 1),
        ("smap_andnot_wp", 15, 1),
        ("ad_disabled", 16, 1),
        ("guest_mode", 17, 1),
    ];
    v.extend_from_slice(extra);
    v.push(("smm", 24, 8));
    v
}

fn ext(names: &[&'static str], maxphy: Option<u8>) -> Vec<(&'static str, u8, u8)> {
    let mut v: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u8, 1))
        .collect();
    if let Some(at) = maxphy {
        v.push(("ext.maxphyaddr", at, 6));
    }
    v
}

/// The expected layouts, written from the sheet independently of the code.
#[allow(clippy::type_complexity)]
fn expected() -> Vec<(
    &'static str,
    Vec<(&'static str, u8, u8)>,
    Vec<(&'static str, u8, u8)>,
)> {
    let e420 = [
        "ext.valid",
        "ext.execonly",
        "ext.cr0_pg",
        "ext.cr4_pse",
        "ext.cr4_pke",
        "ext.cr4_smap",
        "ext.cr4_smep",
        "ext.cr4_la57",
    ];
    let e51 = [
        "ext.valid",
        "ext.execonly",
        "ext.cr0_pg",
        "ext.cr4_pae",
        "ext.cr4_pse",
        "ext.cr4_pke",
        "ext.cr4_smap",
        "ext.cr4_smep",
        "ext.cr4_la57",
    ];
    let e57 = [
        "ext.valid",
        "ext.execonly",
        "ext.cr0_pg",
        "ext.cr4_pae",
        "ext.cr4_pse",
        "ext.cr4_pke",
        "ext.cr4_smap",
        "ext.cr4_smep",
    ];
    let e516 = [
        "ext.valid",
        "ext.execonly",
        "ext.cr0_pg",
        "ext.cr4_pae",
        "ext.cr4_pse",
        "ext.cr4_pke",
        "ext.cr4_smap",
        "ext.cr4_smep",
        "ext.cr4_la57",
        "ext.efer_lma",
    ];
    let e519 = [
        "ext.valid",
        "ext.execonly",
        "ext.cr4_pse",
        "ext.cr4_pke",
        "ext.cr4_smap",
        "ext.cr4_smep",
        "ext.cr4_la57",
        "ext.efer_lma",
    ];
    vec![
        ("v4.20", base("cr4_pae", "nxe", &[]), ext(&e420, None)),
        ("v5.0", base("cr4_pae", "nxe", &[]), ext(&e420, Some(8))),
        (
            "v5.1-rc3",
            base("gpte_is_8_bytes", "nxe", &[]),
            ext(&e420, Some(8)),
        ),
        (
            "v5.1",
            base("gpte_is_8_bytes", "nxe", &[]),
            ext(&e51, Some(9)),
        ),
        (
            "v5.7",
            base("gpte_is_8_bytes", "nxe", &[]),
            ext(&e57, Some(8)),
        ),
        (
            "v5.14",
            base("gpte_is_8_bytes", "efer_nx", &[]),
            ext(&e51, None),
        ),
        (
            "v5.16",
            base("gpte_is_8_bytes", "efer_nx", &[]),
            ext(&e516, None),
        ),
        (
            "v5.17",
            base("has_4_byte_gpte", "efer_nx", &[]),
            ext(&e516, None),
        ),
        (
            "v5.19",
            base("has_4_byte_gpte", "efer_nx", &[("passthrough", 18, 1)]),
            ext(&e519, None),
        ),
        (
            "v6.14",
            base(
                "has_4_byte_gpte",
                "efer_nx",
                &[("passthrough", 18, 1), ("is_mirror", 19, 1)],
            ),
            ext(&e519, None),
        ),
    ]
}

#[test]
fn every_field_of_every_layout() {
    let exp = expected();
    assert_eq!(exp.len(), LAYOUTS.len());
    for (layout, (name, b, e)) in LAYOUTS.iter().zip(exp) {
        assert_eq!(layout.name, name);
        for (word, defs, table) in [(Word::Base, layout.base, &b), (Word::Ext, layout.ext, &e)] {
            let got: Vec<_> = defs.iter().map(|d| (d.name, d.shift, d.width)).collect();
            assert_eq!(&got, table, "{name} {word:?}");
            // Each field alone: set to all-ones, read back, and check the word and the
            // field-by-field print.
            for d in defs {
                let max = ((1u64 << d.width) - 1) as u32;
                let w = layout.set(word, 0, d.field, max);
                assert_eq!(w, max << d.shift, "{name} {}", d.name);
                assert_eq!(layout.get(word, w, d.field), Some(max));
                let fields = layout.fields(word, w);
                for (n, v) in fields {
                    assert_eq!(
                        v,
                        if n == d.name { u64::from(max) } else { 0 },
                        "{name} {n}"
                    );
                }
                // Setting does not disturb other fields.
                let all = layout.set(word, !0, d.field, 0);
                assert_eq!(all, !(max << d.shift));
            }
        }
    }
}

#[test]
fn arbitrary_words_print_without_panicking() {
    for layout in LAYOUTS {
        for w in [
            0u64,
            !0,
            0xdead_beef_0bad_f00d,
            1 << 63,
            0x00ff_0000_00ff_0000,
        ] {
            let r = CpuRole(w);
            let f = r.fields(layout);
            assert!(!f.is_empty());
            // Every bit is accounted for: named fields plus the stray `unused` bits.
            let named = f.iter().filter(|(n, _)| !n.ends_with("unused")).count();
            assert_eq!(named, layout.base.len() + layout.ext.len());
            let _ = r.describe(layout);
            let _ = r.diff(CpuRole(!w), layout);
        }
        let f = PageRole(1 << 20).fields(layout);
        assert!(f.contains(&("unused", 1 << 20)), "{}", layout.name);
    }
}

#[test]
fn diff_names_fields() {
    let l = &LAYOUT_V6_14;
    let a = CpuRole::new(PageRole(0x0000_0302), ExtRole(1));
    let b = CpuRole::new(PageRole(0x0000_0713), ExtRole(1 | (1 << 7)));
    let d = a.diff(b, l);
    let names: Vec<_> = d.iter().map(|x| (x.name, x.old, x.new)).collect();
    assert_eq!(
        names,
        vec![
            ("level", 2, 3),
            ("has_4_byte_gpte", 0, 1),
            ("access", 3, 7),
            ("ext.efer_lma", 0, 1),
        ]
    );
}

type Fields = Vec<(&'static str, u64)>;

fn role_fields(p: &str, fl: Flavour, r: &ControlRegs) -> (Fields, Fields) {
    let pol = policy(p).unwrap();
    let roles = derive_roles(pol, fl, r, &CpuModel::default_x86_64());
    (
        roles.cpu_role.fields(pol.layout),
        roles.root_role.fields(pol.layout),
    )
}

fn get(f: &[(&'static str, u64)], n: &str) -> u64 {
    f.iter()
        .find(|(x, _)| *x == n)
        .unwrap_or_else(|| panic!("no field {n}"))
        .1
}

#[test]
fn cpu_role_derivation_current() {
    // sheet §3.2 truth table, v6.14.
    let cases = [
        (regs(CR0_PROT, CR4_PAE | CR4_PSE, EFER_NXE, 0), 0, 0, 1),
        (regs(CR0_PAGED, CR4_PSE, 0, 0), 2, 1, 0),
        (regs(CR0_PAGED, CR4_PAE, 0, 0), 3, 0, 0),
        (regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0), 4, 0, 0),
        (regs(CR0_PAGED, CR4_PAE | CR4_LA57, EFER_LONG, 0), 5, 0, 0),
    ];
    for (r, level, h4, direct) in cases {
        let (c, root) = role_fields("v6.14", Flavour::Tdp, &r);
        assert_eq!(get(&c, "level"), level, "{r:x?}");
        assert_eq!(get(&c, "has_4_byte_gpte"), h4);
        assert_eq!(get(&c, "direct"), direct);
        assert_eq!(get(&c, "access"), 7);
        assert_eq!(get(&c, "ext.valid"), 1);
        // TDP root: independent of the guest.
        assert_eq!(get(&root, "level"), 4);
        assert_eq!(get(&root, "direct"), 1);
        assert_eq!(get(&root, "cr0_wp"), 1);
        assert_eq!(get(&root, "efer_nx"), 1);
        assert_eq!(get(&root, "has_4_byte_gpte"), 0);
        // Shadow root: at least level 3, efer_nx forced.
        let (_, sroot) = role_fields("v6.14", Flavour::Shadow, &r);
        assert_eq!(get(&sroot, "level"), level.max(3));
        assert_eq!(get(&sroot, "efer_nx"), 1);
        assert_eq!(get(&sroot, "has_4_byte_gpte"), h4);
    }
    // PG=0 records nothing else.
    let (c, _) = role_fields(
        "v6.14",
        Flavour::Tdp,
        &regs(CR0_PROT | CR0_WP, CR4_SMEP | CR4_SMAP, EFER_NXE, 0),
    );
    for n in [
        "efer_nx",
        "cr0_wp",
        "ext.cr4_smep",
        "ext.cr4_smap",
        "ext.cr4_pse",
    ] {
        assert_eq!(get(&c, n), 0, "{n}");
    }
    // PG=1 fields.
    let r = regs(
        CR0_PAGED & !CR0_WP,
        CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE | CR4_PSE,
        EFER_LONG | EFER_NXE,
        0,
    );
    let (c, _) = role_fields("v6.14", Flavour::Tdp, &r);
    for (n, v) in [
        ("efer_nx", 1),
        ("cr0_wp", 0),
        ("smep_andnot_wp", 1),
        ("smap_andnot_wp", 1),
        ("ext.cr4_pse", 1),
        ("ext.cr4_pke", 1),
        ("ext.cr4_smap", 1),
        ("ext.cr4_smep", 1),
        ("ext.cr4_la57", 0),
        ("ext.efer_lma", 1),
    ] {
        assert_eq!(get(&c, n), v, "{n}");
    }
    // PKE without LMA is not recorded (84c679f5f52c).
    let r = regs(CR0_PAGED, CR4_PAE | CR4_PKE, 0, 0);
    assert_eq!(
        get(&role_fields("v6.14", Flavour::Tdp, &r).0, "ext.cr4_pke"),
        0
    );
    assert_eq!(
        get(&role_fields("v5.9", Flavour::Tdp, &r).0, "ext.cr4_pke"),
        1
    );
    // SMM and guest mode.
    let mut r = regs(CR0_PAGED, 0, 0, 0);
    r.smm = true;
    r.guest_mode = true;
    let (c, root) = role_fields("v6.14", Flavour::Tdp, &r);
    assert_eq!((get(&c, "smm"), get(&c, "guest_mode")), (1, 1));
    assert_eq!((get(&root, "smm"), get(&root, "guest_mode")), (1, 1));
}

#[test]
fn seed_bug_role_bits() {
    // 32-bit paging vs PAE paging, TDP: which policies see a different compare key?
    let p32 = regs(CR0_PAGED, CR4_PSE, 0, 0);
    let pae = regs(CR0_PAGED, CR4_PSE | CR4_PAE, 0, 0);
    let c = CpuModel::default_x86_64();
    for pol in policies() {
        let k = |r| compare_key(pol, &derive_roles(pol, Flavour::Tdp, r, &c));
        let same = k(&p32) == k(&pae);
        assert_eq!(same, pol.name == "v5.1-rc3", "{}", pol.name);
        let ks = |r| compare_key(pol, &derive_roles(pol, Flavour::Shadow, r, &c));
        assert_ne!(ks(&p32), ks(&pae), "shadow {}", pol.name);
    }
    // v5.1-rc3 TDP: gpte_is_8_bytes forced to 1; v4.20: cr4_pae follows CR4.PAE.
    assert_eq!(
        get(
            &role_fields("v5.1-rc3", Flavour::Tdp, &p32).0,
            "gpte_is_8_bytes"
        ),
        1
    );
    assert_eq!(
        get(&role_fields("v4.20", Flavour::Tdp, &p32).0, "cr4_pae"),
        0
    );
    assert_eq!(
        get(&role_fields("v4.20", Flavour::Tdp, &pae).0, "cr4_pae"),
        1
    );
    assert_eq!(
        get(&role_fields("v5.1", Flavour::Tdp, &pae).0, "ext.cr4_pae"),
        1
    );
    // Shadow keeps the PAE bit in the base role.
    assert_eq!(
        get(
            &role_fields("v5.1-rc3", Flavour::Shadow, &p32).0,
            "gpte_is_8_bytes"
        ),
        0
    );
    assert_eq!(
        get(
            &role_fields("v5.1-rc3", Flavour::Shadow, &pae).0,
            "gpte_is_8_bytes"
        ),
        1
    );
}

#[test]
fn pre_514_records_bits_with_paging_off() {
    let r = regs(CR0_PROT | CR0_WP, CR4_PAE | CR4_PSE | CR4_SMEP, EFER_NXE, 0);
    let (c, _) = role_fields("v5.9", Flavour::Tdp, &r);
    for (n, v) in [
        ("nxe", 1),
        ("cr0_wp", 1),
        ("ext.cr4_pae", 1),
        ("ext.cr4_pse", 1),
        ("ext.cr4_smep", 1),
        ("ext.cr0_pg", 0),
        ("ext.maxphyaddr", 46),
    ] {
        assert_eq!(get(&c, n), v, "{n}");
    }
    let (c, _) = role_fields("v5.14", Flavour::Tdp, &r);
    for n in [
        "efer_nx",
        "cr0_wp",
        "ext.cr4_pae",
        "ext.cr4_pse",
        "ext.cr4_smep",
    ] {
        assert_eq!(get(&c, n), 0, "{n}");
    }
    // v5.16 adds efer_lma; v5.18 spells the bit has_4_byte_gpte (TDP: 0).
    let l = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0);
    assert_eq!(
        get(&role_fields("v5.16", Flavour::Tdp, &l).0, "ext.efer_lma"),
        1
    );
    assert_eq!(
        get(&role_fields("v5.18", Flavour::Tdp, &l).0, "has_4_byte_gpte"),
        0
    );
    assert_eq!(
        get(&role_fields("v5.16", Flavour::Tdp, &l).0, "gpte_is_8_bytes"),
        1
    );
    // Pre-v5.19 shadow: level 3 for 32-bit/PAE, direct = !PG, nxe not forced.
    let (c, _) = role_fields("v5.18", Flavour::Shadow, &regs(CR0_PAGED, 0, 0, 0));
    assert_eq!(
        (get(&c, "level"), get(&c, "direct"), get(&c, "efer_nx")),
        (3, 0, 0)
    );
    assert_eq!(get(&c, "has_4_byte_gpte"), 1);
}
