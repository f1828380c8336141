//! `mmurr check --host`: the roots the recording host's own KVM built or reused (its
//! `kvm_mmu_get_page` events, recorded with `--host-events`), held against each policy's
//! `root_role` for the host's flavour. A root the host loaded with another role than a
//! policy predicts is a [`FindingKind::HostDisagreement`] of that policy.

use crate::analysis::Analysis;
use crate::check::CheckFinding;
use crate::timeline::{Timeline, TimelineError};
use mmu::{Flavour, PageRole, Policy, Word};
use std::io::{Read, Seek};
use traces::{FindingKind, HostEvent, HostEventsStatus, Record, ShadowPage, Step};

/// One root load of the host: the shadow pages it looked up together at the start of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoot {
    pub step: Step,
    /// The root role the pages stand for ([`mmu::root_of_pages`]).
    pub role: u32,
    pub pages: Vec<ShadowPage>,
}

impl HostRoot {
    /// Built by this load (some page was created), else an existing root reused.
    pub fn created(&self) -> bool {
        self.pages.iter().any(|p| p.created)
    }
}

/// How one policy fared against the host.
#[derive(Clone, Debug)]
pub struct PolicyVerdict {
    pub policy: &'static Policy,
    pub agreed: usize,
    /// Per root, in [`HostCheck::roots`] order: the policy's `root_role` then.
    pub predicted: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct HostCheck {
    /// `uname -r` of the recording host.
    pub host_kernel: String,
    /// The policy the host's release behaves as, whose layout decodes the host's role words.
    pub host_policy: Option<&'static Policy>,
    pub flavour: Flavour,
    pub roots: Vec<HostRoot>,
    pub verdicts: Vec<PolicyVerdict>,
    /// Every disagreement, per policy in order, then by step.
    pub findings: Vec<CheckFinding>,
    /// Events the host's buffers lost (the comparison may miss roots).
    pub lost_events: u64,
}

impl HostCheck {
    /// The policies that agree with the host on every root.
    pub fn agreeing(&self) -> Vec<&'static str> {
        self.verdicts
            .iter()
            .filter(|v| v.agreed == self.roots.len())
            .map(|v| v.policy.name)
            .collect()
    }

    /// The layout host role words are decoded with.
    pub fn layout(&self) -> &'static mmu::Layout {
        self.host_policy
            .unwrap_or_else(|| mmu::policies().last().expect("policies"))
            .layout
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostCheckError {
    #[error(
        "the trace has no host facts: it was recorded by an older mmurr or on a backend \
         without a host KVM (emu); record it with --backend kvm --host-events"
    )]
    NoHostFacts,
    #[error("the trace has no host events: {0}")]
    NotRecorded(String),
    #[error("the host's flavour `{0}` is neither tdp nor shadow")]
    Flavour(String),
    #[error(transparent)]
    Timeline(#[from] TimelineError),
}

/// The host's root loads: in each step's host record, the `GetPage` events before any other
/// MMU event of the step. KVM loads roots (`kvm_mmu_reload`, at VM entry) before the guest's
/// instruction runs or faults; pages looked up later in the step are children built by faults.
pub fn host_roots(records: &[traces::HostRecord], layout: &mmu::Layout) -> Vec<HostRoot> {
    let mut roots = Vec::new();
    for r in records {
        let mut pages = Vec::new();
        for e in &r.events {
            match e {
                HostEvent::GetPage(p) => pages.push(*p),
                e if e.is_mmu() => break,
                _ => {}
            }
            // A new 4-level root right after another: two loads in one step.
            if pages.len() > 1 && PageRole(pages[pages.len() - 1].role).level() > 2 {
                let last = pages.pop().expect("two pages");
                push_root(&mut roots, r.step, std::mem::take(&mut pages), layout);
                pages.push(last);
            }
        }
        push_root(&mut roots, r.step, pages, layout);
    }
    roots
}

