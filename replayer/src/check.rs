//! `mmurr check`: re-run the role model over a trace's control-register writes, for any
//! policies (recorded or not), and report where a policy's MMU context went stale, where a
//! reset was needless, and where the model and the recorded CPU disagree on #GP.

use crate::analysis::Analysis;
use crate::timeline::{Result, Timeline};
use history::to_trace;
use mmu::{Access, Flavour, Outcome, Policy};
use std::io::{Read, Seek};
use traces::{EventId, FindingKind, Step};

/// One finding of one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFinding {
    pub policy: &'static str,
    pub step: Step,
    /// The CR-write event the finding is about.
    pub event: EventId,
    pub kind: FindingKind,
    /// Context attributes that differ: (name, kept, required).
    pub attributes: Vec<(String, String, String)>,
    /// Addresses the guest touched after the write that translate differently.
    pub translations: Vec<Mistranslation>,
    /// How many addresses (on distinct pages) were translated both ways.
    pub looked_at: usize,
    /// One paragraph for humans.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mistranslation {
    pub gva: u64,
    pub access: Access,
    pub kept: String,
    pub correct: String,
}

/// Per-policy tallies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySummary {
    pub writes: u64,
    pub reinits: u64,
    pub skipped: u64,
    pub stale: u64,
    pub needless: u64,
    pub gp_mismatches: u64,
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub flavour: Flavour,
    pub policies: Vec<(&'static Policy, PolicySummary)>,
    pub findings: Vec<CheckFinding>,
}

impl CheckReport {
    /// Stale contexts and #GP disagreements are bugs; needless resets are only waste.
    pub fn has_bugs(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind != FindingKind::NeedlessReset)
    }
}

/// Checks `policies` (all modelled ones when empty) over the trace.
pub fn check<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    policies: &[&'static Policy],
    flavour: Flavour,
) -> Result<CheckReport> {
    let analysis = Analysis::run(timeline, policies, flavour)?;
    Ok(report(&analysis))
}

/// The tallies and findings of an analysis, as `check` prints them.
pub fn report(analysis: &Analysis) -> CheckReport {
    let mut summaries = vec![PolicySummary::default(); analysis.policies.len()];
    for w in &analysis.writes {
        for (s, d) in summaries.iter_mut().zip(&w.decisions) {
            s.writes += 1;
            match d.outcome {
                Outcome::Reinit | Outcome::InitOnly => s.reinits += 1,
                Outcome::SkippedRoleUnchanged => s.skipped += 1,
                _ => {}
            }
        }
    }
    let mut findings = Vec::with_capacity(analysis.findings.len());
    for f in &analysis.findings {
        let Some(s) = summaries.get_mut(f.finding.policy as usize) else {
            continue;
        };
        match f.finding.kind {
            FindingKind::StaleContext => s.stale += 1,
            FindingKind::NeedlessReset => s.needless += 1,
            FindingKind::GpMismatch => s.gp_mismatches += 1,
        }
        findings.push(CheckFinding::new(analysis, f));
    }
    CheckReport {
        flavour: analysis.flavour,
        policies: analysis.policies.iter().copied().zip(summaries).collect(),
        findings,
    }
}

impl CheckFinding {
    /// The report line of one of `analysis`'s findings.
    pub fn new(analysis: &Analysis, f: &history::Found) -> CheckFinding {
        let policy = analysis
            .policies
            .get(f.finding.policy as usize)
            .map_or("?", |p| p.name);
        CheckFinding {
            policy,
            step: f.step,
            event: f.finding.cause,
            kind: f.finding.kind,
            attributes: f.finding.attributes.clone(),
            translations: f
                .finding
                .translations
                .iter()
                .map(|t| Mistranslation {
                    gva: t.gva,
                    access: match t.access {
                        'w' => Access::Write,
                        'x' => Access::Fetch,
                        _ => Access::Read,
                    },
                    kept: to_trace::translation_result(&t.kept).to_string(),
                    correct: to_trace::translation_result(&t.correct).to_string(),
                })
                .collect(),
            detail: f.finding.detail.clone(),
            looked_at: f.looked_at,
        }
    }
}
