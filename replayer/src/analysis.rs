//! The MMU history of a trace under a set of policies: the [`history::Watch`] the recorder runs
//! live, run again over the trace with the same inputs in the same order (every
//! control-register write, and after a stale context the addresses the guest touched next),
//! keeping each decision, the trackers after it, and every finding. This is what `check`,
//! `export`, the TUI and the replay gdb server read, for policies the recording used or not.
//!
//! Memory: 13 trackers and 13 decisions per write are ~4.7 KB, 650 MB for the 140 000 writes
//! of a 1 M-event trace. [`Retain::Checkpoints`] (the TUI's choice) keeps, per write, only the
//! gist of each decision ([`Verdict`]) plus every policy's trackers before one write in
//! [`CHECKPOINT_WRITES`], and of the findings only the stale contexts (the verdicts have
//! the rest);
//! [`Analysis::detail`] recomputes any write's decisions and trackers
//! from the checkpoint before it, feeding the same [`Watch`] the same inputs.

use crate::cpu::cpu_model;
use crate::timeline::{Result, Timeline};
use history::{Cause, Found, Watch, WriteOutcome};
use mmu::{CpuModel, Decision, Flavour, Policy, Tracker};
use std::io::{Read, Seek};
use traces::{BackendKind, CrWrite, Event, EventId, FindingKind, Record, Step};

/// One control-register write (or host action) and what every policy made of it.
#[derive(Clone, Debug)]
pub struct WriteAnalysis {
    pub event: Event,
    /// The vCPU that made the write (its MMU is the one the write is fed to; 0 in one-vCPU
    /// traces).
    pub vcpu: u32,
    /// The write, or the host action (format 6).
    pub cause: Cause,
    /// Per policy, in [`Analysis::policies`] order: the gist of its decision (always kept).
    pub verdicts: Vec<Verdict>,
    /// Per policy, in [`Analysis::policies`] order. Empty unless the analysis keeps
    /// everything ([`Retain::Everything`], as [`Analysis::run`] does); [`Analysis::detail`]
    /// has them for any write.
    pub decisions: Vec<Decision>,
    /// Per policy: its context was already stale before this write (empty as `decisions`).
    pub stale_before: Vec<bool>,
    /// Per policy, the tracker right after the write (empty as `decisions`).
    pub after: Vec<Tracker>,
}

impl WriteAnalysis {
    /// Policy `p` and the recording CPU disagree on whether this write raises #GP (what the
    /// model reports as a [`FindingKind::GpMismatch`] finding).
    pub fn gp_mismatch(&self, p: usize) -> bool {
        self.verdicts
            .get(p)
            .is_some_and(|v| (v.outcome == mmu::Outcome::Gp) != self.cause.faulted())
    }

    /// The control-register write, unless this is a host action.
    pub fn write(&self) -> Option<&CrWrite> {
        self.cause.write()
    }
}

/// What a policy's decision on one write comes to, as lists and searches across every write
/// read it: 5 bytes where the whole [`Decision`] is 160.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: mmu::Outcome,
    /// [`Decision::is_reset`].
    pub reset: bool,
    /// The context kept is stale after the write.
    pub stale: bool,
    /// The context was already stale before the write.
    pub stale_before: bool,
    pub needless_reset: bool,
}

impl Verdict {
    pub fn of(d: &Decision, stale_before: bool) -> Verdict {
        Verdict {
            outcome: d.outcome,
            reset: d.is_reset(),
            stale: d.stale.is_some(),
            stale_before,
            needless_reset: d.needless_reset,
        }
    }
}

/// Everything every policy made of one write: what [`Analysis::detail`] gives.
#[derive(Clone, Debug)]
pub struct WriteDetail {
    /// Per policy, the tracker right before the write.
    pub before: Vec<Tracker>,
    pub decisions: Vec<Decision>,
    pub stale_before: Vec<bool>,
    /// Per policy, the tracker right after the write.
    pub after: Vec<Tracker>,
}

/// How much of each write an analysis keeps in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// Every decision and tracker of every write (batch reports, the gdb server).
    Everything,
    /// [`Verdict`]s, and trackers at checkpoints: a browser's bounded memory.
    Checkpoints,
}

/// With [`Retain::Checkpoints`], trackers are kept before every this many writes, so
/// [`Analysis::detail`] replays at most this many writes ...
pub const CHECKPOINT_WRITES: usize = 32;
/// ... or the writes of at most about this many steps: on sparse traces a recompute then
/// replays one write or a few thousand steps (the browser's `j` and `J` wait for it), and
/// 10 M steps cost at most 2 000 more checkpoints (~5 MB).
pub const CHECKPOINT_STEPS: Step = 5_000;

