//! Every exit code `mmurr` and `mmurr-emu` use, in one place: the README's "Exit codes" table
//! is this enum.
//!
//! Test runners built for QEMU read an odd code as the guest's own verdict from the
//! isa-debug-exit port (`(status << 1) | 1`) and 0 as a clean end. So a run exits 0 or odd
//! only when the guest ended by itself; everything mmurr or the host decided is a distinct
//! even code. The analysis commands (`check`, `diff`, `verify`) keep the grep-style 0 / 1
//! ("nothing found" / "found") and use the even codes for everything else.

use crate::BackendError;
use traces::{EndReason, EndRecord};

/// Why a command exits, each with its own code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest halted with nothing to wake it; for `check`, `diff`, `verify`: nothing found,
    /// the traces agree, reproduced.
    Clean,
    /// The guest wrote `status` to the debug-exit port 0xf4: QEMU's `(status << 1) | 1`,
    /// truncated to a byte.
    DebugExit { status: u32 },
    /// `check` found a divergence, `diff` and `verify` a difference.
    Found,
    /// mmurr itself failed: bad arguments, an unreadable file, an I/O error.
    Error,
    /// The backend cannot run this guest on this host (e.g. 32-bit paging on a PVM host).
    HostUnsupported,
    /// The execution engine failed: an emulation failure, an unhandled exit, a guest polling
    /// a device that is not there.
    EngineError,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    Shutdown,
    /// The guest made no progress (see `recorder::stuck`).
    Stuck,
    /// `--max-steps` reached before the guest ended.
    StepBudget,
    /// `--timeout` reached before the guest ended.
    Timeout,
    /// The recording's memory self-check failed: its reconstructed memory is wrong somewhere,
    /// whatever the guest said.
    SelfCheckFailed,
    /// The trace could not be read whole (truncated, rebuilt index, corrupt chunks) and the
    /// command found nothing in the part it could read.
    IncompleteTrace,
    /// SIGINT or SIGTERM: 128 + SIGINT, as shells report Ctrl-C.
    Interrupted,
}

impl Outcome {
    /// Every outcome with a fixed code, in table order (the README lists these).
    pub const TABLE: [Outcome; 13] = [
        Outcome::Clean,
        Outcome::Found,
        Outcome::Error,
        Outcome::HostUnsupported,
        Outcome::EngineError,
        Outcome::Shutdown,
        Outcome::Stuck,
        Outcome::StepBudget,
        Outcome::Timeout,
        Outcome::SelfCheckFailed,
        Outcome::IncompleteTrace,
        Outcome::Interrupted,
        Outcome::DebugExit { status: 0 },
    ];

    pub fn code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::DebugExit { status } => (status << 1 | 1) as u8,
            Outcome::Found => 1,
            Outcome::Error => 2,
            Outcome::HostUnsupported => 4,
            Outcome::EngineError => 6,
            Outcome::Shutdown => 8,
            Outcome::Stuck => 10,
            Outcome::StepBudget => 12,
            Outcome::Timeout => 14,
            Outcome::SelfCheckFailed => 16,
            Outcome::IncompleteTrace => 18,
            Outcome::Interrupted => 130,
        }
    }

    /// A short name for `--json` output and messages.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::DebugExit { .. } => "debug-exit",
            Outcome::Found => "found",
            Outcome::Error => "error",
            Outcome::HostUnsupported => "host-unsupported",
            Outcome::EngineError => "engine-error",
            Outcome::Shutdown => "shutdown",
            Outcome::Stuck => "stuck",
            Outcome::StepBudget => "step-budget",
            Outcome::Timeout => "timeout",
            Outcome::SelfCheckFailed => "self-check-failed",
            Outcome::IncompleteTrace => "incomplete-trace",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// How a recording ended, as a process exit: the end reason, except that a failed
    /// self-check overrides any code that would read as a pass (0 or a debug-exit status),
    /// since the recording is then wrong whatever the guest said.
    pub fn of_recording(end: &EndRecord) -> Outcome {
        let by_reason = match end.reason {
            EndReason::Halted => Outcome::Clean,
            EndReason::DebugExit { status } => Outcome::DebugExit { status },
            EndReason::Shutdown => Outcome::Shutdown,
            EndReason::StepBudget => Outcome::StepBudget,
            EndReason::Timeout => Outcome::Timeout,
            EndReason::Interrupted => Outcome::Interrupted,
            EndReason::HostUnsupported => Outcome::HostUnsupported,
            EndReason::Error => Outcome::EngineError,
            EndReason::Stuck => Outcome::Stuck,
        };
        if !end.self_check_failures.is_empty() && by_reason.guest_verdict() {
            Outcome::SelfCheckFailed
        } else {
            by_reason
        }
    }

    /// The code is the guest's own word (0 after HLT, odd after a debug-exit).
    pub fn guest_verdict(self) -> bool {
        matches!(self, Outcome::Clean | Outcome::DebugExit { .. })
    }

    /// What a child process's exit status means: its code, or `Interrupted` when a signal
    /// killed it.
    pub fn code_of_child(status: std::process::ExitStatus) -> u8 {
        match status.code() {
            Some(c) => c.clamp(0, 255) as u8,
            None => Outcome::Interrupted.code(),
        }
    }
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        std::process::ExitCode::from(o.code())
    }
}

