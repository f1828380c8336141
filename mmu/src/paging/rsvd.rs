//! Reserved-bit rules per paging format and level (SDM tables 4-4, 4-8, 4-15; KVM
//! `__reset_rsvds_bits_mask`, sheet §7.4).

/// Bits `lo..=hi` set (empty if `lo > hi`).
pub const fn bit_range(lo: u32, hi: u32) -> u64 {
    if lo > hi || lo > 63 {
        0
    } else {
        let hi = if hi > 63 { 63 } else { hi };
        (!0u64 >> (63 - hi)) & (!0u64 << lo)
    }
}

/// Entry format of the paging structures being walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableFormat {
    /// 32-bit paging, 4-byte entries.
    Bits32,
    /// PAE paging, 8-byte entries, PDPTE registers on top.
    Pae,
    /// 4- or 5-level paging.
    Long,
}

/// Everything the reserved-bit table depends on. For the architecture these come from the
/// registers and CPUID; for KVM they are what the last real re-init computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RsvdInputs {
    pub maxphyaddr: u8,
    /// EFER.NXE: with NXE=0 bit 63 is reserved in 8-byte entries.
    pub nx: bool,
    /// CR4.PSE: in 32-bit paging PS is only honoured with PSE=1 (otherwise ignored).
    pub pse: bool,
    /// 1 GiB pages supported; otherwise PS in a PDPTE is reserved.
    pub gbpages: bool,
    /// AMD: bit 8 of non-leaf PML5E/PML4E is reserved (KVM keys this on the CPUID vendor).
    pub amd: bool,
    /// Physical-address width of 4 MiB pages in 32-bit paging: min(40, MAXPHYADDR) per the SDM;
    /// KVM always assumes PSE-36, i.e. 36 (`is_cpuid_PSE36`, sheet §7.4).
    pub pse36_phys_bits: u8,
}

impl RsvdInputs {
    fn m(&self) -> u32 {
        u32::from(self.maxphyaddr.clamp(32, 52))
    }

    /// Reserved bits for a present entry of `format` at `level` (1 = PTE); `large` = PS set
    /// at a level where PS is honoured.
    pub fn mask(&self, format: TableFormat, level: u8, large: bool) -> u64 {
        let m = self.m();
        let nx = if self.nx { 0 } else { 1 << 63 };
        match format {
            TableFormat::Bits32 => {
                if level == 2 && large && self.pse {
                    let p = u32::from(self.pse36_phys_bits.clamp(32, 40));
                    bit_range(p - 19, 21)
                } else {
                    0
                }
            }
            TableFormat::Pae => {
                let high = bit_range(m, 62) | nx;
                match level {
                    3 => pdpte_reserved(self.maxphyaddr),
                    2 if large => high | bit_range(13, 20),
                    _ => high,
                }
            }
            TableFormat::Long => {
                let high = bit_range(m, 51) | nx;
                let bit8 = if self.amd { 1 << 8 } else { 0 };
                let gb = if self.gbpages { 0 } else { 1 << 7 };
                match level {
                    4 | 5 => high | (1 << 7) | bit8,
                    3 if large => high | gb | bit_range(13, 29),
                    3 => high | gb,
                    2 if large => high | bit_range(13, 20),
                    _ => high,
                }
            }
        }
    }
}

/// Reserved bits of a present PAE PDPTE: 63:M, 8:5, 2:1 (bit 63 is reserved, not XD; sheet
/// §7.3, KVM `load_pdptrs`).
pub fn pdpte_reserved(maxphyaddr: u8) -> u64 {
    let m = u32::from(maxphyaddr.clamp(32, 52));
    bit_range(m, 63) | bit_range(5, 8) | bit_range(1, 2)
}
