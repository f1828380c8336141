//! Raw binary images: the bytes are placed at one guest-physical address and entered in real,
//! protected or long mode. For protected and long mode the loader adds a flat GDT (and for
//! long mode identity-mapping page tables) in free RAM, so the entry state is consistent with
//! memory if the guest reloads a segment or reads CR3. The stack pointer is 0: a raw image
//! sets up its own stack.

use super::{check_ram, Layout, LoadError};
use crate::asm::gdt_blob;
use crate::image::{long_entry, protected_entry, Image};
use traces::{GuestSpec, Segment};

/// The CPU mode a raw image is entered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryMode {
    /// Real mode, CS:IP formed from the entry address (below 1 MiB), data segments 0.
    Real,
    /// 32-bit protected mode, paging off, flat 4 GiB segments.
    Protected,
    /// 64-bit mode, 4-level paging identity-mapping at least the low 4 GiB and all RAM
    /// (2 MiB pages), flat segments.
    Long,
}

/// Bytes the identity map covers at least: the low 4 GiB, so MMIO below 4 GiB is mapped too.
const MIN_IDENTITY: u64 = 4 << 30;

/// Loads `bytes` at `gpa` and enters at `entry` in `mode`.
pub fn load_raw(
    bytes: &[u8],
    gpa: u64,
    entry: u64,
    mode: EntryMode,
    ram_size: u64,
) -> Result<GuestSpec, LoadError> {
    check_ram(ram_size, 0x1000)?;
    if bytes.is_empty() {
        return Err(LoadError::EmptyImage);
    }
    let mut layout = Layout::new(ram_size);
    // Page 0 holds the real-mode IVT; support structures never go there.
    let mut img = Image::new(ram_size);
    layout.claim("the image", gpa, bytes.len() as u64)?;
    if entry >= ram_size {
        return Err(LoadError::Entry {
            entry,
            why: "outside guest RAM",
        });
    }
    let regs = match mode {
        EntryMode::Real => {
            if entry >= 0x10_0000 {
                return Err(LoadError::Entry {
                    entry,
                    why: "real mode cannot reach 1 MiB and above",
                });
            }
            // CS = the 64 KiB-aligned segment containing the entry, IP = the offset in it.
            let selector = ((entry >> 4) & 0xf000) as u16;
            let mut r = crate::image::real_mode_entry((entry & 0xffff) as u16);
            r.seg[traces::regs::CS] = Segment {
                selector,
                base: (selector as u64) << 4,
                ..r.seg[traces::regs::CS]
            };
            r
        }
        EntryMode::Protected => {
            if entry > u32::MAX as u64 {
                return Err(LoadError::Entry {
                    entry,
                    why: "32-bit code cannot start above 4 GiB",
                });
            }
            let gdt = gdt_blob(0);
            let at = layout.place("the GDT", gdt.len() as u64, 16, 0x1000, ram_size)?;
            img.add("gdt", at, gdt_blob(at))?;
            protected_entry(entry as u32, at)
        }
        EntryMode::Long => {
            let gdt = gdt_blob(0);
            let at = layout.place("the GDT", gdt.len() as u64, 16, 0x1000, ram_size)?;
            img.add("gdt", at, gdt_blob(at))?;
            let covered = ram_size.max(MIN_IDENTITY).div_ceil(1 << 30);
            if covered > 512 {
                return Err(LoadError::RamSize {
                    size: ram_size,
                    why: "above 512 GiB",
                });
            }
            let tables_len = (2 + covered) * 0x1000;
            let pml4 = layout.place("the page tables", tables_len, 0x1000, 0x1000, ram_size)?;
            img.add("page tables", pml4, identity_tables(pml4, covered))?;
            long_entry(entry, at, pml4)
        }
    };
    img.add("raw image", gpa, bytes.to_vec())?;
    Ok(img.into_spec(regs, format!("raw image@{gpa:#x}"), String::new()))
}

/// PML4 at `base`, PDPT at `base + 0x1000`, then `gigs` page directories of 2 MiB pages:
/// an identity map of the first `gigs` GiB.
fn identity_tables(base: u64, gigs: u64) -> Vec<u8> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let mut t = vec![0u8; ((2 + gigs) * 0x1000) as usize];
    let mut put = |off: u64, v: u64| {
        let off = off as usize;
        t[off..off + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(0, (base + 0x1000) | P_RW);
    for g in 0..gigs {
        put(0x1000 + 8 * g, (base + 0x2000 + g * 0x1000) | P_RW);
        for i in 0..512 {
            let pa = (g << 30) | (i << 21);
            put(0x2000 + g * 0x1000 + 8 * i, pa | P_RW | PS);
        }
    }
    t
}
