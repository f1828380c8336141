//! The Bochs/QEMU debug console: every byte written to port 0xe9 (Bochs's, and QEMU's
//! `-debugcon`) or 0x402 (QEMU's isa-debugcon where SeaBIOS writes its POST log) is console
//! output.

use super::Console;

pub struct DebugCon;

impl DebugCon {
    pub const PORT: u16 = 0xe9;
    /// SeaBIOS's `DebugOutputPort` (CONFIG_DEBUG_IO), QEMU's isa-debugcon at iobase 0x402.
    pub const SEABIOS_PORT: u16 = 0x402;
    /// Reading the port returns 0xe9 on Bochs and QEMU (isa-debugcon's `readback` default, on
    /// either port): how guests detect it.
    pub const READBACK: u8 = 0xe9;

    pub fn claims(port: u16) -> bool {
        port == Self::PORT || port == Self::SEABIOS_PORT
    }

    pub fn write(byte: u8, console: &mut Console) {
        console.put(byte);
    }
}
