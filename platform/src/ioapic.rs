//! The I/O APIC at [`BASE`]: IOREGSEL (+0x00) selects a register read and written through
//! IOWIN (+0x10); 24 redirection entries, version 0x11 as KVM's (which has no EOI register:
//! Remote IRR is cleared by the local APIC's EOI broadcast). After the Intel 82093AA
//! datasheet.

pub const BASE: u64 = 0xfec0_0000;

impl IoApic {
    /// The register page's base, for offsets.
    pub const BASE_OF: u64 = BASE;
}
pub const PINS: usize = 24;
pub(crate) const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);
/// The ID register at reset (KVM's and QEMU's I/O APIC start with ID 0).
pub(crate) const RESET_ID: u32 = 0;

const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const ACTIVE_LOW: u64 = 1 << 13;
const DELIVERY_STATUS: u64 = 1 << 12;
const LOGICAL: u64 = 1 << 11;

/// An interrupt message for the local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    /// Delivery mode (0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT).
    pub mode: u8,
    pub logical: bool,
    pub dest: u8,
    pub level: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoApic {
    id: u32,
    select: u8,
    redir: [u64; PINS],
    /// Input levels as driven (before polarity).
    lines: [bool; PINS],
}

impl Default for IoApic {
    fn default() -> Self {
        IoApic {
            id: RESET_ID,
            select: 0,
            redir: [MASKED; PINS],
            lines: [false; PINS],
        }
    }
}

impl IoApic {
    pub fn claims(gpa: u64) -> bool {
        (BASE..BASE + 0x1000).contains(&gpa)
    }

    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            0x00 => self.select as u32,
            0x10 => self.read_register(),
            _ => 0,
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            0 => self.id << 24,
            1 => VERSION,
            2 => self.id << 24, // arbitration ID
            r @ 0x10..=0x3f => {
                let e = self.redir[((r - 0x10) / 2) as usize];
                if r & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0xffff_ffff,
        }
    }

    /// A write; returns the messages it caused (an unmasked, asserted level pin).
    pub fn write(&mut self, offset: u64, v: u32) -> Vec<Message> {
        match offset {
            0x00 => self.select = v as u8,
            0x10 => match self.select {
                0 => self.id = (v >> 24) & 0xf,
                r @ 0x10..=0x3f => {
                    let pin = ((r - 0x10) / 2) as usize;
                    let e = self.redir[pin];
                    let ro = REMOTE_IRR | DELIVERY_STATUS;
                    self.redir[pin] = if r & 1 == 0 {
                        (e & !0xffff_ffff) | (v as u64 & !ro) | (e & ro)
                    } else {
                        (e & 0xffff_ffff) | ((v as u64) << 32)
                    };
                    if self.redir[pin] & LEVEL == 0 {
                        self.redir[pin] &= !REMOTE_IRR;
                    }
                    return self.service(pin).into_iter().collect();
                }
                _ => {}
            },
            _ => {}
        }
        Vec::new()
    }

    fn asserted(&self, pin: usize) -> bool {
        self.lines[pin] != (self.redir[pin] & ACTIVE_LOW != 0)
    }

    /// A level pin that is asserted, unmasked and not awaiting EOI sends its message.
    fn service(&mut self, pin: usize) -> Option<Message> {
        let e = self.redir[pin];
        if e & LEVEL == 0 || e & MASKED != 0 || e & REMOTE_IRR != 0 || !self.asserted(pin) {
            return None;
        }
        self.redir[pin] |= REMOTE_IRR;
        Some(self.message(pin))
    }

    fn message(&self, pin: usize) -> Message {
        let e = self.redir[pin];
        Message {
            vector: e as u8,
            mode: ((e >> 8) & 7) as u8,
            logical: e & LOGICAL != 0,
            dest: (e >> 56) as u8,
            level: e & LEVEL != 0,
        }
    }

    /// Drives input `pin`; edge-triggered pins send on assertion, level pins while asserted.
    pub fn set_irq(&mut self, pin: usize, level: bool) -> Option<Message> {
        if pin >= PINS {
            return None;
        }
        let was = self.asserted(pin);
        self.lines[pin] = level;
        let now = self.asserted(pin);
        let e = self.redir[pin];
        if e & LEVEL != 0 {
            return self.service(pin);
        }
        (now && !was && e & MASKED == 0).then(|| self.message(pin))
    }

    /// The local APIC's EOI for `vector`: Remote IRR clears; a still-asserted pin sends again.
    pub fn eoi(&mut self, vector: u8) -> Vec<Message> {
        let mut out = Vec::new();
        for pin in 0..PINS {
            let e = self.redir[pin];
            if e as u8 == vector && e & LEVEL != 0 && e & REMOTE_IRR != 0 {
                self.redir[pin] &= !REMOTE_IRR;
                out.extend(self.service(pin));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(io: &mut IoApic, pin: usize, lo: u32, hi: u32) -> Vec<Message> {
        io.write(0, 0x10 + 2 * pin as u32 + 1);
        io.write(0x10, hi);
        io.write(0, 0x10 + 2 * pin as u32);
        io.write(0x10, lo)
    }

    #[test]
    fn version_id_and_reset_masks() {
        let mut io = IoApic::default();
        io.write(0, 1);
        assert_eq!(io.read(0x10), 0x170011);
        io.write(0, 0x10);
        assert_eq!(io.read(0x10), 0x10000);
        io.write(0, 0);
        io.write(0x10, 0x0200_0000);
        assert_eq!(io.read(0x10), 0x0200_0000);
        assert_eq!(io.read(0), 0);
    }

    #[test]
    fn edge_pin_sends_on_rising_edge_only_when_unmasked() {
        let mut io = IoApic::default();
        assert_eq!(io.set_irq(2, true), None);
        io.set_irq(2, false);
        program(&mut io, 2, 0x30, 0);
        let m = io.set_irq(2, true).unwrap();
        assert_eq!((m.vector, m.mode, m.level), (0x30, 0, false));
        assert_eq!(io.set_irq(2, true), None);
    }

    #[test]
    fn level_pin_waits_for_eoi_and_resends_while_asserted() {
        let mut io = IoApic::default();
        program(&mut io, 4, 0x8031, 0xff00_0000);
        let m = io.set_irq(4, true).unwrap();
        assert!(m.level);
        assert_eq!(m.dest, 0xff);
        io.write(0, 0x18);
        assert_ne!(io.read(0x10) & (1 << 14), 0);
        assert_eq!(io.set_irq(4, true), None);
        assert_eq!(io.eoi(0x31).len(), 1); // still asserted
        io.set_irq(4, false);
        assert!(io.eoi(0x31).is_empty());
        // Unmasking an asserted level pin sends at once.
        let mut io = IoApic::default();
        io.set_irq(5, true);
        assert_eq!(program(&mut io, 5, 0x8040, 0).len(), 1);
        // Active-low polarity inverts the input.
        let mut io = IoApic::default();
        program(&mut io, 6, 0x2050, 0);
        assert!(io.set_irq(6, true).is_none());
        assert!(io.set_irq(6, false).is_some());
    }
}
