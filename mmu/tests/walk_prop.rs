//! Property tests: generated page tables walk without panicking, and the iterative walker
//! agrees with a recursive formulation written from the SDM, and with the rights recomputed
//! from its own level list.

use mmu::bits::*;
use mmu::*;
use proptest::prelude::*;

const PAGES: u64 = 8;

/// Memory of PAGES pages at GPA 0, filled with generated entries.
fn memory(entries: &[u64]) -> FlatMemory {
    let mut m = FlatMemory::new(0, (PAGES * 4096) as usize);
    for (i, e) in entries.iter().enumerate() {
        m.write_u64(8 * i as u64, *e);
    }
    m
}

fn entry() -> impl Strategy<Value = u64> {
    (
        0..PAGES,
        any::<u16>(),
        prop::sample::select(vec![
            0u64,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1 << 45,
            1 << 50,
            1 << 39,
            1 << 62,
        ]),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
        prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 15]),
        any::<u8>(),
    )
        .prop_map(|(page, flags, high, xd, junk, key, bias)| {
            // P in 15 of 16 entries, PS in about one in eight; bits 1-6 and 8-11 free.
            let p = u64::from((flags >> 12) != 0xf);
            let ps = if flags & 0x80 != 0 && flags & 0x3000 == 0x3000 {
                0x80
            } else {
                0
            };
            // U/S and R/W set in 3 of 4 entries so that user pages and writes succeed often.
            let low = (u64::from(flags) & 0xf7e) | (u64::from(bias) & 6);
            let junk = if junk {
                u64::from(flags & 0xff) << 13
            } else {
                0
            };
            (page << 12) | low | ps | p | junk | high | (key << 59) | if xd { 1 << 63 } else { 0 }
        })
}

#[derive(Clone, Debug)]
struct Case {
    entries: Vec<u64>,
    mode: u8,
    cr3_page: u64,
    wp: bool,
    cr4: u64,
    nxe: bool,
    pkru: u32,
    cpu: CpuModel,
    gva: u64,
    req: AccessRequest,
}

fn case() -> impl Strategy<Value = Case> {
    let cpu = (
        prop::sample::select(vec![36u8, 40, 46, 52]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(maxphyaddr, amd, gbpages)| CpuModel {
            maxphyaddr,
            amd,
            gbpages,
            la57: true,
            ..CpuModel::default_x86_64()
        });
    let req = (
        0u8..3,
        prop::sample::select(vec![0u8, 3]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, cpl, implicit_supervisor, rflags_ac)| AccessRequest {
            access: Access::ALL[a as usize],
            cpl,
            implicit_supervisor,
            rflags_ac,
        });
    (
        prop::collection::vec(entry(), (PAGES * 512) as usize),
        0u8..5,
        0..PAGES,
        any::<bool>(),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        any::<bool>(),
        any::<u32>(),
        cpu,
        any::<u64>(),
        req,
    )
        .prop_map(
            |(entries, mode, cr3_page, wp, (pse, smep, smap, pke), nxe, pkru, cpu, gva, req)| {
                let mut cr4 = 0;
                for (on, bit) in [
                    (pse, CR4_PSE),
                    (smep, CR4_SMEP),
                    (smap, CR4_SMAP),
                    (pke, CR4_PKE),
                ] {
                    if on {
                        cr4 |= bit;
                    }
                }
                // Keep addresses small enough to hit the generated tables often, but also
                // exercise non-canonical ones.
                let gva = match gva & 3 {
                    0 | 2 => gva & 0x7f_ffff,
                    1 => (((gva as i64) << 16) >> 16) as u64,
                    _ => gva,
                };
                Case {
                    entries,
                    mode,
                    cr3_page,
                    wp,
                    cr4,
                    nxe,
                    pkru,
                    cpu,
                    gva,
                    req,
                }
            },
        )
}

fn regs_of(c: &Case, mem: &FlatMemory) -> ControlRegs {
    let cr0 =
        CR0_PE | CR0_ET | if c.mode == 0 { 0 } else { CR0_PG } | if c.wp { CR0_WP } else { 0 };
    let (cr4, efer) = match c.mode {
        0 | 1 => (c.cr4, 0),
        2 => (c.cr4 | CR4_PAE, 0),
        3 => (c.cr4 | CR4_PAE, EFER_LME | EFER_LMA),
        _ => (c.cr4 | CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA),
    };
    let efer = efer | if c.nxe { EFER_NXE } else { 0 };
    let cr3 = c.cr3_page << 12 | if c.mode == 2 { (c.gva & 3) << 5 } else { 0 };
    let mut r = ControlRegs {
        cr0,
        cr3,
        cr4,
        efer,
        pkru: c.pkru,
        ..Default::default()
    };
    // PDPTE registers: loaded if legal, else whatever the PDPT holds (walk must not care).
    r.pdptrs = load_pdptrs(cr3, mem, c.cpu.maxphyaddr).unwrap_or_else(|_| {
        let mut p = [0; 4];
        for (i, x) in p.iter_mut().enumerate() {
            *x = mem
                .read_u64((cr3 & 0xffff_ffe0) + 8 * i as u64)
                .unwrap_or(0);
        }
        p
    });
    r
}

/// Outcome of a walk for comparison: Ok(gpa, size) or Err(error code), Err(None) for #GP or
/// unreadable tables.
type Out = Result<(u64, u64), Option<u32>>;

fn bits(lo: u32, hi: u32) -> u64 {
    (lo..=hi).fold(0, |m, b| m | (1u64 << b))
}

#[derive(Clone, Copy)]
struct Ref<'a> {
    r: &'a ControlRegs,
    cpu: &'a CpuModel,
    mem: &'a FlatMemory,
    req: AccessRequest,
    gva: u64,
}

