//! The 8254 programmable interval timer (channels 0–2 at 0x40–0x42, control word at 0x43)
//! and the PC's port 0x61 (channel 2's gate and speaker enable, the refresh-request toggle in
//! bit 4, channel 2's output in bit 5), after the Intel 8254 datasheet. Counting follows
//! virtual time ([`crate::clock`]). Channel 0's output drives IRQ 0.

use crate::clock::{ns_to_ticks, ticks_to_ns, PIT_HZ};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Channel {
    mode: u8,
    /// Access mode: 1 low byte, 2 high byte, 3 low then high.
    rw: u8,
    bcd: bool,
    /// The count loaded (1..=0x10000), once the guest has written one.
    count: Option<u32>,
    /// When counting began (ns), or how many ticks had elapsed when a low gate froze it.
    start_ns: u64,
    frozen: Option<u64>,
    gate: bool,
    /// Modes 1 and 5 count only after a gate trigger.
    triggered: bool,
    latched_count: Option<u16>,
    /// The second byte of a latched lo/hi count is next.
    latched_hi_next: bool,
    latched_status: Option<u8>,
    read_hi_next: bool,
    write_hi_next: bool,
    write_lo: u8,
    null_count: bool,
}

impl Channel {
    fn new(gate: bool) -> Channel {
        Channel {
            gate,
            rw: 3,
            ..Channel::default()
        }
    }

    /// Ticks counted since the count was loaded (or the trigger), as of `now`.
    fn elapsed(&self, now: u64) -> Option<u64> {
        let count = self.count?;
        let _ = count;
        if matches!(self.mode, 1 | 5) && !self.triggered {
            return None;
        }
        Some(match self.frozen {
            Some(t) => t,
            None => ns_to_ticks(now.saturating_sub(self.start_ns), PIT_HZ),
        })
    }

    fn counter(&self, now: u64) -> u16 {
        let (Some(count), Some(d)) = (self.count, self.elapsed(now)) else {
            return self.count.unwrap_or(0) as u16;
        };
        let c = count as u64;
        let v = match self.mode {
            2 => c - d % c,
            // Square wave: counts down by two, twice per period.
            3 => c - (2 * d) % c,
            _ => c.wrapping_sub(d) & 0xffff,
        };
        v as u16
    }

    fn out(&self, now: u64) -> bool {
        let Some(count) = self.count else {
            return self.mode != 0;
        };
        let Some(d) = self.elapsed(now) else {
            return true; // modes 1 and 5 before a trigger
        };
        let c = count as u64;
        match self.mode {
            0 => d >= c,
            1 => d >= c,
            2 => d % c != c - 1,
            3 => d % c < c.div_ceil(2),
            _ => d != c, // 4, 5: one low tick at the terminal count
        }
    }

    /// The first rising edge of OUT after `after_ns` (for IRQ 0 and for halting until it).
    fn next_rise(&self, after_ns: u64) -> Option<u64> {
        let count = self.count? as u64;
        if self.frozen.is_some() || (matches!(self.mode, 1 | 5) && !self.triggered) {
            return None;
        }
        let d = ns_to_ticks(after_ns.saturating_sub(self.start_ns), PIT_HZ);
        let at = |ticks: u64| self.start_ns + ticks_to_ns(ticks, PIT_HZ);
        let edge = match self.mode {
            0 | 1 => count,
            2 | 3 => (d / count + 1) * count,
            _ => count + 1,
        };
        let t = at(edge);
        (t > after_ns).then_some(t)
    }

    fn load(&mut self, value: u16, now: u64) {
        let mut v = value as u32;
        if self.bcd {
            let digits = [v & 0xf, (v >> 4) & 0xf, (v >> 8) & 0xf, v >> 12];
            v = digits[0] + 10 * digits[1] + 100 * digits[2] + 1000 * digits[3];
            if v == 0 {
                v = 10000;
            }
        } else if v == 0 {
            v = 0x10000;
        }
        self.count = Some(v);
        self.start_ns = now;
        self.frozen = (!self.gate && matches!(self.mode, 0 | 4)).then_some(0);
        self.null_count = false;
    }

