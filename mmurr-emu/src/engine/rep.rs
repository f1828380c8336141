//! Runs of one `rep movs` / `rep stos` instruction: the iterations of a string copy or fill,
//! which the trace counts one step each (as KVM single-step reports them), run as one
//! `emu_start` inside the run machinery ([`super::run`]: dirty pages, undo, redo).
//!
//! Kernels copy and clear memory with `rep movsb`/`rep stosq` (a decompressor moving itself,
//! `memset` of whole zones): stepped, each iteration costs a full step. Here the count of
//! iterations retired is what the count register says (each completed iteration decrements
//! it), so no instruction-level hook is needed. QEMU runs a `rep` loop as one translation
//! block per iteration plus, when the count reaches zero, one more empty pass that leaves the
//! instruction (its `repz_opt` is off outside single-step mode): running every remaining
//! iteration takes `left + 1` of Unicorn's instruction counts, a part `k < left` takes `k`.
//! `rep cmps`/`rep scas` (which may also end on ZF) and `rep ins`/`rep outs` (I/O) stay steps.

use super::EmuBackend;
use crate::ctx::{OFF_EIP, OFF_REGS};
use crate::decode::Decoded;
use iced_x86::Mnemonic;

/// The `rep` instruction a run is made of.
#[derive(Clone, Copy, Debug)]
pub struct Rep {
    /// Its RIP and the RIP after it.
    rip: u64,
    next: u64,
    /// The count register's mask (its address size).
    mask: u64,
    /// Iterations left when the run started.
    left: u64,
}

/// `d` (at `rip`, with RCX = `rcx`) as a run of iterations: a `rep movs`/`rep stos` with at
/// least two iterations left (one is a plain step).
pub fn rep_run(d: &Decoded, rip: u64, rcx: u64) -> Option<Rep> {
    let size = d.rep_addr_size?;
    let i = &d.instr;
    let fill_or_copy = matches!(
        i.mnemonic(),
        Mnemonic::Movsb
            | Mnemonic::Movsw
            | Mnemonic::Movsd
            | Mnemonic::Movsq
            | Mnemonic::Stosb
            | Mnemonic::Stosw
            | Mnemonic::Stosd
            | Mnemonic::Stosq
    );
    let mask = match size {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let left = rcx & mask;
    (fill_or_copy && left >= 2).then_some(Rep {
        rip,
        next: rip.wrapping_add(d.len as u64),
        mask,
        left,
    })
}

impl Rep {
    /// Whether `n` iterations from the run's start finish the instruction.
    pub fn finished_by(&self, n: u64) -> bool {
        n >= self.left
    }
}

impl EmuBackend {
    /// From the state the run started in (RIP at `rep`), runs `max` of its iterations (at
    /// most all of them), as [`EmuBackend::advance`] does for a run of instructions: `Ok(n)`
    /// when `n` retired; `Err(Some(k))` when an iteration faulted after `k`; `Err(None)` when
    /// the engine failed or did not do what the count predicts.
    pub(super) fn advance_rep(&mut self, rep: Rep, max: u64) -> Result<u64, Option<u64>> {
        let max = max.min(rep.left);
        // Every iteration and the empty pass that leaves the instruction, or `max` of them.
        let count = if max == rep.left { max + 1 } else { max };
        let n = usize::try_from(count).map_err(|_| None)?;
        let r = self.uc.emu_start(rep.rip, 0, 0, n);
        let (intr, unmapped, device_hit) = {
            let st = self.uc.get_data_mut();
            (st.intr.take(), st.unmapped.take(), st.run.take_device_hit())
        };
        self.save().map_err(|_| None)?;
        let rip = self.ctx.u64_at(OFF_EIP);
        let rcx = self.ctx.u64_at(OFF_REGS + 8);
        let done = rep.left.checked_sub(rcx & rep.mask).ok_or(None)?;
        if r.is_err() || unmapped.is_some() || device_hit {
            return Err(None);
        }
        if intr.is_some() {
            // The faulting iteration did not complete: the count register says how many did.
            return Err(Some(done));
        }
        let expected = if max == rep.left { rep.next } else { rep.rip };
        if done != max || rip != expected {
            return Err(None);
        }
        Ok(max)
    }
}
