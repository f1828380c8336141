//! Static checks of the built-in scenarios: they build for every feature combination, fit
//! their RAM, their expected sequences are self-consistent and agree with the code, and their
//! page tables translate the addresses they touch as documented.

use guests::{scenario, scenario_names, scenarios, CpuFeatures, ExpectedEvent, Scenario};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use traces::{ControlReg, GuestSpec, PagingMode};

fn all_feature_sets() -> Vec<CpuFeatures> {
    (0..32u32)
        .map(|m| CpuFeatures {
            pku: m & 1 != 0,
            la57: m & 2 != 0,
            pcid: m & 4 != 0,
            smep: m & 8 != 0,
            smap: m & 16 != 0,
        })
        .collect()
}

/// Guest-physical memory at entry.
fn ram(g: &GuestSpec) -> Vec<u8> {
    let mut m = vec![0u8; g.ram_size as usize];
    for l in &g.loads {
        let b = &g.blobs[l.blob as usize];
        m[l.gpa as usize..l.gpa as usize + b.data.len()].copy_from_slice(&b.data);
    }
    m
}

fn rd32(m: &[u8], a: u64) -> u32 {
    u32::from_le_bytes(m[a as usize..a as usize + 4].try_into().unwrap())
}
fn rd64(m: &[u8], a: u64) -> u64 {
    u64::from_le_bytes(m[a as usize..a as usize + 8].try_into().unwrap())
}

const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Minimal walkers (4 KiB pages only, which is all the scenarios use); `None` = not present.
fn walk32(m: &[u8], cr3: u64, la: u64) -> Option<u64> {
    let pde = rd32(m, (cr3 & 0xffff_f000) + 4 * ((la >> 22) & 0x3ff));
    (pde & 1 == 1).then_some(())?;
    assert_eq!(pde & 0x80, 0, "no PSE pages in scenarios");
    let pte = rd32(m, (pde as u64 & 0xffff_f000) + 4 * ((la >> 12) & 0x3ff));
    (pte & 1 == 1).then_some((pte as u64 & 0xffff_f000) | (la & 0xfff))
}

fn walk_pae(m: &[u8], cr3: u64, la: u64) -> Option<u64> {
    let pdpte = rd64(m, (cr3 & 0xffff_ffe0) + 8 * ((la >> 30) & 3));
    (pdpte & 1 == 1).then_some(())?;
    assert_eq!(pdpte & 0x1e6, 0, "PDPTE reserved bits 2:1 and 8:5");
    assert_eq!(pdpte >> 36, 0, "PDPTE bits above MAXPHYADDR 36");
    let mut table = pdpte & ADDR;
    for shift in [21, 12] {
        let e = rd64(m, table + 8 * ((la >> shift) & 0x1ff));
        (e & 1 == 1).then_some(())?;
        assert_eq!(e & 0x80, 0, "no large pages in scenarios");
        table = e & ADDR;
    }
    Some(table | (la & 0xfff))
}

/// 4-level walk; also returns whether the address is a user-mode address.
fn walk4(m: &[u8], cr3: u64, la: u64) -> Option<(u64, bool)> {
    let mut table = cr3 & ADDR;
    let mut user = true;
    for shift in [39, 30, 21, 12] {
        let e = rd64(m, table + 8 * ((la >> shift) & 0x1ff));
        (e & 1 == 1).then_some(())?;
        assert_eq!(e & 0x80, 0, "no large pages in scenarios");
        user &= e & 4 != 0;
        table = e & ADDR;
    }
    Some((table | (la & 0xfff), user))
}

struct Insn {
    ip: u64,
    mnemonic: Mnemonic,
    cr_dest: Option<Register>,
    bits: u32,
}

/// Every instruction of the scenario's code blobs, decoded in its section's mode.
fn code(s: &Scenario) -> Vec<Insn> {
    let mut out = Vec::new();
    for l in &s.guest.loads {
        let b = &s.guest.blobs[l.blob as usize];
        let bits = match b.name.as_str() {
            "real-mode code" => 16,
            "protected-mode code" => 32,
            "64-bit code" => 64,
            _ => continue,
        };
        let mut d = Decoder::with_ip(bits, &b.data, l.gpa, DecoderOptions::NONE);
        for i in &mut d {
            assert!(
                !i.is_invalid(),
                "{}: invalid instruction at {:#x}",
                s.name,
                i.ip()
            );
            let cr_dest = (i.mnemonic() == Mnemonic::Mov
                && i.op0_kind() == OpKind::Register
                && i.op0_register().is_cr())
            .then(|| i.op0_register());
            out.push(Insn {
                ip: i.ip(),
                mnemonic: i.mnemonic(),
                cr_dest,
                bits,
            });
        }
    }
    out
}

