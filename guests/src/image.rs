//! Guest memory images and entry states: turns placed byte blobs into a [`GuestSpec`], and
//! builds the register files a backend loads directly (segments in VMX access-rights layout).

use crate::asm::BuildError;
use traces::{Blob, DescriptorTable, GuestSpec, Load, Regs, Segment};

/// Byte blobs placed in guest-physical memory, checked against RAM and each other.
#[derive(Clone, Debug, Default)]
pub struct Image {
    ram_size: u64,
    /// (name, gpa, bytes) in insertion order.
    parts: Vec<(String, u64, Vec<u8>)>,
}

impl Image {
    pub fn new(ram_size: u64) -> Self {
        Image {
            ram_size,
            parts: Vec::new(),
        }
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Places `data` at `gpa`. Fails if it leaves RAM or overlaps an earlier blob.
    pub fn add(&mut self, name: &str, gpa: u64, data: Vec<u8>) -> Result<(), BuildError> {
        let end = gpa
            .checked_add(data.len() as u64)
            .filter(|e| *e <= self.ram_size)
            .ok_or_else(|| {
                BuildError::Layout(format!(
                    "{name} ({} bytes at {gpa:#x}) does not fit in {:#x} bytes of RAM",
                    data.len(),
                    self.ram_size
                ))
            })?;
        for (other, ogpa, odata) in &self.parts {
            let oend = ogpa + odata.len() as u64;
            if gpa < oend && *ogpa < end {
                return Err(BuildError::Layout(format!(
                    "{name} [{gpa:#x}, {end:#x}) overlaps {other} [{ogpa:#x}, {oend:#x})"
                )));
            }
        }
        self.parts.push((name.to_string(), gpa, data));
        Ok(())
    }

    /// Bytes of the image at `gpa..gpa+len` (zero where no blob is placed), for tests.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (_, pgpa, data) in &self.parts {
            for (i, b) in out.iter_mut().enumerate() {
                let addr = gpa + i as u64;
                if addr >= *pgpa && addr < pgpa + data.len() as u64 {
                    *b = data[(addr - pgpa) as usize];
                }
            }
        }
        out
    }

    /// The guest: blobs deduplicated by content, loads in placement order. `maxphyaddr` and
    /// `cpuid` are left for the backend to fill.
    pub fn into_spec(self, entry: Regs, origin: String, cmdline: String) -> GuestSpec {
        let mut blobs: Vec<Blob> = Vec::new();
        let mut loads = Vec::new();
        for (name, gpa, data) in self.parts {
            let hash = xxhash_rust::xxh3::xxh3_64(&data);
            let idx = match blobs.iter().position(|b| b.hash == hash && b.data == data) {
                Some(i) => i,
                None => {
                    blobs.push(Blob { hash, name, data });
                    blobs.len() - 1
                }
            };
            loads.push(Load {
                blob: idx as u32,
                gpa,
            });
        }
        GuestSpec {
            ram_size: self.ram_size,
            regions: Vec::new(),
            blobs,
            loads,
            entry,
            cpuid: Vec::new(),
            origin,
            cmdline,
            maxphyaddr: 0,
        }
    }
}

/// Access rights (VMX layout) used below.
pub const AR_REAL_CODE: u32 = 0x9b;
pub const AR_REAL_DATA: u32 = 0x93;
pub const AR_CODE32: u32 = 0xc09b;
pub const AR_DATA32: u32 = 0xc093;
pub const AR_CODE64: u32 = 0xa09b;
pub const AR_TSS_BUSY: u32 = 0x8b;
pub const AR_LDT: u32 = 0x82;

/// Fields common to every entry state: TR, LDTR and IDTR as after RESET, XCR0 = x87 only.
fn base_regs() -> Regs {
    Regs {
        rflags: 0x2,
        ldtr: Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            attrs: AR_LDT,
        },
        tr: Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            attrs: AR_TSS_BUSY,
        },
        gdtr: DescriptorTable {
            base: 0,
            limit: 0xffff,
        },
        idtr: DescriptorTable {
            base: 0,
            limit: 0xffff,
        },
        xcr0: 1,
        ..Regs::default()
    }
}

/// Real mode at `0:ip` (CS base 0, all data segments 0), CR0 at its RESET value
/// (ET, CD, NW), RFLAGS 0x2.
pub fn real_mode_entry(ip: u16) -> Regs {
    let data = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attrs: AR_REAL_DATA,
    };
    let mut r = base_regs();
    r.seg = [data; 6];
    r.seg[traces::regs::CS] = Segment {
        attrs: AR_REAL_CODE,
        ..data
    };
    r.rip = ip as u64;
    r.cr0 = 0x6000_0010;
    r
}

/// The state of an application processor after INIT (SDM vol. 3A, table 10-1), as KVM's
/// vCPU reset sets it: real mode at F000:FFF0 with the CS base at FFFF0000. It waits there for
/// a startup IPI ([`startup_entry`]).
pub fn init_entry() -> Regs {
    let mut r = real_mode_entry(0xfff0);
    let cs = &mut r.seg[traces::regs::CS];
    cs.selector = 0xf000;
    cs.base = 0xffff_0000;
    r
}

/// The INIT state with a startup IPI's `vector` applied: CS = vector << 8 (base
/// vector << 12), IP 0 (SDM vol. 3A, 9.4.4.1).
pub fn startup_entry(vector: u8) -> Regs {
    let mut r = init_entry();
    let cs = &mut r.seg[traces::regs::CS];
    cs.selector = u16::from(vector) << 8;
    cs.base = u64::from(vector) << 12;
    r.rip = 0;
    r
}

/// 32-bit protected mode, paging off, flat 4 GiB segments from the flat GDT
/// loaded at `gdt_base`.
pub fn protected_entry(eip: u32, gdt_base: u64) -> Regs {
    use crate::asm::{SEL_CODE32, SEL_DATA};
    let data = Segment {
        selector: SEL_DATA,
        base: 0,
        limit: 0xffff_ffff,
        attrs: AR_DATA32,
    };
    let mut r = base_regs();
    r.seg = [data; 6];
    r.seg[traces::regs::CS] = Segment {
        selector: SEL_CODE32,
        attrs: AR_CODE32,
        ..data
    };
    r.gdtr = DescriptorTable {
        base: gdt_base,
        limit: (crate::asm::flat_gdt().len() * 8 - 1) as u16,
    };
    r.rip = eip as u64;
    r.cr0 = crate::expect::CR0_PE | crate::expect::CR0_ET;
    r
}

/// 64-bit mode with 4-level paging rooted at `pml4`, CS = the GDT's 64-bit code segment.
pub fn long_entry(rip: u64, gdt_base: u64, pml4: u64) -> Regs {
    use crate::expect::*;
    let mut r = protected_entry(0, gdt_base);
    r.seg[traces::regs::CS] = Segment {
        selector: crate::asm::SEL_CODE64,
        base: 0,
        limit: 0xffff_ffff,
        attrs: AR_CODE64,
    };
    r.rip = rip;
    r.cr0 = CR0_PE | CR0_ET | CR0_PG;
    r.cr3 = pml4;
    r.cr4 = CR4_PAE;
    r.efer = EFER_LME | EFER_LMA;
    r
}
