//! The MMU history of a trace under a set of policies: the [`history::Watch`] the recorder runs
//! live, run again over the trace with the same inputs in the same order (every
//! control-register write, and after a stale context the addresses the guest touched next),
//! keeping each decision, the trackers after it, and every finding. This is what `check`,
//! `export`, the TUI and the replay gdb server read, for policies the recording used or not.

use crate::cpu::cpu_model;
use crate::timeline::{Result, Timeline};
use history::{Found, Watch};
use mmu::{CpuModel, Decision, Flavour, Policy, Tracker};
use std::io::{Read, Seek};
use traces::{CrWrite, Event, EventId, EventKind, FindingKind, Record, Step};

/// One control-register write and what every policy made of it.
#[derive(Clone, Debug)]
pub struct WriteAnalysis {
    pub event: Event,
    pub write: CrWrite,
    /// Per policy, in [`Analysis::policies`] order.
    pub decisions: Vec<Decision>,
    /// Per policy: its context was already stale before this write.
    pub stale_before: Vec<bool>,
    /// Per policy, the tracker right after the write.
    pub after: Vec<Tracker>,
}

/// The MMU history of a trace.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub flavour: Flavour,
    pub cpu: CpuModel,
    pub policies: Vec<&'static Policy>,
    /// Trackers at entry (step 0), per policy.
    pub initial: Vec<Tracker>,
    /// Every MMU-relevant write (CR0, CR3, CR4, EFER), in order.
    pub writes: Vec<WriteAnalysis>,
    /// Every finding of every policy, ordered by the write it is about, then policy
    /// (`Finding::policy` indexes [`Analysis::policies`]).
    pub findings: Vec<Found>,
}

impl Analysis {
    /// Runs `policies` (all modelled ones when empty) over the trace's writes.
    pub fn run<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        policies: &[&'static Policy],
        flavour: Flavour,
    ) -> Result<Analysis> {
        let writes = cr_writes(timeline)?;
        let analysis = Analysis::from_writes(timeline, writes, policies, flavour, |_, _| true)?;
        Ok(analysis.expect("progress never gives up"))
    }

    /// [`Analysis::run`] over writes the caller already has (the TUI's event index), calling
    /// `progress(done, total)` after each; `Ok(None)` when `progress` returns false.
    pub fn from_writes<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        writes: Vec<(Event, CrWrite)>,
        policies: &[&'static Policy],
        flavour: Flavour,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Option<Analysis>> {
        let policies: Vec<&'static Policy> = if policies.is_empty() {
            mmu::policies().iter().collect()
        } else {
            policies.to_vec()
        };
        let cpu = cpu_model(&timeline.header().guest);
        let entry = insn::control_regs(&timeline.entry().regs);
        let mut watch = Watch::new(&policies, flavour, cpu, &entry);
        let initial = watch.trackers().to_vec();
        let total = writes.len();
        let mut out = Vec::with_capacity(total);
        let mut findings = Vec::new();
        // Touches of steps up to here have been fed.
        let mut fed: Step = 0;
        for (n, (event, write)) in writes.into_iter().enumerate() {
            // The instructions since the previous write, this write's own included, come
            // first: the recorder feeds a step's touches before its writes.
            findings.extend(feed_touches(timeline, &mut watch, fed, event.step)?);
            fed = fed.max(event.step);
            let after = timeline.seek(event.step)?;
            let regs = insn::control_regs(&after.regs);
            // CS.L after the write is the writer's: a write leaves CS as it was, and a write
            // from 64-bit code that faulted entered a 64-bit handler.
            let ctx = insn::write_context(&after.regs);
            let outcome = watch.on_write(
                event.id,
                event.step,
                event.rip,
                &write,
                &ctx,
                &regs,
                &after.memory,
            );
            if let Some(o) = outcome {
                findings.extend(o.findings);
                out.push(WriteAnalysis {
                    event,
                    write,
                    decisions: o.decisions,
                    stale_before: o.stale_before,
                    after: watch.trackers().to_vec(),
                });
            }
            if !progress(n + 1, total) {
                return Ok(None);
            }
        }
        let last = timeline.last_step();
        findings.extend(feed_touches(timeline, &mut watch, fed, last)?);
        findings.extend(watch.settle_all());
        findings.sort_by_key(|f| (f.finding.cause, f.finding.policy));
        Ok(Some(Analysis {
            flavour,
            cpu,
            policies,
            initial,
            writes: out,
            findings,
        }))
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

    /// Policy `p`'s tracker as it stood after step `step`.
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

/// Feeds the watch the addresses of the instructions after step `from` up to step `to`, for
/// as long as a stale context waits for them: the touches of instruction `s` come from the
/// registers before it, their translations from memory right after it, as in the recorder.
fn feed_touches<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    watch: &mut Watch,
    from: Step,
    to: Step,
) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let cpu = *watch.cpu();
    let mut s = from + 1;
    while s <= to && watch.wants_touches() {
        let before = timeline.seek(s - 1)?;
        let regs = &before.regs;
        let bytes = insn::fetch(regs, &cpu, &before.memory);
        let decoded = insn::decode(&bytes, insn::bitness(regs), regs.rip);
        let touched = insn::touched(decoded.as_ref(), regs);
        let after = timeline.seek(s)?;
        found.extend(watch.on_touch(&touched, &after.memory));
        s += 1;
    }
    Ok(found)
}

/// The trace's control-register writes, in order.
fn cr_writes<R: Read + Seek>(timeline: &mut Timeline<R>) -> Result<Vec<(Event, CrWrite)>> {
    let mut out = Vec::new();
    for record in timeline.reader().records() {
        if let Record::Event(e) = record? {
            if let EventKind::CrWrite(w) = &e.kind {
                let w = w.clone();
                out.push((e, w));
            }
        }
    }
    Ok(out)
}
