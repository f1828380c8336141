//! Hand-built page tables for every paging mode and the access-rights rules, with exact #PF
//! error codes.

mod common;
use common::*;
use mmu::bits::*;
use mmu::*;

fn cpu() -> CpuModel {
    CpuModel::default_x86_64()
}

fn sup(a: Access) -> AccessRequest {
    AccessRequest::supervisor(a)
}

fn usr(a: Access) -> AccessRequest {
    AccessRequest::user(a)
}

fn pf(code: u32) -> Result<u64, Option<u32>> {
    Err(Some(code))
}

/// Result as GPA or error code (None for non-#PF faults).
fn res(w: &Walk) -> Result<u64, Option<u32>> {
    match &w.result {
        Ok(t) => Ok(t.gpa),
        Err(f) => Err(f.error_code()),
    }
}

#[test]
fn mode_selection() {
    assert_eq!(PagingMode::of(0, 0, 0), PagingMode::Real);
    assert_eq!(
        PagingMode::of(CR0_PE, CR4_PAE, EFER_LME),
        PagingMode::Unpaged
    );
    assert_eq!(PagingMode::of(CR0_PAGED, 0, 0), PagingMode::Bits32);
    assert_eq!(PagingMode::of(CR0_PAGED, CR4_PAE, 0), PagingMode::Pae);
    // LME without LMA: still PAE paging (LMA selects IA-32e).
    assert_eq!(
        PagingMode::of(CR0_PAGED, CR4_PAE, EFER_LME),
        PagingMode::Pae
    );
    assert_eq!(
        PagingMode::of(CR0_PAGED, CR4_PAE, EFER_LONG),
        PagingMode::Level4
    );
    assert_eq!(
        PagingMode::of(CR0_PAGED, CR4_PAE | CR4_LA57, EFER_LONG),
        PagingMode::Level5
    );
    assert!(lma_after_cr0_write(EFER_LME, CR0_PROT, CR0_PAGED));
    assert!(!lma_after_cr0_write(0, CR0_PROT, CR0_PAGED));
    assert!(!lma_after_cr0_write(EFER_LONG, CR0_PAGED, CR0_PROT));
    assert_eq!(
        efer_after_cr0_write(EFER_LONG, CR0_PAGED, CR0_PAGED),
        EFER_LONG
    );
}

#[test]
fn unpaged_is_identity_32bit() {
    let m = mem();
    let r = regs(CR0_PROT, 0, 0, 0);
    let w = walk(&r, &cpu(), &m, 0x1_2345_6789, &sup(Access::Write));
    assert_eq!(res(&w), Ok(0x2345_6789));
    assert!(w.levels.is_empty());
}

#[test]
fn bits32_4k_and_levels() {
    let mut m = mem();
    let gva = (1 << 22) | (2 << 12) | 0x123;
    map32(&mut m, gva, 0x5000, 7, 7);
    let r = regs(CR0_PAGED, 0, 0, 0x1000);
    let w = walk(&r, &cpu(), &m, gva, &usr(Access::Write));
    assert_eq!(res(&w), Ok(0x5123));
    assert_eq!(w.levels.len(), 2);
    assert_eq!(w.levels[0].level, 2);
    assert_eq!(w.levels[0].entry_gpa, 0x1004);
    assert_eq!(w.levels[0].entry, 0x2007);
    assert_eq!(w.levels[0].entry_bytes, 4);
    assert_eq!(w.levels[1].entry_gpa, 0x2008);
    assert_eq!(w.levels[1].page_size, Some(4096));
    let t = w.result.unwrap();
    assert!(t.user && t.writable && t.executable);
    // Upper address bits are ignored outside IA-32e mode.
    let w = walk(&r, &cpu(), &m, gva | 0xffff_0000_0000, &usr(Access::Read));
    assert_eq!(res(&w), Ok(0x5123));
}

