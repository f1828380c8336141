//! What a recording is asked to do, and what it reports back.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use traces::EndRecord;

/// Where guest console output (serial 0x3f8, debug console 0xe9) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialSink {
    /// The terminal (standard output).
    Stdout,
    /// Appended to this file.
    File(PathBuf),
    /// Kept only in [`RecordSummary::serial_output`].
    Capture,
}

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub output: PathBuf,
    /// Policy names (see `mmurr policies`); empty means all of them.
    pub policies: Vec<String>,
    pub flavour: mmu::Flavour,
    pub max_steps: u64,
    pub timeout: Option<Duration>,
    pub scenario: Option<String>,
    pub command_line: Vec<String>,
    /// A register keyframe every this many steps.
    pub keyframe_interval: u64,
    /// Every this many keyframes the memory the trace reconstructs is compared with the
    /// guest's real RAM (the self-check). Every keyframe carries the pages written since the
    /// previous one, so a seek never replays more than one keyframe interval.
    pub self_check_every: u64,
    pub serial: SerialSink,
    /// A progress line on stderr.
    pub progress: bool,
    /// Set from a signal handler: stop at the next step and finish the trace.
    pub interrupted: Arc<AtomicBool>,
    /// The same absent port or MMIO address read this many times in a row ends the run.
    pub poll_limit: u64,
    /// Re-execution (`mmurr verify`): the original trace's inputs, fed back in order instead
    /// of what this machine's devices, time-stamp counter or RNG would give. Reaching an input
    /// the original does not have (or a different one) ends the run: it has diverged.
    pub replay_inputs: Option<Arc<traces::inputs::RecordedInputs>>,
    /// Record in runs where the backend can ([`crate::Backend::run`], the emu backend): many
    /// instructions with nothing to record one by one become one `Run` record (format 3), at
    /// emulator speed; every event, I/O access and interrupt stays an exact step. The state
    /// *inside* a run needs re-execution on `mmurr-emu` (`replayer::Reexecution`). Off in
    /// [`RecordOptions::new`] (the library's callers opt in); the command line's default is
    /// on, through [`RecordOptions::set_runs`].
    pub runs: bool,
    /// With runs: from this step on, every instruction is a step (runs stop there). The
    /// replayer re-executes a run this way to stand on the instructions near a point in it
    /// without single-stepping the whole run.
    pub single_step_from: Option<u64>,
    /// Record the host KVM's own events beside the guest's (backends with a
    /// [`crate::HostWatch`]).
    pub host_events: crate::HostEventsChoice,
    /// What the VMM does to the vCPU, and when (a scenario's, `--host-action`): each is
    /// performed by the backend ([`crate::Backend::host_action`]) as a step of its own. With
    /// [`RecordOptions::replay_inputs`] the original trace's actions are taken instead.
    pub host_actions: Vec<guests::host_actions::HostActionAt>,
}

impl RecordOptions {
    pub fn new(output: impl Into<PathBuf>) -> RecordOptions {
        RecordOptions {
            output: output.into(),
            policies: Vec::new(),
            flavour: mmu::Flavour::Tdp,
            max_steps: 10_000_000,
            timeout: None,
            scenario: None,
            command_line: Vec::new(),
            keyframe_interval: STEPS_KEYFRAME_INTERVAL,
            self_check_every: 10,
            serial: SerialSink::Capture,
            progress: false,
            interrupted: Arc::new(AtomicBool::new(false)),
            poll_limit: 10_000,
            replay_inputs: None,
            runs: false,
            single_step_from: None,
            host_events: crate::HostEventsChoice::Auto,
            host_actions: Vec::new(),
        }
    }
}

/// The keyframe interval of recordings in runs. A keyframe hashes all of guest RAM (≈ 7 ms
/// for 64 MiB, ≈ 28 ms for 256 MiB), which would dominate at run speed with the step-by-step
/// interval; seeks then cost records, not instructions, so a longer interval costs them little.
pub const RUNS_KEYFRAME_INTERVAL: u64 = 1_000_000;

/// The guest RAM that [`RUNS_KEYFRAME_INTERVAL`] suits: a larger guest's keyframes come
/// proportionally further apart ([`RecordOptions::fit_keyframes_to_ram`]).
pub const RUNS_KEYFRAME_RAM: u64 = 64 << 20;

