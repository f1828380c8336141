//! Several vCPUs as gdb threads, as QEMU's gdbstub presents CPUs: vCPU `v` is thread `v + 1`
//! (gdb's thread ids start at 1). Both servers use this: a one-vCPU guest stays a
//! single-threaded target, exactly as before; with several, every stop names the thread that
//! ran the instruction stopped at.

use crate::arch::{SystemRegId, SystemRegs};
use gdbstub::common::{Signal, Tid};
use gdbstub::stub::{BaseStopReason, MultiThreadStopReason, SingleThreadStopReason};

/// The gdb thread of vCPU `vcpu`.
pub fn tid_of(vcpu: u32) -> Tid {
    Tid::new(vcpu as usize + 1).unwrap_or(Tid::MIN)
}

/// The vCPU of gdb thread `tid` (whether it exists is the caller's to check).
pub fn vcpu_of(tid: Tid) -> Option<u32> {
    u32::try_from(tid.get() - 1).ok()
}

/// Tells gdb about the threads of a machine of `vcpus` vCPUs.
pub fn list(vcpus: u32, thread_is_active: &mut dyn FnMut(Tid)) {
    for v in 0..vcpus {
        thread_is_active(tid_of(v));
    }
}

/// One register into gdb's buffer; its length, or 0 for one mmurr does not hold (x87/SSE):
/// zero bytes tells gdbstub to answer "xx..".
pub fn copy_register(regs: &SystemRegs, id: SystemRegId, buf: &mut [u8]) -> usize {
    match regs.get(id.0) {
        Some(bytes) if bytes.len() <= buf.len() => {
            buf[..bytes.len()].copy_from_slice(&bytes);
            bytes.len()
        }
        _ => 0,
    }
}

/// A stop as gdb is told it, on a machine of `vcpus` vCPUs where vCPU `vcpu` ran the
/// instruction stopped at (or hit the breakpoint): with one vCPU exactly the single-threaded
/// reply; with several, the reply names its thread (`T05thread:N;`), so gdb switches to it.
pub fn stop_reason(
    vcpus: u32,
    vcpu: u32,
    r: SingleThreadStopReason<u64>,
) -> MultiThreadStopReason<u64> {
    if vcpus <= 1 {
        return r.into();
    }
    let tid = tid_of(vcpu);
    match r {
        BaseStopReason::DoneStep => BaseStopReason::SignalWithThread {
            tid,
            signal: Signal::SIGTRAP,
        },
        BaseStopReason::Signal(signal) => BaseStopReason::SignalWithThread { tid, signal },
        BaseStopReason::SwBreak(()) => BaseStopReason::SwBreak(tid),
        BaseStopReason::HwBreak(()) => BaseStopReason::HwBreak(tid),
        BaseStopReason::Watch { kind, addr, .. } => BaseStopReason::Watch { tid, kind, addr },
        BaseStopReason::ReplayLog { pos, .. } => BaseStopReason::ReplayLog {
            tid: Some(tid),
            pos,
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_and_threads_map_both_ways() {
        for v in [0, 1, 3, 63] {
            assert_eq!(vcpu_of(tid_of(v)), Some(v));
        }
        let mut seen = Vec::new();
        list(4, &mut |t| seen.push(t.get()));
        assert_eq!(seen, [1, 2, 3, 4]);
    }

    #[test]
    fn stops_name_the_thread_only_with_several_vcpus() {
        let one = stop_reason(1, 0, SingleThreadStopReason::DoneStep);
        assert!(matches!(one, BaseStopReason::DoneStep));
        let four = stop_reason(4, 2, SingleThreadStopReason::SwBreak(()));
        assert!(matches!(four, BaseStopReason::SwBreak(t) if t.get() == 3));
        let step = stop_reason(4, 1, SingleThreadStopReason::DoneStep);
        assert!(matches!(
            step,
            BaseStopReason::SignalWithThread { tid, signal: Signal::SIGTRAP } if tid.get() == 2
        ));
    }
}
