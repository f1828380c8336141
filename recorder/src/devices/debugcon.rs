//! The Bochs/QEMU debug console at port 0xe9: every byte written is console output.

use super::Console;

pub struct DebugCon;

impl DebugCon {
    pub const PORT: u16 = 0xe9;
    /// Reading the port returns 0xe9 on Bochs and QEMU: how guests detect it.
    pub const READBACK: u8 = 0xe9;

    pub fn write(byte: u8, console: &mut Console) {
        console.put(byte);
    }
}
