//! Register state, CPU model and the guest-memory traits.

/// Architectural bit positions used throughout the crate (SDM Vol. 3A §2.5, §4.1).
pub mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;

    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_UMIP: u64 = 1 << 11;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const CR4_VMXE: u64 = 1 << 13;
    pub const CR4_SMXE: u64 = 1 << 14;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;
    pub const CR4_PKE: u64 = 1 << 22;

    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const EFER_SVME: u64 = 1 << 12;
    pub const EFER_FFXSR: u64 = 1 << 14;

    /// CR3 bit 63 with CR4.PCIDE=1: "do not flush" hint (SDM §4.10.4.1).
    pub const CR3_NOFLUSH: u64 = 1 << 63;
    pub const CR3_PCID_MASK: u64 = 0xfff;

    pub const RFLAGS_TF: u64 = 1 << 8;
    pub const RFLAGS_IF: u64 = 1 << 9;
    pub const RFLAGS_DF: u64 = 1 << 10;
    /// Alignment check; with CR4.SMAP, permits supervisor access to user pages (SDM §4.6).
    pub const RFLAGS_AC: u64 = 1 << 18;
    /// Resume flag (SYSCALL clears it in R11 and RFLAGS).
    pub const RFLAGS_RF: u64 = 1 << 16;
}

use bits::*;

/// The paging-relevant registers of one vCPU.
///
/// `efer` carries LMA as the CPU reports it: IA-32e paging is selected by EFER.LMA (set by the
/// CPU on CR0.PG 0→1 with LME=1), not by LME. `pdptrs` are the four PAE PDPTE registers, only
/// meaningful in PAE paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ControlRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub smm: bool,
    pub guest_mode: bool,
    pub pdptrs: [u64; 4],
    pub pkru: u32,
}

impl ControlRegs {
    pub fn pg(&self) -> bool {
        self.cr0 & CR0_PG != 0
    }
    pub fn pe(&self) -> bool {
        self.cr0 & CR0_PE != 0
    }
    pub fn wp(&self) -> bool {
        self.cr0 & CR0_WP != 0
    }
    pub fn pae(&self) -> bool {
        self.cr4 & CR4_PAE != 0
    }
    pub fn pse(&self) -> bool {
        self.cr4 & CR4_PSE != 0
    }
    pub fn la57(&self) -> bool {
        self.cr4 & CR4_LA57 != 0
    }
    pub fn smep(&self) -> bool {
        self.cr4 & CR4_SMEP != 0
    }
    pub fn smap(&self) -> bool {
        self.cr4 & CR4_SMAP != 0
    }
    pub fn pke(&self) -> bool {
        self.cr4 & CR4_PKE != 0
    }
    pub fn pcide(&self) -> bool {
        self.cr4 & CR4_PCIDE != 0
    }
    pub fn lma(&self) -> bool {
        self.efer & EFER_LMA != 0
    }
    pub fn lme(&self) -> bool {
        self.efer & EFER_LME != 0
    }
    pub fn nxe(&self) -> bool {
        self.efer & EFER_NXE != 0
    }
    /// PAE paging proper (not IA-32e): the PDPTE registers are in use.
    pub fn is_pae_paging(&self) -> bool {
        self.pg() && self.pae() && !self.lma()
    }
    /// The registers `kvm_init_shadow_npt_mmu` computes nested NPT's roles from, for L1's
    /// registers `self` (sheet §4.5): CR0 forced to PG (NPT walks ignore WP), CR4 without PKE,
    /// L1's EFER; L2 is active.
    pub fn nested_npt_view(&self) -> ControlRegs {
        ControlRegs {
            cr0: CR0_PG,
            cr4: self.cr4 & !CR4_PKE,
            guest_mode: true,
            ..*self
        }
    }
    /// The registers after INIT (SDM Vol. 3A Table 9-1): CR0 = CD|NW|ET, everything else 0.
    /// SMM and guest mode are left as they are; PKRU is not changed by INIT.
    pub fn after_init(&self) -> ControlRegs {
        ControlRegs {
            cr0: CR0_CD | CR0_NW | CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            smm: self.smm,
            guest_mode: self.guest_mode,
            pdptrs: [0; 4],
            pkru: self.pkru,
        }
    }
}

/// What the guest CPU offers (guest CPUID): the inputs of reserved-bit and CR4 checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuModel {
    /// CPUID 0x80000008.EAX\[7:0\]; clamped to 32..=52 where used.
    pub maxphyaddr: u8,
    /// Guest CPUID vendor is AMD (bit 8 of non-leaf PML5E/PML4E is reserved).
    pub amd: bool,
    /// 1 GiB pages (CPUID 0x80000001.EDX\[26\]).
    pub gbpages: bool,
    pub la57: bool,
    pub pku: bool,
    pub smep: bool,
    pub smap: bool,
    pub nx: bool,
    pub pcid: bool,
}

impl CpuModel {
    /// A contemporary Intel-like 64-bit CPU: MAXPHYADDR 46, every paging feature but LA57.
    pub fn default_x86_64() -> CpuModel {
        CpuModel {
            maxphyaddr: 46,
            amd: false,
            gbpages: true,
            la57: false,
            pku: true,
            smep: true,
            smap: true,
            nx: true,
            pcid: true,
        }
    }
    /// MAXPHYADDR clamped to what the architecture allows (32..=52).
    pub fn phys_bits(&self) -> u8 {
        self.maxphyaddr.clamp(32, 52)
    }
    /// Bits 63:MAXPHYADDR: KVM's `reserved_gpa_bits`.
    pub fn reserved_gpa_bits(&self) -> u64 {
        !0u64 << self.phys_bits()
    }
}

impl Default for CpuModel {
    fn default() -> Self {
        CpuModel::default_x86_64()
    }
}

/// Read access to guest-physical memory.
pub trait GuestMemory {
    /// Fill `buf` from `gpa`; `false` if any byte lies outside guest RAM.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
}

/// Write access, needed only for accessed/dirty updates.
pub trait GuestMemoryMut: GuestMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool;
}

/// Little-endian helpers on top of [`GuestMemory`].
pub(crate) fn read_u64(mem: &dyn GuestMemory, gpa: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
}

pub(crate) fn read_u32(mem: &dyn GuestMemory, gpa: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(gpa, &mut b).then(|| u32::from_le_bytes(b))
}

/// A flat block of guest RAM starting at `base`: handy for tests, benchmarks and snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatMemory {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl FlatMemory {
    pub fn new(base: u64, size: usize) -> FlatMemory {
        FlatMemory {
            base,
            bytes: vec![0; size],
        }
    }
    fn range(&self, gpa: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let off = gpa.checked_sub(self.base)?;
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> bool {
        GuestMemoryMut::write(self, gpa, &v.to_le_bytes())
    }
    pub fn write_u32(&mut self, gpa: u64, v: u32) -> bool {
        GuestMemoryMut::write(self, gpa, &v.to_le_bytes())
    }
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        read_u64(self, gpa)
    }
    pub fn read_u32(&self, gpa: u64) -> Option<u32> {
        read_u32(self, gpa)
    }
}

impl GuestMemory for FlatMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.range(gpa, buf.len()) {
            Some(r) => {
                buf.copy_from_slice(&self.bytes[r]);
                true
            }
            None => false,
        }
    }
}

impl GuestMemoryMut for FlatMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.range(gpa, data.len()) {
            Some(r) => {
                self.bytes[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}