#[test]
fn bits32_not_present_error_codes() {
    let m = mem();
    let r = regs(CR0_PAGED, 0, 0, 0x1000);
    let c = cpu();
    assert_eq!(res(&walk(&r, &c, &m, 0x1000, &sup(Access::Read))), pf(0));
    assert_eq!(res(&walk(&r, &c, &m, 0x1000, &usr(Access::Write))), pf(6));
    // I/D only reported with SMEP (32-bit paging cannot use NX).
    assert_eq!(res(&walk(&r, &c, &m, 0x1000, &usr(Access::Fetch))), pf(4));
    let r_nx = regs(CR0_PAGED, 0, EFER_NXE, 0x1000);
    assert_eq!(
        res(&walk(&r_nx, &c, &m, 0x1000, &usr(Access::Fetch))),
        pf(4)
    );
    let r_smep = regs(CR0_PAGED, CR4_SMEP, 0, 0x1000);
    assert_eq!(
        res(&walk(&r_smep, &c, &m, 0x1000, &usr(Access::Fetch))),
        pf(0x14)
    );
    // Level where the walk stopped.
    match walk(&r, &c, &m, 0x1000, &sup(Access::Read)).result {
        Err(Fault::PageFault { level, .. }) => assert_eq!(level, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bits32_pse_and_pse36() {
    let mut m = mem();
    // PDE 3: 4 MiB page at 0x3_00c0_0000 (PA[33:32] = 3 in bits 14:13).
    let pde = 0x00c0_0000u32 | (3 << 13) | (PS as u32) | 3;
    m.write_u32(0x1000 + 4 * 3, pde);
    let gva = (3 << 22) | 0x12345;
    let mut c = cpu();
    c.maxphyaddr = 36;
    let pse = regs(CR0_PAGED, CR4_PSE, 0, 0x1000);
    let w = walk(&pse, &c, &m, gva, &sup(Access::Write));
    assert_eq!(res(&w), Ok(0x3_00c1_2345));
    assert_eq!(w.levels.len(), 1);
    assert_eq!(w.result.unwrap().page_size, 4 << 20);
    // Without CR4.PSE, PS is ignored: the PDE points at a page table (at 0x00c03000 +
    // junk bits), which is outside RAM here.
    let nopse = regs(CR0_PAGED, 0, 0, 0x1000);
    let w = walk(&nopse, &c, &m, gva, &sup(Access::Read));
    assert!(matches!(
        w.result,
        Err(Fault::EntryUnreadable { level: 1, .. })
    ));
    // MAXPHYADDR 36: bit 17 is reserved in a 4 MiB PDE.
    m.write_u32(0x1000 + 4 * 3, pde | (1 << 17));
    assert_eq!(res(&walk(&pse, &c, &m, gva, &sup(Access::Read))), pf(0x9));
    // MAXPHYADDR 40: bits 20:13 hold PA[39:32]; bit 17 is address bit 36.
    c.maxphyaddr = 40;
    assert_eq!(
        res(&walk(&pse, &c, &m, gva, &sup(Access::Read))),
        Ok(0x13_00c1_2345)
    );
    // Bit 21 is reserved even with 40 bits.
    m.write_u32(0x1000 + 4 * 3, pde | (1 << 21));
    assert_eq!(res(&walk(&pse, &c, &m, gva, &usr(Access::Read))), pf(0xd));
}

#[test]
fn pdpte_loading_and_pae_walk() {
    let mut m = mem();
    // PDPT at 0x1020 (32-byte aligned, not page aligned).
    m.write_u64(0x1020, 0x2000 | P);
    m.write_u64(0x1028, 0);
    m.write_u64(0x1030, 0x3000 | P);
    m.write_u64(0x1038, 0);
    let c = cpu();
    let pd = load_pdptrs(0x1020 | 0x1f, &m, 46).unwrap();
    assert_eq!(pd, [0x2001, 0, 0x3001, 0]);
    // PD[1] -> PT at 0x4000; PT[5] -> 0x9000
    m.write_u64(0x2000 + 8, 0x4000 | P | W | U);
    m.write_u64(0x4000 + 8 * 5, 0x9000 | P | W | U);
    // PD in slot 2: 2 MiB page at 0x40_0000 with XD.
    m.write_u64(0x3000, 0x20_0000 | PS | P | W | XD);
    let mut r = regs(CR0_PAGED, CR4_PAE, EFER_NXE, 0x1020);
    r.pdptrs = pd;
    let gva = (1 << 21) | (5 << 12) | 0x77;
    let w = walk(&r, &c, &m, gva, &usr(Access::Write));
    assert_eq!(res(&w), Ok(0x9077));
    assert_eq!(w.levels.len(), 3);
    assert!(w.levels[0].from_register);
    assert_eq!(w.levels[0].level, 3);
    assert_eq!(w.levels[0].entry_gpa, 0x1020);
    let big = (2u64 << 30) | 0x1234;
    assert_eq!(
        res(&walk(&r, &c, &m, big, &sup(Access::Read))),
        Ok(0x20_1234)
    );
    // NX page: fetch faults with P|I/D.
    assert_eq!(res(&walk(&r, &c, &m, big, &sup(Access::Fetch))), pf(0x11));
    // NXE=0: bit 63 is reserved in PAE entries -> RSVD, and no I/D without NX/SMEP.
    let mut r0 = r;
    r0.efer = 0;
    assert_eq!(res(&walk(&r0, &c, &m, big, &sup(Access::Fetch))), pf(0x9));
    // Not-present PDPTE register.
    assert_eq!(
        res(&walk(&r, &c, &m, 1 << 30, &sup(Access::Write))),
        pf(0x2)
    );
    // The walk uses the registers, not memory: clearing the PDPT in memory changes nothing.
    m.write_u64(0x1020, 0);
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Write))), Ok(0x9077));
    // Bits 62:M are reserved in PAE entries (MAXPHYADDR 46: bit 50).
    m.write_u64(0x4000 + 8 * 5, 0x9000 | P | W | U | (1 << 50));
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Read))), pf(0xd));
    // 2 MiB PDE bits 20:13 reserved.
    m.write_u64(0x3000, 0x20_0000 | PS | P | (1 << 13));
    assert_eq!(res(&walk(&r, &c, &m, big, &sup(Access::Read))), pf(0x9));
}

