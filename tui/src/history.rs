//! The MMU history the role panel reads: every modelled policy's tracker fed every
//! control-register write of the trace (a [`replayer::Analysis`], built here from the event
//! index rather than by re-reading every record), the findings the model makes, and for each
//! stale context the addresses the guest touched next that translate differently.

use crate::events::EventIndex;
use mmu::{Access, Flavour, Outcome, Tracker};
use replayer::analysis::input_for;
use replayer::views::accesses;
use replayer::{Analysis, Timeline, TimelineError, WriteAnalysis};
use std::collections::BTreeSet;
use std::io::{Read, Seek};
use traces::{EventId, EventKind, FindingKind, Step};

/// How far after a stale-context write to look for addresses the guest touches.
pub const LOOKAHEAD_STEPS: u64 = 64;
/// How many distinct (page, access) pairs to translate both ways.
pub const LOOKAHEAD_ADDRESSES: usize = 8;

/// One finding of the model: a policy's decision on one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFinding {
    /// Index into [`Analysis::writes`].
    pub write: usize,
    /// Index into [`Analysis::policies`].
    pub policy: usize,
    pub event: EventId,
    pub step: Step,
    pub kind: FindingKind,
}

/// An address whose translation differs between the kept and the correct context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mistranslation {
    pub gva: u64,
    pub access: Access,
    pub kept: String,
    pub correct: String,
}

#[derive(Clone, Debug)]
pub struct MmuHistory {
    pub analysis: Analysis,
    /// In write order, then policy order.
    pub findings: Vec<ModelFinding>,
    /// Per finding of kind stale-context (same order as the stale entries of `findings`):
    /// `(write, policy, addresses looked at, mistranslations)`.
    pub translations: Vec<(usize, usize, usize, Vec<Mistranslation>)>,
}

impl MmuHistory {
    /// Runs every modelled policy over the writes in `events`, calling `progress(done, total)`
    /// after each write; `Ok(None)` when `progress` returns false (nobody wants the result).
    pub fn build<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        events: &EventIndex,
        flavour: Flavour,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Option<MmuHistory>, TimelineError> {
        let policies: Vec<&'static mmu::Policy> = mmu::policies().iter().collect();
        let cpu = replayer::cpu_model(&timeline.header().guest);
        let entry = insn::control_regs(&timeline.entry().regs);
        let initial: Vec<Tracker> = policies
            .iter()
            .map(|p| Tracker::new(p, flavour, cpu, &entry))
            .collect();
        let mut trackers = initial.clone();
        let writes_in_trace: Vec<_> = events
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::CrWrite(w) => input_for(w).map(|i| (e, w, i)),
                _ => None,
            })
            .collect();
        let total = writes_in_trace.len();
        let mut writes = Vec::with_capacity(total);
        for (n, (event, write, input)) in writes_in_trace.into_iter().enumerate() {
            let after = timeline.seek(event.step)?;
            let regs = insn::control_regs(&after.regs);
            let decisions = trackers
                .iter_mut()
                .map(|t| t.apply(&input, &regs, &after.memory))
                .collect();
            writes.push(WriteAnalysis {
                event: event.clone(),
                write: write.clone(),
                decisions,
                after: trackers.clone(),
            });
            if !progress(n + 1, total) {
                return Ok(None);
            }
        }
        let analysis = Analysis {
            flavour,
            cpu,
            policies,
            initial,
            writes,
        };
        let findings = findings(&analysis);
        let mut translations = Vec::new();
        for f in findings
            .iter()
            .filter(|f| f.kind == FindingKind::StaleContext)
        {
            let (looked, diffs) = mistranslations(timeline, &analysis, f.write, f.policy)?;
            translations.push((f.write, f.policy, looked, diffs));
        }
        Ok(Some(MmuHistory {
            analysis,
            findings,
            translations,
        }))
    }

    /// The write an event is about (a CR write's own event id).
    pub fn write_of_event(&self, id: EventId) -> Option<usize> {
        self.analysis
            .writes
            .binary_search_by_key(&id, |w| w.event.id)
            .ok()
    }

    /// The mistranslations found for policy `policy` at write `write`.
    pub fn translations_at(
        &self,
        write: usize,
        policy: usize,
    ) -> Option<(usize, &[Mistranslation])> {
        self.translations
            .iter()
            .find(|t| t.0 == write && t.1 == policy)
            .map(|t| (t.2, t.3.as_slice()))
    }

    /// Findings at write `write`.
    pub fn findings_at(&self, write: usize) -> impl Iterator<Item = &ModelFinding> {
        self.findings.iter().filter(move |f| f.write == write)
    }

    /// The policy to show first: the first one with a stale context, else the newest.
    pub fn default_policy(&self) -> usize {
        self.findings
            .iter()
            .find(|f| f.kind == FindingKind::StaleContext)
            .or(self.findings.first())
            .map_or(self.analysis.policies.len().saturating_sub(1), |f| f.policy)
    }

    /// The policy decided a re-init at this write.
    pub fn is_reset(&self, write: usize, policy: usize) -> bool {
        self.analysis
            .writes
            .get(write)
            .and_then(|w| w.decisions.get(policy))
            .is_some_and(|d| matches!(d.outcome, Outcome::Reinit | Outcome::InitOnly))
    }
}

