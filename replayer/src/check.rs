//! `mmurr check`: re-run the role model over a trace's control-register writes, for any
//! policies (recorded or not), and report where a policy's MMU context went stale, where a
//! reset was needless, and where the model and the recorded CPU disagree on #GP.

use crate::analysis::Analysis;
use crate::timeline::{Result, Timeline};
use mmu::{Access, Flavour, Outcome, Policy};
use std::collections::BTreeSet;
use std::io::{Read, Seek};
use traces::{CrWrite, Event, EventId, FindingKind, Step};

/// How far after a stale-context write to look for addresses the guest touches.
const LOOKAHEAD_STEPS: u64 = 64;
/// How many distinct addresses to translate both ways.
const LOOKAHEAD_ADDRESSES: usize = 8;

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
    let mut summaries = vec![PolicySummary::default(); analysis.policies.len()];
    let mut findings = Vec::new();
    for (n, w) in analysis.writes.iter().enumerate() {
        let (event, write) = (&w.event, &w.write);
        let next_write = analysis
            .writes
            .get(n + 1)
            .map_or(Step::MAX, |x| x.event.step);
        let mut touched: Option<Vec<(u64, Access)>> = None;
        for (i, d) in w.decisions.iter().enumerate() {
            let s = &mut summaries[i];
            s.writes += 1;
            match d.outcome {
                Outcome::Reinit | Outcome::InitOnly => s.reinits += 1,
                Outcome::SkippedRoleUnchanged => s.skipped += 1,
                _ => {}
            }
            let policy = analysis.policies[i].name;
            if (d.outcome == Outcome::Gp) != write.faulted {
                s.gp_mismatches += 1;
                findings.push(gp_mismatch(
                    policy,
                    event,
                    write,
                    d.gp.map(|g| g.to_string()),
                ));
            }
            if d.needless_reset {
                s.needless += 1;
                findings.push(needless(policy, event, write));
            }
            let Some(stale) = &d.stale else { continue };
            s.stale += 1;
            if touched.is_none() {
                touched = Some(addresses_touched_after(
                    timeline,
                    &analysis.cpu,
                    event.step,
                    next_write,
                )?);
            }
            let addrs = touched.as_deref().unwrap_or_default();
            // The walks run over memory right after the write, as KVM's would.
            let after = timeline.seek(event.step)?;
            let diffs = mmu::compare_translations(
                &stale.kept,
                &stale.correct,
                &insn::control_regs(&after.regs),
                &analysis.cpu,
                &after.memory,
                addrs,
            );
            findings.push(stale_finding(
                policy,
                event,
                write,
                d,
                stale,
                &diffs,
                addrs.len(),
            ));
        }
    }
    Ok(CheckReport {
        flavour,
        policies: analysis.policies.into_iter().zip(summaries).collect(),
        findings,
    })
}

/// The distinct pages' first addresses the guest fetched or accessed in the steps after
/// `step`, up to the next control-register write.
fn addresses_touched_after<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    cpu: &mmu::CpuModel,
    step: Step,
    next_write: Step,
) -> Result<Vec<(u64, Access)>> {
    let end = (step + LOOKAHEAD_STEPS)
        .min(next_write)
        .min(timeline.last_step());
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in step..end {
        let snap = timeline.seek(s)?;
        let regs = &snap.regs;
        let bytes = insn::fetch(regs, cpu, &snap.memory);
        let ip = insn::linear_ip(regs);
        let mut touches = vec![(ip, Access::Fetch)];
        if let Some(i) = insn::decode(&bytes, insn::bitness(regs), regs.rip) {
            touches.extend(
                insn::memory_operands(&i, regs)
                    .into_iter()
                    .map(|t| (t.linear, t.access)),
            );
        }
        for (gva, access) in touches {
            if seen.insert((gva >> 12, access)) {
                out.push((gva, access));
                if out.len() == LOOKAHEAD_ADDRESSES {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn describe_write(w: &CrWrite) -> String {
    let change = crate::flags::changed_flags(w.reg, w.old, w.new);
    let change = if change.is_empty() {
        "no bit changed".to_string()
    } else {
        change
    };
    format!(
        "{} write {:#x} -> {:#x} ({change})",
        w.reg.name().to_uppercase(),
        w.old,
        w.new
    )
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::Write => "write",
        Access::Fetch => "fetch",
    }
}

fn stale_finding(
    policy: &'static str,
    event: &Event,
    write: &CrWrite,
    d: &mmu::Decision,
    stale: &mmu::StaleContext,
    diffs: &[mmu::TranslationDiff],
    looked_at: usize,
) -> CheckFinding {
    let attributes: Vec<(String, String, String)> = stale
        .attributes
        .iter()
        .map(|a| (a.attribute.to_string(), a.kept.clone(), a.correct.clone()))
        .collect();
    let why = match d.outcome {
        Outcome::SkippedRoleUnchanged => {
            "triggered kvm_mmu_reset_context, but the recompute returned early because the compare key (the role) did not change"
        }
        Outcome::NoTrigger => "did not trigger an MMU reset under this version's trigger masks",
        _ => "left the MMU context behind the architecture",
    };
    let kept_required: Vec<String> = attributes
        .iter()
        .map(|(n, k, c)| format!("{n} {k} (required: {c})"))
        .collect();
    let translations: Vec<Mistranslation> = diffs
        .iter()
        .map(|t| Mistranslation {
            gva: t.gva,
            access: t.access,
            kept: t.kept.to_string(),
            correct: t.correct.to_string(),
        })
        .collect();
    let consequence = if translations.is_empty() {
        format!(
            "None of the {looked_at} addresses the guest touched next translate differently, but KVM's software walks (emulation, MMIO, gva_to_gpa) use this context."
        )
    } else {
        let first = &translations[0];
        format!(
            "{} of the {looked_at} addresses the guest touched next translate differently; e.g. {} of {:#x} gives {} with the kept context but {} with the correct one.",
            translations.len(),
            access_name(first.access),
            first.gva,
            first.kept,
            first.correct
        )
    };
    CheckFinding {
        policy,
        step: event.step,
        event: event.id,
        kind: FindingKind::StaleContext,
        detail: format!(
            "The {} at step {} {why}. The MMU context kept {}. {consequence}",
            describe_write(write),
            event.step,
            kept_required.join(", ")
        ),
        attributes,
        translations,
    }
}

fn needless(policy: &'static str, event: &Event, write: &CrWrite) -> CheckFinding {
    CheckFinding {
        policy,
        step: event.step,
        event: event.id,
        kind: FindingKind::NeedlessReset,
        attributes: vec![],
        translations: vec![],
        detail: format!(
            "The {} at step {} reset the MMU (all roots freed) and rebuilt a context identical to the old one.",
            describe_write(write),
            event.step
        ),
    }
}

fn gp_mismatch(
    policy: &'static str,
    event: &Event,
    write: &CrWrite,
    why: Option<String>,
) -> CheckFinding {
    let detail = if write.faulted {
        format!(
            "The {} at step {} raised #GP on the recording CPU, but this version of KVM would accept it.",
            describe_write(write),
            event.step
        )
    } else {
        format!(
            "The {} at step {} took effect on the recording CPU, but this version of KVM would inject #GP ({}).",
            describe_write(write),
            event.step,
            why.unwrap_or_default()
        )
    };
    CheckFinding {
        policy,
        step: event.step,
        event: event.id,
        kind: FindingKind::GpMismatch,
        attributes: vec![],
        translations: vec![],
        detail,
    }
}
