//! The extended-page-table pointer L1 loads for L2 (SDM Vol. 3C §25.6.11, "Extended-Page-Table
//! Pointer (EPTP)"): the input of nested EPT's `guest_mmu` (sheet §4.6).

/// EPTP bits 5:3: the page-walk length minus one.
const PWL_SHIFT: u32 = 3;
const PWL_MASK: u64 = 7 << PWL_SHIFT;
/// EPTP bit 6: accessed and dirty flags enabled.
const AD_ENABLE: u64 = 1 << 6;
/// EPTP bits 2:0: the memory type of the paging structures; 6 = write-back.
const MT_WB: u64 = 6;
const ROOT_MASK: u64 = 0x000f_ffff_ffff_f000;

/// An EPTP value as L1 writes it to the VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Eptp(pub u64);

impl Eptp {
    /// A write-back EPTP for a `levels`-level EPT rooted at `root` (4 KiB aligned).
    pub fn new(root: u64, levels: u8, ad: bool) -> Eptp {
        let pwl = u64::from(levels.saturating_sub(1) & 7) << PWL_SHIFT;
        Eptp((root & ROOT_MASK) | pwl | MT_WB | if ad { AD_ENABLE } else { 0 })
    }
    /// The page-walk length: 4 or 5; `None` for any other encoding, which fails VM-entry
    /// (KVM's `nested_vmx_check_eptp`).
    pub fn levels(self) -> Option<u8> {
        match (self.0 & PWL_MASK) >> PWL_SHIFT {
            3 => Some(4),
            4 => Some(5),
            _ => None,
        }
    }
    /// L1 enabled EPT accessed/dirty flags.
    pub fn ad_enabled(self) -> bool {
        self.0 & AD_ENABLE != 0
    }
    /// The guest-physical address of the top EPT table.
    pub fn root(self) -> u64 {
        self.0 & ROOT_MASK
    }
}
