//! A trace as a machine you can stand anywhere in.
//!
//! State at step `s` = memory at the last page keyframe at or before `s` (the entry image with
//! the pages of every page keyframe up to there applied) and that keyframe's registers, then
//! the step records after it replayed forward. Memory at page keyframes is cached in a bounded
//! map of copy-on-write images, so seeks near each other share work and memory use is bounded
//! by the cache, not by the trace length.

use crate::memory::{ImageError, MemoryImage};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use traces::{Header, Keyframe, Parked, Reader, Record, Regs, Step, VcpusKeyframe};

/// The machine at one step: registers and guest-physical memory after `step` instructions.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub step: Step,
    /// The registers of the vCPU that executed `step` (the only vCPU of most traces).
    pub regs: Regs,
    pub memory: MemoryImage,
    /// The other vCPUs' registers, and which vCPU `regs` belong to (format 5).
    pub parked: Parked,
}

impl Snapshot {
    /// The vCPU that executed `step` (vCPU 0 at step 0 and in one-vCPU traces).
    pub fn vcpu(&self) -> u32 {
        self.parked.current()
    }

    /// The registers of `vcpu` at this step.
    pub fn regs_of(&self, vcpu: u32) -> Option<&Regs> {
        self.parked.regs_of(vcpu, &self.regs)
    }

    /// Makes `vcpu`'s registers the current ones (`None`: no such vCPU).
    fn switch(&mut self, vcpu: u32) -> Result<()> {
        self.parked
            .switch(vcpu, &mut self.regs)
            .map_err(|detail| TimelineError::Inconsistent {
                step: self.step,
                detail,
            })
    }

