//! The kvm execution backend for mmurr: runs a guest on /dev/kvm one instruction at a time
//! (KVM_SET_GUEST_DEBUG single-step, state read through KVM_CAP_SYNC_REGS), and probes what
//! this host's KVM can run.

mod cpuid_probe;
mod dirty;
mod host;
mod host_action;
mod mapping;
mod probe;
mod regs;
mod smp;
mod sregs2;
mod vcpu;

pub use cpuid_probe::guest_cpu;
pub use host::{HostEvents, TRACEPOINTS};
pub use probe::{probe, HostReport, ModeSupport};
pub use vcpu::KvmBackend;