impl Ref<'_> {
    fn user(&self) -> bool {
        self.req.cpl == 3 && !self.req.implicit_supervisor
    }
    fn pfec(&self, extra: u32) -> Out {
        let mut e = extra;
        if self.req.access == Access::Write {
            e |= 2;
        }
        if self.user() {
            e |= 4;
        }
        let pae_nx = self.r.cr4 & CR4_PAE != 0 && self.r.efer & EFER_NXE != 0;
        if self.req.access == Access::Fetch && (self.r.cr4 & CR4_SMEP != 0 || pae_nx) {
            e |= 16;
        }
        Err(Some(e))
    }

    /// Recursive descent. `eight`: 8-byte entries; `lvl`: current level; `table`: its address;
    /// (u, w, xd) accumulated.
    fn descend(&self, lvl: u32, table: u64, eight: bool, u: bool, w: bool, xd: bool) -> Out {
        let m = u32::from(self.cpu.maxphyaddr);
        let nxe = self.r.efer & EFER_NXE != 0;
        let (idx_bits, shift) = if eight {
            (9, 12 + 9 * (lvl - 1))
        } else {
            (10, 12 + 10 * (lvl - 1))
        };
        let idx = (self.gva >> shift) & ((1 << idx_bits) - 1);
        let e = if eight {
            match self.mem.read_u64(table + 8 * idx) {
                Some(v) => v,
                None => return Err(None),
            }
        } else {
            match self.mem.read_u32(table + 4 * idx) {
                Some(v) => u64::from(v),
                None => return Err(None),
            }
        };
        if e & 1 == 0 {
            return self.pfec(0);
        }
        let long = self.r.efer & EFER_LMA != 0;
        let ps = e & 0x80 != 0;
        let leaf = lvl == 1 || (ps && (eight || self.r.cr4 & CR4_PSE != 0));
        // Reserved bits, straight from the SDM tables (and KVM's AMD/GBPAGES rules).
        let mut rsvd = 0u64;
        if eight {
            rsvd |= if long { bits(m, 51) } else { bits(m, 62) };
            if !nxe {
                rsvd |= 1 << 63;
            }
            if long && lvl >= 4 {
                rsvd |= 1 << 7;
                if self.cpu.amd {
                    rsvd |= 1 << 8;
                }
            }
            if long && lvl == 3 && !self.cpu.gbpages {
                rsvd |= 1 << 7;
            }
            if leaf && lvl == 3 {
                rsvd |= bits(13, 29);
            }
            if leaf && lvl == 2 {
                rsvd |= bits(13, 20);
            }
        } else if leaf && lvl == 2 {
            let pm = m.min(40);
            rsvd |= bits(pm - 19, 21);
        }
        if e & rsvd != 0 {
            return self.pfec(1 | 8);
        }
        let u = u && e & 4 != 0;
        let w = w && e & 2 != 0;
        let xd = xd || (eight && nxe && e >> 63 != 0);
        if !leaf {
            let next = if eight {
                e & bits(12, 51)
            } else {
                e & 0xffff_f000
            };
            return self.descend(lvl - 1, next, eight, u, w, xd);
        }
        let size = 1u64 << shift;
        let gpa = if !eight && lvl == 2 {
            let pm = m.min(40);
            (e & 0xffc0_0000)
                | (((e >> 13) & ((1 << (pm - 32)) - 1)) << 32)
                | (self.gva & (size - 1))
        } else if !eight {
            (e & 0xffff_f000) | (self.gva & 0xfff)
        } else {
            (e & bits(12, 51) & !(size - 1)) | (self.gva & (size - 1))
        };
        // Rights.
        let user = self.user();
        let wp = self.r.cr0 & CR0_WP != 0;
        let smap_ok = self.req.cpl < 3 && self.req.rflags_ac && !self.req.implicit_supervisor;
        let smap_hit = !user && u && self.r.cr4 & CR4_SMAP != 0 && !smap_ok;
        let fault = match self.req.access {
            Access::Fetch => xd || (user && !u) || (!user && u && self.r.cr4 & CR4_SMEP != 0),
            Access::Read => (user && !u) || smap_hit,
            Access::Write => smap_hit || (user && !u) || (user && !w) || (!w && wp),
        };
        let pk = long
            && eight
            && self.r.cr4 & CR4_PKE != 0
            && u
            && self.req.access != Access::Fetch
            && {
                let key = (e >> 59) & 15;
                let ad = self.r.pkru >> (2 * key) & 1 != 0;
                let wd = self.r.pkru >> (2 * key + 1) & 1 != 0;
                ad || (self.req.access == Access::Write && wd && (user || wp))
            };
        if fault || pk {
            return self.pfec(1 | if pk { 32 } else { 0 });
        }
        Ok((gpa, size))
    }

    fn run(&self) -> Out {
        let r = self.r;
        if r.cr0 & CR0_PG == 0 {
            return Ok((self.gva & 0xffff_ffff, 4096));
        }
        if r.efer & EFER_LMA != 0 {
            let five = r.cr4 & CR4_LA57 != 0;
            let width = if five { 57 } else { 48 };
            let top = self.gva >> (width - 1);
            if top != 0 && top != (u64::MAX >> (width - 1)) {
                return Err(None);
            }
            return self.descend(
                if five { 5 } else { 4 },
                r.cr3 & bits(12, 51),
                true,
                true,
                true,
                false,
            );
        }
        let va = self.gva & 0xffff_ffff;
        let sub = Ref { gva: va, ..*self };
        if r.cr4 & CR4_PAE != 0 {
            let pdpte = r.pdptrs[(va >> 30) as usize & 3];
            if pdpte & 1 == 0 {
                return sub.pfec(0);
            }
            return sub.descend(2, pdpte & bits(12, 51), true, true, true, false);
        }
        sub.descend(2, r.cr3 & 0xffff_f000, false, true, true, false)
    }
}

