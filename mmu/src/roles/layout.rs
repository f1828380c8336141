//! Field layouts of the role unions per kernel version (sheet §1.1, §2.1). Positions are
//! LSB-first, as GCC lays out bit-fields on x86-64; `base` is the low half of the CPU role.

/// The meaning of a role field, independent of the name a version gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    // kvm_mmu_page_role
    Level,
    /// `cr4_pae` / `gpte_is_8_bytes` / `has_4_byte_gpte`: see [`GpteSense`].
    Gpte,
    Quadrant,
    Direct,
    Access,
    Invalid,
    /// `nxe` / `efer_nx`.
    EferNx,
    Cr0Wp,
    SmepAndnotWp,
    SmapAndnotWp,
    AdDisabled,
    GuestMode,
    Passthrough,
    IsMirror,
    Smm,
    // kvm_mmu_extended_role
    Valid,
    Execonly,
    Cr0Pg,
    Cr4Pae,
    Cr4Pse,
    Cr4Pke,
    Cr4Smap,
    Cr4Smep,
    Cr4La57,
    Maxphyaddr,
    EferLma,
}

/// Which half of the CPU role a field lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Word {
    Base,
    Ext,
}

/// How the base role's bit 4 is named and what 1 means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpteSense {
    /// `cr4_pae` (≤ v5.0): the guest's CR4.PAE.
    Cr4Pae,
    /// `gpte_is_8_bytes` (47c42e6b4192 … v5.16): 1 = 8-byte guest PTEs.
    Is8Bytes,
    /// `has_4_byte_gpte` (v5.17, bb3b394d35e8): 1 = 4-byte guest PTEs (inverted).
    Has4Byte,
}

/// One named bit-field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldDef {
    pub field: Field,
    pub name: &'static str,
    pub shift: u8,
    pub width: u8,
}

impl FieldDef {
    pub const fn mask(&self) -> u32 {
        (((1u64 << self.width) - 1) << self.shift) as u32
    }
    pub const fn get(&self, word: u32) -> u32 {
        (word & self.mask()) >> self.shift
    }
    pub const fn set(&self, word: u32, v: u32) -> u32 {
        (word & !self.mask()) | ((v << self.shift) & self.mask())
    }
}

/// The field layout of one kernel version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub name: &'static str,
    pub gpte: GpteSense,
    pub base: &'static [FieldDef],
    pub ext: &'static [FieldDef],
}

/// One field that differs between two roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldDiff {
    pub name: &'static str,
    pub old: u64,
    pub new: u64,
}

impl Layout {
    pub fn defs(&self, w: Word) -> &'static [FieldDef] {
        match w {
            Word::Base => self.base,
            Word::Ext => self.ext,
        }
    }
    pub fn def(&self, w: Word, f: Field) -> Option<&'static FieldDef> {
        self.defs(w).iter().find(|d| d.field == f)
    }
    pub fn has(&self, w: Word, f: Field) -> bool {
        self.def(w, f).is_some()
    }
    /// Bits of the word no field of this layout covers.
    pub fn unused_mask(&self, w: Word) -> u32 {
        !self.defs(w).iter().fold(0, |m, d| m | d.mask())
    }
    /// Set a field; a no-op if this version's layout lacks it.
    pub fn set(&self, w: Word, word: u32, f: Field, v: u32) -> u32 {
        match self.def(w, f) {
            Some(d) => d.set(word, v),
            None => word,
        }
    }
    pub fn get(&self, w: Word, word: u32, f: Field) -> Option<u32> {
        self.def(w, f).map(|d| d.get(word))
    }
    /// Field by field, in layout order, plus `unused` if stray bits are set (a role read from
    /// a trace may be any integer).
    pub fn fields(&self, w: Word, word: u32) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .defs(w)
            .iter()
            .map(|d| (d.name, u64::from(d.get(word))))
            .collect();
        let stray = word & self.unused_mask(w);
        if stray != 0 {
            v.push((
                match w {
                    Word::Base => "unused",
                    Word::Ext => "ext.unused",
                },
                u64::from(stray),
            ));
        }
        v
    }
    pub fn diff(&self, w: Word, old: u32, new: u32) -> Vec<FieldDiff> {
        let a = self.fields(w, old);
        let b = self.fields(w, new);
        let mut out = Vec::new();
        for (name, ov) in &a {
            let nv = b.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
            if *ov != nv {
                out.push(FieldDiff {
                    name,
                    old: *ov,
                    new: nv,
                });
            }
        }
        for (name, nv) in &b {
            if !a.iter().any(|(n, _)| n == name) && *nv != 0 {
                out.push(FieldDiff {
                    name,
                    old: 0,
                    new: *nv,
                });
            }
        }
        out
    }
}

const fn fd(field: Field, name: &'static str, shift: u8, width: u8) -> FieldDef {
    FieldDef {
        field,
        name,
        shift,
        width,
    }
}

use Field::*;

