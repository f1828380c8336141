//! State inside a run (a record of many instructions, trace format 3), rebuilt by
//! deterministic re-execution on the `mmurr-emu` executable, as a child process: the replayer
//! never links Unicorn and needs no KVM.
//!
//! The run is re-executed from the state before it, which the timeline has: that state
//! (registers, and memory as the guest's loads) becomes the entry of a guest written to a
//! temporary trace header, and `mmurr-emu record --guest-from --single-step-from` records it
//! again: at emulator speed up to a few thousand instructions before the point wanted, then
//! one instruction per step (a run is up to 100 000 instructions; single-stepping all of it
//! took seconds). A run holds no input (port or MMIO read, time stamp, random
//! number: those instructions are always steps of their own), and emu execution is
//! deterministic, so the re-recording passes through exactly the states the run skipped. The
//! state the child reached before its first instruction is compared with the trace's as a
//! check. The last re-execution is kept, so stepping around the point costs nothing more.

use crate::timeline::{Snapshot, StepView, Timeline, TimelineError};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use traces::{Blob, EndReason, EndRecord, Header, Load, Record, Step};

pub struct Reexecution {
    program: PathBuf,
    /// The re-recorded run: its temporary directory, timeline, and the steps (of the trace)
    /// before it and at its end.
    done: Option<Box<Done>>,
}

struct Done {
    _dir: tempfile::TempDir,
    timeline: Timeline,
    before: Step,
    end: Step,
    /// The steps (of the trace) re-recorded one instruction each; the earlier ones of the run
    /// are runs in `timeline`.
    stepped: RangeInclusive<Step>,
}

/// How many instructions before the point a seek stands on are re-executed as steps (so that
/// reverse-stepi and `S` stay in one re-execution), and how many after it (stepi, `s`). At the
/// single-step rate of mmurr-emu (tens of thousands a second) they cost well under 0.1 s; the
/// rest of the run before them runs at emulator speed.
const BEHIND: Step = 4096;
const AHEAD: Step = 512;

impl Reexecution {
    /// `program`: the `mmurr-emu` executable.
    pub fn new(program: impl Into<PathBuf>) -> Reexecution {
        Reexecution {
            program: program.into(),
            done: None,
        }
    }

    /// The `mmurr-emu` of this installation: `$MMURR_EMU` if set, else the executable beside
    /// the running one (or beside its folder: cargo puts test binaries in `deps/`).
    pub fn installed() -> Option<Reexecution> {
        installed_emu().map(Reexecution::new)
    }

    /// The state after `step`, which lies inside a run ending at `run_end`; `before` is the
    /// trace's state before that run; `header` the trace's header.
    pub(crate) fn state_at(
        &mut self,
        header: &Header,
        step: Step,
        run_end: Step,
        before: &Snapshot,
    ) -> Result<Snapshot, TimelineError> {
        let around = step.saturating_sub(BEHIND).max(before.step)..=(step + AHEAD).min(run_end);
        let done = self.reexecuted(header, run_end, before, step..=step, around)?;
        let mut state = done.timeline.seek(step - before.step)?.clone();
        state.step = step;
        // A run is one vCPU's (the others stood still): the child re-executed it as a machine
        // of that vCPU alone, and the others' registers are the trace's.
        state.parked = before.parked.clone();
        Ok(state)
    }

