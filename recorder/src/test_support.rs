//! What the backends' tests share.
//!
//! The one place a test decides it cannot run for want of KVM: every test crate's KVM tests
//! go through [`require_kvm!`](crate::require_kvm): where /dev/kvm is not usable they print
//! `SKIP: ...` and return, unless `MMURR_REQUIRE_KVM=1` is set (`.ci/run` sets it where
//! /dev/kvm is usable), in which case a missing KVM is a failure, not a silent pass.
//!
//! And checks that hold every backend to the same guest and the same expectations.

/// The environment variable that turns a KVM skip into a failure.
pub const REQUIRE_KVM: &str = "MMURR_REQUIRE_KVM";

/// Why /dev/kvm cannot be opened for reading and writing here, or `None` when it can.
pub fn kvm_unusable() -> Option<String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .err()
        .map(|e| format!("/dev/kvm: {e}"))
}

/// `true` when the calling test should return now: KVM is unusable (`unusable` says why) and
/// skipping is allowed. Panics instead when [`REQUIRE_KVM`] is set to anything but `0` or empty.
pub fn skip_without_kvm(unusable: Option<String>) -> bool {
    skip_unless_required(REQUIRE_KVM, "KVM not usable", unusable)
}

/// `true` (after a `SKIP: what: why` line) when `missing` names why something a test needs is
/// missing; panics instead when the environment variable `require` is set to anything but `0`
/// or empty.
fn skip_unless_required(require: &str, what: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return false;
    };
    let required = std::env::var(require).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "{require} is set but here: {what}: {why}");
    eprintln!("SKIP: {what}: {why}");
    true
}

/// The environment variable that turns a skip for want of host events (root and tracefs, for
/// `record --host-events`) into a failure.
pub const REQUIRE_HOST_EVENTS: &str = "MMURR_REQUIRE_HOST_EVENTS";

/// `true` when the calling test should return now: the host's KVM events cannot be recorded
/// here (`unavailable` says why). Panics instead when [`REQUIRE_HOST_EVENTS`] is set to
/// anything but `0` or empty, as [`skip_without_kvm`] does for [`REQUIRE_KVM`].
pub fn skip_without_host_events(unavailable: Option<String>) -> bool {
    skip_unless_required(
        REQUIRE_HOST_EVENTS,
        "host events not available",
        unavailable,
    )
}

/// Returns from the calling test where KVM is not usable (see [`skip_without_kvm`]); with an
/// argument, that is the reason KVM is unusable (`None`: usable), e.g. a backend's own probe.
#[macro_export]
macro_rules! require_kvm {
    () => {
        $crate::require_kvm!($crate::test_support::kvm_unusable())
    };
    ($unusable:expr) => {
        if $crate::test_support::skip_without_kvm($unusable) {
            return;
        }
    };
}

/// Records [`guests::probes::mmio_read_modify_write`] on `backend` and panics unless the run
/// ends with the guest's own exit and the read-modify-write is one step with a read and a
/// write (an MMIO read-modify-write must never end the run).
pub fn check_mmio_read_modify_write(backend: &mut dyn crate::Backend) {
    use traces::{EndReason, EventKind, Reader, Record};
    let guest = guests::probes::mmio_read_modify_write().expect("build the MMIO probe");
    let dir = std::env::temp_dir().join(format!("mmurr-mmio-rmw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let opts = crate::RecordOptions::new(dir.join("rmw.mmurr"));
    let summary = crate::record(backend, &guest, &opts).expect("record the MMIO probe");
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        summary.end.message
    );
    let mut reader = Reader::open(&opts.output).expect("open the MMIO probe's trace");
    let mmio: Vec<_> = reader
        .records()
        .filter_map(|r| match r.expect("read the MMIO probe's trace") {
            Record::Event(e) => match e.kind {
                EventKind::Mmio(m) => Some((e.step, m)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let (expected, steps) = guests::probes::mmio_read_modify_write_events();
    assert_eq!(mmio, expected);
    assert_eq!(summary.steps, steps, "and, mov, out");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_kvm_never_skips() {
        assert!(!skip_without_kvm(None));
    }
}