#[test]
fn every_scenario_builds_for_every_cpu() {
    for f in all_feature_sets() {
        for name in scenario_names() {
            let s = guests::try_scenario(name, &f).unwrap().unwrap();
            assert_eq!(s.name, name);
            assert_eq!(s.guest.origin, format!("scenario {name}"));
        }
    }
    assert!(scenario("no-such-scenario", &CpuFeatures::default()).is_none());
    assert_eq!(scenarios().len(), scenario_names().len());
    for n in [
        "pae-toggle",
        "long-mode-entry",
        "long-mode-toggles",
        "cr3-switch",
        "unpaged-cr4",
        "smap-pke-toggle",
        "exceptions",
    ] {
        assert!(scenario_names().contains(&n), "{n}");
    }
}

#[test]
fn images_fit_ram_and_blobs_are_hashed() {
    for s in scenarios() {
        let g = &s.guest;
        assert_eq!(g.maxphyaddr, 0);
        for l in &g.loads {
            let b = &g.blobs[l.blob as usize];
            assert!(
                l.gpa + b.data.len() as u64 <= g.ram_size,
                "{}: {}",
                s.name,
                b.name
            );
        }
        for b in &g.blobs {
            assert_eq!(b.hash, xxhash_rust::xxh3::xxh3_64(&b.data));
        }
    }
}

#[test]
fn entry_state_is_real_mode() {
    for s in scenarios() {
        let r = &s.guest.entry;
        assert_eq!(r.cr0 & 1, 0);
        assert_eq!(r.rflags, 2);
        assert_eq!((r.efer, r.cr4), (0, 0));
        let cs = r.seg[traces::regs::CS];
        assert_eq!(
            (cs.selector, cs.base, cs.limit, cs.attrs),
            (0, 0, 0xffff, 0x9b)
        );
        for (i, seg) in r.seg.iter().enumerate() {
            if i != traces::regs::CS {
                assert_eq!((seg.base, seg.limit, seg.attrs), (0, 0xffff, 0x93));
            }
        }
        assert_eq!(r.tr.attrs, 0x8b);
        // The entry point holds the first instruction of the real-mode code.
        assert!(code(&s)
            .iter()
            .any(|i| i.ip == r.rip && i.bits == 16 && i.mnemonic == Mnemonic::Cli));
    }
}

