//! The two cascaded 8259A programmable interrupt controllers (master at 0x20/0x21, slave at
//! 0xa0/0xa1 on the master's IRQ 2) and the edge/level control registers ELCR1/ELCR2
//! (0x4d0/0x4d1), as a PC chipset has them. Follows the Intel 8259A datasheet: ICW1–ICW4
//! initialisation, OCW1 mask, OCW2 EOI/rotation commands, OCW3 register select, poll and
//! special mask; auto-EOI; a spurious interrupt reads as IRQ 7 (15 on the slave) with no ISR
//! bit set.

/// One 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Chip {
    /// Input line levels (for edge detection).
    lines: u8,
    irr: u8,
    isr: u8,
    imr: u8,
    /// The IRQ with the lowest priority is `priority_add - 1` (rotation).
    priority_add: u8,
    vector_base: u8,
    /// OCW3: read the ISR (true) or the IRR (false) at the command port.
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// Which initialisation word comes next at the data port: 0 none, 2 ICW2, 3 ICW3, 4 ICW4.
    init_next: u8,
    needs_icw4: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    /// ELCR: level-triggered inputs.
    elcr: u8,
    /// Which ELCR bits exist (IRQ 0, 1, 2, 8 and 13 are always edge-triggered).
    elcr_mask: u8,
}

impl Chip {
    fn new(elcr_mask: u8) -> Chip {
        Chip {
            elcr_mask,
            ..Chip::default()
        }
    }

    /// The position (0 = highest priority) of the first bit set in `mask`, in rotated order.
    fn priority(&self, mask: u8) -> Option<u8> {
        (0..8).find(|p| mask & (1 << ((p + self.priority_add) & 7)) != 0)
    }

    /// The IRQ this chip would raise now, if any.
    fn pending(&self, cascade_bit: u8) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr)?;
        // In special mask mode, in-service levels do not block lower ones; in special fully
        // nested mode the cascade input is not blocked by its own in-service bit.
        let mut isr = if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        };
        if self.special_fully_nested {
            isr &= !cascade_bit;
        }
        let cur = self.priority(isr).unwrap_or(8);
        (p < cur).then_some((p + self.priority_add) & 7)
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let m = 1 << irq;
        if self.elcr & m != 0 {
            if level {
                self.irr |= m;
            } else {
                self.irr &= !m;
            }
        } else if level && self.lines & m == 0 {
            self.irr |= m;
        }
        if level {
            self.lines |= m;
        } else {
            self.lines &= !m;
        }
    }

    /// INTA for `irq`: in service unless auto-EOI; an edge request is consumed.
    fn acknowledge(&mut self, irq: u8) {
        let m = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= m;
        }
        if self.elcr & m == 0 {
            self.irr &= !m;
        }
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: start initialisation; masks, requests and priorities reset.
            *self = Chip {
                lines: self.lines,
                elcr: self.elcr,
                elcr_mask: self.elcr_mask,
                needs_icw4: v & 1 != 0,
                single: v & 2 != 0,
                init_next: 2,
                ..Chip::default()
            };
        } else if v & 0x08 != 0 {
            // OCW3
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 1 != 0;
            }
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2
            match v >> 5 {
                0 => self.rotate_on_auto_eoi = false,
                4 => self.rotate_on_auto_eoi = true,
                cmd @ (1 | 5) => {
                    // Non-specific EOI (with rotation for 5).
                    if let Some(p) = self.priority(self.isr) {
                        let irq = (p + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << (v & 7)),
                6 => self.priority_add = (v + 1) & 7,
                7 => {
                    self.isr &= !(1 << (v & 7));
                    self.priority_add = ((v & 7) + 1) & 7;
                }
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_next {
            2 => {
                self.vector_base = v & 0xf8;
                self.init_next = match (self.single, self.needs_icw4) {
                    (false, _) => 3,
                    (true, true) => 4,
                    (true, false) => 0,
                };
            }
            3 => self.init_next = if self.needs_icw4 { 4 } else { 0 },
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.special_fully_nested = v & 0x10 != 0;
                self.init_next = 0;
            }
            _ => self.imr = v,
        }
    }
}

/// The master/slave pair with the ELCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pics {
    master: Chip,
    slave: Chip,
}

impl Default for Pics {
    fn default() -> Self {
        Pics {
            master: Chip::new(0xf8),
            slave: Chip::new(0xde),
        }
    }
}

pub const PORTS: [u16; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];

impl Pics {
    pub fn claims(port: u16) -> bool {
        PORTS.contains(&port)
    }

