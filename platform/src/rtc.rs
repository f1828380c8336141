//! The MC146818 CMOS RTC at 0x70 (index; bit 7 masks NMI) and 0x71 (data): the clock reads a
//! fixed virtual epoch plus virtual time, so a guest reads the same date on every run; status
//! registers A–D; and the CMOS bytes a PC BIOS stores and SeaBIOS reads (memory sizes at
//! 0x15–0x18, 0x30/0x31, 0x34/0x35, 0x5b–0x5d; CPU count at 0x5f), laid out as QEMU's pc
//! machine does.

/// The virtual epoch: 2020-01-01 00:00:00 UTC, in seconds since 1970.
pub const EPOCH_UNIX: u64 = 1_577_836_800;

const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Register B: 24-hour mode; data mode bit 2 clear = BCD (the PC default).
const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;
const B_SET: u8 = 0x80;
/// Register A: 32.768 kHz time base, 1024 Hz periodic rate.
const A_DEFAULT: u8 = 0x26;
/// UIP is set for 244 µs before each update (once a second).
const UIP_NS: u64 = 244_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtc {
    index: u8,
    nmi_masked: bool,
    cmos: [u8; 128],
    /// Seconds the guest moved the clock by writing it (SET in register B).
    offset_s: i64,
}

impl Rtc {
    /// CMOS contents for a machine with `ram_size` bytes of RAM at 0 (above 4 GiB counted in
    /// 0x5b–0x5d) and one CPU.
    pub fn new(ram_size: u64) -> Rtc {
        let mut cmos = [0u8; 128];
        cmos[REG_A as usize] = A_DEFAULT;
        cmos[REG_B as usize] = B_24H;
        cmos[REG_D as usize] = 0x80; // valid RAM and time
                                     // Base memory: 640 KiB.
        cmos[0x15] = 0x80;
        cmos[0x16] = 0x02;
        let below_4g = ram_size.min(0xe000_0000);
        let above_4g = ram_size.saturating_sub(below_4g);
        // Extended memory above 1 MiB in KiB (at most 0xffff), twice.
        let ext_kb = (below_4g.saturating_sub(1 << 20) >> 10).min(0xffff) as u16;
        for at in [0x17, 0x30] {
            cmos[at..at + 2].copy_from_slice(&ext_kb.to_le_bytes());
        }
        // Memory above 16 MiB below 4 GiB, in 64 KiB units.
        let above_16m = (below_4g.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        cmos[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        // Memory above 4 GiB, in 64 KiB units (three bytes).
        let high = (above_4g >> 16).min(0xff_ffff) as u32;
        cmos[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        cmos[0x5f] = 0; // CPUs - 1
        Rtc {
            index: 0,
            nmi_masked: false,
            cmos,
            offset_s: 0,
        }
    }

    pub fn claims(port: u16) -> bool {
        matches!(port, 0x70 | 0x71)
    }

    /// Whether the guest masked NMIs (port 0x70 bit 7).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn encode(&self, v: u8) -> u8 {
        if self.cmos[REG_B as usize] & B_BINARY != 0 {
            v
        } else {
            (v / 10) << 4 | (v % 10)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.cmos[REG_B as usize] & B_BINARY != 0 {
            v
        } else {
            (v >> 4) * 10 + (v & 0xf)
        }
    }

    fn unix_seconds(&self, now_ns: u64) -> i64 {
        (EPOCH_UNIX + now_ns / 1_000_000_000) as i64 + self.offset_s
    }

    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        if port == 0x70 {
            return 0xff; // the index register is write-only on a PC
        }
        let i = self.index;
        let t = Civil::from_unix(self.unix_seconds(now_ns));
        match i {
            0x00 => self.encode(t.second),
            0x02 => self.encode(t.minute),
            0x04 => {
                if self.cmos[REG_B as usize] & B_24H != 0 {
                    self.encode(t.hour)
                } else {
                    let h12 = if matches!(t.hour, 0 | 12) {
                        12
                    } else {
                        t.hour % 12
                    };
                    self.encode(h12) | if t.hour >= 12 { 0x80 } else { 0 }
                }
            }
            0x06 => self.encode(t.weekday + 1),
            0x07 => self.encode(t.day),
            0x08 => self.encode(t.month),
            0x09 => self.encode((t.year % 100) as u8),
            0x32 => self.encode((t.year / 100) as u8),
            REG_A => {
                let uip = now_ns % 1_000_000_000 >= 1_000_000_000 - UIP_NS;
                (self.cmos[REG_A as usize] & 0x7f) | if uip { 0x80 } else { 0 }
            }
            REG_C => {
                // Interrupt flags: none are raised (no alarm, periodic or update interrupts
                // are modelled); reading clears them.
                let v = self.cmos[REG_C as usize];
                self.cmos[REG_C as usize] = 0;
                v
            }
            _ => self.cmos[(i & 0x7f) as usize],
        }
    }

    pub fn write(&mut self, port: u16, v: u8, now_ns: u64) {
        if port == 0x70 {
            self.index = v & 0x7f;
            self.nmi_masked = v & 0x80 != 0;
            return;
        }
        let i = self.index as usize;
        match self.index {
            REG_C | REG_D => {} // read-only
            REG_A => self.cmos[i] = v & 0x7f,
            0x00 | 0x02 | 0x04 | 0x07 | 0x08 | 0x09 | 0x32 => {
                // Setting the clock: move the offset so that this field reads `v`.
                let now = self.unix_seconds(now_ns);
                let mut t = Civil::from_unix(now);
                let f = self.decode(v & 0x7f);
                match self.index {
                    0x00 => t.second = f,
                    0x02 => t.minute = f,
                    0x04 => t.hour = f,
                    0x07 => t.day = f,
                    0x08 => t.month = f,
                    0x09 => t.year = t.year / 100 * 100 + f as i64,
                    _ => t.year = f as i64 * 100 + t.year % 100,
                }
                self.offset_s += t.to_unix() - now;
            }
            REG_B => self.cmos[i] = v & !B_SET | (v & B_SET),
            _ => self.cmos[i] = v,
        }
    }
}

/// A UTC calendar date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 0 = Sunday.
    weekday: u8,
}

impl Civil {
    /// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    fn from_unix(s: i64) -> Civil {
        let days = s.div_euclid(86_400);
        let sod = s.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            weekday: (days + 4).rem_euclid(7) as u8,
        }
    }

    fn to_unix(self) -> i64 {
        let (m, d) = (self.month.clamp(1, 12) as i64, self.day.max(1) as i64);
        let y = self.year - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + self.hour as i64 * 3600 + self.minute as i64 * 60 + self.second as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(r: &mut Rtc, i: u8, now: u64) -> u8 {
        r.write(0x70, i, now);
        r.read(0x71, now)
    }

    #[test]
    fn clock_starts_at_the_virtual_epoch_in_bcd() {
        let mut r = Rtc::new(64 << 20);
        let t = 3_723 * 1_000_000_000; // 01:02:03
        assert_eq!(read(&mut r, 0x00, t), 0x03);
        assert_eq!(read(&mut r, 0x02, t), 0x02);
        assert_eq!(read(&mut r, 0x04, t), 0x01);
        assert_eq!(read(&mut r, 0x07, t), 0x01);
        assert_eq!(read(&mut r, 0x08, t), 0x01);
        assert_eq!(read(&mut r, 0x09, t), 0x20);
        assert_eq!(read(&mut r, 0x32, t), 0x20);
        assert_eq!(read(&mut r, 0x06, t), 0x04); // Wednesday
        assert_eq!(read(&mut r, 0x0d, t), 0x80);
        // Binary mode.
        r.write(0x70, 0x0b, 0);
        r.write(0x71, 0x06, 0);
        assert_eq!(read(&mut r, 0x00, t), 3);
        // UIP just before the second ticks.
        assert_eq!(read(&mut r, 0x0a, 999_900_000) & 0x80, 0x80);
        assert_eq!(read(&mut r, 0x0a, 500_000_000) & 0x80, 0);
    }

    #[test]
    fn memory_size_bytes_as_seabios_reads_them() {
        let mut r = Rtc::new(128 << 20);
        let w = |r: &mut Rtc, lo: u8| read(r, lo, 0) as u32 | (read(r, lo + 1, 0) as u32) << 8;
        assert_eq!(w(&mut r, 0x34), (112 << 20) >> 16);
        assert_eq!(w(&mut r, 0x30), 0xffff); // capped
        let mut small = Rtc::new(32 << 20);
        assert_eq!(w(&mut small, 0x17), 31 * 1024);
        assert_eq!(w(&mut r, 0x15), 640);
        assert_eq!(read(&mut r, 0x5b, 0), 0);
        let mut big = Rtc::new(0x1_2000_0000);
        assert_eq!(read(&mut big, 0x5b, 0), 0x00);
        assert_eq!(read(&mut big, 0x5c, 0), 0x40); // 1 GiB above 4 GiB = 0x4000 units
    }

    #[test]
    fn nmi_mask_and_clock_setting() {
        let mut r = Rtc::new(1 << 20);
        r.write(0x70, 0x80, 0);
        assert!(r.nmi_masked());
        r.write(0x70, 0x09, 0);
        r.write(0x71, 0x25, 0); // year 2025
        assert_eq!(read(&mut r, 0x09, 0), 0x25);
        assert_eq!(read(&mut r, 0x08, 0), 0x01);
        assert!(!r.nmi_masked());
    }

    #[test]
    fn civil_round_trip() {
        for s in [0i64, 951_782_400, 1_577_836_800, 4_107_542_400] {
            assert_eq!(Civil::from_unix(s).to_unix(), s);
        }
        let leap = Civil::from_unix(951_782_400); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
    }
}
