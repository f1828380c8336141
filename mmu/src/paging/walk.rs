//! The page walker (SDM §4.3–4.8). One iterative core, parameterised by a [`WalkConfig`], serves
//! both the architectural reference ([`walk`]) and KVM's software walker with a given MMU
//! context ([`crate::context::translate_with_context`]).

use super::fault::{pfec, Fault, Gp};
use super::mode::PagingMode;
use super::pdpte::pdpt_address;
use super::perm::{
    permission_fault, pkey_fault, Access, AccessRequest, EffectiveRights, PermInputs,
};
use super::rsvd::{bit_range, RsvdInputs, TableFormat};
use crate::regs::{ControlRegs, CpuModel, GuestMemory, GuestMemoryMut};

/// What one visited paging-structure entry contributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkLevel {
    /// 5 = PML5E, 4 = PML4E, 3 = PDPTE, 2 = PDE, 1 = PTE.
    pub level: u8,
    /// Guest-physical address of the entry (for a PAE PDPTE: where the register was loaded from).
    pub entry_gpa: u64,
    /// Raw entry value (4-byte entries zero-extended).
    pub entry: u64,
    /// 4 or 8.
    pub entry_bytes: u8,
    /// The entry is a PAE PDPTE register, not read from memory during the walk.
    pub from_register: bool,
    pub present: bool,
    /// R/W (PDPTE registers: always 1, they carry no rights).
    pub writable: bool,
    /// U/S (PDPTE registers: always 1).
    pub user: bool,
    /// XD set and honoured (EFER.NXE=1, 8-byte entries).
    pub nx: bool,
    /// Protection key of a leaf entry when protection keys are active.
    pub pk: Option<u8>,
    /// Size of the page this entry maps, if it is the leaf.
    pub page_size: Option<u64>,
    /// Reserved bits found set (non-zero means the walk stopped with RSVD).
    pub reserved: u64,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translated {
    pub gpa: u64,
    pub page_size: u64,
    /// Level of the leaf entry (0 without paging).
    pub level: u8,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
    pub pkey: Option<u8>,
}

/// An accessed/dirty update the walk would make (applied by [`walk_mut`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdUpdate {
    pub gpa: u64,
    pub bytes: u8,
    pub old: u64,
    pub new: u64,
}

/// The full record of one walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub gva: u64,
    pub mode: PagingMode,
    pub levels: Vec<WalkLevel>,
    pub result: Result<Translated, Fault>,
    /// A/D bits to set (only on success, after the permission check, as KVM does).
    pub ad_updates: Vec<AdUpdate>,
}

/// Everything a walk depends on besides memory, CR3 and the PDPTE registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkConfig {
    /// Which walk: `Real`/`Unpaged` = none, `Bits32`, `Pae`, `Level4`, `Level5`.
    pub mode: PagingMode,
    pub rsvd: RsvdInputs,
    pub perm: PermInputs,
    /// Protection keys active (CR4.PKE in IA-32e mode).
    pub pke: bool,
    pub pkru: u32,
    /// Report PFEC.I/D on fetch faults. SDM: SMEP=1 or (PAE/IA-32e with NXE=1); KVM: NX or
    /// SMEP in the MMU role, whatever the mode.
    pub fetch_in_pfec: bool,
    /// Check the canonical form of IA-32e addresses.
    pub check_canonical: bool,
}

impl WalkConfig {
    /// The architecture's configuration for these registers.
    pub fn architectural(regs: &ControlRegs, cpu: &CpuModel) -> WalkConfig {
        let mode = PagingMode::of_regs(regs);
        WalkConfig {
            mode,
            rsvd: RsvdInputs {
                maxphyaddr: cpu.phys_bits(),
                nx: regs.nxe(),
                pse: regs.pse(),
                gbpages: cpu.gbpages,
                amd: cpu.amd,
                pse36_phys_bits: cpu.phys_bits().min(40),
            },
            perm: PermInputs {
                wp: regs.wp(),
                smep: regs.smep(),
                smap: regs.smap(),
                nx: regs.nxe(),
            },
            pke: regs.pke() && mode.is_long(),
            pkru: regs.pkru,
            // [U] SDM §4.7 wording recalled, not re-read (sheet §9 item 4).
            fetch_in_pfec: regs.smep() || (regs.pae() && regs.nxe()),
            check_canonical: true,
        }
    }
}

/// Width of canonical linear addresses in IA-32e paging.
fn canonical(gva: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((gva << shift) as i64) >> shift) as u64 == gva
}

fn level_shift(level: u8) -> u32 {
    12 + 9 * (u32::from(level) - 1)
}