    fn write(&mut self, v: u8, now: u64) {
        match self.rw {
            1 => self.load(v as u16, now),
            2 => self.load((v as u16) << 8, now),
            _ => {
                if self.write_hi_next {
                    self.load(u16::from_le_bytes([self.write_lo, v]), now);
                } else {
                    self.write_lo = v;
                    // Mode 0: writing the first byte stops the count (datasheet).
                    if self.mode == 0 && self.count.is_some() {
                        self.frozen = Some(0);
                        self.count = None;
                    }
                }
                self.write_hi_next = !self.write_hi_next;
            }
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        let byte = |v: u16, hi: bool| if hi { (v >> 8) as u8 } else { v as u8 };
        if let Some(c) = self.latched_count {
            return match self.rw {
                3 if !self.latched_hi_next => {
                    self.latched_hi_next = true;
                    c as u8
                }
                rw => {
                    self.latched_count = None;
                    self.latched_hi_next = false;
                    byte(c, rw == 2 || rw == 3)
                }
            };
        }
        let c = self.counter(now);
        match self.rw {
            1 => c as u8,
            2 => (c >> 8) as u8,
            _ => {
                let hi = self.read_hi_next;
                self.read_hi_next = !hi;
                byte(c, hi)
            }
        }
    }

    fn status(&self, now: u64) -> u8 {
        (u8::from(self.out(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.rw << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        let rising = gate && !self.gate;
        match self.mode {
            0 | 4 => {
                if !gate && self.frozen.is_none() {
                    self.frozen = self.elapsed(now);
                } else if gate {
                    if let Some(t) = self.frozen.take() {
                        self.start_ns = now.saturating_sub(ticks_to_ns(t, PIT_HZ));
                    }
                }
            }
            _ if rising => {
                // Modes 1, 5 (re)trigger; modes 2, 3 reload.
                self.triggered = true;
                self.start_ns = now;
            }
            _ => {}
        }
        self.gate = gate;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    channels: [Channel; 3],
    speaker: bool,
    /// The next rising edge of channel 0's output (IRQ 0) not yet raised.
    irq_next_ns: Option<u64>,
}

impl Default for Pit {
    fn default() -> Self {
        Pit {
            // Channels 0 and 1 have their gates tied high on a PC; channel 2's is port 0x61 bit 0.
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            speaker: false,
            irq_next_ns: None,
        }
    }
}

/// The refresh-request bit of port 0x61 toggles every 15.085 µs on a PC.
const REFRESH_NS: u64 = 15_085;

impl Pit {
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x40..=0x42 => self.channels[(port - 0x40) as usize].read(now),
            0x61 => {
                let c2 = &self.channels[2];
                u8::from(c2.gate)
                    | (u8::from(self.speaker) << 1)
                    | ((((now / REFRESH_NS) & 1) as u8) << 4)
                    | (u8::from(c2.out(now)) << 5)
            }
            _ => 0xff, // the control word register cannot be read
        }
    }

    pub fn write(&mut self, port: u16, v: u8, now: u64) {
        match port {
            0x40..=0x42 => {
                let n = (port - 0x40) as usize;
                self.channels[n].write(v, now);
                if n == 0 {
                    self.irq_next_ns = self.channels[0].next_rise(now);
                }
            }
            0x43 => self.control(v, now),
            0x61 => {
                self.speaker = v & 2 != 0;
                self.channels[2].set_gate(v & 1 != 0, now);
            }
            _ => {}
        }
    }

    fn control(&mut self, v: u8, now: u64) {
        let sel = v >> 6;
        if sel == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches statuses.
            for n in 0..3 {
                if v & (2 << n) == 0 {
                    continue;
                }
                let c = &mut self.channels[n];
                if v & 0x10 == 0 && c.latched_status.is_none() {
                    c.latched_status = Some(c.status(now));
                }
                if v & 0x20 == 0 && c.latched_count.is_none() {
                    c.latched_count = Some(c.counter(now));
                }
            }
            return;
        }
        let c = &mut self.channels[sel as usize];
        let rw = (v >> 4) & 3;
        if rw == 0 {
            if c.latched_count.is_none() {
                c.latched_count = Some(c.counter(now));
                c.latched_hi_next = false;
            }
            return;
        }
        let mode = (v >> 1) & 7;
        c.mode = if mode > 5 { mode - 4 } else { mode };
        c.rw = rw;
        c.bcd = v & 1 != 0;
        c.count = None;
        c.frozen = None;
        c.triggered = false;
        c.null_count = true;
        c.read_hi_next = false;
        c.write_hi_next = false;
        if sel == 0 {
            self.irq_next_ns = None;
        }
    }

    /// Whether channel 0's output rose (IRQ 0) by `now`; the next edge is then scheduled.
    /// Edges missed while nobody looked (a long instruction, a halt) coalesce into one, as
    /// the 8259's edge-triggered input would see them.
    pub fn irq0_due(&mut self, now: u64) -> bool {
        match self.irq_next_ns {
            Some(t) if t <= now => {
                self.irq_next_ns = self.channels[0].next_rise(now);
                true
            }
            _ => false,
        }
    }

    /// When IRQ 0 rises next, for a halted CPU to wait until.
    pub fn next_deadline(&self) -> Option<u64> {
        self.irq_next_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK_NS: u64 = 838; // ~1 / 1.193182 MHz

    #[test]
    fn channel0_rate_generator_raises_irq0_every_period() {
        let mut p = Pit::default();
        p.write(0x43, 0x34, 0); // channel 0, lo/hi, mode 2
        p.write(0x40, 0x9c, 0); // 11932 = 0x2e9c: 100 Hz
        p.write(0x40, 0x2e, 0);
        let period = ticks_to_ns(11932, PIT_HZ);
        assert_eq!(p.next_deadline(), Some(period));
        assert!(!p.irq0_due(period - 1));
        assert!(p.irq0_due(period));
        assert!(!p.irq0_due(period + 1));
        assert_eq!(p.next_deadline(), Some(ticks_to_ns(2 * 11932, PIT_HZ)));
        // Several missed periods coalesce into one edge.
        assert!(p.irq0_due(10 * period + 5));
        assert!(!p.irq0_due(10 * period + 6));
    }

    #[test]
    fn latch_and_lohi_reads_count_down() {
        let mut p = Pit::default();
        p.write(0x43, 0x30, 0); // channel 0 mode 0
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 0); // 0x1000
        let now = 0x100 * TICK_NS + 100;
        p.write(0x43, 0x00, now); // latch channel 0
        let lo = p.read(0x40, now + 50_000) as u16;
        let hi = p.read(0x40, now + 50_000) as u16;
        assert_eq!((hi << 8) | lo, 0x1000 - 0x100);
        // Unlatched reads follow time.
        let lo = p.read(0x40, 0x200 * TICK_NS + 100) as u16;
        let hi = p.read(0x40, 0x200 * TICK_NS + 100) as u16;
        assert_eq!((hi << 8) | lo, 0x1000 - 0x200);
        // Mode 0 fires once at the terminal count.
        assert!(p.irq0_due(ticks_to_ns(0x1000, PIT_HZ)));
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn port_61_gates_channel2_and_shows_its_output() {
        // Linux's pit_calibrate_tsc: gate high, speaker off, channel 2 mode 0, poll bit 5.
        let mut p = Pit::default();
        p.write(0x61, 0x01, 0);
        p.write(0x43, 0xb0, 0);
        let latch = 11932u16; // 10 ms
        p.write(0x42, latch as u8, 0);
        p.write(0x42, (latch >> 8) as u8, 0);
        let due = ticks_to_ns(latch as u64, PIT_HZ);
        assert_eq!(p.read(0x61, due - 1) & 0x21, 0x01);
        assert_eq!(p.read(0x61, due) & 0x21, 0x21);
        // Bit 4 toggles with the refresh clock.
        assert_ne!(p.read(0x61, 0) & 0x10, p.read(0x61, REFRESH_NS) & 0x10);
        // A low gate stops mode 0 counting.
        let mut q = Pit::default();
        q.write(0x43, 0xb0, 0);
        q.write(0x42, 0xff, 0);
        q.write(0x42, 0xff, 0);
        q.write(0x43, 0x80, 1_000_000);
        let a = u16::from_le_bytes([q.read(0x42, 0), q.read(0x42, 0)]);
        assert_eq!(a, 0xffff);
        q.write(0x61, 0x01, 2_000_000);
        q.write(0x43, 0x80, 2_000_000 + 100 * TICK_NS);
        let b = u16::from_le_bytes([q.read(0x42, 0), q.read(0x42, 0)]);
        assert!((0xffff - 101..=0xffff - 99).contains(&b), "{b:#x}");
    }

    #[test]
    fn read_back_latches_status_and_count() {
        let mut p = Pit::default();
        p.write(0x43, 0x36, 0); // channel 0 lo/hi mode 3
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x00, 0); // 65536
        p.write(0x43, 0xc2, ticks_to_ns(10, PIT_HZ)); // read back count and status of channel 0
        assert_eq!(p.read(0x40, 0), 0x80 | 0x30 | (3 << 1));
        let c = u16::from_le_bytes([p.read(0x40, 0), p.read(0x40, 0)]);
        assert_eq!(c, 0u16.wrapping_sub(20));
    }

    #[test]
    fn lobyte_only_and_hibyte_only_access() {
        let mut p = Pit::default();
        p.write(0x43, 0x50, 0); // channel 1, lobyte only, mode 0
        p.write(0x41, 0x80, 0);
        assert_eq!(p.read(0x41, ticks_to_ns(0x10, PIT_HZ)), 0x70);
        p.write(0x43, 0x60, 0); // channel 1, hibyte only
        p.write(0x41, 0x02, 0);
        assert_eq!(p.read(0x41, ticks_to_ns(0x100, PIT_HZ)), 0x01);
    }
}
