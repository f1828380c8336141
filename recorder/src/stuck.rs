//! Stuck guests: a guest that makes no progress ends the run instead of burning the step
//! budget in silence (seen: a host rewrote `vmmcall` to `vmcall` and RIP never advanced for
//! 9.3 M steps).
//!
//! A step makes no progress when it changes no memory, does no I/O and emits no event. A port
//! read counts as I/O even when the backend answers it itself (KVM's in-kernel PIT, the emu
//! platform's port 0x61): its value follows virtual time, so a loop polling it — SeaBIOS and
//! Linux calibrating the TSC against PIT channel 2, for a few hundred thousand steps — ends
//! when the counter does. If a
//! run of such steps brings the registers back to a state they had earlier in the run, the
//! guest is in a loop that nothing inside it can leave: with the same registers and the same
//! memory the next instructions are the same. Only something from outside (an interrupt, an
//! NMI) could end it, and that changes the state or writes memory (the frame it pushes).
//! The classic case is `jmp $`: same RIP, same registers, every step.
//!
//! The repeat is found with Brent's cycle detection (one saved state, re-saved at powers of
//! two), so each quiet step costs one register comparison whatever the loop's length. A loop
//! is declared stuck after [`STUCK_STEPS`] quiet steps: long enough that a timer interrupt the
//! guest waits for arrives first (a PIT tick is about 7,400 steps at kvm's 7.4 µs/step), short
//! enough to end in under a second on kvm. `rep` string instructions at one RIP change RCX
//! and RDI, `pause`/`hlt` loops that interrupts wake change state, and `rdtsc` loops change
//! RAX/RDX, so none of them is a repeat.

use crate::insn;
use iced_x86::{FlowControl, Instruction};
use traces::Regs;

/// Whether `i` reads an I/O port: progress for the watch even without an I/O exit (see the
/// module documentation).
pub fn reads_port(i: &Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(i.mnemonic(), M::In | M::Insb | M::Insw | M::Insd)
}

/// Consecutive steps without progress, in a loop whose state repeats, that end the run.
pub const STUCK_STEPS: u64 = 100_000;

/// Recording in runs: how many quiet instructions may run before probe number `probe` (from
/// 0) steps the guest for the watch to judge, and how many quiet steps the probe takes before
/// it gives up on finding a loop and lets the guest run again. A quiet stretch that is not a
/// loop (clearing memory that is already zero, a read-only scan) would otherwise be stepped
/// to its end; growing both keeps the share stepped small (a tenth, then halving) while a
/// loop of any length is still found once a probe is long enough to see it repeat.
pub fn quiet_run_allowance(probe: u32) -> u64 {
    STUCK_STEPS << (2 * probe.min(15))
}

/// See [`quiet_run_allowance`].
pub fn probe_steps(probe: u32) -> u64 {
    (STUCK_STEPS / 10) << probe.min(15)
}

/// Watches the step loop for a guest that makes no progress.
#[derive(Default)]
pub struct StuckWatch {
    /// Steps since the last one that made progress.
    quiet: u64,
    /// Brent's saved state and the steps since it was saved, within the quiet run.
    saved: Option<Regs>,
    since_saved: u64,
    power: u64,
    /// Length of the loop once a repeat was seen (the state recurs every `period` steps).
    period: Option<u64>,
}

/// A guest found stuck: how long it looped and in how many instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stuck {
    pub steps: u64,
    pub period: u64,
}

impl StuckWatch {
    /// Quiet steps so far, and whether their states were seen to repeat.
    pub fn probing(&self) -> (u64, bool) {
        (self.quiet, self.period.is_some())
    }