/// Walk `gva` with the architecture's rules for `regs`. PAE paging uses `regs.pdptrs` (the
/// PDPTE registers), never re-reading the PDPT. Does not update A/D bits.
pub fn walk(
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    gva: u64,
    req: &AccessRequest,
) -> Walk {
    walk_with(&WalkConfig::architectural(regs, cpu), regs, mem, gva, req)
}

/// Like [`walk`], then set the accessed/dirty bits a successful access sets.
pub fn walk_mut(
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &mut dyn GuestMemoryMut,
    gva: u64,
    req: &AccessRequest,
) -> Walk {
    let w = walk_core(&WalkConfig::architectural(regs, cpu), regs, &*mem, gva, req);
    apply_ad_updates(mem, &w);
    w
}

/// Write the A/D updates of a walk to memory; returns false if one failed.
pub fn apply_ad_updates(mem: &mut dyn GuestMemoryMut, w: &Walk) -> bool {
    let mut ok = true;
    for u in &w.ad_updates {
        ok &= match u.bytes {
            4 => mem.write(u.gpa, &(u.new as u32).to_le_bytes()),
            _ => mem.write(u.gpa, &u.new.to_le_bytes()),
        };
    }
    ok
}

/// Walk with an explicit configuration.
pub fn walk_with(
    cfg: &WalkConfig,
    regs: &ControlRegs,
    mem: &dyn GuestMemory,
    gva: u64,
    req: &AccessRequest,
) -> Walk {
    walk_core(cfg, regs, mem, gva, req)
}