/// The MMU history of a trace.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub flavour: Flavour,
    pub cpu: CpuModel,
    pub policies: Vec<&'static Policy>,
    /// Trackers at entry (step 0), per policy: vCPU 0's.
    pub initial: Vec<Tracker>,
    /// Trackers at entry per vCPU (index 0 = `initial`): KVM keeps one MMU per vCPU.
    pub initial_vcpus: Vec<Vec<Tracker>>,
    /// Every MMU-relevant write (CR0, CR3, CR4, EFER) and host action, in order.
    pub writes: Vec<WriteAnalysis>,
    /// Every finding of every policy, ordered by the write it is about, then policy
    /// (`Finding::policy` indexes [`Analysis::policies`]). [`Retain::Checkpoints`] keeps only
    /// the stale contexts: #GP disagreements and needless resets follow from each write's
    /// verdicts ([`WriteAnalysis::gp_mismatch`], [`Verdict::needless_reset`];
    /// `history::to_trace` words them), and on a busy trace they are most of the findings,
    /// ~300 bytes each with their text.
    pub findings: Vec<Found>,
    pub retain: Retain,
    /// [`Retain::Checkpoints`]: `(write, every vCPU's trackers of every policy right before
    /// it)`, ascending (write 0's are `initial_vcpus`, not repeated here).
    checkpoints: Vec<(usize, Vec<Vec<Tracker>>)>,
}

impl Analysis {
    /// Runs `policies` (all modelled ones when empty) over the trace's writes.
    pub fn run<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        policies: &[&'static Policy],
        flavour: Flavour,
    ) -> Result<Analysis> {
        let writes = model_inputs(timeline)?;
        let analysis = Analysis::from_writes(
            timeline,
            writes,
            policies,
            flavour,
            Retain::Everything,
            |_, _| true,
        )?;
        Ok(analysis.expect("progress never gives up"))
    }

    /// [`Analysis::run`] over writes the caller already has (the TUI's event index: every
    /// event that is a [`Cause`]), calling `progress(done, total)` after each; `Ok(None)` when
    /// `progress` returns false.
    pub fn from_writes<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        writes: Vec<(Event, Cause)>,
        policies: &[&'static Policy],
        flavour: Flavour,
        retain: Retain,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Option<Analysis>> {
        let policies: Vec<&'static Policy> = if policies.is_empty() {
            mmu::policies().iter().collect()
        } else {
            policies.to_vec()
        };
        let cpu = cpu_model(&timeline.header().guest);
        // One model per vCPU, each from its own state at entry (an AP's INIT state).
        let vcpus = timeline.header().vcpu_count();
        let mut watches: Vec<Watch> = (0..vcpus)
            .map(|v| {
                let entry = timeline.entry();
                let regs = entry.regs_of(v).unwrap_or(&entry.regs);
                Watch::new(&policies, flavour, cpu, &insn::control_regs(regs))
            })
            .collect();
        let initial_vcpus: Vec<Vec<Tracker>> =
            watches.iter().map(|w| w.trackers().to_vec()).collect();
        let total = writes.len();
        let mut out = Vec::with_capacity(total);
        let mut findings = Vec::new();
        let mut checkpoints = Vec::new();
        let mut checkpoint_step: Step = 0;
        // Touches of steps up to here have been fed.
        let mut fed: Step = 0;
        // A model trace's steps are a script's actions, not instructions: nothing touched.
        let executes = timeline.header().backend.kind != BackendKind::Model;
        for (n, (event, write)) in writes.into_iter().enumerate() {
            // The instructions since the previous write, this write's own included, come
            // first: the recorder feeds a step's touches before its writes. A host action's
            // step runs no instruction.
            if executes {
                let to = match write {
                    Cause::Host(_) => event.step.saturating_sub(1),
                    Cause::Write(_) => event.step,
                };
                findings.extend(feed_touches(timeline, &mut watches, fed, to)?);
            }
            fed = fed.max(event.step);
            let vcpu = timeline.seek(event.step)?.vcpu();
            let kept = out.len();
            if retain == Retain::Checkpoints
                && kept > 0
                && (kept % CHECKPOINT_WRITES == 0
                    || event.step - checkpoint_step >= CHECKPOINT_STEPS)
            {
                checkpoints.push((
                    kept,
                    watches.iter().map(|w| w.trackers().to_vec()).collect(),
                ));
                checkpoint_step = event.step;
            }
            let Some(watch) = watches.get_mut(vcpu as usize) else {
                return Err(crate::TimelineError::Inconsistent {
                    step: event.step,
                    detail: format!("a write of vCPU {vcpu} in a trace of {vcpus}"),
                });
            };
            let outcome = feed(timeline, watch, &event, &write)?;
            if let Some(o) = outcome {
                let everything = retain == Retain::Everything;
                findings.extend(
                    o.findings
                        .into_iter()
                        .filter(|f| everything || f.finding.kind == FindingKind::StaleContext),
                );
                let verdicts = o
                    .decisions
                    .iter()
                    .zip(&o.stale_before)
                    .map(|(d, &s)| Verdict::of(d, s))
                    .collect();
                out.push(WriteAnalysis {
                    event,
                    vcpu,
                    cause: write,
                    verdicts,
                    decisions: if everything { o.decisions } else { Vec::new() },
                    stale_before: if everything {
                        o.stale_before
                    } else {
                        Vec::new()
                    },
                    after: if everything {
                        watch.trackers().to_vec()
                    } else {
                        Vec::new()
                    },
                });
            }
            if !progress(n + 1, total) {
                return Ok(None);
            }
        }
        let last = timeline.last_step();
        if executes {
            findings.extend(feed_touches(timeline, &mut watches, fed, last)?);
        }
        for w in &mut watches {
            findings.extend(w.settle_all());
        }
        findings.sort_by_key(|f| (f.finding.cause, f.finding.policy));
        Ok(Some(Analysis {
            flavour,
            cpu,
            policies,
            initial: initial_vcpus[0].clone(),
            initial_vcpus,
            writes: out,
            findings,
            retain,
            checkpoints,
        }))
    }