    /// Takes every vCPU's registers from a multi-vCPU keyframe.
    fn vcpus_keyframe(&mut self, k: &VcpusKeyframe) -> Result<()> {
        self.parked
            .keyframe(k, &mut self.regs)
            .map_err(|detail| TimelineError::Inconsistent {
                step: k.step,
                detail,
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Trace(#[from] traces::Error),
    #[error("the trace's guest image is inconsistent: {0}")]
    Image(#[from] ImageError),
    #[error("step {step} is past the end of the trace (last step {last})")]
    PastEnd { step: Step, last: Step },
    #[error("the trace is inconsistent at step {step}: {detail}")]
    Inconsistent { step: Step, detail: String },
    /// The step lies inside a run (a record of many instructions, format 3) and this
    /// timeline has no way to re-execute it.
    #[error(
        "step {step} lies inside a run of steps {first}..={last}, recorded as one record; \
         the state there needs re-executing the run (give the timeline mmurr-emu to do it), \
         or record without runs"
    )]
    InsideRun { step: Step, first: Step, last: Step },
    /// Re-executing a run failed (see [`Timeline::set_reexecution`]).
    #[error("re-executing a run to rebuild the state inside it failed: {0}")]
    Reexecution(String),
}

pub type Result<T> = std::result::Result<T, TimelineError>;

fn header_vcpus(h: &Header) -> u32 {
    h.vcpu_count()
}

/// How many page-keyframe memory images to keep at most (one per page keyframe up to this);
/// they share unchanged directories and pages, so each costs little more than what changed.
const CHECKPOINTS: usize = 4096;

pub struct Timeline<R = BufReader<File>> {
    reader: Reader<R>,
    entry: Snapshot,
    last_step: Step,
    /// Steps of the page keyframes and the chunk each is in, ascending; found by scanning
    /// keyframe chunks up to `scanned_chunks`.
    page_keyframes: Vec<(Step, usize)>,
    scanned_chunks: usize,
    /// Memory at some page keyframes (plus registers there), by step: one every
    /// `checkpoint_every` page keyframes, thinned out as the trace grows so their number stays
    /// bounded and a seek never applies more than `checkpoint_every` keyframes.
    checkpoints: BTreeMap<Step, Snapshot>,
    checkpoint_every: usize,
    checkpoint_limit: usize,
    /// State at the last page keyframe scanned, and how many keyframes since the last checkpoint.
    frontier: Snapshot,
    since_checkpoint: usize,
    current: Snapshot,
    /// How to rebuild the state inside runs, if the caller gave a way.
    reexec: Option<crate::reexec::Reexecution>,
    /// `current` lies inside a run: runs apply only from their start, so seeks start elsewhere.
    current_in_run: bool,
}

impl Timeline {
    pub fn open(path: impl AsRef<Path>) -> Result<Timeline> {
        Timeline::new(Reader::open(path)?)
    }
}

impl<R: Read + Seek> Timeline<R> {
    pub fn new(reader: Reader<R>) -> Result<Timeline<R>> {
        let header = reader.header();
        let mut entry = Snapshot {
            step: 0,
            regs: header.guest.entry.clone(),
            memory: MemoryImage::from_guest(&header.guest)?,
            parked: Parked::new(header.vcpu_count()),
        };
        let mut reader = reader;
        if header_vcpus(reader.header()) > 1 && !reader.chunks().is_empty() {
            // The APs' entry state is in the keyframe at step 0, not in the header.
            let records = reader.chunk_records(0)?;
            if let Some(k) = records.iter().find_map(|r| match r {
                Record::Vcpus(k) if k.step == 0 => Some(k),
                _ => None,
            }) {
                entry.vcpus_keyframe(k)?;
            }
        }
        let last_step = reader.total_steps();
        let entry_clone = entry.clone();
        Ok(Timeline {
            reader,
            current: entry.clone(),
            entry,
            last_step,
            page_keyframes: Vec::new(),
            scanned_chunks: 0,
            checkpoints: BTreeMap::new(),
            checkpoint_every: 1,
            checkpoint_limit: CHECKPOINTS,
            frontier: entry_clone,
            since_checkpoint: 0,
            // Every consumer (TUI, gdb, check) can stand inside runs where mmurr-emu is
            // installed, as it is beside every mmurr.
            reexec: crate::reexec::Reexecution::installed(),
            current_in_run: false,
        })
    }

    /// Lets seeks into a run (format 3) rebuild the state there by re-execution (a timeline
    /// starts with [`crate::Reexecution::installed`]).
    pub fn set_reexecution(&mut self, reexec: crate::reexec::Reexecution) {
        self.reexec = Some(reexec);
    }

    /// Stands only at run boundaries: a seek inside a run is [`TimelineError::InsideRun`]
    /// (for callers that must not start processes, and for tests of that answer).
    pub fn without_reexecution(&mut self) {
        self.reexec = None;
    }

    /// Keep at most `limit` memory checkpoints (at least 2); for tests and memory-tight callers.
    pub fn set_checkpoint_limit(&mut self, limit: usize) {
        self.checkpoint_limit = limit.max(2);
    }

    pub fn header(&self) -> &Header {
        self.reader.header()
    }

    pub fn reader(&mut self) -> &mut Reader<R> {
        &mut self.reader
    }

    /// The last step of the trace (0 for a trace that ended before its first instruction).
    pub fn last_step(&self) -> Step {
        self.last_step
    }

    /// The state at the current position.
    pub fn current(&self) -> &Snapshot {
        &self.current
    }

    /// The entry state (step 0).
    pub fn entry(&self) -> &Snapshot {
        &self.entry
    }

    /// Moves to `step`, replaying from the nearest usable starting point.
    pub fn seek(&mut self, step: Step) -> Result<&Snapshot> {
        if step > self.last_step {
            return Err(TimelineError::PastEnd {
                step,
                last: self.last_step,
            });
        }
        let base = self.page_base(step)?;
        let start = if self.current.step <= step
            && self.current.step >= base.step
            && !self.current_in_run
        {
            // Going forward from here is never more work than from the keyframe.
            self.current.clone()
        } else {
            base
        };
        let was_in_run = std::mem::replace(&mut self.current_in_run, false);
        match self.replay(start, step) {
            Ok(state) => self.current = state,
            Err(e) => {
                self.current_in_run = was_in_run;
                return Err(e);
            }
        }
        Ok(&self.current)
    }

    /// Moves by `delta` steps, clamped to the trace.
    pub fn step_by(&mut self, delta: i64) -> Result<&Snapshot> {
        let target = self
            .current
            .step
            .saturating_add_signed(delta)
            .min(self.last_step);
        self.seek(target)
    }

    /// Memory and registers at the last page keyframe at or before `step`.
    fn page_base(&mut self, step: Step) -> Result<Snapshot> {
        self.scan_page_keyframes(step)?;
        let upto = self.page_keyframes.partition_point(|&(s, _)| s <= step);
        // Walk back to the nearest page keyframe we hold (or entry), then forward applying
        // the page keyframes in between.
        let mut i = upto;
        let mut base = loop {
            if i == 0 {
                break self.entry.clone();
            }
            let (s, _) = self.page_keyframes[i - 1];
            if let Some(cp) = self.checkpoints.get(&s) {
                break cp.clone();
            }
            i -= 1;
        };
        for k in i..upto {
            let (s, chunk) = self.page_keyframes[k];
            let (keyframe, vcpus) = self.keyframe_in_chunk(chunk, s)?;
            for page in &keyframe.pages {
                if !base.memory.set_page(page.gpa, &page.data) {
                    return Err(TimelineError::Inconsistent {
                        step: s,
                        detail: format!("keyframe page at {:#x} is not a page of RAM", page.gpa),
                    });
                }
            }
            base.step = s;
            base.regs = keyframe.regs;
            if let Some(k) = vcpus {
                base.vcpus_keyframe(&k)?;
            }
        }
        Ok(base)
    }

    /// Finds page keyframes in chunks not scanned yet, up to the chunks covering `step`.
    fn scan_page_keyframes(&mut self, step: Step) -> Result<()> {
        while self.scanned_chunks < self.reader.chunks().len() {
            let c = self.scanned_chunks;
            let header = self.reader.chunks()[c].header;
            if header.first_step > step {
                break;
            }
            if header.has_keyframe() {
                let records = self.reader.chunk_records(c)?;
                for r in records.iter() {
                    match r {
                        Record::Keyframe(k) if k.carries_pages => {
                            self.page_keyframes.push((k.step, c));
                            self.advance_frontier(k)?;
                        }
                        // Written right after its keyframe, before the checkpoint is needed.
                        Record::Vcpus(k) if k.step == self.frontier.step => {
                            self.frontier.vcpus_keyframe(k)?;
                            if let Some(cp) = self.checkpoints.get_mut(&k.step) {
                                cp.vcpus_keyframe(k)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
            self.scanned_chunks += 1;
        }
        Ok(())
    }

    /// Applies a newly scanned page keyframe to the frontier and checkpoints it when due.
    fn advance_frontier(&mut self, k: &Keyframe) -> Result<()> {
        for page in &k.pages {
            if !self.frontier.memory.set_page(page.gpa, &page.data) {
                return Err(TimelineError::Inconsistent {
                    step: k.step,
                    detail: format!("keyframe page at {:#x} is not a page of RAM", page.gpa),
                });
            }
        }
        self.frontier.step = k.step;
        self.frontier.regs = k.regs.clone();
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every {
            self.since_checkpoint = 0;
            self.checkpoints.insert(k.step, self.frontier.clone());
            if self.checkpoints.len() > self.checkpoint_limit {
                // Keep every other checkpoint and space future ones twice as far apart.
                let drop: Vec<Step> = self
                    .checkpoints
                    .keys()
                    .copied()
                    .skip(1)
                    .step_by(2)
                    .collect();
                for s in drop {
                    self.checkpoints.remove(&s);
                }
                self.checkpoint_every *= 2;
            }
        }
        Ok(())
    }

    /// The page keyframe at `step` in `chunk`, with every vCPU's registers there (format 5).
    fn keyframe_in_chunk(
        &mut self,
        chunk: usize,
        step: Step,
    ) -> Result<(Keyframe, Option<VcpusKeyframe>)> {
        let records = self.reader.chunk_records(chunk)?;
        let keyframe = records
            .iter()
            .find_map(|r| match r {
                Record::Keyframe(k) if k.step == step && k.carries_pages => Some(k.clone()),
                _ => None,
            })
            .ok_or_else(|| TimelineError::Inconsistent {
                step,
                detail: format!("the page keyframe vanished from chunk {chunk}"),
            })?;
        let vcpus = records.iter().find_map(|r| match r {
            Record::Vcpus(k) if k.step == step => Some(k.clone()),
            _ => None,
        });
        Ok((keyframe, vcpus))
    }

    /// Calls `visit` for every instruction after `from` up to `to`, in order, with the
    /// registers after it (starting from `regs`, the registers at `from`) and the memory it
    /// wrote; `visit` returns true to stop the walk. Only register deltas and writes are read,
    /// no memory is rebuilt, except for a run (format 3): its instructions are re-executed
    /// (see [`Timeline::set_reexecution`]) from the state before it, which this seeks to.
    /// The searches of the replay gdb server (breakpoints, watchpoints) are walks.
    pub fn walk_steps(
        &mut self,
        from: Step,
        mut regs: Regs,
        mut parked: Parked,
        to: Step,
        visit: &mut dyn FnMut(&StepView<'_>) -> bool,
    ) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let chunks = self.chunks_covering(from + 1, to);
        let mut at = from;
        for c in chunks {
            let records = self.reader.chunk_records(c)?;
            for r in records.iter() {
                let (first, last) = match r {
                    Record::Step(s) => (s.step, s.step),
                    Record::Run(run) => (run.first, run.step),
                    Record::Vcpu(v) if v.step == at => {
                        parked
                            .switch(v.vcpu, &mut regs)
                            .map_err(|detail| TimelineError::Inconsistent { step: at, detail })?;
                        continue;
                    }
                    _ => continue,
                };
                if last <= at || first > to {
                    continue;
                }
                // Only a run may start before `from` (a walk may start inside one).
                let inside_run = matches!(r, Record::Run(_)) && first <= at;
                if first != at + 1 && !inside_run {
                    return Err(TimelineError::Inconsistent {
                        step: first,
                        detail: format!("step record follows step {at}"),
                    });
                }
                let stopped = match r {
                    Record::Step(s) => {
                        if !regs.apply_delta(&s.regs) {
                            return Err(bad_delta(s.step));
                        }
                        at = s.step;
                        visit(&StepView {
                            step: at,
                            vcpu: parked.current(),
                            regs: &regs,
                            mem: &s.mem,
                        })
                    }
                    Record::Run(run) => {
                        let vcpu = parked.current();
                        let stopped = self.walk_run(first..=last, vcpu, at, last.min(to), visit)?;
                        if inside_run {
                            // The run's delta is from the state before it, not from `from`.
                            regs = self.before_run(first, vcpu)?.regs;
                        }
                        if !regs.apply_delta(&run.regs) {
                            return Err(bad_delta(run.step));
                        }
                        at = last;
                        stopped
                    }
                    _ => false,
                };
                if stopped || at >= to {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The state before the run starting at step `first`, which vCPU `vcpu` executes (a
    /// switch to it may come right before the run).
    fn before_run(&mut self, first: Step, vcpu: u32) -> Result<Snapshot> {
        let mut before = self.seek(first - 1)?.clone();
        before.switch(vcpu)?;
        Ok(before)
    }

    /// The instructions `from + 1 ..= to` of the run `run` of vCPU `vcpu`, by re-execution.
    fn walk_run(
        &mut self,
        run: std::ops::RangeInclusive<Step>,
        vcpu: u32,
        from: Step,
        to: Step,
        visit: &mut dyn FnMut(&StepView<'_>) -> bool,
    ) -> Result<bool> {
        let (first, end) = (*run.start(), *run.end());
        let before = self.before_run(first, vcpu)?;
        let header = self.reader.header().clone();
        let Some(reexec) = self.reexec.as_mut() else {
            return Err(TimelineError::InsideRun {
                step: from + 1,
                first,
                last: end,
            });
        };
        reexec.walk(&header, end, &before, from, to, visit)
    }

    /// The chunks holding records of steps `first..=to`, in order.
    fn chunks_covering(&self, first: Step, to: Step) -> Vec<usize> {
        self.reader
            .chunks()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.header.last_step >= first && c.header.first_step <= to)
            .map(|(i, _)| i)
            .collect()
    }

    /// Applies the step records `from.step + 1 ..= to` to `from`.
    fn replay(&mut self, mut state: Snapshot, to: Step) -> Result<Snapshot> {
        if state.step == to {
            return Ok(state);
        }
        let first = state.step + 1;
        for c in self.chunks_covering(first, to) {
            let records = self.reader.chunk_records(c)?;
            for r in records.iter() {
                // A step record is a run of one instruction.
                let (first, last, regs, mem) = match r {
                    Record::Step(s) => (s.step, s.step, &s.regs, &s.mem),
                    Record::Run(run) => (run.first, run.step, &run.regs, &run.mem),
                    // The next vCPU runs steps after the switch: the state at `to` stays
                    // with the vCPU that executed `to`.
                    Record::Vcpu(v) if v.step == state.step && v.step < to => {
                        state.switch(v.vcpu)?;
                        continue;
                    }
                    _ => continue,
                };
                if last <= state.step || first > to {
                    continue;
                }
                if first != state.step + 1 {
                    return Err(TimelineError::Inconsistent {
                        step: first,
                        detail: format!("step record follows step {}", state.step),
                    });
                }
                if last > to {
                    return match self.reexec.as_mut() {
                        Some(r) => {
                            let inside = r.state_at(self.reader.header(), to, last, &state)?;
                            self.current_in_run = true;
                            Ok(inside)
                        }
                        None => Err(TimelineError::InsideRun {
                            step: to,
                            first,
                            last,
                        }),
                    };
                }
                apply(&mut state, last, regs, mem)?;
            }
        }
        if state.step != to {
            return Err(TimelineError::Inconsistent {
                step: to,
                detail: format!("no step records after step {}", state.step),
            });
        }
        Ok(state)
    }
}

/// One instruction seen by [`Timeline::walk_steps`]: the registers after it and the
/// guest-physical memory it wrote.
pub struct StepView<'a> {
    pub step: Step,
    /// The vCPU that executed it (format 5; 0 in one-vCPU traces).
    pub vcpu: u32,
    pub regs: &'a Regs,
    pub mem: &'a [traces::MemWrite],
}

/// Applies one step's (or run's) register delta and memory writes; the state is then at `step`.
fn apply(
    state: &mut Snapshot,
    step: Step,
    regs: &[(traces::RegId, u64)],
    mem: &[traces::MemWrite],
) -> Result<()> {
    if !state.regs.apply_delta(regs) {
        return Err(bad_delta(step));
    }
    for w in mem {
        if !state.memory.write(w.gpa, &w.data) {
            return Err(TimelineError::Inconsistent {
                step,
                detail: format!(
                    "a memory write of {} bytes at {:#x} lies outside RAM",
                    w.data.len(),
                    w.gpa
                ),
            });
        }
    }
    state.step = step;
    Ok(())
}

fn bad_delta(step: Step) -> TimelineError {
    TimelineError::Inconsistent {
        step,
        detail: "a register delta names a register that does not exist".into(),
    }
}