/// Replays the expected `Cr` events through an independent mode computation and checks the
/// transitions are exactly where, and only where, the mode changes; that they chain from real
/// mode; and that CR values are architecturally sensible.
#[test]
fn expected_sequences_are_consistent() {
    for f in all_feature_sets() {
        for s in scenario_names()
            .into_iter()
            .map(|n| scenario(n, &f).unwrap())
        {
            let mode = |cr0: u64, cr4: u64, efer: u64| match (cr0 & 1, cr0 >> 31 & 1) {
                (0, _) => PagingMode::Real,
                (_, 0) => PagingMode::Unpaged,
                _ if efer & 0x400 != 0 && cr4 & 0x1000 != 0 => PagingMode::Level5,
                _ if efer & 0x400 != 0 => PagingMode::Level4,
                _ if cr4 & 0x20 != 0 => PagingMode::Pae,
                _ => PagingMode::Bits32,
            };
            let mut seen = vec![PagingMode::Real];
            // The BSP's sequence, then each AP's (from its INIT state).
            let sequences = std::iter::once(&s.expected).chain(s.aps.iter().map(|a| &a.expected));
            for expected in sequences {
                let (mut cr0, mut cr4, mut efer) = (0x6000_0010u64, 0u64, 0u64);
                let mut current = PagingMode::Real;
                let mut pending: Option<PagingMode> = None;
                for (i, e) in expected.iter().enumerate() {
                    match *e {
                        ExpectedEvent::Cr { reg, new } => {
                            assert!(pending.is_none(), "{} #{i}: transition missing", s.name);
                            match reg {
                                ControlReg::Cr0 => {
                                    assert_eq!(new & 0x10, 0x10, "ET");
                                    let lme = efer & 0x100 != 0;
                                    if new >> 31 == 1 && cr0 >> 31 == 0 && lme {
                                        efer |= 0x400;
                                    }
                                    cr0 = new;
                                }
                                ControlReg::Cr4 => cr4 = new,
                                ControlReg::Efer => {
                                    assert_eq!(
                                        new & 0x400,
                                        efer & 0x400,
                                        "{} #{i}: wrmsr cannot change LMA",
                                        s.name
                                    );
                                    assert!(
                                        cr0 >> 31 == 0 || (new ^ efer) & 0x100 == 0,
                                        "LME with paging on"
                                    );
                                    efer = new;
                                }
                                ControlReg::Cr3 => {
                                    assert_eq!(new >> 63, 0, "bit 63 is never stored")
                                }
                                ControlReg::Xcr0 => assert_eq!(new & 1, 1),
                            }
                            let m = mode(cr0, cr4, efer);
                            if m != current {
                                pending = Some(m);
                            }
                        }
                        ExpectedEvent::CrFaulted { .. } => {
                            assert!(pending.is_none(), "{} #{i}: transition missing", s.name);
                            assert!(
                                matches!(
                                    expected.get(i + 1),
                                    Some(ExpectedEvent::Exception { vector: 13, .. })
                                ),
                                "{} #{i}: a faulted write is followed by its #GP",
                                s.name
                            );
                        }
                        ExpectedEvent::Exception { .. } => {
                            assert!(pending.is_none(), "{} #{i}: transition missing", s.name);
                        }
                        ExpectedEvent::Transition { from, to } => {
                            assert_eq!(from, current, "{} #{i}: transitions chain", s.name);
                            assert_eq!(Some(to), pending, "{} #{i}", s.name);
                            assert!(matches!(expected[i - 1], ExpectedEvent::Cr { .. }));
                            current = to;
                            pending = None;
                            seen.push(to);
                        }
                    }
                }
                assert!(pending.is_none(), "{}: final transition missing", s.name);
            }
            for m in &s.needs {
                assert!(
                    seen.contains(m),
                    "{}: needs {m:?} but never enters it",
                    s.name
                );
            }
            for m in &seen {
                let paged = !matches!(m, PagingMode::Real | PagingMode::Unpaged);
                assert!(
                    !paged || s.needs.contains(m),
                    "{}: enters {m:?} without needing it",
                    s.name
                );
            }
            for fi in &s.expected_findings {
                assert!(matches!(
                    s.expected.get(fi.at_event),
                    Some(ExpectedEvent::Cr { .. })
                ));
            }
            for ap in &s.aps {
                for fi in &ap.expected_findings {
                    assert!(matches!(
                        ap.expected.get(fi.at_event),
                        Some(ExpectedEvent::Cr { .. })
                    ));
                }
            }
        }
    }
}

/// With every feature present every gated block runs, so the code's control-register writes
/// (`mov crN, r` and `wrmsr`, whose only target here is EFER) are exactly the expected `Cr`
/// events, register by register. With none, fewer events than writes.
#[test]
fn expected_writes_match_the_code() {
    for name in scenario_names() {
        let s = scenario(name, &CpuFeatures::all()).unwrap();
        let writes: Vec<ControlReg> = code(&s)
            .iter()
            .filter_map(|i| match (i.cr_dest, i.mnemonic) {
                (Some(Register::CR0), _) => Some(ControlReg::Cr0),
                (Some(Register::CR3), _) => Some(ControlReg::Cr3),
                (Some(Register::CR4), _) => Some(ControlReg::Cr4),
                (Some(r), _) => panic!("{name}: unexpected write to {r:?}"),
                (None, Mnemonic::Wrmsr) => Some(ControlReg::Efer),
                (None, Mnemonic::Xsetbv) => Some(ControlReg::Xcr0),
                _ => None,
            })
            .collect();
        let expected: Vec<ControlReg> = s
            .expected
            .iter()
            .filter_map(|e| match e {
                ExpectedEvent::Cr { reg, .. } | ExpectedEvent::CrFaulted { reg, .. } => Some(*reg),
                _ => None,
            })
            .collect();
        assert_eq!(writes, expected, "{name}");
        let none = scenario(name, &CpuFeatures::none()).unwrap();
        assert!(none.expected.len() <= s.expected.len());
        assert_eq!(
            none.guest, s.guest,
            "{name}: the image must not depend on the features"
        );
    }
}

