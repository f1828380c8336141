//! The clock host events are stamped with: the time-stamp counter, which the kernel's
//! `x86-tsc` trace clock reads too, so a step's end and the events before it compare exactly.

/// The trace clock an instance is set to.
pub const TRACE_CLOCK: &str = "x86-tsc";

/// The TSC now.
pub fn now() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64 (every CPU has it, and this process runs
    // with CR4.TSD clear: the kernel's x86-tsc trace clock and the vDSO rely on the same).
    unsafe { core::arch::x86_64::_rdtsc() }
}