/// The keyframe interval of step-by-step recordings.
pub const STEPS_KEYFRAME_INTERVAL: u64 = 10_000;

/// Several vCPUs recorded in runs: the instructions (steps and runs alike) one vCPU executes
/// in its turn before the next runnable one takes over. 10 000 instructions are 80 µs of
/// virtual time (8 ns each), far below a Linux tick (1–4 ms) and its LAPIC timer periods, so
/// a vCPU spinning on another (an IPI's answer, a lock, the TSC sync) waits at most one turn
/// of the other; yet long enough that a switch — the next engine's TLB flushed, its
/// translated code too when the other wrote code — is rare next to the work of a turn.
pub const VCPU_QUANTUM: u64 = 10_000;

impl RecordOptions {
    /// The interleaving of several vCPUs: instructions per turn. Step by step, one each
    /// (round robin, as the kvm-like single-stepping records it); in runs [`VCPU_QUANTUM`].
    /// Not a header field: `verify` re-records a trace in runs exactly when it holds runs.
    pub fn vcpu_quantum(&self) -> u64 {
        if self.runs {
            VCPU_QUANTUM
        } else {
            1
        }
    }

    /// Runs on or off, with the keyframe interval that suits each.
    pub fn set_runs(&mut self, runs: bool) {
        self.runs = runs;
        self.keyframe_interval = if runs {
            RUNS_KEYFRAME_INTERVAL
        } else {
            STEPS_KEYFRAME_INTERVAL
        };
    }

    /// With runs and their default interval: keyframes for a guest of `ram_size` bytes, as far
    /// apart as keeps RAM hashed per instruction what it is at [`RUNS_KEYFRAME_RAM`] (the
    /// hash of all 256 MiB of a Linux guest every million instructions was more than a third
    /// of its recording). Records between keyframes stay few: runs are long.
    pub fn fit_keyframes_to_ram(&mut self, ram_size: u64) {
        if self.runs && self.keyframe_interval == RUNS_KEYFRAME_INTERVAL {
            let scale = ram_size.div_ceil(RUNS_KEYFRAME_RAM).max(1);
            self.keyframe_interval = RUNS_KEYFRAME_INTERVAL.saturating_mul(scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_of_runs_spread_with_ram() {
        let mut o = RecordOptions::new("t.mmurr");
        o.set_runs(true);
        o.fit_keyframes_to_ram(64 << 20);
        assert_eq!(o.keyframe_interval, RUNS_KEYFRAME_INTERVAL);
        o.fit_keyframes_to_ram(256 << 20);
        assert_eq!(o.keyframe_interval, 4 * RUNS_KEYFRAME_INTERVAL);
        // An interval chosen elsewhere, and step-by-step recordings, are left alone.
        o.keyframe_interval = 5;
        o.fit_keyframes_to_ram(1 << 30);
        assert_eq!(o.keyframe_interval, 5);
        o.set_runs(false);
        o.fit_keyframes_to_ram(1 << 30);
        assert_eq!(o.keyframe_interval, STEPS_KEYFRAME_INTERVAL);
    }
}

/// What a finished recording did.
#[derive(Clone, Debug)]
pub struct RecordSummary {
    pub output: PathBuf,
    pub steps: u64,
    pub events: u64,
    pub end: EndRecord,
    /// For a debug-exit: `(status << 1) | 1`, the code QEMU would exit with.
    pub exit_code: Option<u8>,
    /// Guest console output (at most 1 MiB).
    pub serial_output: Vec<u8>,
    /// Accesses no device answered: what, and how often.
    pub unhandled: Vec<(String, u64)>,
    pub elapsed: Duration,
    pub file_bytes: u64,
}

impl RecordSummary {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unknown policy {0:?} (see `mmurr policies`)")]
    UnknownPolicy(String),
    #[error("cannot load the guest: {0}")]
    Load(#[source] crate::BackendError),
    #[error("cannot open the serial log {path}: {source}")]
    SerialLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trace {path}: {source}")]
    Trace {
        path: PathBuf,
        source: traces::Error,
    },
}