    /// [`Timeline::walk_steps`] over the instructions `from + 1 ..= to` of a run, from its
    /// re-execution; true when `visit` stopped the walk.
    pub(crate) fn walk(
        &mut self,
        header: &Header,
        run_end: Step,
        before: &Snapshot,
        from: Step,
        to: Step,
        visit: &mut dyn FnMut(&StepView<'_>) -> bool,
    ) -> Result<bool, TimelineError> {
        let (base, vcpu) = (before.step, before.vcpu());
        let done = self.reexecuted(header, run_end, before, from..=to, from..=to)?;
        let at = done.timeline.seek(from - base)?;
        let (regs, parked) = (at.regs.clone(), at.parked.clone());
        let mut stopped = false;
        done.timeline
            .walk_steps(from - base, regs, parked, to - base, &mut |v| {
                stopped = visit(&StepView {
                    step: v.step + base,
                    vcpu,
                    regs: v.regs,
                    mem: v.mem,
                });
                stopped
            })?;
        Ok(stopped)
    }

    /// A re-execution of the run `before.step + 1 ..= run_end` in which every instruction of
    /// `need` is a step of its own: the last one if it is, else a new one stepping `around`
    /// (which holds `need`) and running the instructions before it at emulator speed.
    fn reexecuted(
        &mut self,
        header: &Header,
        run_end: Step,
        before: &Snapshot,
        need: RangeInclusive<Step>,
        around: RangeInclusive<Step>,
    ) -> Result<&mut Done, TimelineError> {
        let cached = self.done.as_ref().is_some_and(|d| {
            d.before == before.step
                && d.end == run_end
                && d.stepped.start() <= need.start()
                && need.end() <= d.stepped.end()
        });
        if !cached {
            self.done = None;
            self.done = Some(Box::new(self.reexecute(header, run_end, before, around)?));
        }
        self.done
            .as_deref_mut()
            .ok_or_else(|| fail("no re-execution".into()))
    }

    /// The child is a machine of one vCPU, given the registers of the vCPU whose run it is
    /// (`before.regs`; a run holds no APIC access, IPI or `cpuid`, which are steps, so its
    /// APIC ID never shows) and the memory before the run.
    fn reexecute(
        &self,
        header: &Header,
        run_end: Step,
        before: &Snapshot,
        stepped: RangeInclusive<Step>,
    ) -> Result<Done, TimelineError> {
        let dir = tempfile::tempdir().map_err(|e| fail(format!("a temporary directory: {e}")))?;
        let guest_trace = dir.path().join("before-run.mmurr");
        let out = dir.path().join("run.mmurr");
        let mut guest = header.guest.clone();
        guest.entry = before.regs.clone();
        guest.blobs.clear();
        guest.loads.clear();
        for (i, (gpa, data)) in before.memory.extents().into_iter().enumerate() {
            guest.blobs.push(Blob {
                hash: xxhash_rust::xxh3::xxh3_64(&data),
                name: format!("memory at step {} from {gpa:#x}", before.step),
                data,
            });
            guest.loads.push(Load {
                blob: i as u32,
                gpa,
            });
        }
        guest.origin = format!("state before step {} of a trace", before.step + 1);
        let mut h = header.clone();
        h.guest = guest;
        h.vcpus = 1;
        let write = || -> traces::Result<()> {
            let mut w = traces::Writer::create(&guest_trace, &h)?;
            w.append(&Record::End(EndRecord {
                step: 0,
                reason: EndReason::StepBudget,
                message: "a guest state for re-execution; no instructions".into(),
                self_check_failures: Vec::new(),
            }))?;
            w.finish().map(|_| ())
        };
        write()?;
        let count = stepped.end() - before.step;
        let output = Command::new(&self.program)
            .arg("record")
            .arg("--guest-from")
            .arg(&guest_trace)
            .arg("--max-steps")
            .arg(count.to_string())
            // The instructions to stand on as steps, the ones before them in runs.
            .arg("--single-step-from")
            .arg((stepped.start() - before.step).to_string())
            .arg("--output")
            .arg(&out)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| fail(format!("running {}: {e}", self.program.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut timeline = Timeline::open(&out).map_err(|e| {
            fail(format!(
                "{} wrote no readable trace ({e}; {}): {}",
                self.program.display(),
                output.status,
                stderr.trim()
            ))
        })?;
        // Its own runs are never entered (seeks stand in `stepped` only); no grandchildren.
        timeline.without_reexecution();
        if timeline.last_step() != count {
            return Err(fail(format!(
                "the re-execution of steps {}..={} ended after {} of its {count} \
                 instructions: {}",
                before.step + 1,
                stepped.end(),
                timeline.last_step(),
                stderr.trim()
            )));
        }
        // Step 0 of the re-recording is the state its engine reached from the entry.
        if timeline.seek(0)?.regs != before.regs {
            return Err(TimelineError::Inconsistent {
                step: before.step,
                detail: "mmurr-emu could not enter the state before the run exactly, so the \
                         run cannot be rebuilt"
                    .into(),
            });
        }
        Ok(Done {
            _dir: dir,
            timeline,
            before: before.step,
            end: run_end,
            stepped,
        })
    }
}

fn fail(detail: String) -> TimelineError {
    TimelineError::Reexecution(detail)
}

/// Where this installation's `mmurr-emu` is (see [`Reexecution::installed`]); `mmurr record
/// --backend emu` runs the same one.
pub fn installed_emu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MMURR_EMU") {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe().ok()?;
    let name = format!("mmurr-emu{}", std::env::consts::EXE_SUFFIX);
    let beside = me.with_file_name(&name);
    if beside.exists() {
        return Some(beside);
    }
    let above = me.parent()?.parent()?.join(&name);
    above.exists().then_some(above)
}
