//! SYSCALL, which Unicorn does not execute: its `helper_syscall` only calls the UC_HOOK_INSN
//! hooks and moves RIP past the instruction, so a guest kernel's system calls would return
//! at once with RAX unchanged (a busybox `init` then dies on the first `brk`). mmurr-emu
//! executes it here, as the SDM's SYSCALL pseudo-code says (Intel: #UD outside 64-bit mode).
//! SYSRET, which QEMU implements, stays the engine's.

use super::{ctx, EmuBackend};
use crate::decode::Decoded;
use iced_x86::Mnemonic;
use mmu::bits::{EFER_LMA, EFER_SCE, RFLAGS_RF};
use recorder::{BackendError, Exit, StepResult};
use traces::regs::{CS, SS};
use traces::{Regs, Segment};

const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_FMASK: u32 = 0xC000_0084;

/// VMX-layout attributes of the flat ring-0 segments SYSCALL loads: a 64-bit code segment
/// (type 0xb, S, P, L, G) and a writable data segment (type 3, S, P, D/B, G).
const CS_ATTRS: u32 = 0xb | 1 << 4 | 1 << 7 | 1 << 13 | 1 << 15;
const SS_ATTRS: u32 = 0x3 | 1 << 4 | 1 << 7 | 1 << 14 | 1 << 15;

impl EmuBackend {
    /// Executes `d` when it is SYSCALL (the whole step); `None` for any other instruction.
    pub(super) fn syscall(
        &mut self,
        d: &Decoded,
        before: &Regs,
    ) -> Result<Option<StepResult>, BackendError> {
        if d.instr.mnemonic() != Mnemonic::Syscall {
            return Ok(None);
        }
        let code64 = before.seg[CS].attrs & (1 << 13) != 0;
        let exit = if before.efer & EFER_SCE == 0 || before.efer & EFER_LMA == 0 || !code64 {
            self.deliver_vector(6, None, false, before.rip)?
        } else {
            let msr =
                |uc: &_, n| ctx::msr_read(uc, n).map_err(|e| super::engine_err("MSR read", e));
            let star = msr(&self.uc, MSR_STAR)?;
            let lstar = msr(&self.uc, MSR_LSTAR)?;
            let fmask = msr(&self.uc, MSR_FMASK)?;
            let selector = (star >> 32) as u16;
            let mut r = before.clone();
            r.gpr[1] = before.rip.wrapping_add(d.len as u64);
            r.gpr[11] = before.rflags & !RFLAGS_RF;
            r.rflags = before.rflags & !fmask & !RFLAGS_RF;
            r.rip = lstar;
            let flat = |selector, attrs| Segment {
                selector,
                base: 0,
                limit: 0xffff_ffff,
                attrs,
            };
            r.seg[CS] = flat(selector & 0xfffc, CS_ATTRS);
            r.seg[SS] = flat(selector.wrapping_add(8), SS_ATTRS);
            recorder::Backend::set_regs(self, &r)?;
            Exit::Stepped
        };
        let fetch = (insn::linear_ip(before), d.len as u64);
        let written = self.take_written(before, fetch, Some(d));
        Ok(Some(StepResult { exit, written }))
    }
}