fn push_root(roots: &mut Vec<HostRoot>, step: Step, pages: Vec<ShadowPage>, layout: &mmu::Layout) {
    let roles: Vec<PageRole> = pages.iter().map(|p| PageRole(p.role)).collect();
    if let Some(role) = mmu::root_of_pages(&roles, layout) {
        roots.push(HostRoot {
            step,
            role: role.word(),
            pages,
        });
    }
}

/// Checks `policies` (all modelled ones when empty) against the host's roots.
pub fn check_host<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    policies: &[&'static Policy],
) -> Result<HostCheck, HostCheckError> {
    let header = timeline.header().clone();
    let host = header.host.as_ref().ok_or(HostCheckError::NoHostFacts)?;
    match &host.events {
        HostEventsStatus::Recorded { .. } => {}
        HostEventsStatus::Off => {
            return Err(HostCheckError::NotRecorded(
                "recorded with --no-host-events".into(),
            ))
        }
        HostEventsStatus::Unavailable(why) => return Err(HostCheckError::NotRecorded(why.clone())),
    }
    let flavour = Flavour::parse(&host.flavour)
        .ok_or_else(|| HostCheckError::Flavour(host.flavour.clone()))?;
    let host_policy = mmu::policy_for_release(&header.backend.host_kernel);
    let layout = host_policy
        .unwrap_or_else(|| mmu::policies().last().expect("policies"))
        .layout;
    let mut records = Vec::new();
    let mut lost_events = 0;
    for record in timeline.reader().records() {
        if let Record::Host(h) = record.map_err(TimelineError::from)? {
            lost_events += h
                .events
                .iter()
                .map(|e| match e {
                    HostEvent::Lost { count } => (*count).max(1),
                    _ => 0,
                })
                .sum::<u64>();
            records.push(h);
        }
    }
    records.sort_by_key(|r| r.step);
    let roots = host_roots(&records, layout);
    let analysis = Analysis::run(timeline, policies, flavour)?;
    let mut verdicts = Vec::new();
    let mut findings = Vec::new();
    for (p, policy) in analysis.policies.iter().enumerate() {
        let mut agreed = 0;
        let mut predicted = Vec::with_capacity(roots.len());
        for root in &roots {
            // The root KVM loads at the start of step s serves the state after step s - 1.
            let model = analysis
                .tracker_at(p, root.step.saturating_sub(1))
                .map_or(0, |t| t.root_role().word());
            predicted.push(model);
            if model == root.role {
                agreed += 1;
            } else {
                findings.push(disagreement(&analysis, policy, root, model, layout));
            }
        }
        verdicts.push(PolicyVerdict {
            policy,
            agreed,
            predicted,
        });
    }
    Ok(HostCheck {
        host_kernel: header.backend.host_kernel.clone(),
        host_policy,
        flavour,
        roots,
        verdicts,
        findings,
        lost_events,
    })
}

fn disagreement(
    analysis: &Analysis,
    policy: &'static Policy,
    root: &HostRoot,
    model: u32,
    layout: &mmu::Layout,
) -> CheckFinding {
    let diffs = layout.diff(Word::Base, model, root.role);
    let attributes: Vec<(String, String, String)> = diffs
        .iter()
        .map(|d| (d.name.to_string(), d.old.to_string(), d.new.to_string()))
        .collect();
    let fields = diffs
        .iter()
        .map(|d| format!("{} {} (host {})", d.name, d.old, d.new))
        .collect::<Vec<_>>()
        .join(", ");
    let write = analysis.last_write_at(root.step.saturating_sub(1));
    CheckFinding {
        policy: policy.name,
        step: root.step,
        event: write.map_or(0, |w| w.event.id),
        kind: FindingKind::HostDisagreement,
        attributes,
        translations: Vec::new(),
        looked_at: 0,
        detail: format!(
            "At step {} the host's KVM {} a root with role {:#x} ({}), but {} predicts root_role \
             {:#x} ({}): {fields}.",
            root.step,
            if root.created() { "built" } else { "reused" },
            root.role,
            PageRole(root.role).describe(layout),
            policy.name,
            model,
            PageRole(model).describe(layout),
        ),
        write_kind: "host roots".into(),
    }
}