#[test]
fn pdpte_reserved_bits() {
    let mut m = mem();
    for (val, ok) in [
        (0x2000 | P, true),
        (0x2000 | P | 2, false),
        (0x2000 | P | 4, false),
        (0x2000 | P | (1 << 5), false),
        (0x2000 | P | (1 << 8), false),
        (0x2000 | P | (1 << 3) | (1 << 4) | (7 << 9), true),
        (0x2000 | P | XD, false),
        (0x2000 | P | (1 << 46), false),
        (0x2000 | P | (1 << 45), true),
        // Not present: reserved bits are not checked.
        (0xffff_ffff_ffff_fffe, true),
    ] {
        m.write_u64(0x1000, val);
        let r = load_pdptrs(0x1000, &m, 46);
        assert_eq!(r.is_ok(), ok, "{val:#x}");
        if !ok {
            assert_eq!(
                r,
                Err(Gp::PdpteReserved {
                    index: 0,
                    value: val
                })
            );
        }
    }
    assert_eq!(
        load_pdptrs(0x7fff_ffe0, &m, 46),
        Err(Gp::PdpteUnreadable { gpa: 0x7fff_ffe0 })
    );
}

fn long_regs(cr4_extra: u64, efer_extra: u64) -> ControlRegs {
    regs(
        CR0_PAGED,
        CR4_PAE | cr4_extra,
        EFER_LONG | efer_extra,
        0x1000,
    )
}

