//! Virtual time: guest time follows the retired-instruction count, as QEMU's `-icount` does,
//! so the same guest sees the same times (and records the same trace) on every run. The TSC,
//! the PIT, the local APIC timer and the RTC all derive from [`Clock::now_ns`]; nothing here
//! reads the host's clock.

/// Virtual nanoseconds per retired instruction, a power of two as QEMU's `-icount shift=3`
/// (8 ns: a 125 MIPS virtual CPU). Coarse enough that a kernel's 10 ms PIT calibration costs
/// about a million instructions, fine enough that timer interrupts land between instructions.
pub const ICOUNT_SHIFT: u32 = 3;

/// The virtual TSC frequency: 1 GHz, so TSC ticks equal virtual nanoseconds.
pub const TSC_HZ: u64 = 1_000_000_000;

/// The 8254 PIT's input clock (the PC's 14.31818 MHz crystal divided by 12).
pub const PIT_HZ: u64 = 1_193_182;

/// The local APIC timer's bus clock: 1 GHz (KVM's `APIC_BUS_CYCLE_NS` is 1).
pub const APIC_BUS_HZ: u64 = 1_000_000_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Instructions retired so far.
    instructions: u64,
    /// Time skipped while the CPU was halted, waiting for a timer.
    idle_ns: u64,
}

impl Clock {
    /// One more instruction retired.
    pub fn retire(&mut self, n: u64) {
        self.instructions = self.instructions.saturating_add(n);
    }

    pub fn instructions(&self) -> u64 {
        self.instructions
    }

    /// Virtual nanoseconds since the machine started.
    pub fn now_ns(&self) -> u64 {
        (self.instructions << ICOUNT_SHIFT).saturating_add(self.idle_ns)
    }

    /// A halted CPU waits for its next timer: time jumps to `deadline_ns` (never back).
    pub fn skip_to(&mut self, deadline_ns: u64) {
        let now = self.now_ns();
        if deadline_ns > now {
            self.idle_ns += deadline_ns - now;
        }
    }

    /// How many more instructions must retire before virtual time reaches `deadline_ns`
    /// (0 when it has): how far a run of the guest may go without passing the deadline.
    pub fn instructions_until(&self, deadline_ns: u64) -> u64 {
        let ahead = deadline_ns.saturating_sub(self.now_ns());
        ahead.div_ceil(1 << ICOUNT_SHIFT)
    }

    /// The time-stamp counter now.
    pub fn tsc(&self) -> u64 {
        ns_to_ticks(self.now_ns(), TSC_HZ)
    }
}

/// `ns` nanoseconds in ticks of a `hz` clock (rounded down; no overflow for any u64 `ns`).
pub fn ns_to_ticks(ns: u64, hz: u64) -> u64 {
    ((ns as u128 * hz as u128) / 1_000_000_000) as u64
}

/// The first nanosecond at which a `hz` clock started at 0 has reached `ticks` ticks.
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    let ns = (ticks as u128 * 1_000_000_000).div_ceil(hz as u128);
    ns.min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_follows_instructions_and_halts_skip_forward() {
        let mut c = Clock::default();
        c.retire(1000);
        assert_eq!(c.now_ns(), 8000);
        assert_eq!(c.tsc(), 8000);
        c.skip_to(5000); // the past: no effect
        assert_eq!(c.now_ns(), 8000);
        c.skip_to(1_000_000);
        assert_eq!(c.now_ns(), 1_000_000);
        c.retire(1);
        assert_eq!(c.now_ns(), 1_000_008);
    }

    #[test]
    fn instructions_until_a_deadline_round_up() {
        let mut c = Clock::default();
        c.retire(10); // 80 ns
        assert_eq!(c.instructions_until(80), 0);
        assert_eq!(c.instructions_until(50), 0);
        assert_eq!(c.instructions_until(81), 1);
        assert_eq!(c.instructions_until(88), 1);
        assert_eq!(c.instructions_until(89), 2);
        c.retire(c.instructions_until(1000));
        assert!(c.now_ns() >= 1000 && c.now_ns() < 1008);
    }

    #[test]
    fn tick_conversions_round_trip() {
        for ticks in [0u64, 1, 2, 1193, 65536, 1 << 40] {
            let ns = ticks_to_ns(ticks, PIT_HZ);
            assert_eq!(ns_to_ticks(ns, PIT_HZ), ticks);
            assert!(ns == 0 || ns_to_ticks(ns - 1, PIT_HZ) < ticks);
        }
    }
}