impl Outcome {
    /// The outcome a failure stands for when it is a backend's typed error (one link of an
    /// error's source chain): the host cannot run the guest, or the engine failed. Any other
    /// error is mmurr's own ([`Outcome::Error`]).
    pub fn of_error(e: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
        match e.downcast_ref::<BackendError>()? {
            BackendError::HostUnsupported(_) => Some(Outcome::HostUnsupported),
            BackendError::Engine(_) | BackendError::EngineAt(_) => Some(Outcome::EngineError),
            BackendError::Other(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(reason: EndReason, self_check: bool) -> EndRecord {
        EndRecord {
            step: 1,
            reason,
            message: String::new(),
            self_check_failures: if self_check {
                vec!["step 1: 1 page(s) ...".into()]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn only_the_guest_exits_zero_or_odd() {
        let mut seen = std::collections::BTreeSet::new();
        for o in Outcome::TABLE {
            let c = o.code();
            match o {
                Outcome::Clean => assert_eq!(c, 0),
                Outcome::DebugExit { .. } => assert_eq!(c % 2, 1),
                // The analysis commands' grep-style "found".
                Outcome::Found => assert_eq!(c, 1),
                _ => assert_eq!(c % 2, 0, "{} must be even", o.name()),
            }
            // The odd codes are the guest's (record, run) or "found" (check, diff, verify):
            // different commands. Every even code has one meaning.
            if c % 2 == 0 {
                assert!(seen.insert(c), "{} reuses code {c}", o.name());
            }
        }
    }

    #[test]
    fn debug_exit_is_qemus_code() {
        assert_eq!(Outcome::DebugExit { status: 0 }.code(), 1);
        assert_eq!(Outcome::DebugExit { status: 1 }.code(), 3);
        assert_eq!(Outcome::DebugExit { status: 0x7f }.code(), 255);
        // Truncated to a byte as exit codes are: still odd.
        assert_eq!(Outcome::DebugExit { status: 0x80 }.code(), 1);
    }

    #[test]
    fn every_end_reason_maps_to_its_own_code() {
        let reasons = [
            EndReason::Halted,
            EndReason::DebugExit { status: 0 },
            EndReason::Shutdown,
            EndReason::StepBudget,
            EndReason::Timeout,
            EndReason::Interrupted,
            EndReason::HostUnsupported,
            EndReason::Error,
            EndReason::Stuck,
        ];
        let codes: std::collections::BTreeSet<u8> = reasons
            .iter()
            .map(|r| Outcome::of_recording(&end(r.clone(), false)).code())
            .collect();
        assert_eq!(codes.len(), reasons.len());
        assert_eq!(
            Outcome::of_recording(&end(EndReason::StepBudget, false)).code(),
            12
        );
    }

    #[test]
    fn backend_errors_keep_their_outcome_through_a_chain() {
        let e = crate::RecordError::Load(BackendError::HostUnsupported("no".into()));
        let chain: Vec<&(dyn std::error::Error + 'static)> =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .collect();
        assert_eq!(
            chain.into_iter().find_map(Outcome::of_error),
            Some(Outcome::HostUnsupported)
        );
        assert_eq!(Outcome::of_error(&BackendError::Other("x".into())), None);
    }

    #[test]
    fn a_failed_self_check_is_never_a_pass() {
        for r in [EndReason::Halted, EndReason::DebugExit { status: 0 }] {
            assert_eq!(
                Outcome::of_recording(&end(r, true)),
                Outcome::SelfCheckFailed
            );
        }
        // A run that already failed keeps the more specific reason.
        assert_eq!(
            Outcome::of_recording(&end(EndReason::Shutdown, true)),
            Outcome::Shutdown
        );
    }
}
