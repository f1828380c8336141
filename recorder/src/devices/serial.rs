//! A 16550 UART at COM1 (0x3f8..0x3ff), output only: what a kernel's console needs, with its
//! interrupt (IRQ 4) as a 16550 raises it: "transmitter holding register empty" while enabled
//! in IER and not yet acknowledged (by reading IIR or writing THR), and "received data
//! available" for a byte sent to itself in loopback mode.

use super::Console;

const BASE: u16 = 0x3f8;
/// The serial port's interrupt line (ISA IRQ 4).
pub const IRQ: u32 = 4;
/// LSR: transmitter holding register empty + transmitter empty: always ready to send.
const LSR_IDLE: u8 = 0x60;
/// MSR: carrier detect, data set ready, clear to send.
const MSR_READY: u8 = 0xb0;
/// IIR: no interrupt pending; THR empty; received data available.
const IIR_NONE: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
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
    /// A THR-empty interrupt is pending (cleared by reading IIR or writing THR).
    thr_pending: bool,
}

impl Serial {
    pub fn claims(port: u16) -> bool {
        (BASE..BASE + 8).contains(&port)
    }

    /// The interrupt identification, highest priority first.
    fn iir(&self) -> u8 {
        if self.ier & IER_RDI != 0 && self.loopback.is_some() {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thr_pending {
            IIR_THRI
        } else {
            IIR_NONE
        }
    }

    /// The level of the interrupt line.
    pub fn irq(&self) -> bool {
        self.iir() != IIR_NONE
    }

    pub fn write(&mut self, port: u16, v: u8, console: &mut Console) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - BASE {
            0 if dlab => self.dll = v,
            0 => {
                if self.mcr & MCR_LOOP != 0 {
                    self.loopback = Some(v);
                } else {
                    console.put(v);
                }
                // Sent at once: the holding register is empty again.
                self.thr_pending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                // Enabling the THR-empty interrupt while THR is empty raises it (16550).
                if v & IER_THRI != 0 && self.ier & IER_THRI == 0 {
                    self.thr_pending = true;
                }
                self.ier = v & 0x0f;
            }
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
            2 => {
                let iir = self.iir();
                if iir == IIR_THRI {
                    self.thr_pending = false;
                }
                iir | if self.fcr & 1 != 0 { 0xc0 } else { 0 }
            }
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

    #[test]
    fn thr_empty_interrupt_is_raised_by_enabling_and_by_each_byte_and_acknowledged_by_iir() {
        let mut c = Console::new(OutputSink::Discard);
        let mut s = Serial::default();
        assert!(!s.irq());
        s.write(0x3f9, IER_THRI, &mut c);
        assert!(s.irq());
        assert_eq!(s.read(0x3fa), IIR_THRI);
        assert!(!s.irq());
        assert_eq!(s.read(0x3fa), IIR_NONE);
        s.write(0x3f8, b'a', &mut c);
        assert!(s.irq());
        // Disabling it in IER lowers the line; the pending state stays for re-enabling.
        s.write(0x3f9, 0, &mut c);
        assert!(!s.irq());
        s.write(0x3f9, IER_THRI, &mut c);
        assert!(s.irq());
        s.write(0x3f8, b'b', &mut c);
        assert_eq!(s.read(0x3fa), IIR_THRI);
        assert!(!s.irq());
        assert_eq!(c.captured(), b"ab");
    }

    #[test]
    fn received_data_interrupt_in_loopback_has_priority() {
        let mut c = Console::new(OutputSink::Discard);
        let mut s = Serial::default();
        s.write(0x3fc, MCR_LOOP, &mut c);
        s.write(0x3f9, IER_RDI | IER_THRI, &mut c);
        s.write(0x3f8, 0x42, &mut c);
        assert_eq!(s.read(0x3fa), IIR_RDI);
        assert_eq!(s.read(0x3f8), 0x42);
        assert_eq!(s.read(0x3fa), IIR_THRI);
        assert!(!s.irq());
    }
}