#[test]
fn level4_walk_and_large_pages() {
    let mut m = mem();
    let gva = 0x0000_7f12_3456_7abc;
    map4(&mut m, gva, 0x8000, [7, 7, 7, 7]);
    let r = long_regs(0, EFER_NXE);
    let c = cpu();
    let w = walk(&r, &c, &m, gva, &usr(Access::Fetch));
    assert_eq!(res(&w), Ok(0x8abc));
    let lv: Vec<u8> = w.levels.iter().map(|l| l.level).collect();
    assert_eq!(lv, vec![4, 3, 2, 1]);
    // 2 MiB page at the PDE.
    let pde_gpa = w.levels[2].entry_gpa;
    m.write_u64(pde_gpa, 0x60_0000 | PS | 7);
    assert_eq!(
        res(&walk(&r, &c, &m, gva, &usr(Access::Read))),
        Ok(0x60_0000 | (gva & 0x1f_ffff))
    );
    // 1 GiB page at the PDPTE.
    let pdpte_gpa = w.levels[1].entry_gpa;
    m.write_u64(pdpte_gpa, 0x4000_0000 | PS | 7);
    let w1 = walk(&r, &c, &m, gva, &usr(Access::Read));
    assert_eq!(res(&w1), Ok(0x4000_0000 | (gva & 0x3fff_ffff)));
    assert_eq!(w1.result.unwrap().page_size, 1 << 30);
    // Without GBPAGES, PS in a PDPTE is reserved.
    let mut c2 = c;
    c2.gbpages = false;
    assert_eq!(res(&walk(&r, &c2, &m, gva, &usr(Access::Read))), pf(0xd));
    // 1 GiB page: bits 29:13 reserved.
    m.write_u64(pdpte_gpa, 0x4000_0000 | PS | 7 | (1 << 20));
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Read))), pf(0x9));
    // PS in a PML4E is reserved.
    let pml4e_gpa = w.levels[0].entry_gpa;
    m.write_u64(pml4e_gpa, 0x2000 | PS | 7);
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Fetch))), pf(0x19));
}

#[test]
fn amd_bit8_and_maxphyaddr() {
    let mut m = mem();
    let gva = 0x1234_5000;
    map4(&mut m, gva, 0x8000, [7 | (1 << 8), 7 | (1 << 8), 7, 7]);
    let r = long_regs(0, 0);
    let mut c = cpu();
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Read))), Ok(0x8000));
    c.amd = true;
    // Bit 8 of the PML4E is reserved on AMD; in the PDPTE it is not.
    let w = walk(&r, &c, &m, gva, &sup(Access::Read));
    assert_eq!(res(&w), pf(0x9));
    assert_eq!(w.levels.last().unwrap().level, 4);
    assert_eq!(w.levels.last().unwrap().reserved, 1 << 8);
    map4(&mut m, gva, 0x8000, [7, 7 | (1 << 8), 7, 7]);
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Read))), Ok(0x8000));
    // MAXPHYADDR: bit 46 of the leaf is reserved with 46 bits, an address bit with 52.
    map4(&mut m, gva, 0x8000 | (1 << 46), [7, 7, 7, 7]);
    c.maxphyaddr = 46;
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Read))), pf(0xd));
    c.maxphyaddr = 52;
    assert_eq!(
        res(&walk(&r, &c, &m, gva, &usr(Access::Read))),
        Ok(0x8000 | (1 << 46))
    );
    // NXE=0: bit 63 reserved; NXE=1: it is XD.
    map4(&mut m, gva, 0x8000, [7, 7, 7, 7 | XD]);
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Read))), pf(0xd));
    let rn = long_regs(0, EFER_NXE);
    assert_eq!(res(&walk(&rn, &c, &m, gva, &usr(Access::Read))), Ok(0x8000));
    assert_eq!(res(&walk(&rn, &c, &m, gva, &usr(Access::Fetch))), pf(0x15));
}