    /// Sets the level of input `irq` (0–15).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if irq < 8 {
            self.master.set_line(irq, level);
        } else if irq < 16 {
            self.slave.set_line(irq - 8, level);
        }
        self.cascade();
    }

    /// The slave's INT output drives the master's IRQ 2.
    fn cascade(&mut self) {
        let int = self.slave.pending(0).is_some();
        self.master.set_line(2, int);
    }

    /// The master's INT output: an interrupt request to the CPU.
    pub fn intr(&self) -> bool {
        self.master.pending(1 << 2).is_some()
    }

    /// The INTA cycle: the vector the CPU takes. With no request left (it went away), the
    /// 8259A answers IRQ 7 of the chip asked, without setting its in-service bit.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending(1 << 2) {
            Some(2) => {
                self.master.acknowledge(2);
                match self.slave.pending(0) {
                    Some(irq) => {
                        self.slave.acknowledge(irq);
                        self.slave.vector_base + irq
                    }
                    None => self.slave.vector_base + 7,
                }
            }
            Some(irq) => {
                self.master.acknowledge(irq);
                self.master.vector_base + irq
            }
            None => self.master.vector_base + 7,
        };
        self.cascade();
        vector
    }

    /// OCW3 poll: the highest request, acknowledged, as 0x80 | IRQ; 0 with none.
    fn poll(&mut self, slave: bool) -> u8 {
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        chip.poll = false;
        let cascade = if slave { 0 } else { 1 << 2 };
        match chip.pending(cascade) {
            Some(irq) => {
                chip.acknowledge(irq);
                self.cascade();
                0x80 | irq
            }
            None => 0,
        }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        let slave = port & 0x80 != 0;
        match port {
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => {
                let chip = if slave { &self.slave } else { &self.master };
                if chip.poll {
                    return self.poll(slave);
                }
                match (port & 1, chip.read_isr) {
                    (0, true) => chip.isr,
                    (0, false) => chip.irr,
                    _ => chip.imr,
                }
            }
        }
    }

    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            0x4d0 => self.master.elcr = v & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = v & self.slave.elcr_mask,
            _ => {
                let chip = if port & 0x80 != 0 {
                    &mut self.slave
                } else {
                    &mut self.master
                };
                if port & 1 == 0 {
                    chip.write_command(v);
                } else {
                    chip.write_data(v);
                }
            }
        }
        self.cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's init_8259A: vectors 0x30/0x38, slave on IRQ 2, 8086 mode, optional auto-EOI.
    fn init(auto_eoi: bool) -> Pics {
        let mut p = Pics::default();
        let icw4 = if auto_eoi { 0x03 } else { 0x01 };
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, icw4),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
        ] {
            p.write(port, v);
        }
        p.write(0x21, 0x00);
        p.write(0xa1, 0x00);
        p
    }

    #[test]
    fn edge_irq_is_delivered_once_and_needs_eoi() {
        let mut p = init(false);
        assert!(!p.intr());
        p.set_irq(0, true);
        assert!(p.intr());
        assert_eq!(p.acknowledge(), 0x30);
        assert!(!p.intr());
        // The line stays high: no new edge.
        p.set_irq(0, true);
        assert!(!p.intr());
        p.write(0x20, 0x0b); // OCW3: read ISR
        assert_eq!(p.read(0x20), 0x01);
        p.set_irq(0, false);
        p.set_irq(0, true);
        // IRQ 0 is in service: the new request waits for the EOI.
        assert!(!p.intr());
        p.write(0x20, 0x20); // non-specific EOI
        assert_eq!(p.read(0x20), 0x00);
        assert!(p.intr());
        p.write(0x20, 0x0a); // OCW3: read IRR
        assert_eq!(p.read(0x20), 0x01);
    }

    #[test]
    fn slave_cascades_through_irq2_and_masks_apply() {
        let mut p = init(false);
        p.write(0xa1, 0x10); // mask IRQ 12
        p.set_irq(12, true);
        assert!(!p.intr());
        p.set_irq(8, true);
        assert!(p.intr());
        assert_eq!(p.acknowledge(), 0x38);
        p.write(0xa1, 0x00);
        // IRQ 12 is lower priority than in-service IRQ 8 on the slave.
        assert!(!p.intr());
        p.write(0xa0, 0x20);
        p.write(0x20, 0x20);
        assert!(p.intr());
        assert_eq!(p.acknowledge(), 0x3c);
        assert_eq!(p.read(0xa1), 0x00);
    }

    #[test]
    fn auto_eoi_sets_no_isr_and_spurious_is_irq7() {
        let mut p = init(true);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x31);
        p.write(0x20, 0x0b);
        assert_eq!(p.read(0x20), 0);
        // No request: the spurious vector, IRQ 7, with nothing in service.
        assert_eq!(p.acknowledge(), 0x37);
        assert_eq!(p.read(0x20), 0);
    }

    #[test]
    fn elcr_makes_inputs_level_triggered() {
        let mut p = init(false);
        p.write(0x4d1, 0xff);
        assert_eq!(p.read(0x4d1), 0xde);
        p.write(0x4d0, 0xff);
        assert_eq!(p.read(0x4d0), 0xf8);
        p.set_irq(9, true);
        assert_eq!(p.acknowledge(), 0x39);
        p.write(0xa0, 0x20);
        p.write(0x20, 0x20);
        // Still asserted: requested again after the EOI.
        assert!(p.intr());
        // The request goes away before the INTA: the master's cascade input latched its
        // edge, and the slave answers with its spurious IRQ 15, as KVM's 8259 does.
        p.set_irq(9, false);
        assert!(p.intr());
        assert_eq!(p.acknowledge(), 0x3f);
        p.write(0xa0, 0x0b);
        assert_eq!(p.read(0xa0), 0);
    }

    #[test]
    fn poll_mode_returns_the_request() {
        let mut p = init(false);
        p.set_irq(3, true);
        p.write(0x20, 0x0c);
        assert_eq!(p.read(0x20), 0x83);
        p.write(0x20, 0x0c);
        assert_eq!(p.read(0x20), 0x00);
    }

    #[test]
    fn specific_eoi_and_rotation() {
        let mut p = init(false);
        p.set_irq(3, true);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x33);
        p.write(0x20, 0x63); // specific EOI for IRQ 3
        assert_eq!(p.acknowledge(), 0x35);
        p.write(0x20, 0xa0); // rotate on non-specific EOI: IRQ 5 now lowest
        p.set_irq(4, false);
        p.set_irq(4, true);
        p.set_irq(6, true);
        // IRQ 6 has the highest priority after rotation past 5.
        assert_eq!(p.acknowledge(), 0x36);
    }
}
