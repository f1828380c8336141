//! State inside a run (a record of many instructions, trace format 3), rebuilt by
//! deterministic re-execution: the trace's own guest is recorded again, one instruction per
//! step, by the `mmurr-emu` executable (a child process: the replayer never links Unicorn and
//! needs no KVM), with the trace's recorded inputs fed back as `mmurr verify` does. Emu
//! execution is deterministic, so the re-recording passes through exactly the states the
//! run skipped; the state before the first run asked about is compared with the trace's as
//! a check.
//!
//! Today the child starts from the entry state and steps every instruction up to the end of
//! the run asked for (≈ 0.2 M instructions/s); the re-recording is kept and reused for every
//! step it covers.

use crate::timeline::{Snapshot, Timeline, TimelineError};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use traces::Step;

pub struct Reexecution {
    program: PathBuf,
    trace: PathBuf,
    /// The re-recording (in its temporary directory) and the last step it covers.
    done: Option<Box<(tempfile::TempDir, Timeline, Step)>>,
}

impl Reexecution {
    /// `program`: the `mmurr-emu` executable; `trace`: the trace file the timeline reads.
    pub fn new(program: impl Into<PathBuf>, trace: impl Into<PathBuf>) -> Reexecution {
        Reexecution {
            program: program.into(),
            trace: trace.into(),
            done: None,
        }
    }

    /// The state after `step`, which lies inside a run ending at `run_end`; `before` is the
    /// trace's own state before that run (the check).
    pub(crate) fn state_at(
        &mut self,
        step: Step,
        run_end: Step,
        before: &Snapshot,
    ) -> Result<Snapshot, TimelineError> {
        let covered = self.done.as_ref().is_some_and(|d| d.2 >= run_end);
        if !covered {
            self.done = None;
            let dir =
                tempfile::tempdir().map_err(|e| fail(format!("a temporary directory: {e}")))?;
            let out = dir.path().join("reexecuted.mmurr");
            let output = Command::new(&self.program)
                .arg("record")
                .arg("--guest-from")
                .arg(&self.trace)
                .arg("--replay-inputs")
                .arg(&self.trace)
                .arg("--max-steps")
                .arg(run_end.to_string())
                .arg("--output")
                .arg(&out)
                .arg("--quiet")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| fail(format!("running {}: {e}", self.program.display())))?;
            let timeline = Timeline::open(&out).map_err(|e| {
                fail(format!(
                    "{} wrote no readable trace ({e}; {}): {}",
                    self.program.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            })?;
            if timeline.last_step() < run_end {
                return Err(fail(format!(
                    "the re-execution ended at step {} before step {run_end}: {}",
                    timeline.last_step(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            self.done = Some(Box::new((dir, timeline, run_end)));
        }
        let Some(done) = self.done.as_mut() else {
            return Err(fail("no re-execution".into()));
        };
        let timeline = &mut done.1;
        let at = timeline.seek(before.step)?;
        if at.regs != before.regs {
            return Err(TimelineError::Inconsistent {
                step: before.step,
                detail: "re-executing the guest gave other registers than the trace holds \
                         (the run cannot be rebuilt)"
                    .into(),
            });
        }
        Ok(timeline.seek(step)?.clone())
    }
}

fn fail(detail: String) -> TimelineError {
    TimelineError::Reexecution(detail)
}
