//! Guest image loaders: raw binaries at an address ([`load_raw`]) and multiboot (v1) kernels
//! ([`load_multiboot`]), each producing a [`traces::GuestSpec`] with the entry state a backend
//! loads directly.
//!
//! Images come from users, so every size, offset and address is checked (with checked
//! arithmetic) before use, and every failure is a [`LoadError`] saying what is wrong; nothing
//! here panics on malformed input.
//!
//! The returned spec's `origin` says what kind of image it is (`raw image@0x...`,
//! `multiboot kernel`); callers that know the file name replace it (`multiboot FILE`,
//! `raw FILE@ADDR`).

pub mod elf;
pub mod firmware;
pub mod multiboot;
pub mod raw;

pub use elf::{Elf, ElfError, ProgramHeader};
pub use firmware::load_firmware;
pub use multiboot::{
    load_multiboot, multiboot_cmdline, MultibootHeader, BOOTLOADER_MAGIC, HEADER_MAGIC,
};
pub use raw::{load_raw, EntryMode};

use crate::asm::BuildError;

/// The largest guest RAM the loaders accept (1 TiB): far beyond any guest mmurr records, small
/// enough that page-table and map sizes stay sane.
pub const MAX_RAM: u64 = 1 << 40;

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("ELF: {0}")]
    Elf(#[from] ElfError),
    #[error("no multiboot header (magic 0x1BADB002, 4-byte aligned, in the first 8 KiB)")]
    NoMultibootHeader,
    #[error(
        "multiboot header at offset {offset:#x}: magic + flags + checksum = {sum:#x}, must be 0"
    )]
    BadChecksum { offset: usize, sum: u32 },
    #[error(
        "the multiboot header requires features mmurr does not provide (flags bits {0:#x}; \
         supported: 0 page-aligned modules, 1 memory map, 2 video mode (ignored), 16 a.out kludge)"
    )]
    UnsupportedFlags(u32),
    #[error("multiboot a.out kludge fields: {0}")]
    AoutKludge(String),
    #[error("{what} [{start:#x}, {end:#x}) is outside guest RAM [0, {ram:#x})")]
    OutOfRam {
        what: String,
        start: u64,
        end: u64,
        ram: u64,
    },
    #[error("{what} [{start:#x}, {end:#x}) must lie below 4 GiB")]
    Above4G { what: String, start: u64, end: u64 },
    #[error("{0} overlaps {1}")]
    Overlap(String, String),
    #[error("RAM size {size:#x}: {why}")]
    RamSize { size: u64, why: &'static str },
    #[error("entry point {entry:#x}: {why}")]
    Entry { entry: u64, why: &'static str },
    #[error("{what} is {len} bytes, at most {max} are accepted")]
    TooLong {
        what: String,
        len: usize,
        max: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no room for {what} ({size:#x} bytes) in guest memory [{lo:#x}, {hi:#x})")]
    NoRoom {
        what: String,
        size: u64,
        lo: u64,
        hi: u64,
    },
    #[error("the image is empty")]
    EmptyImage,
    #[error("building the boot structures: {0}")]
    Build(#[from] BuildError),
}

// `%` rather than `is_multiple_of`, which needs Rust 1.87 (the workspace supports 1.85).
#[allow(clippy::manual_is_multiple_of)]
fn check_ram(ram_size: u64, min: u64) -> Result<(), LoadError> {
    if ram_size < min {
        return Err(LoadError::RamSize {
            size: ram_size,
            why: "too small for this image type",
        });
    }
    if ram_size > MAX_RAM {
        return Err(LoadError::RamSize {
            size: ram_size,
            why: "larger than 1 TiB",
        });
    }
    if ram_size % 4096 != 0 {
        return Err(LoadError::RamSize {
            size: ram_size,
            why: "not a multiple of 4 KiB",
        });
    }
    Ok(())
}

/// Guest-physical ranges already claimed (blobs, bss, boot structures), to place new things
/// without overlap.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    ram: u64,
    used: Vec<(String, u64, u64)>,
}

impl Layout {
    pub fn new(ram: u64) -> Self {
        Layout {
            ram,
            used: Vec::new(),
        }
    }

    /// Claims `[start, start + len)`; fails outside RAM or on overlap.
    pub fn claim(&mut self, what: &str, start: u64, len: u64) -> Result<(), LoadError> {
        let end = start.checked_add(len).ok_or_else(|| LoadError::OutOfRam {
            what: what.into(),
            start,
            end: u64::MAX,
            ram: self.ram,
        })?;
        if end > self.ram {
            return Err(LoadError::OutOfRam {
                what: what.into(),
                start,
                end,
                ram: self.ram,
            });
        }
        if len == 0 {
            return Ok(());
        }
        if let Some((other, _, _)) = self.used.iter().find(|(_, s, e)| start < *e && *s < end) {
            return Err(LoadError::Overlap(
                format!("{what} [{start:#x}, {end:#x})"),
                other.clone(),
            ));
        }
        self.used.push((what.into(), start, end));
        Ok(())
    }

    /// The lowest `align`-aligned address in `[lo, hi)` where `len` bytes are free; claims it.
    pub fn place(
        &mut self,
        what: &str,
        len: u64,
        align: u64,
        lo: u64,
        hi: u64,
    ) -> Result<u64, LoadError> {
        let hi = hi.min(self.ram);
        let no_room = || LoadError::NoRoom {
            what: what.into(),
            size: len,
            lo,
            hi,
        };
        let align_up = |v: u64| v.checked_add(align - 1).map(|v| v & !(align - 1));
        let mut cand = align_up(lo).ok_or_else(no_room)?;
        loop {
            let end = cand.checked_add(len).ok_or_else(no_room)?;
            if end > hi {
                return Err(no_room());
            }
            // Skip past the highest end of the claimed ranges that collide with the candidate.
            let clash = self
                .used
                .iter()
                .filter(|(_, s, e)| cand < *e && *s < end)
                .map(|(_, _, e)| *e)
                .max();
            match clash {
                None => {
                    self.claim(what, cand, len)?;
                    return Ok(cand);
                }
                Some(e) => cand = align_up(e).ok_or_else(no_room)?,
            }
        }
    }

    /// The end of the highest claimed range (0 when none).
    pub fn top(&self) -> u64 {
        self.used.iter().map(|(_, _, e)| *e).max().unwrap_or(0)
    }
}