    /// One step: the registers after it and whether it made progress (changed memory, did
    /// I/O, emitted an event). `Some` when the guest is stuck.
    pub fn observe(&mut self, after: &Regs, progress: bool) -> Option<Stuck> {
        if progress {
            *self = StuckWatch::default();
            return None;
        }
        self.quiet += 1;
        if self.period.is_none() {
            match &self.saved {
                Some(s) if s == after => self.period = Some(self.since_saved + 1),
                _ => {
                    self.since_saved += 1;
                    if self.since_saved >= self.power.max(1) {
                        self.saved = Some(after.clone());
                        self.since_saved = 0;
                        self.power = self.power.max(1) * 2;
                    }
                }
            }
        }
        let period = self.period?;
        (self.quiet >= STUCK_STEPS).then_some(Stuck {
            steps: self.quiet,
            period,
        })
    }
}

/// The end message: the instruction the guest is stuck on, where, and why it cannot leave.
pub fn message(stuck: Stuck, regs: &Regs, insn_at_rip: Option<&Instruction>) -> String {
    let what = insn_at_rip.map_or_else(|| "(undecodable)".to_string(), insn::format);
    let rip = regs.rip;
    let interrupts = if regs.rflags & (1 << 9) != 0 {
        "interrupts enabled but none arrived"
    } else {
        "interrupts disabled"
    };
    let jumps_to_itself = insn_at_rip.is_some_and(|i| {
        matches!(i.flow_control(), FlowControl::UnconditionalBranch)
            && i.near_branch_target() == rip
    });
    let how = if stuck.period == 1 && jumps_to_itself {
        "it jumps to itself (`jmp $`, the classic hang)".to_string()
    } else if stuck.period == 1 {
        "the instruction does not advance: same RIP, same registers".to_string()
    } else {
        format!(
            "a loop of {} instructions that comes back to the same registers",
            stuck.period
        )
    };
    format!(
        "the guest is stuck at RIP {rip:#x} on \"{what}\": {how}, with no memory change, no \
         I/O and {interrupts}, for {} steps",
        stuck.steps
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rip: u64, rax: u64) -> Regs {
        let mut r = Regs {
            rip,
            ..Regs::default()
        };
        r.gpr[0] = rax;
        r
    }

    fn run(states: impl Iterator<Item = (Regs, bool)>) -> Option<(u64, Stuck)> {
        let mut w = StuckWatch::default();
        for (n, (r, progress)) in states.enumerate() {
            if let Some(s) = w.observe(&r, progress) {
                return Some((n as u64 + 1, s));
            }
        }
        None
    }

    #[test]
    fn polling_a_port_is_progress() {
        let d = |b: &[u8]| {
            iced_x86::Decoder::with_ip(32, b, 0, iced_x86::DecoderOptions::NONE).decode()
        };
        assert!(reads_port(&d(&[0xe4, 0x61]))); // in al, 0x61
        assert!(reads_port(&d(&[0xec]))); // in al, dx
        assert!(!reads_port(&d(&[0xa8, 0x20]))); // test al, 0x20
        assert!(!reads_port(&d(&[0xe6, 0x61]))); // out 0x61, al
    }

    #[test]
    fn jmp_dollar_is_stuck_after_the_threshold() {
        let found = run(std::iter::repeat_n((regs(0x1000, 0), false), 200_000));
        let (at, s) = found.expect("stuck");
        assert_eq!(at, STUCK_STEPS);
        assert_eq!(s.period, 1);
    }

    #[test]
    fn a_two_instruction_loop_is_stuck() {
        let states = (0..200_000u64).map(|i| (regs(0x1000 + (i % 2) * 2, 7), false));
        let (_, s) = run(states).expect("stuck");
        assert_eq!(s.period, 2);
    }

    #[test]
    fn changing_registers_or_progress_is_not_stuck() {
        // `rep stosb` at one RIP: RCX counts down.
        assert!(run((0..300_000u64).map(|i| (regs(0x1000, i), false))).is_none());
        // A loop that writes memory every 1000 steps.
        assert!(run((0..300_000u64).map(|i| (regs(0x1000, 0), i % 1000 == 0))).is_none());
    }
}