fn walk_core<M: GuestMemory + ?Sized>(
    cfg: &WalkConfig,
    regs: &ControlRegs,
    mem: &M,
    gva_in: u64,
    req: &AccessRequest,
) -> Walk {
    let mode = cfg.mode;
    let mut levels = Vec::new();
    let fail = |levels: Vec<WalkLevel>, f: Fault| Walk {
        gva: gva_in,
        mode,
        levels,
        result: Err(f),
        ad_updates: Vec::new(),
    };
    let (format, top, gva) = match mode {
        PagingMode::Real | PagingMode::Unpaged => {
            // Linear addresses are 32 bits wide outside IA-32e mode.
            let gpa = gva_in & 0xffff_ffff;
            return Walk {
                gva: gva_in,
                mode,
                levels,
                result: Ok(Translated {
                    gpa,
                    page_size: 4096,
                    level: 0,
                    writable: true,
                    user: true,
                    executable: true,
                    pkey: None,
                }),
                ad_updates: Vec::new(),
            };
        }
        PagingMode::Bits32 => (TableFormat::Bits32, 2u8, gva_in & 0xffff_ffff),
        PagingMode::Pae => (TableFormat::Pae, 3u8, gva_in & 0xffff_ffff),
        PagingMode::Level4 | PagingMode::Level5 => {
            let top = mode.level();
            let width = if top == 5 { 57 } else { 48 };
            if cfg.check_canonical && !canonical(gva_in, width) {
                return fail(levels, Fault::Gp(Gp::NonCanonical { gva: gva_in }));
            }
            (TableFormat::Long, top, gva_in)
        }
    };

    levels.reserve_exact(usize::from(top));
    let user_access = req.is_user();
    let fetch = req.access == Access::Fetch;
    let base_code = (if req.access == Access::Write {
        pfec::W
    } else {
        0
    }) | (if user_access { pfec::U } else { 0 })
        | (if fetch && cfg.fetch_in_pfec {
            pfec::FETCH
        } else {
            0
        });
    let nx_honoured = cfg.rsvd.nx && format != TableFormat::Bits32;
    let addr_mask_8 = bit_range(12, 51);

    let mut rights = EffectiveRights {
        user: true,
        writable: true,
        nx: false,
    };
    let mut level = top;
    // Next table's guest-physical address.
    let mut table = match format {
        TableFormat::Bits32 => regs.cr3 & 0xffff_f000,
        TableFormat::Pae => 0, // unused: the PDPTE comes from the register
        TableFormat::Long => regs.cr3 & addr_mask_8,
    };
    loop {
        let shift = match format {
            TableFormat::Bits32 => 12 + 10 * (u32::from(level) - 1),
            _ => level_shift(level),
        };
        let (entry_gpa, entry, bytes, from_register) = match format {
            TableFormat::Bits32 => {
                let gpa = table + 4 * ((gva >> shift) & 0x3ff);
                let mut b = [0u8; 4];
                if !mem.read(gpa, &mut b) {
                    return fail(levels, Fault::EntryUnreadable { gpa, level });
                }
                (gpa, u64::from(u32::from_le_bytes(b)), 4u8, false)
            }
            TableFormat::Pae if level == 3 => {
                let i = ((gva >> 30) & 3) as usize;
                (
                    pdpt_address(regs.cr3) + 8 * i as u64,
                    regs.pdptrs[i],
                    8,
                    true,
                )
            }
            _ => {
                let gpa = table + 8 * ((gva >> shift) & 0x1ff);
                let mut b = [0u8; 8];
                if !mem.read(gpa, &mut b) {
                    return fail(levels, Fault::EntryUnreadable { gpa, level });
                }
                (gpa, u64::from_le_bytes(b), 8, false)
            }
        };
        let present = entry & 1 != 0;
        let mut lv = WalkLevel {
            level,
            entry_gpa,
            entry,
            entry_bytes: bytes,
            from_register,
            present,
            writable: from_register || entry & 2 != 0,
            user: from_register || entry & 4 != 0,
            nx: !from_register && nx_honoured && entry >> 63 != 0,
            pk: None,
            page_size: None,
            reserved: 0,
        };
        if !present {
            levels.push(lv);
            return fail(
                levels,
                Fault::PageFault {
                    error_code: base_code,
                    level,
                },
            );
        }
        // PS is honoured at levels >= 2; in 32-bit paging only with CR4.PSE=1. A PDPTE
        // register never maps a page.
        let ps = entry & (1 << 7) != 0;
        let large =
            !from_register && level >= 2 && ps && (format != TableFormat::Bits32 || cfg.rsvd.pse);
        // PDPTE registers were checked when loaded; the walk does not re-check them.
        let rsvd = if from_register {
            0
        } else {
            cfg.rsvd.mask(format, level, large) & entry
        };
        if rsvd != 0 {
            lv.reserved = rsvd;
            levels.push(lv);
            return fail(
                levels,
                Fault::PageFault {
                    error_code: base_code | pfec::P | pfec::RSVD,
                    level,
                },
            );
        }
        rights.user &= lv.user;
        rights.writable &= lv.writable;
        rights.nx |= lv.nx;
        let leaf = level == 1 || large;
        if !leaf {
            levels.push(lv);
            table = match format {
                TableFormat::Bits32 => entry & 0xffff_f000,
                _ => entry & addr_mask_8,
            };
            level -= 1;
            continue;
        }
        let page_size = 1u64 << shift;
        let gpa = match format {
            TableFormat::Bits32 if level == 2 => {
                // PSE-36/40: PA[M-1:32] in bits (M-20):13.
                let extra_bits = u32::from(cfg.rsvd.pse36_phys_bits.clamp(32, 40)) - 32;
                let high = (entry >> 13) & ((1u64 << extra_bits) - 1);
                (entry & 0xffc0_0000) | (high << 32) | (gva & (page_size - 1))
            }
            TableFormat::Bits32 => (entry & 0xffff_f000) | (gva & 0xfff),
            _ => (entry & addr_mask_8 & !(page_size - 1)) | (gva & (page_size - 1)),
        };
        let pkey = (cfg.pke && format == TableFormat::Long).then_some(((entry >> 59) & 0xf) as u8);
        lv.pk = pkey;
        lv.page_size = Some(page_size);
        levels.push(lv);

        let perm_fault = permission_fault(&cfg.perm, &rights, req);
        let pk_fault = pkey.is_some_and(|k| pkey_fault(cfg.pkru, k, cfg.perm.wp, &rights, req));
        if perm_fault || pk_fault {
            // KVM sets PK whenever the key check fails, even alongside another violation.
            let code = base_code | pfec::P | if pk_fault { pfec::PK } else { 0 };
            return fail(
                levels,
                Fault::PageFault {
                    error_code: code,
                    level: 0,
                },
            );
        }
        let mut ad_updates = Vec::new();
        let n = levels.len();
        for (i, l) in levels.iter().enumerate() {
            if l.from_register {
                continue;
            }
            let mut new = l.entry | (1 << 5);
            if i + 1 == n && req.access == Access::Write {
                new |= 1 << 6;
            }
            if new != l.entry {
                ad_updates.push(AdUpdate {
                    gpa: l.entry_gpa,
                    bytes: l.entry_bytes,
                    old: l.entry,
                    new,
                });
            }
        }
        return Walk {
            gva: gva_in,
            mode,
            levels,
            result: Ok(Translated {
                gpa,
                page_size,
                level,
                writable: rights.writable,
                user: rights.user,
                executable: !rights.nx,
                pkey,
            }),
            ad_updates,
        };
    }
}
