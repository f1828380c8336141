//! A 16550 UART at COM1 (0x3f8..0x3ff), output only: what a kernel's early console needs.

use super::Console;

const BASE: u16 = 0x3f8;
/// LSR: transmitter holding register empty + transmitter empty: always ready to send.
const LSR_IDLE: u8 = 0x60;
/// MSR: carrier detect, data set ready, clear to send.
const MSR_READY: u8 = 0xb0;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;

#[derive(Default)]
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fcr: u8,
    /// Loopback mode: the last byte written comes back from RBR (drivers probe with it).
    loopback: Option<u8>,
}

impl Serial {
    pub fn claims(port: u16) -> bool {
        (BASE..BASE + 8).contains(&port)
    }

    pub fn write(&mut self, port: u16, v: u8, console: &mut Console) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - BASE {
            0 if dlab => self.dll = v,
            0 if self.mcr & MCR_LOOP != 0 => self.loopback = Some(v),
            0 => console.put(v),
            1 if dlab => self.dlm = v,
            1 => self.ier = v & 0x0f,
            2 => self.fcr = v,
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {} // LSR and MSR are read-only.
        }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - BASE {
            0 if dlab => self.dll,
            0 => self.loopback.take().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 if self.fcr & 1 != 0 => IIR_NONE | 0xc0,
            2 => IIR_NONE,
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_IDLE | u8::from(self.loopback.is_some()),
            6 if self.mcr & MCR_LOOP != 0 => (self.mcr & 0x0f) << 4,
            6 => MSR_READY,
            _ => self.scr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::OutputSink;

    #[test]
    fn divisor_latch_and_scratch_do_not_print() {
        let mut c = Console::new(OutputSink::Discard);
        let mut s = Serial::default();
        s.write(0x3fb, 0x80, &mut c);
        s.write(0x3f8, 0x01, &mut c);
        assert_eq!(s.read(0x3f8), 0x01);
        s.write(0x3fb, 0x03, &mut c);
        s.write(0x3ff, 0x5a, &mut c);
        assert_eq!(s.read(0x3ff), 0x5a);
        s.write(0x3f8, b'x', &mut c);
        assert_eq!(c.captured(), b"x");
        assert_eq!(s.read(0x3fa), 0x01);
        assert_eq!(s.read(0x3fe), 0xb0);
    }

    #[test]
    fn loopback_returns_the_byte() {
        let mut c = Console::new(OutputSink::Discard);
        let mut s = Serial::default();
        s.write(0x3fc, 0x1e, &mut c);
        s.write(0x3f8, 0xae, &mut c);
        assert_eq!(s.read(0x3fd) & 1, 1);
        assert_eq!(s.read(0x3f8), 0xae);
        assert!(c.captured().is_empty());
    }
}
