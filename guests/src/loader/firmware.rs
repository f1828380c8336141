//! PC firmware (a BIOS ROM such as SeaBIOS's `bios.bin`), started as a PC starts it: the ROM
//! at the top of the 4 GiB space, its last 128 KiB also at the top of the first megabyte
//! (0xe0000–0xfffff, where the chipset aliases it), and the CPU at the reset vector F000:FFF0
//! in real mode (SDM Vol. 3A 9.1.4, "First Instruction Executed").
//!
//! The entry CS base is that of a real-mode F000 selector (0xf0000), not the reset state's
//! 0xffff0000: both reach the same bytes through the alias, and the first instruction (a far
//! jump into segment F000) reloads CS anyway, so the recorded entry is an ordinary real-mode
//! state every backend can load.

use super::{check_ram, LoadError};
use crate::image::{real_mode_entry, Image};
use traces::{GuestSpec, MemRegion, RegionKind, Segment};

/// The low alias: the last 128 KiB of the ROM, ending at 1 MiB.
pub const LOW_ALIAS_SIZE: u64 = 128 << 10;
const ONE_MIB: u64 = 1 << 20;
const FOUR_GIB: u64 = 1 << 32;
/// The largest ROM accepted (QEMU's pc machine takes up to 16 MiB of flash).
pub const MAX_ROM: u64 = 16 << 20;

/// The guest of a firmware ROM image in `ram_size` bytes of RAM.
pub fn load_firmware(rom: &[u8], name: &str, ram_size: u64) -> Result<GuestSpec, LoadError> {
    check_ram(ram_size, ONE_MIB)?;
    let size = rom.len() as u64;
    // `%` rather than `is_multiple_of` (Rust 1.87; the workspace supports 1.85).
    #[allow(clippy::manual_is_multiple_of)]
    let aligned = size % 0x1000 == 0;
    if !(0x1_0000..=MAX_ROM).contains(&size) || !aligned {
        return Err(LoadError::Invalid(format!(
            "firmware {name}: {size} bytes; a ROM is 64 KiB to 16 MiB in whole 4 KiB pages"
        )));
    }
    let high = FOUR_GIB - size;
    if ram_size > high {
        return Err(LoadError::Invalid(format!(
            "firmware {name}: RAM up to {ram_size:#x} overlaps the ROM at {high:#x}"
        )));
    }
    let low = size.min(LOW_ALIAS_SIZE);
    let mut img = Image::new(ram_size);
    img.add(
        &format!("{name} (below 1 MiB)"),
        ONE_MIB - low,
        rom[(size - low) as usize..].to_vec(),
    )?;
    let mut regs = real_mode_entry(0xfff0);
    regs.seg[traces::regs::CS] = Segment {
        selector: 0xf000,
        base: 0xf_0000,
        ..regs.seg[traces::regs::CS]
    };
    let mut spec = img.into_spec(regs, format!("firmware {name}"), String::new());
    // The ROM at the top of 4 GiB: outside RAM, so `Image` does not place it.
    let hash = xxhash_rust::xxh3::xxh3_64(rom);
    spec.blobs.push(traces::Blob {
        hash,
        name: name.to_string(),
        data: rom.to_vec(),
    });
    spec.loads.push(traces::Load {
        blob: (spec.blobs.len() - 1) as u32,
        gpa: high,
    });
    spec.regions.push(MemRegion {
        gpa: high,
        size,
        kind: RegionKind::Rom,
        name: format!("{name} (ROM below 4 GiB)"),
    });
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rom_sits_below_4g_and_its_last_128k_below_1m() {
        let mut rom = vec![0u8; 256 << 10];
        let n = rom.len();
        rom[n - 16] = 0xea; // the reset vector's far jump
        let g = load_firmware(&rom, "bios.bin", 64 << 20).unwrap();
        let at = |gpa: u64| {
            let l = g.loads.iter().find(|l| l.gpa == gpa).unwrap();
            &g.blobs[l.blob as usize].data
        };
        assert_eq!(at(0xe0000).len(), 128 << 10);
        assert_eq!(at(0xe0000)[(128 << 10) - 16], 0xea);
        assert_eq!(at(FOUR_GIB - (256 << 10)).len(), 256 << 10);
        assert_eq!(g.regions[0].kind, RegionKind::Rom);
        let cs = g.entry.seg[traces::regs::CS];
        assert_eq!(
            (cs.selector, cs.base, g.entry.rip),
            (0xf000, 0xf0000, 0xfff0)
        );
    }

    #[test]
    fn odd_sizes_are_refused() {
        assert!(load_firmware(&[0u8; 100], "x", 64 << 20).is_err());
        // RAM reaching into the ROM below 4 GiB.
        assert!(load_firmware(&vec![0u8; 128 << 10], "x", (4 << 30) - (64 << 10)).is_err());
    }
}