// ---- kvm_mmu_page_role -------------------------------------------------------------------
// Bits 0-17 have been stable since v4.20; only names changed. smm sits in the top byte.

macro_rules! base_common {
    ($gpte:literal, $nx:literal) => {
        [
            fd(Level, "level", 0, 4),
            fd(Gpte, $gpte, 4, 1),
            fd(Quadrant, "quadrant", 5, 2),
            fd(Direct, "direct", 7, 1),
            fd(Access, "access", 8, 3),
            fd(Invalid, "invalid", 11, 1),
            fd(EferNx, $nx, 12, 1),
            fd(Cr0Wp, "cr0_wp", 13, 1),
            fd(SmepAndnotWp, "smep_andnot_wp", 14, 1),
            fd(SmapAndnotWp, "smap_andnot_wp", 15, 1),
            fd(AdDisabled, "ad_disabled", 16, 1),
            fd(GuestMode, "guest_mode", 17, 1),
        ]
    };
}

const fn concat_base<const N: usize, const M: usize, const R: usize>(
    a: [FieldDef; N],
    b: [FieldDef; M],
) -> [FieldDef; R] {
    let mut out = [fd(Level, "", 0, 0); R];
    let mut i = 0;
    while i < N {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < M {
        out[N + j] = b[j];
        j += 1;
    }
    out
}

const SMM: FieldDef = fd(Smm, "smm", 24, 8);

/// ≤ v5.0: `cr4_pae`, `nxe`.
pub static BASE_V4_20: [FieldDef; 13] = concat_base(base_common!("cr4_pae", "nxe"), [SMM]);
/// 47c42e6b4192 (v5.1-rc3) … v5.13: `gpte_is_8_bytes`, `nxe`.
pub static BASE_V5_1: [FieldDef; 13] = concat_base(base_common!("gpte_is_8_bytes", "nxe"), [SMM]);
/// v5.14 (167f8a5cae99): `efer_nx`.
pub static BASE_V5_14: [FieldDef; 13] =
    concat_base(base_common!("gpte_is_8_bytes", "efer_nx"), [SMM]);
/// v5.17 (bb3b394d35e8): `has_4_byte_gpte`.
pub static BASE_V5_17: [FieldDef; 13] =
    concat_base(base_common!("has_4_byte_gpte", "efer_nx"), [SMM]);
/// v5.19 (84e5ffd045f3): + `passthrough`.
pub static BASE_V5_19: [FieldDef; 14] = concat_base(
    base_common!("has_4_byte_gpte", "efer_nx"),
    [fd(Passthrough, "passthrough", 18, 1), SMM],
);
/// v6.14: + `is_mirror`.
pub static BASE_V6_14: [FieldDef; 15] = concat_base(
    base_common!("has_4_byte_gpte", "efer_nx"),
    [
        fd(Passthrough, "passthrough", 18, 1),
        fd(IsMirror, "is_mirror", 19, 1),
        SMM,
    ],
);

// ---- kvm_mmu_extended_role ---------------------------------------------------------------

/// v4.20 (7dcd57552008). \[I\] field order per sheet §2.1.
pub static EXT_V4_20: [FieldDef; 8] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pse, "ext.cr4_pse", 3, 1),
    fd(Cr4Pke, "ext.cr4_pke", 4, 1),
    fd(Cr4Smap, "ext.cr4_smap", 5, 1),
    fd(Cr4Smep, "ext.cr4_smep", 6, 1),
    fd(Cr4La57, "ext.cr4_la57", 7, 1),
];
/// v5.0 (de3ccd26fafc): + `maxphyaddr:6`. Also 47c42e6b4192 (v5.1-rc3).
pub static EXT_V5_0: [FieldDef; 9] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pse, "ext.cr4_pse", 3, 1),
    fd(Cr4Pke, "ext.cr4_pke", 4, 1),
    fd(Cr4Smap, "ext.cr4_smap", 5, 1),
    fd(Cr4Smep, "ext.cr4_smep", 6, 1),
    fd(Cr4La57, "ext.cr4_la57", 7, 1),
    fd(Maxphyaddr, "ext.maxphyaddr", 8, 6),
];
/// v5.1: + `cr4_pae` after `cr0_pg` (the seed fix).
pub static EXT_V5_1: [FieldDef; 10] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pae, "ext.cr4_pae", 3, 1),
    fd(Cr4Pse, "ext.cr4_pse", 4, 1),
    fd(Cr4Pke, "ext.cr4_pke", 5, 1),
    fd(Cr4Smap, "ext.cr4_smap", 6, 1),
    fd(Cr4Smep, "ext.cr4_smep", 7, 1),
    fd(Cr4La57, "ext.cr4_la57", 8, 1),
    fd(Maxphyaddr, "ext.maxphyaddr", 9, 6),
];
/// v5.7 (8053f924cad3): − `cr4_la57`.
pub static EXT_V5_7: [FieldDef; 9] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pae, "ext.cr4_pae", 3, 1),
    fd(Cr4Pse, "ext.cr4_pse", 4, 1),
    fd(Cr4Pke, "ext.cr4_pke", 5, 1),
    fd(Cr4Smap, "ext.cr4_smap", 6, 1),
    fd(Cr4Smep, "ext.cr4_smep", 7, 1),
    fd(Maxphyaddr, "ext.maxphyaddr", 8, 6),
];
/// v5.14: + `cr4_la57` (f71a53d1180d), − `maxphyaddr` (6c032f12dd1e).
pub static EXT_V5_14: [FieldDef; 9] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pae, "ext.cr4_pae", 3, 1),
    fd(Cr4Pse, "ext.cr4_pse", 4, 1),
    fd(Cr4Pke, "ext.cr4_pke", 5, 1),
    fd(Cr4Smap, "ext.cr4_smap", 6, 1),
    fd(Cr4Smep, "ext.cr4_smep", 7, 1),
    fd(Cr4La57, "ext.cr4_la57", 8, 1),
];
/// v5.16 (b8453cdcf260): + `efer_lma`.
pub static EXT_V5_16: [FieldDef; 10] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr0Pg, "ext.cr0_pg", 2, 1),
    fd(Cr4Pae, "ext.cr4_pae", 3, 1),
    fd(Cr4Pse, "ext.cr4_pse", 4, 1),
    fd(Cr4Pke, "ext.cr4_pke", 5, 1),
    fd(Cr4Smap, "ext.cr4_smap", 6, 1),
    fd(Cr4Smep, "ext.cr4_smep", 7, 1),
    fd(Cr4La57, "ext.cr4_la57", 8, 1),
    fd(EferLma, "ext.efer_lma", 9, 1),
];
/// v5.19 (faf729621c96): − `cr0_pg`, − `cr4_pae` (now read from the base role). Current.
pub static EXT_V5_19: [FieldDef; 8] = [
    fd(Valid, "ext.valid", 0, 1),
    fd(Execonly, "ext.execonly", 1, 1),
    fd(Cr4Pse, "ext.cr4_pse", 2, 1),
    fd(Cr4Pke, "ext.cr4_pke", 3, 1),
    fd(Cr4Smap, "ext.cr4_smap", 4, 1),
    fd(Cr4Smep, "ext.cr4_smep", 5, 1),
    fd(Cr4La57, "ext.cr4_la57", 6, 1),
    fd(EferLma, "ext.efer_lma", 7, 1),
];

