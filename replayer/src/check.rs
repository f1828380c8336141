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
    /// The vCPU whose MMU it is, in traces of several vCPUs (`None` with one).
    pub vcpu: Option<u32>,
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
    /// The kind of write it is about (`CR4.PSE writes`), for grouping repeats.
    pub write_kind: String,
}

/// Findings that repeat one story: the same kind, kind of write and attributes, at the same
/// steps, under one policy or several.
#[derive(Clone, Debug)]
pub struct FindingGroup<'a> {
    /// The policies that share the story, in report order.
    pub policies: Vec<&'static str>,
    /// The first finding of the group (of its first policy), in trace order.
    pub first: &'a CheckFinding,
    /// The last one (the first again for a group of one).
    pub last: &'a CheckFinding,
    /// Findings per policy.
    pub count: usize,
}

/// `findings` grouped (see [`FindingGroup`]), in the order each group first appears.
pub fn group(findings: &[CheckFinding]) -> Vec<FindingGroup<'_>> {
    use std::collections::HashMap;
    let story = |f: &CheckFinding| {
        let attributes: Vec<&str> = f.attributes.iter().map(|(n, _, _)| n.as_str()).collect();
        (f.kind, f.write_kind.clone(), attributes.join(","))
    };
    // First per policy...
    let mut index = HashMap::new();
    let mut per_policy: Vec<FindingGroup<'_>> = Vec::new();
    for f in findings {
        let at = *index.entry((f.policy, story(f))).or_insert_with(|| {
            per_policy.push(FindingGroup {
                policies: vec![f.policy],
                first: f,
                last: f,
                count: 0,
            });
            per_policy.len() - 1
        });
        let g = &mut per_policy[at];
        g.last = f;
        g.count += 1;
    }
    // ...then the policies that tell the same story at the same steps, together.
    let mut index = HashMap::new();
    let mut groups: Vec<FindingGroup<'_>> = Vec::new();
    for g in per_policy {
        let key = (story(g.first), g.count, g.first.step, g.last.step);
        match index.get(&key) {
            Some(&at) => {
                let merged: &mut FindingGroup<'_> = &mut groups[at];
                merged.policies.push(g.first.policy);
            }
            None => {
                index.insert(key, groups.len());
                groups.push(g);
            }
        }
    }
    groups
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
    /// Roots the recording host built or reused with another role than the policy's.
    pub host_disagreements: u64,
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub flavour: Flavour,
    pub policies: Vec<(&'static Policy, PolicySummary)>,
    pub findings: Vec<CheckFinding>,
    /// Per vCPU, in traces of several (empty with one): its writes and what every policy made
    /// of them (summed over the policies).
    pub vcpus: Vec<PolicySummary>,
    /// Every decision, action by action, of a model trace or a recording with host actions
    /// (empty for other recordings): what a model-level scenario declares besides findings is
    /// a decision (no reset, root kept).
    pub decisions: Vec<ActionDecisions>,
}

/// What every policy decided at one write or host action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionDecisions {
    pub step: Step,
    pub event: EventId,
    /// `KVM_SET_MSRS EFER <- 0x500`, `CR4 write 0x20 -> 0xa0 (+PGE)`.
    pub cause: String,
    /// In report order.
    pub policies: Vec<PolicyDecision>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub policy: &'static str,
    pub outcome: Outcome,
    /// `kvm_mmu_reset_context` ran ([`mmu::Decision::is_reset`]).
    pub reset: bool,
    /// The current root was freed ([`mmu::Decision::current_root_freed`]; false: kept).
    pub current_root_freed: bool,
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
    check_with(timeline, policies, flavour, false)
}

/// [`check`], with every decision action by action ([`CheckReport::decisions`]) when
/// `decisions` (they are always there for model traces and recordings with host actions).
pub fn check_with<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    policies: &[&'static Policy],
    flavour: Flavour,
    decisions: bool,
) -> Result<CheckReport> {
    let analysis = Analysis::run(timeline, policies, flavour)?;
    let mut report = report(&analysis);
    let wanted = decisions;
    // A script's verdicts are decisions too (no reset, root kept): model traces and the
    // recordings of guests the VMM acted on show them.
    let host_actions = analysis
        .writes
        .iter()
        .any(|w| matches!(w.cause, history::Cause::Host(_)));
    if wanted || timeline.header().backend.kind == traces::BackendKind::Model || host_actions {
        report.decisions = self::decisions(&analysis);
    }
    Ok(report)
}

/// Every decision of every write of an analysis that kept them ([`Retain::Everything`]).
///
/// [`Retain::Everything`]: crate::analysis::Retain::Everything
pub fn decisions(analysis: &Analysis) -> Vec<ActionDecisions> {
    analysis
        .writes
        .iter()
        .map(|w| ActionDecisions {
            step: w.event.step,
            event: w.event.id,
            cause: w.cause.describe(),
            policies: analysis
                .policies
                .iter()
                .zip(&w.decisions)
                .map(|(p, d)| PolicyDecision {
                    policy: p.name,
                    outcome: d.outcome,
                    reset: d.is_reset(),
                    current_root_freed: d.current_root_freed,
                })
                .collect(),
        })
        .collect()
}

/// The tallies and findings of an analysis, as `check` prints them.
pub fn report(analysis: &Analysis) -> CheckReport {
    let mut summaries = vec![PolicySummary::default(); analysis.policies.len()];
    let several = analysis.initial_vcpus.len() > 1;
    let mut vcpus = vec![
        PolicySummary::default();
        if several {
            analysis.initial_vcpus.len()
        } else {
            0
        }
    ];
    for w in &analysis.writes {
        if let Some(v) = vcpus.get_mut(w.vcpu as usize) {
            v.writes += 1;
            for d in &w.verdicts {
                match d.outcome {
                    Outcome::Reinit | Outcome::InitOnly => v.reinits += 1,
                    Outcome::SkippedRoleUnchanged => v.skipped += 1,
                    _ => {}
                }
            }
        }
        for (s, d) in summaries.iter_mut().zip(&w.verdicts) {
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
            FindingKind::HostDisagreement => s.host_disagreements += 1,
        }
        let finding = CheckFinding::new(analysis, f);
        if let Some(v) = finding.vcpu.and_then(|v| vcpus.get_mut(v as usize)) {
            match f.finding.kind {
                FindingKind::StaleContext => v.stale += 1,
                FindingKind::NeedlessReset => v.needless += 1,
                FindingKind::GpMismatch => v.gp_mismatches += 1,
                FindingKind::HostDisagreement => v.host_disagreements += 1,
            }
        }
        findings.push(finding);
    }
    CheckReport {
        flavour: analysis.flavour,
        policies: analysis.policies.iter().copied().zip(summaries).collect(),
        findings,
        vcpus,
        decisions: Vec::new(),
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
            vcpu: (analysis.initial_vcpus.len() > 1)
                .then(|| analysis.vcpu_of_event(f.finding.cause))
                .flatten(),
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
            write_kind: analysis
                .writes
                .binary_search_by_key(&f.finding.cause, |w| w.event.id)
                .map_or_else(
                    |_| "writes".to_string(),
                    |i| analysis.writes[i].cause.kind(),
                ),
        }
    }
}
