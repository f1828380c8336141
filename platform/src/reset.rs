//! The PC's reset paths: the reset control register at 0xcf9 (PIIX3), the keyboard
//! controller's CPU-reset pulse (command 0xfe at 0x64; the i8042 is vm-superio's), and port
//! 0x92 (System Control Port A: bit 0 fast reset, bit 1 fast A20 gate).

use std::cell::Cell;
use std::rc::Rc;
use vm_superio::{I8042Device, Trigger};

/// Which path asked for the reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// 0xcf9 with RST_CPU (bit 2); `hard` when SYS_RST (bit 1) was set too.
    ResetControl { hard: bool },
    /// Keyboard controller command 0xfe.
    KeyboardController,
    /// Port 0x92 bit 0.
    FastReset,
}

impl std::fmt::Display for ResetCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetCause::ResetControl { hard } => write!(
                f,
                "a {} reset through the reset control register (port 0xcf9)",
                if *hard { "hard" } else { "soft" }
            ),
            ResetCause::KeyboardController => {
                write!(
                    f,
                    "the keyboard controller's reset pulse (command 0xfe to port 0x64)"
                )
            }
            ResetCause::FastReset => write!(f, "a fast reset through port 0x92 bit 0"),
        }
    }
}

/// vm-superio's i8042 signals its reset through a [`Trigger`].
#[derive(Clone, Debug, Default)]
struct Flag(Rc<Cell<bool>>);

impl Trigger for Flag {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

pub struct Reset {
    i8042: I8042Device<Flag>,
    kbd_reset: Rc<Cell<bool>>,
    rcr: u8,
    port92: u8,
    requested: Option<ResetCause>,
}

impl std::fmt::Debug for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reset")
            .field("rcr", &self.rcr)
            .field("port92", &self.port92)
            .field("requested", &self.requested)
            .finish()
    }
}

impl Default for Reset {
    fn default() -> Self {
        let flag = Flag::default();
        let kbd_reset = flag.0.clone();
        Reset {
            i8042: I8042Device::new(flag),
            kbd_reset,
            rcr: 0,
            // A20 enabled: the entry state mmurr gives every guest.
            port92: 0x02,
            requested: None,
        }
    }
}

impl Reset {
    pub fn claims(port: u16, size: u8) -> bool {
        (port == 0xcf9 && size == 1) || matches!(port, 0x60 | 0x64 | 0x92)
    }

    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0xcf9 => self.rcr,
            0x92 => self.port92,
            // Only the controller's reset line is modelled, no keyboard or mouse: the status
            // and data ports read as a floating bus, as on a PC without an 8042, so a guest
            // finds no controller at once (Linux: "i8042: No controller found"). vm-superio's
            // i8042 reads 0 ("ready, empty"), which sends Linux into its self-test, whose
            // answer never comes: seconds of TSC-polled timeouts.
            _ => 0xff,
        }
    }

    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            0xcf9 => {
                if v & 0x04 != 0 && self.rcr & 0x04 == 0 {
                    self.requested = Some(ResetCause::ResetControl {
                        hard: v & 0x02 != 0,
                    });
                }
                self.rcr = v & 0x0a;
            }
            0x92 => {
                if v & 1 != 0 && self.port92 & 1 == 0 {
                    self.requested = Some(ResetCause::FastReset);
                }
                self.port92 = v & 0x03;
            }
            _ => {
                let _ = self.i8042.write((port - 0x60) as u8, v);
                if self.kbd_reset.replace(false) {
                    self.requested = Some(ResetCause::KeyboardController);
                }
            }
        }
    }

    /// The reset the guest asked for, once.
    pub fn take(&mut self) -> Option<ResetCause> {
        self.requested.take()
    }

    /// Port 0x92 bit 1: whether the guest left the A20 gate enabled.
    pub fn a20(&self) -> bool {
        self.port92 & 2 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_keyboard_controller_answers_reads() {
        let mut r = Reset::default();
        // Status: output buffer "full" and input buffer "busy" forever, as a floating bus.
        assert_eq!(r.read(0x64), 0xff);
        assert_eq!(r.read(0x60), 0xff);
        r.write(0x64, 0xaa); // self-test: no answer
        assert_eq!(r.read(0x60), 0xff);
        assert_eq!(r.take(), None);
    }

    #[test]
    fn each_reset_path_is_reported_once() {
        let mut r = Reset::default();
        r.write(0xcf9, 0x02);
        assert_eq!(r.take(), None);
        r.write(0xcf9, 0x06);
        assert_eq!(r.take(), Some(ResetCause::ResetControl { hard: true }));
        assert_eq!(r.take(), None);
        r.write(0x64, 0xd1);
        assert_eq!(r.take(), None);
        r.write(0x64, 0xfe);
        assert_eq!(r.take(), Some(ResetCause::KeyboardController));
        assert!(r.a20());
        r.write(0x92, 0x00);
        assert!(!r.a20());
        r.write(0x92, 0x03);
        assert_eq!(r.take(), Some(ResetCause::FastReset));
        assert_eq!(r.read(0x92), 0x03);
        assert!(!Reset::claims(0xcf9, 4));
    }
}
