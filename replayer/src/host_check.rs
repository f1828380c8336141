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
    let layout = host_layout(&header);
    let history = HostHistory::of_trace(timeline)?;
    let lost_events = history
        .records
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| match e {
            HostEvent::Lost { count } => (*count).max(1),
            _ => 0,
        })
        .sum();
    let roots = history.roots;
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
        // Host records name no vCPU: with several (kvm --cpus N) a root is compared with the
        // model after the machine's last write before it.
        vcpu: None,
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

/// The host's events over a trace (or a live recording so far), by step: what the TUI and
/// both gdb servers show beside the model (`monitor host`).
#[derive(Clone, Debug, Default)]
pub struct HostHistory {
    /// In step order.
    pub records: Vec<traces::HostRecord>,
    pub roots: Vec<HostRoot>,
}

impl HostHistory {
    pub fn new(mut records: Vec<traces::HostRecord>, layout: &mmu::Layout) -> HostHistory {
        records.sort_by_key(|r| r.step);
        let roots = host_roots(&records, layout);
        HostHistory { records, roots }
    }

    /// A trace's host records (empty for traces without host events).
    pub fn of_trace<R: Read + Seek>(
        timeline: &mut Timeline<R>,
    ) -> Result<HostHistory, TimelineError> {
        let layout = host_layout(timeline.header());
        let mut records = Vec::new();
        for record in timeline.reader().records() {
            if let Record::Host(h) = record? {
                records.push(h);
            }
        }
        Ok(HostHistory::new(records, layout))
    }

    /// The root the host had loaded last at or before `step`.
    pub fn root_at(&self, step: Step) -> Option<&HostRoot> {
        let i = self.roots.partition_point(|r| r.step <= step);
        i.checked_sub(1).map(|i| &self.roots[i])
    }

    /// The host's events of `step` itself.
    pub fn events_at(&self, step: Step) -> &[HostEvent] {
        self.records
            .binary_search_by_key(&step, |r| r.step)
            .map_or(&[], |i| &self.records[i].events)
    }

    /// The last `n` MMU events (pages, zaps, walks, faults) at or before `step`, oldest first.
    pub fn recent_mmu(&self, step: Step, n: usize) -> Vec<(Step, &HostEvent)> {
        let end = self.records.partition_point(|r| r.step <= step);
        let mut out: Vec<(Step, &HostEvent)> = self.records[..end]
            .iter()
            .rev()
            .flat_map(|r| {
                r.events
                    .iter()
                    .rev()
                    .filter(|e| e.is_mmu())
                    .map(|e| (r.step, e))
            })
            .take(n)
            .collect();
        out.reverse();
        out
    }

    /// `monitor host`: the host's current root role field by field and its recent MMU events.
    pub fn text(&self, step: Step, layout: &mmu::Layout) -> String {
        let mut out = match self.root_at(step) {
            Some(r) => format!(
                "host root at step {step}: {:#x} ({}), {} at step {}",
                r.role,
                PageRole(r.role).describe(layout),
                if r.created() { "built" } else { "reused" },
                r.step
            ),
            None => format!("host root at step {step}: none loaded yet"),
        };
        let recent = self.recent_mmu(step, 12);
        if recent.is_empty() {
            out.push_str("\nno host MMU events yet");
        }
        for (s, e) in recent {
            out.push_str(&format!("\n  step {s:>8}  {e}"));
        }
        out
    }
}

/// The layout host role words of a trace are decoded with: that of the policy the host's
/// kernel release behaves as (the newest modelled one when it is unknown).
pub fn host_layout(header: &traces::Header) -> &'static mmu::Layout {
    mmu::policy_for_release(&header.backend.host_kernel)
        .unwrap_or_else(|| mmu::policies().last().expect("policies"))
        .layout
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::HostRecord;

    fn get(gfn: u64, role: u32, created: bool) -> HostEvent {
        HostEvent::GetPage(ShadowPage {
            gfn,
            role,
            root_count: 0,
            unsync: false,
            created,
            mmu_valid_gen: 0,
        })
    }

    #[test]
    fn roots_are_the_pages_a_step_looks_up_before_other_mmu_work() {
        let layout = mmu::policy("v6.14").unwrap().layout;
        let quarters: Vec<HostEvent> = (0..4).map(|i| get(i << 18, 0x1782, true)).collect();
        let records = vec![
            HostRecord {
                step: 1,
                events: quarters,
            },
            HostRecord {
                step: 5,
                events: vec![
                    HostEvent::Msr {
                        write: true,
                        index: 0xc000_0080,
                        data: 0x500,
                        faulted: false,
                    },
                    get(4, 0x1704, true),
                    HostEvent::PageFault {
                        address: 0x1000,
                        error_code: 2,
                    },
                    // A child built by the fault: no root.
                    get(9, 0x1703, true),
                ],
            },
            HostRecord {
                step: 9,
                events: vec![get(4, 0x1704, false), get(4, 0x3704, true)],
            },
        ];
        let h = HostHistory::new(records, layout);
        let roots: Vec<(Step, u32, bool)> = h
            .roots
            .iter()
            .map(|r| (r.step, r.role, r.created()))
            .collect();
        assert_eq!(
            roots,
            vec![
                (1, 0x1783, true),
                (5, 0x1704, true),
                (9, 0x1704, false),
                (9, 0x3704, true)
            ]
        );
        assert_eq!(h.root_at(4).map(|r| r.role), Some(0x1783));
        assert_eq!(h.root_at(0), None);
        assert_eq!(h.events_at(5).len(), 4);
        assert!(h.events_at(6).is_empty());
        let text = h.text(6, layout);
        assert!(
            text.starts_with(
                "host root at step 6: 0x1704 (level=4 access=7 efer_nx=1), built at step 5"
            ),
            "{text}"
        );
        assert!(text.contains("page fault 0x1000"), "{text}");
        assert!(!text.contains("msr"), "{text}");
    }
}