/// Instructions the PVM host's emulator cannot run at CPL0 (and `int`s, which need an IDT).
/// `iretq` in 64-bit code runs there (the `exceptions` handlers return with it).
#[test]
fn no_instruction_the_host_cannot_emulate() {
    let banned = [
        Mnemonic::Int3,
        Mnemonic::Int,
        Mnemonic::Int1,
        Mnemonic::Into,
        Mnemonic::Iret,
        Mnemonic::Iretd,
        Mnemonic::Iretq,
        Mnemonic::Clac,
        Mnemonic::Stac,
        Mnemonic::Invpcid,
        Mnemonic::Fninit,
        Mnemonic::Xrstor,
        Mnemonic::Clwb,
        Mnemonic::Sti,
        Mnemonic::Rdtscp,
    ];
    for s in scenarios() {
        let c = code(&s);
        for i in &c {
            assert!(
                !banned.contains(&i.mnemonic) || (i.mnemonic == Mnemonic::Iretq && i.bits == 64),
                "{}: {:?} at {:#x}",
                s.name,
                i.mnemonic,
                i.ip
            );
        }
        let outs = c.iter().filter(|i| i.mnemonic == Mnemonic::Out).count();
        assert!(outs >= 1, "{} never exits", s.name);
    }
}

fn regs_after(s: &Scenario, upto: usize) -> (u64, u64, u64) {
    let (mut cr0, mut cr3, mut cr4) = (0, 0, 0);
    for e in &s.expected[..upto] {
        if let ExpectedEvent::Cr { reg, new } = *e {
            match reg {
                ControlReg::Cr0 => cr0 = new,
                ControlReg::Cr3 => cr3 = new,
                ControlReg::Cr4 => cr4 = new,
                _ => {}
            }
        }
    }
    (cr0, cr3, cr4)
}

#[test]
fn pae_toggle_tables_translate_as_documented() {
    let s = scenario("pae-toggle", &CpuFeatures::default()).unwrap();
    assert!(!s.runs_on_pvm_kvm());
    let m = ram(&s.guest);
    let (_, cr3, _) = regs_after(&s, s.expected.len());
    assert_eq!(cr3, 0x4800);
    // The marker: page A under 32-bit paging, page B under PAE paging.
    assert_eq!(walk32(&m, cr3, 0x40_0000), Some(0x10000));
    assert_eq!(walk_pae(&m, cr3, 0x40_0000), Some(0x11000));
    // Code, GDT, page tables, data pages and stack are identity-mapped in both modes.
    for pa in (0x1000..0x20000).step_by(0x1000) {
        assert_eq!(walk32(&m, cr3, pa), Some(pa), "{pa:#x}");
        assert_eq!(walk_pae(&m, cr3, pa), Some(pa), "{pa:#x}");
    }
    // Every PDPTE the CR4.PAE write loads is valid (walk_pae checks the present one).
    for i in 0..4 {
        let e = rd64(&m, (cr3 & !0x1f) + 8 * i);
        assert!(
            e & 1 == 0 || (e & 0x1e6 == 0 && e >> 36 == 0),
            "PDPTE {i}: {e:#x}"
        );
    }
    let f = &s.expected_findings;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].policy, "v5.1-rc3");
    assert_eq!(
        s.expected[f[0].at_event],
        ExpectedEvent::Cr {
            reg: ControlReg::Cr4,
            new: 0x20
        }
    );
}