    /// Every decision and tracker of write `w` (an index into [`Analysis::writes`]): kept, or
    /// recomputed from the checkpoint before it over `timeline` (the trace analysed; it is
    /// left at some step at or before the write's). `Ok(None)` for no such write.
    pub fn detail<R: Read + Seek>(
        &self,
        timeline: &mut Timeline<R>,
        w: usize,
    ) -> Result<Option<WriteDetail>> {
        let Some(wa) = self.writes.get(w) else {
            return Ok(None);
        };
        if self.retain == Retain::Everything {
            // Before the write: after the same vCPU's previous write (its own MMU).
            let before = match self.writes[..w].iter().rev().find(|p| p.vcpu == wa.vcpu) {
                Some(prev) => prev.after.clone(),
                None => self.initial_of(wa.vcpu).to_vec(),
            };
            return Ok(Some(WriteDetail {
                before,
                decisions: wa.decisions.clone(),
                stale_before: wa.stale_before.clone(),
                after: wa.after.clone(),
            }));
        }
        let c = self.checkpoints.partition_point(|(i, _)| *i <= w);
        let (first, trackers) = match c.checked_sub(1) {
            Some(c) => (self.checkpoints[c].0, &self.checkpoints[c].1),
            None => (0, &self.initial_vcpus),
        };
        let mut watches: Vec<Watch> = trackers
            .iter()
            .map(|t| Watch::resume(t.clone(), self.cpu))
            .collect();
        for (i, wa) in self.writes.iter().enumerate().take(w + 1).skip(first) {
            let Some(watch) = watches.get_mut(wa.vcpu as usize) else {
                return Ok(None);
            };
            let before = (i == w).then(|| watch.trackers().to_vec());
            let e = &wa.event;
            let Some(o) = feed(timeline, watch, e, &wa.cause)? else {
                // Only model inputs were kept as writes: the trace changed under us.
                return Err(crate::TimelineError::Inconsistent {
                    step: e.step,
                    detail: format!("event #{} is no longer an MMU input", e.id),
                });
            };
            if let Some(before) = before {
                return Ok(Some(WriteDetail {
                    before,
                    decisions: o.decisions,
                    stale_before: o.stale_before,
                    after: watch.trackers().to_vec(),
                }));
            }
        }
        Ok(None)
    }

    /// Every policy's tracker at entry for `vcpu` (vCPU 0's past the last vCPU).
    pub fn initial_of(&self, vcpu: u32) -> &[Tracker] {
        self.initial_vcpus
            .get(vcpu as usize)
            .map_or(&self.initial, |t| t.as_slice())
    }

    /// The vCPU whose write event `id` is (for findings, which name it).
    pub fn vcpu_of_event(&self, id: EventId) -> Option<u32> {
        self.write_of_event(id).map(|w| self.writes[w].vcpu)
    }

    /// Index of a policy by name.
    pub fn policy_index(&self, name: &str) -> Option<usize> {
        let p = mmu::policy(name)?;
        self.policies.iter().position(|q| q.name == p.name)
    }

