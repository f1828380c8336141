//! Paging structures written into a contiguous block of guest-physical memory.

use crate::asm::BuildError;

/// Entry bits.
pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;

/// A block of guest-physical memory `[base, base + len)` holding page tables.
#[derive(Clone, Debug)]
pub struct Tables {
    base: u64,
    bytes: Vec<u8>,
}

impl Tables {
    pub fn new(base: u64, len: usize) -> Self {
        Tables {
            base,
            bytes: vec![0; len],
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    fn slot(&mut self, gpa: u64, size: usize) -> Result<&mut [u8], BuildError> {
        let off = gpa
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| o.checked_add(size).is_some_and(|e| e <= self.bytes.len()))
            .ok_or_else(|| BuildError::Layout(format!("table entry {gpa:#x} outside the block")))?;
        Ok(&mut self.bytes[off..off + size])
    }

    /// Writes a 4-byte entry (32-bit paging) at `table + 4 * index`.
    pub fn set32(&mut self, table: u64, index: u64, entry: u32) -> Result<(), BuildError> {
        self.slot(table + 4 * index, 4)?
            .copy_from_slice(&entry.to_le_bytes());
        Ok(())
    }

    /// Writes an 8-byte entry (PAE, 4-level) at `table + 8 * index`.
    pub fn set64(&mut self, table: u64, index: u64, entry: u64) -> Result<(), BuildError> {
        self.slot(table + 8 * index, 8)?
            .copy_from_slice(&entry.to_le_bytes());
        Ok(())
    }

    /// Fills an 8-byte-entry page table mapping `count` 4 KiB pages from physical 0 (identity).
    pub fn identity64(&mut self, table: u64, count: u64, flags: u64) -> Result<(), BuildError> {
        (0..count).try_for_each(|i| self.set64(table, i, (i << 12) | flags))
    }

    /// Same with 4-byte entries (32-bit paging).
    pub fn identity32(&mut self, table: u64, count: u64, flags: u32) -> Result<(), BuildError> {
        (0..count).try_for_each(|i| self.set32(table, i, ((i as u32) << 12) | flags))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