#[test]
fn long_mode_scenarios_identity_map_their_memory() {
    // smp-bringup's BSP identity-maps its memory too, but an AP of it needs 32-bit paging.
    for s in scenarios()
        .into_iter()
        .filter(|s| s.needs.contains(&PagingMode::Level4))
    {
        assert!(s.runs_on_pvm_kvm() || !s.aps.is_empty());
        let m = ram(&s.guest);
        let (_, cr3, _) = regs_after(&s, s.expected.len());
        for pa in (0x1000..0x20000).step_by(0x1000) {
            let (t, user) = walk4(&m, cr3, pa).unwrap_or_else(|| panic!("{}: {pa:#x}", s.name));
            assert_eq!(t, pa);
            assert!(
                !user,
                "{}: {pa:#x} must be a supervisor page (SMEP/SMAP)",
                s.name
            );
        }
    }
}

#[test]
fn cr3_switch_spaces_differ_at_the_switched_address() {
    let s = scenario("cr3-switch", &CpuFeatures::all()).unwrap();
    let m = ram(&s.guest);
    assert_eq!(walk4(&m, 0x4000, 0x20_0000), Some((0x10000, false)));
    assert_eq!(walk4(&m, 0xb000, 0x20_0000), Some((0x11000, false)));
    for pa in (0x1000..0x20000).step_by(0x1000) {
        assert_eq!(walk4(&m, 0xb000, pa), Some((pa, false)));
    }
    let cr3s: Vec<u64> = s
        .expected
        .iter()
        .filter_map(|e| match e {
            ExpectedEvent::Cr {
                reg: ControlReg::Cr3,
                new,
            } => Some(*new),
            _ => None,
        })
        .collect();
    assert_eq!(
        cr3s,
        [0x4000, 0xb000, 0x4000, 0x4000, 0xb000, 0x4001, 0xb002, 0x4001, 0xb002, 0xb000]
    );
}

