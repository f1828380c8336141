//! The MMU history the role panel reads: every modelled policy's [`replayer::Analysis`] over
//! the CR writes the loader collected with the event list (rather than by re-reading every
//! record), with its findings indexed by write, as `mmurr check` reports them.

use mmu::Flavour;
use replayer::{Analysis, Retain, Timeline, TimelineError};
use std::io::{Read, Seek};
use traces::{Event, EventId, FindingKind, Step};

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

pub use replayer::check::Mistranslation;

#[derive(Clone, Debug)]
pub struct MmuHistory {
    pub analysis: Analysis,
    /// In write order, then policy order.
    pub findings: Vec<ModelFinding>,
    /// Per finding of kind stale-context (same order as the stale entries of `findings`):
    /// `(write, policy, addresses looked at, mistranslations)`.
    pub translations: Vec<(usize, usize, usize, Vec<Mistranslation>)>,
    /// The host KVM's own roots and events (traces recorded with host events; else empty),
    /// and the layout its role words decode with.
    pub host: replayer::host_check::HostHistory,
    pub host_layout: &'static mmu::Layout,
}

impl MmuHistory {
    /// Runs every modelled policy over `writes` (the trace's CR write events, in order),
    /// calling `progress(done, total)` after each write; `Ok(None)` when `progress` returns
    /// false (nobody wants the result).
    pub fn build<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        writes: Vec<(Event, history::Cause)>,
        flavour: Flavour,
        progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Option<MmuHistory>, TimelineError> {
        // Checkpoints: the browser keeps each write's verdicts and recomputes the full
        // decisions and trackers of the write it shows (`App::detail`), so its memory stays
        // bounded on traces with hundreds of thousands of writes.
        let Some(analysis) = Analysis::from_writes(
            timeline,
            writes,
            &[],
            flavour,
            Retain::Checkpoints,
            progress,
        )?
        else {
            return Ok(None);
        };
        let mut findings = Vec::new();
        let mut translations = Vec::new();
        for f in &analysis.findings {
            let Some(write) = analysis.write_of_event(f.finding.cause) else {
                continue;
            };
            let policy = usize::from(f.finding.policy);
            findings.push(ModelFinding {
                write,
                policy,
                event: f.finding.cause,
                step: f.step,
                kind: f.finding.kind,
            });
            if f.finding.kind == FindingKind::StaleContext {
                let report = replayer::CheckFinding::new(&analysis, f);
                translations.push((write, policy, f.looked_at, report.translations));
            }
        }
        // #GP disagreements and needless resets come from the verdicts (the analysis keeps
        // no finding for them, see `Retain::Checkpoints`), in the order the model reports a
        // write's findings for one policy: #GP disagreement, needless reset, stale context.
        for (write, w) in analysis.writes.iter().enumerate() {
            for (policy, v) in w.verdicts.iter().enumerate() {
                let kinds = [
                    (w.gp_mismatch(policy), FindingKind::GpMismatch),
                    (v.needless_reset, FindingKind::NeedlessReset),
                ];
                for (_, kind) in kinds.into_iter().filter(|k| k.0) {
                    findings.push(ModelFinding {
                        write,
                        policy,
                        event: w.event.id,
                        step: w.event.step,
                        kind,
                    });
                }
            }
        }
        let rank = |k: FindingKind| match k {
            FindingKind::GpMismatch => 0,
            FindingKind::NeedlessReset => 1,
            _ => 2,
        };
        findings.sort_by_key(|f| (f.write, f.policy, rank(f.kind)));
        let recorded = matches!(
            timeline.header().host.as_ref().map(|h| &h.events),
            Some(traces::HostEventsStatus::Recorded { .. })
        );
        let host = if recorded {
            replayer::host_check::HostHistory::of_trace(timeline)?
        } else {
            Default::default()
        };
        Ok(Some(MmuHistory {
            analysis,
            findings,
            translations,
            host,
            host_layout: replayer::host_check::host_layout(timeline.header()),
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

    /// Findings at write `write` (a binary search: every visible row asks).
    pub fn findings_at(&self, write: usize) -> impl Iterator<Item = &ModelFinding> {
        let start = self.findings.partition_point(|f| f.write < write);
        self.findings[start..]
            .iter()
            .take_while(move |f| f.write == write)
    }

    /// The policy to show first: the first one with a stale context, else the newest.
    pub fn default_policy(&self) -> usize {
        self.findings
            .iter()
            .find(|f| f.kind == FindingKind::StaleContext)
            .or(self.findings.first())
            .map_or(self.analysis.policies.len().saturating_sub(1), |f| f.policy)
    }

    /// What the policies made of write `write`, folded into its timeline row: the outcomes with
    /// their counts, most frequent first, e.g. `12 reinit, 1 skipped (role unchanged)`.
    pub fn decision_counts(&self, write: usize) -> String {
        let Some(w) = self.analysis.writes.get(write) else {
            return String::new();
        };
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for d in &w.verdicts {
            match counts.iter_mut().find(|(n, _)| *n == d.outcome.name()) {
                Some((_, c)) => *c += 1,
                None => counts.push((d.outcome.name(), 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts
            .iter()
            .map(|(n, c)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The policies whose context went stale at write `write`.
    pub fn stale_policies(&self, write: usize) -> Vec<&'static str> {
        self.findings_at(write)
            .filter(|f| f.kind == FindingKind::StaleContext)
            .map(|f| self.analysis.policies[f.policy].name)
            .collect()
    }

    /// The policy reset its MMU at this write (`mmu::Decision::is_reset`).
    pub fn is_reset(&self, write: usize, policy: usize) -> bool {
        self.analysis
            .writes
            .get(write)
            .and_then(|w| w.verdicts.get(policy))
            .is_some_and(|v| v.reset)
    }
}