#[test]
fn canonical_and_level5() {
    let mut m = mem();
    let c = CpuModel {
        la57: true,
        ..cpu()
    };
    let r4 = long_regs(0, 0);
    let w = walk(&r4, &c, &m, 0x0000_8000_0000_0000, &sup(Access::Read));
    assert_eq!(
        w.result,
        Err(Fault::Gp(Gp::NonCanonical {
            gva: 0x0000_8000_0000_0000
        }))
    );
    // 5-level: bits 56:48 index the PML5.
    let gva: u64 = 0x0001_2000_0000_1000; // PML5 index 0x12 >> 0? compute below
    let i5 = (gva >> 48) & 0x1ff;
    let i4 = (gva >> 39) & 0x1ff;
    let i3 = (gva >> 30) & 0x1ff;
    let i2 = (gva >> 21) & 0x1ff;
    let i1 = (gva >> 12) & 0x1ff;
    m.write_u64(0x1000 + 8 * i5, 0x2000 | 7);
    m.write_u64(0x2000 + 8 * i4, 0x3000 | 7);
    m.write_u64(0x3000 + 8 * i3, 0x4000 | 7);
    m.write_u64(0x4000 + 8 * i2, 0x5000 | 7);
    m.write_u64(0x5000 + 8 * i1, 0xa000 | 7);
    let r5 = long_regs(CR4_LA57, 0);
    let w = walk(&r5, &c, &m, gva, &usr(Access::Write));
    assert_eq!(res(&w), Ok(0xa000));
    assert_eq!(w.levels.len(), 5);
    assert_eq!(w.levels[0].level, 5);
    // Non-canonical for 4-level, canonical for 5-level.
    assert!(matches!(
        walk(&r4, &c, &m, gva, &sup(Access::Read)).result,
        Err(Fault::Gp(_))
    ));
    assert!(matches!(
        walk(&r5, &c, &m, 0x0100_0000_0000_0000, &sup(Access::Read)).result,
        Err(Fault::Gp(_))
    ));
    // Sign-extended high half is canonical.
    assert!(!matches!(
        walk(&r5, &c, &m, 0xff00_0000_0000_0000, &sup(Access::Read)).result,
        Err(Fault::Gp(_))
    ));
}