#[test]
fn smap_scenario_has_a_user_page() {
    let s = scenario("smap-pke-toggle", &CpuFeatures::default()).unwrap();
    let m = ram(&s.guest);
    assert_eq!(walk4(&m, 0x4000, 0x20_0000), Some((0x10000, true)));
    let cr4s: Vec<u64> = s.expected[7..]
        .iter()
        .map(|e| match e {
            ExpectedEvent::Cr {
                reg: ControlReg::Cr4,
                new,
            } => *new,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cr4s, [0x200020, 0x20, 0x200020, 0x20]);
}

#[test]
fn default_features_match_the_development_hosts() {
    let f = CpuFeatures::default();
    assert!(f.smep && f.smap && !f.pku && !f.la57 && !f.pcid);
    let s = scenario("long-mode-toggles", &f).unwrap();
    let tail: Vec<(ControlReg, u64)> = s.expected[7..]
        .iter()
        .map(|e| match e {
            ExpectedEvent::Cr { reg, new } => (*reg, *new),
            other => panic!("{other:?}"),
        })
        .collect();
    use ControlReg::*;
    assert_eq!(
        tail,
        [
            (Cr0, 0x8001_0011),
            (Cr0, 0x8000_0011),
            (Cr4, 0x10_0020),
            (Cr4, 0x20),
            (Cr4, 0x20_0020),
            (Cr4, 0x20),
            (Efer, 0xd00),
            (Efer, 0x500),
            (Cr4, 0xa0),
            (Cr4, 0x20),
        ]
    );
}

#[test]
fn cpu_features_from_cpuid() {
    use traces::CpuidEntry;
    let e = |function, eax, ebx, ecx, edx| CpuidEntry {
        function,
        index: 0,
        eax,
        ebx,
        ecx,
        edx,
    };
    let t = [
        e(0, 0xd, 0, 0, 0),
        e(1, 0, 0, 1 << 17, 1 << 13),
        e(7, 0, (1 << 7) | (1 << 20), 1 << 3, 0),
    ];
    assert_eq!(
        CpuFeatures::from_cpuid(&t),
        CpuFeatures {
            pku: true,
            la57: false,
            pcid: true,
            smep: true,
            smap: true
        }
    );
    // A maximum basic leaf below 7 hides leaf 7, as the guest's own check does.
    let t = [e(0, 6, 0, 0, 0), e(7, 0, u32::MAX, u32::MAX, 0)];
    assert_eq!(CpuFeatures::from_cpuid(&t), CpuFeatures::none());
}

/// The v5.9-rc regression: a stale context at every write that sets CR4.SMAP or CR4.PKE.
#[test]
fn v59rc_findings_sit_on_smap_and_pke_sets() {
    for f in all_feature_sets() {
        for (name, smap_sets) in [("long-mode-toggles", 1), ("smap-pke-toggle", 2)] {
            let s = scenario(name, &f).unwrap();
            let want = if f.smap { smap_sets } else { 0 } + usize::from(f.pku);
            assert_eq!(s.expected_findings.len(), want, "{name} {f:?}");
            for fi in &s.expected_findings {
                assert_eq!(fi.policy, "v5.9-rc");
                assert_eq!(fi.kind, traces::FindingKind::StaleContext);
                let ExpectedEvent::Cr {
                    reg: ControlReg::Cr4,
                    new,
                } = s.expected[fi.at_event]
                else {
                    panic!("{name}: finding not at a CR4 write");
                };
                assert_ne!(new & (0x20_0000 | 0x40_0000), 0, "{name}: {new:#x}");
            }
        }
        for name in ["long-mode-entry", "cr3-switch", "unpaged-cr4"] {
            assert!(scenario(name, &f).unwrap().expected_findings.is_empty());
        }
    }
}

/// The `exceptions` scenario: every fault is an expected exception with its error code (and
/// CR2 for #PF), each faulting write is followed by its #GP, and the pages it faults on are
/// mapped as documented.
#[test]
fn exceptions_scenario_expects_every_fault() {
    for f in all_feature_sets() {
        let s = scenario("exceptions", &f).unwrap();
        assert!(s.runs_on_pvm_kvm());
        let tail: Vec<ExpectedEvent> = s.expected[7..].to_vec();
        let ex = |vector, error_code, cr2| ExpectedEvent::Exception {
            vector,
            error_code,
            cr2,
        };
        let gp0 = ex(13, Some(0), None);
        let faulted = |reg, attempted| ExpectedEvent::CrFaulted { reg, attempted };
        use ControlReg::*;
        assert_eq!(
            tail,
            [
                ExpectedEvent::Cr {
                    reg: Cr0,
                    new: 0x8001_0011
                },
                ExpectedEvent::Cr {
                    reg: Efer,
                    new: 0xd00
                },
                faulted(Cr4, 0x1020),
                gp0,
                faulted(Cr4, 0x8020),
                gp0,
                faulted(Efer, 0xd02),
                gp0,
                faulted(Cr0, 0x1_0011),
                gp0,
                ex(13, Some(0x28), None),
                gp0,
                ex(6, None, None),
                ex(14, Some(0), Some(0x20_0000)),
                ex(14, Some(3), Some(0x13000)),
                ex(14, Some(0x10), Some(0x20_0000)),
            ],
            "{f:?}"
        );
        assert!(s.expected_findings.is_empty());
    }
    let s = scenario("exceptions", &CpuFeatures::default()).unwrap();
    let m = ram(&s.guest);
    // 0x13000 is present and read-only; 0x200000 is not present.
    let pte = rd64(&m, 0x7000 + 8 * 0x13);
    assert_eq!(pte & 0xfff, 1, "{pte:#x}");
    assert_eq!(walk4(&m, 0x4000, 0x13000), Some((0x13000, false)));
    assert_eq!(walk4(&m, 0x4000, 0x20_0000), None);
}

/// A scenario with APs needs, on a machine of N vCPUs, the modes of the vCPUs it has: on 2,
/// `smp-bringup` stays in long mode (AP 1), on 3 and more AP 2's legacy paging is in.
#[test]
fn smp_bringup_needs_legacy_paging_only_with_ap_2() {
    let s = guests::scenario("smp-bringup", &CpuFeatures::default()).unwrap();
    assert_eq!(s.needs_on(1), vec![PagingMode::Level4]);
    assert_eq!(s.needs_on(2), vec![PagingMode::Level4]);
    for n in [3, 4, 8] {
        assert_eq!(s.needs_on(n), s.needs, "{n} vCPUs");
    }
    assert!(s.needs.contains(&PagingMode::Bits32) && s.needs.contains(&PagingMode::Pae));
    // Without APs the declared needs stand.
    let seed = guests::scenario("pae-toggle", &CpuFeatures::default()).unwrap();
    assert_eq!(seed.needs_on(4), seed.needs);
}