pub static LAYOUT_V4_20: Layout = Layout {
    name: "v4.20",
    gpte: GpteSense::Cr4Pae,
    base: &BASE_V4_20,
    ext: &EXT_V4_20,
};
pub static LAYOUT_V5_0: Layout = Layout {
    name: "v5.0",
    gpte: GpteSense::Cr4Pae,
    base: &BASE_V4_20,
    ext: &EXT_V5_0,
};
pub static LAYOUT_V5_1_RC3: Layout = Layout {
    name: "v5.1-rc3",
    gpte: GpteSense::Is8Bytes,
    base: &BASE_V5_1,
    ext: &EXT_V5_0,
};
pub static LAYOUT_V5_1: Layout = Layout {
    name: "v5.1",
    gpte: GpteSense::Is8Bytes,
    base: &BASE_V5_1,
    ext: &EXT_V5_1,
};
pub static LAYOUT_V5_7: Layout = Layout {
    name: "v5.7",
    gpte: GpteSense::Is8Bytes,
    base: &BASE_V5_1,
    ext: &EXT_V5_7,
};
pub static LAYOUT_V5_14: Layout = Layout {
    name: "v5.14",
    gpte: GpteSense::Is8Bytes,
    base: &BASE_V5_14,
    ext: &EXT_V5_14,
};
pub static LAYOUT_V5_16: Layout = Layout {
    name: "v5.16",
    gpte: GpteSense::Is8Bytes,
    base: &BASE_V5_14,
    ext: &EXT_V5_16,
};
pub static LAYOUT_V5_17: Layout = Layout {
    name: "v5.17",
    gpte: GpteSense::Has4Byte,
    base: &BASE_V5_17,
    ext: &EXT_V5_16,
};
pub static LAYOUT_V5_19: Layout = Layout {
    name: "v5.19",
    gpte: GpteSense::Has4Byte,
    base: &BASE_V5_19,
    ext: &EXT_V5_19,
};
pub static LAYOUT_V6_14: Layout = Layout {
    name: "v6.14",
    gpte: GpteSense::Has4Byte,
    base: &BASE_V6_14,
    ext: &EXT_V5_19,
};

/// Every layout, oldest first.
pub static LAYOUTS: [&Layout; 10] = [
    &LAYOUT_V4_20,
    &LAYOUT_V5_0,
    &LAYOUT_V5_1_RC3,
    &LAYOUT_V5_1,
    &LAYOUT_V5_7,
    &LAYOUT_V5_14,
    &LAYOUT_V5_16,
    &LAYOUT_V5_17,
    &LAYOUT_V5_19,
    &LAYOUT_V6_14,
];