/// Stale contexts, needless resets and #GP disagreements, as `mmurr check` counts them.
fn findings(analysis: &Analysis) -> Vec<ModelFinding> {
    let mut out = Vec::new();
    for (n, w) in analysis.writes.iter().enumerate() {
        for (p, d) in w.decisions.iter().enumerate() {
            let mut add = |kind| {
                out.push(ModelFinding {
                    write: n,
                    policy: p,
                    event: w.event.id,
                    step: w.event.step,
                    kind,
                })
            };
            if (d.outcome == Outcome::Gp) != w.write.faulted {
                add(FindingKind::GpMismatch);
            }
            if d.needless_reset {
                add(FindingKind::NeedlessReset);
            }
            if d.stale.is_some() {
                add(FindingKind::StaleContext);
            }
        }
    }
    out
}

/// Translates the addresses the guest touched after write `n` with policy `p`'s kept context
/// and with the correct one; returns how many addresses were looked at and those that differ.
fn mistranslations<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    analysis: &Analysis,
    n: usize,
    p: usize,
) -> Result<(usize, Vec<Mistranslation>), TimelineError> {
    let w = &analysis.writes[n];
    let Some(stale) = w.decisions.get(p).and_then(|d| d.stale.as_ref()) else {
        return Ok((0, Vec::new()));
    };
    let next_write = analysis
        .writes
        .get(n + 1)
        .map_or(Step::MAX, |x| x.event.step);
    let end = (w.event.step.saturating_add(LOOKAHEAD_STEPS))
        .min(next_write)
        .min(timeline.last_step());
    let mut seen = BTreeSet::new();
    let mut addrs = Vec::new();
    for s in w.event.step..end {
        let snap = timeline.seek(s)?;
        for t in accesses::of_instruction(&snap.regs, &analysis.cpu, &snap.memory) {
            if addrs.len() < LOOKAHEAD_ADDRESSES && seen.insert((t.linear >> 12, t.access)) {
                addrs.push((t.linear, t.access));
            }
        }
    }
    let after = timeline.seek(w.event.step)?;
    let diffs = mmu::compare_translations(
        &stale.kept,
        &stale.correct,
        &insn::control_regs(&after.regs),
        &analysis.cpu,
        &after.memory,
        &addrs,
    );
    let list = diffs
        .iter()
        .map(|d| Mistranslation {
            gva: d.gva,
            access: d.access,
            kept: d.kept.to_string(),
            correct: d.correct.to_string(),
        })
        .collect();
    Ok((addrs.len(), list))
}