/// (u/s of the page, r/w of the page, request, cr4, cr0.wp, expected)
#[test]
fn access_rights_matrix() {
    let gva = 0x40_0000;
    let c = cpu();
    struct Case {
        user_page: bool,
        rw_page: bool,
        req: AccessRequest,
        cr4: u64,
        wp: bool,
        nx_page: bool,
        expect: Result<u64, Option<u32>>,
    }
    let ok = Ok(0x8000);
    let ac = |a| AccessRequest {
        rflags_ac: true,
        ..sup(a)
    };
    let implicit3 = |a| AccessRequest {
        access: a,
        cpl: 3,
        implicit_supervisor: true,
        rflags_ac: true,
    };
    use Access::*;
    let cases = [
        // user access to supervisor page
        Case {
            user_page: false,
            rw_page: true,
            req: usr(Read),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: pf(0x5),
        },
        Case {
            user_page: false,
            rw_page: true,
            req: usr(Fetch),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: pf(0x15),
        },
        // user write to read-only user page, WP irrelevant
        Case {
            user_page: true,
            rw_page: false,
            req: usr(Write),
            cr4: 0,
            wp: false,
            nx_page: false,
            expect: pf(0x7),
        },
        Case {
            user_page: true,
            rw_page: false,
            req: usr(Read),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        // supervisor write to read-only page: WP decides
        Case {
            user_page: false,
            rw_page: false,
            req: sup(Write),
            cr4: 0,
            wp: false,
            nx_page: false,
            expect: ok,
        },
        Case {
            user_page: false,
            rw_page: false,
            req: sup(Write),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: pf(0x3),
        },
        Case {
            user_page: true,
            rw_page: false,
            req: sup(Write),
            cr4: 0,
            wp: false,
            nx_page: false,
            expect: ok,
        },
        // NX
        Case {
            user_page: true,
            rw_page: true,
            req: usr(Fetch),
            cr4: 0,
            wp: true,
            nx_page: true,
            expect: pf(0x15),
        },
        Case {
            user_page: false,
            rw_page: true,
            req: sup(Fetch),
            cr4: 0,
            wp: true,
            nx_page: true,
            expect: pf(0x11),
        },
        Case {
            user_page: false,
            rw_page: true,
            req: sup(Read),
            cr4: 0,
            wp: true,
            nx_page: true,
            expect: ok,
        },
        // SMEP: supervisor fetch from user page, regardless of WP
        Case {
            user_page: true,
            rw_page: true,
            req: sup(Fetch),
            cr4: CR4_SMEP,
            wp: false,
            nx_page: false,
            expect: pf(0x11),
        },
        Case {
            user_page: true,
            rw_page: true,
            req: sup(Fetch),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        Case {
            user_page: true,
            rw_page: true,
            req: sup(Read),
            cr4: CR4_SMEP,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        // SMAP: supervisor data access to user page
        Case {
            user_page: true,
            rw_page: true,
            req: sup(Read),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: pf(0x1),
        },
        Case {
            user_page: true,
            rw_page: true,
            req: ac(Read),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        Case {
            user_page: true,
            rw_page: true,
            req: ac(Write),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        // AC=1 still subject to R/W with WP=1
        Case {
            user_page: true,
            rw_page: false,
            req: ac(Write),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: pf(0x3),
        },
        Case {
            user_page: true,
            rw_page: false,
            req: ac(Write),
            cr4: CR4_SMAP,
            wp: false,
            nx_page: false,
            expect: ok,
        },
        // implicit supervisor access at CPL3: SMAP applies even with AC=1, and U=0 in PFEC
        Case {
            user_page: true,
            rw_page: true,
            req: implicit3(Read),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: pf(0x1),
        },
        Case {
            user_page: false,
            rw_page: true,
            req: implicit3(Read),
            cr4: 0,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        // SMAP does not affect fetches; SMEP does
        Case {
            user_page: true,
            rw_page: true,
            req: sup(Fetch),
            cr4: CR4_SMAP,
            wp: true,
            nx_page: false,
            expect: ok,
        },
        // user access unaffected by SMEP/SMAP
        Case {
            user_page: true,
            rw_page: true,
            req: usr(Write),
            cr4: CR4_SMAP | CR4_SMEP,
            wp: true,
            nx_page: false,
            expect: ok,
        },
    ];
    for (i, k) in cases.iter().enumerate() {
        let mut m = mem();
        let u = if k.user_page { U } else { 0 };
        let rw = if k.rw_page { W } else { 0 };
        let xd = if k.nx_page { XD } else { 0 };
        map4(&mut m, gva, 0x8000, [7, 7, 7, P | u | rw | xd]);
        let mut r = long_regs(k.cr4, EFER_NXE);
        if !k.wp {
            r.cr0 &= !CR0_WP;
        }
        let w = walk(&r, &c, &m, gva, &k.req);
        assert_eq!(res(&w), k.expect, "case {i}");
    }
}

#[test]
fn protection_keys() {
    let gva = 0x40_0000;
    let c = cpu();
    let mut m = mem();
    let key1 = 1u64 << 59;
    map4(&mut m, gva, 0x8000, [7, 7, 7, 7 | key1]);
    let mut r = long_regs(CR4_PKE, EFER_NXE);
    // AD for key 1
    r.pkru = 1 << 2;
    let w = walk(&r, &c, &m, gva, &usr(Access::Read));
    assert_eq!(res(&w), pf(0x25));
    assert_eq!(w.levels[3].pk, Some(1));
    // Supervisor data access to a user page is checked as well.
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Read))), pf(0x21));
    // Fetches ignore PKRU.
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Fetch))), Ok(0x8000));
    // WD for key 1: user writes fault, supervisor writes only with WP=1.
    r.pkru = 2 << 2;
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Read))), Ok(0x8000));
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Write))), pf(0x27));
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Write))), pf(0x23));
    let mut r0 = r;
    r0.cr0 &= !CR0_WP;
    assert_eq!(
        res(&walk(&r0, &c, &m, gva, &sup(Access::Write))),
        Ok(0x8000)
    );
    // Key 0 unaffected; CR4.PKE=0 ignores keys.
    r.pkru = 3;
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Write))), Ok(0x8000));
    r.pkru = 3 << 2;
    r.cr4 &= !CR4_PKE;
    assert_eq!(res(&walk(&r, &c, &m, gva, &usr(Access::Write))), Ok(0x8000));
    // Supervisor pages never take a key.
    map4(&mut m, gva, 0x8000, [7, 7, 7, 3 | key1]);
    r.cr4 |= CR4_PKE;
    assert_eq!(res(&walk(&r, &c, &m, gva, &sup(Access::Write))), Ok(0x8000));
}