fn out_of(w: &Walk) -> Out {
    match &w.result {
        Ok(t) => Ok((t.gpa, t.page_size)),
        Err(Fault::PageFault { error_code, .. }) => Err(Some(*error_code)),
        Err(_) => Err(None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn walker_agrees_with_recursive_reference(c in case()) {
        let mem = memory(&c.entries);
        let r = regs_of(&c, &mem);
        let w = walk(&r, &c.cpu, &mem, c.gva, &c.req);
        let reference = Ref { r: &r, cpu: &c.cpu, mem: &mem, req: c.req, gva: c.gva }.run();
        prop_assert_eq!(out_of(&w), reference, "walk: {:#x?}", w);

        // Flat check: rights recomputed from the level list.
        if let Ok(t) = &w.result {
            prop_assert_eq!(t.user, w.levels.iter().all(|l| l.user));
            prop_assert_eq!(t.writable, w.levels.iter().all(|l| l.writable));
            prop_assert_eq!(t.executable, !w.levels.iter().any(|l| l.nx));
            let last = w.levels.last();
            prop_assert_eq!(last.map_or(4096, |l| l.page_size.unwrap_or(0)), t.page_size);
            prop_assert!(w.levels.iter().all(|l| l.present && l.reserved == 0));
            // Levels strictly descend.
            prop_assert!(w.levels.windows(2).all(|p| p[0].level == p[1].level + 1));
        }
        if let Err(Fault::PageFault { error_code, .. }) = w.result {
            prop_assert_eq!(error_code & pfec::W != 0, c.req.access == Access::Write);
            prop_assert_eq!(error_code & pfec::U != 0, c.req.is_user());
            let last = w.levels.last().unwrap();
            prop_assert_eq!(error_code & pfec::P == 0, !last.present);
            prop_assert_eq!(error_code & pfec::RSVD != 0, last.reserved != 0);
        }

        // The same walk through KVM's walker with the architectural context agrees, except
        // where KVM deliberately differs (PSE-36 width, PFEC.I/D rule).
        let ctx = architectural_context(&r, &c.cpu, Flavour::Tdp);
        let kw = translate_with_context(&ctx, &r, &mem, c.gva, &c.req);
        let same_rules = c.cpu.maxphyaddr == 36 && (r.cr4 & CR4_PAE != 0 || r.efer & EFER_NXE == 0);
        if same_rules {
            prop_assert_eq!(out_of(&kw), out_of(&w));
        }

        // A/D updates never touch anything but A and D, and only on success.
        let mut m2 = mem.clone();
        let w2 = walk_mut(&r, &c.cpu, &mut m2, c.gva, &c.req);
        prop_assert_eq!(out_of(&w2), out_of(&w));
        for u in &w2.ad_updates {
            prop_assert!(w2.result.is_ok());
            prop_assert_eq!(u.old & !(0x60), u.new & !(0x60));
        }
    }

    #[test]
    fn roles_and_tracker_never_panic(words in any::<u64>(), cr0 in any::<u64>(), cr4 in any::<u64>(), efer in any::<u64>(), cr3 in any::<u64>()) {
        let mem = FlatMemory::new(0, 0x4000);
        for pol in policies() {
            let _ = CpuRole(words).fields(pol.layout);
            let _ = CpuRole(words).diff(CpuRole(!words), pol.layout);
            for fl in [Flavour::Tdp, Flavour::Shadow] {
                let start = ControlRegs { cr0: cr0 & 0xffff_ffff, cr4, efer, cr3, ..Default::default() };
                let mut t = Tracker::new(pol, fl, CpuModel::default_x86_64(), &start);
                let after = ControlRegs { cr0, cr4: cr4 ^ words, efer: efer ^ (words >> 7), cr3: words, ..start };
                for input in [
                    Input::Cr0 { old: start.cr0, new: cr0 },
                    Input::Cr4 { old: cr4, new: cr4 ^ words },
                    Input::Efer { old: efer, new: efer ^ (words >> 7) },
                    Input::EferHost { old: efer, new: efer ^ words },
                    Input::Cr3 { old: cr3, new: words },
                    Input::Init, Input::SmmEnter, Input::SmmExit, Input::SetCpuid, Input::SetSregs,
                ] {
                    let d = t.apply(&input, &after, &mem);
                    let _ = d.describe();
                    if let Some(st) = &d.stale {
                        let _ = compare_translations(&st.kept, &st.correct, &after, t.cpu(), &mem, &[(words, Access::Read), (cr3, Access::Fetch)]);
                    }
                }
            }
        }
    }
}