    /// The last write at or before `step`, if any.
    pub fn last_write_at(&self, step: Step) -> Option<&WriteAnalysis> {
        let i = self.writes.partition_point(|w| w.event.step <= step);
        i.checked_sub(1).and_then(|i| self.writes.get(i))
    }

    /// Policy `p`'s tracker as it stood after step `step`; [`Retain::Everything`] only (else
    /// `None` past the first write: see [`Analysis::detail`]).
    pub fn tracker_at(&self, p: usize, step: Step) -> Option<&Tracker> {
        match self.last_write_at(step) {
            Some(w) => w.after.get(p),
            None => self.initial.get(p),
        }
    }

    /// Index into [`Analysis::writes`] of the write with event id `id`.
    pub fn write_of_event(&self, id: EventId) -> Option<usize> {
        self.writes.binary_search_by_key(&id, |w| w.event.id).ok()
    }

    /// Policy `p`'s finding of kind `kind` about write event `id`.
    pub fn finding(&self, id: EventId, p: usize, kind: FindingKind) -> Option<&Found> {
        self.findings.iter().find(|f| {
            f.finding.cause == id && f.finding.policy as usize == p && f.finding.kind == kind
        })
    }
}

/// Feeds `watch` the write or host action of `event`, as the recorder (or the writer of a
/// model trace) fed it: a write with the registers and memory right after its step and the
/// writer's CS.L; a host action with the registers before its step, through
/// [`history::host_effect`]. `None` for a write that is no MMU input.
fn feed<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    watch: &mut Watch,
    event: &Event,
    cause: &Cause,
) -> Result<Option<WriteOutcome>> {
    Ok(match cause {
        Cause::Write(write) => {
            let after = timeline.seek(event.step)?;
            let regs = insn::control_regs(&after.regs);
            // CS.L after the write is the writer's: a write leaves CS as it was, and a write
            // from 64-bit code that faulted entered a 64-bit handler.
            let ctx = insn::write_context(&after.regs);
            watch.on_write(
                event.id,
                event.step,
                event.rip,
                write,
                &ctx,
                &regs,
                &after.memory,
            )
        }
        Cause::Host(action) => {
            // The action came before the step whose registers show its effect.
            let before = timeline.seek(event.step.saturating_sub(1))?;
            let regs = insn::control_regs(&before.regs);
            let (_, o) = watch.on_host(
                event.id,
                event.step,
                event.rip,
                action,
                &regs,
                &before.memory,
            );
            Some(o)
        }
    })
}

/// Feeds the watch the addresses of the instructions after step `from` up to step `to`, for
/// as long as a stale context waits for them: the touches of instruction `s` come from the
/// registers before it, their translations from memory right after it, as in the recorder.
fn feed_touches<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    watches: &mut [Watch],
    from: Step,
    to: Step,
) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let Some(cpu) = watches.first().map(|w| *w.cpu()) else {
        return Ok(found);
    };
    let mut s = from + 1;
    while s <= to && watches.iter().any(Watch::wants_touches) {
        if watches.len() == 1 {
            let before = timeline.seek(s - 1)?;
            let touched = touched(&before.regs, &cpu, &before.memory);
            let after = timeline.seek(s)?;
            found.extend(watches[0].on_touch(&touched, &after.memory));
        } else {
            // Instruction `s` is the vCPU's that executed it: its registers before it, and
            // only its own MMU waits for its addresses.
            let before = timeline.seek(s - 1)?.clone();
            let after = timeline.seek(s)?;
            let v = after.vcpu();
            if let (Some(regs), Some(watch)) = (before.regs_of(v), watches.get_mut(v as usize)) {
                if watch.wants_touches() {
                    let touched = touched(regs, &cpu, &before.memory);
                    found.extend(watch.on_touch(&touched, &after.memory));
                }
            }
        }
        s += 1;
    }
    Ok(found)
}

/// The addresses the instruction at `regs`' RIP touches.
fn touched(
    regs: &traces::Regs,
    cpu: &CpuModel,
    memory: &crate::MemoryImage,
) -> Vec<(u64, mmu::Access)> {
    let bytes = insn::fetch(regs, cpu, memory);
    let decoded = insn::decode(&bytes, insn::bitness(regs), regs.rip);
    insn::touched(decoded.as_ref(), regs)
}

/// The trace's MMU inputs (control-register writes, host actions), in order.
fn model_inputs<R: Read + Seek>(timeline: &mut Timeline<R>) -> Result<Vec<(Event, Cause)>> {
    let mut out = Vec::new();
    for record in timeline.reader().records() {
        if let Record::Event(e) = record? {
            if let Some(c) = Cause::of(&e.kind) {
                out.push((e, c));
            }
        }
    }
    Ok(out)
}