#[test]
fn accessed_dirty_updates() {
    let gva = 0x40_0000;
    let c = cpu();
    let mut m = mem();
    map4(&mut m, gva, 0x8000, [7, 7, 7, 7]);
    let r = long_regs(0, 0);
    let w = walk_mut(&r, &c, &mut m, gva, &usr(Access::Read));
    assert!(w.result.is_ok());
    assert_eq!(w.ad_updates.len(), 4);
    for l in &w.levels {
        assert_eq!(m.read_u64(l.entry_gpa).unwrap() & (A | D), A);
    }
    let w = walk_mut(&r, &c, &mut m, gva, &usr(Access::Write));
    assert_eq!(w.ad_updates.len(), 1);
    let leaf = w.levels[3].entry_gpa;
    assert_eq!(m.read_u64(leaf).unwrap() & (A | D), A | D);
    // A fault sets nothing.
    let mut m2 = mem();
    map4(&mut m2, gva, 0x8000, [7, 7, 7, 5]);
    let before = m2.clone();
    let w = walk_mut(&r, &c, &mut m2, gva, &usr(Access::Write));
    assert!(w.result.is_err());
    assert!(w.ad_updates.is_empty());
    assert_eq!(m2, before);
    // 32-bit entries are updated with 4-byte writes; PAE PDPTE registers are not touched.
    let mut m3 = mem();
    map32(&mut m3, gva, 0x8000, 7, 7);
    m3.write_u32(0x1000 + 4 * 0x3ff, 0xdead_b000);
    let r32 = regs(CR0_PAGED, 0, 0, 0x1000);
    walk_mut(&r32, &c, &mut m3, gva, &sup(Access::Write));
    assert_eq!(m3.read_u32(0x1000 + 4).unwrap(), 0x2000 | 7 | A as u32);
    assert_eq!(m3.read_u32(0x2000).unwrap(), 0x8000 | 7 | (A | D) as u32);
    assert_eq!(m3.read_u32(0x1000 + 4 * 0x3ff).unwrap(), 0xdead_b000);
}

#[test]
fn unreadable_tables() {
    let m = mem();
    let r = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x7000_0000);
    let w = walk(&r, &cpu(), &m, 0, &sup(Access::Read));
    assert_eq!(
        w.result,
        Err(Fault::EntryUnreadable {
            gpa: 0x7000_0000,
            level: 4
        })
    );
}

#[test]
fn pae_accessed_dirty_skips_pdpte_register() {
    let mut m = mem();
    m.write_u64(0x1000, 0x2000 | P);
    m.write_u64(0x2000, 0x3000 | P | W);
    m.write_u64(0x3000 + 8 * 5, 0x9000 | P | W);
    let mut r = regs(CR0_PAGED, CR4_PAE, 0, 0x1000);
    r.pdptrs = load_pdptrs(0x1000, &m, 46).unwrap();
    let w = walk_mut(&r, &cpu(), &mut m, 0x5000, &sup(Access::Write));
    assert_eq!(res(&w), Ok(0x9000));
    assert_eq!(w.ad_updates.len(), 2);
    assert_eq!(m.read_u64(0x1000).unwrap(), 0x2000 | P, "PDPT untouched");
    assert_eq!(m.read_u64(0x2000).unwrap(), 0x3000 | P | W | A);
    assert_eq!(m.read_u64(0x3028).unwrap(), 0x9000 | P | W | A | D);
}
