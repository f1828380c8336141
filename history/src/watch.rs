//! One `mmu::Tracker` per policy, fed every control-register write and, while a stale context
//! waits for evidence, the addresses the guest touches afterwards.
//!
//! The inputs, in the order both the recorder and the replayer feed them:
//! - [`Watch::on_touch`] for each executed instruction `s`: the addresses it touched
//!   ([`insn::touched`], computed on the registers before it) translated over guest memory as
//!   it is right after step `s`;
//! - [`Watch::on_write`] for each control-register write of step `s` ([`Watch::on_host`] for a
//!   host action before it), after that step's
//!   touches (so a write's own instruction never counts as evidence for it);
//! - [`Watch::settle_all`] at the end of the run.

use crate::to_trace;
use crate::{Cause, Effect};
use mmu::{Access, ControlRegs, CpuModel, Decision, Flavour, GuestMemory, Policy, Tracker};
use traces::{CrWrite, EventId, Finding, HostAction, Step, TranslationDiff};

/// How many addresses, on distinct pages, a stale-context finding translates both ways.
pub const STALE_SAMPLE: usize = 8;
/// A stale-context finding is settled after this many instructions even with fewer
/// addresses (and always at the next control-register write).
pub const STALE_STEP_LIMIT: u64 = 10_000;

/// A finding with the step and RIP of the write it is about: the recorder writes it as an
/// event at that step, whenever it was settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub step: Step,
    pub rip: u64,
    pub finding: Finding,
    /// For a stale context: how many addresses (on distinct pages) were translated both ways.
    pub looked_at: usize,
}

/// What one write did under every policy.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    /// Per policy, in the watch's policy order.
    pub decisions: Vec<Decision>,
    /// Per policy: its context was already stale before this write (so a stale decision is
    /// not a new divergence).
    pub stale_before: Vec<bool>,
    /// Findings complete now: stale contexts of earlier writes (settled because this write
    /// changes the contexts), then this write's #GP disagreements and needless resets.
    pub findings: Vec<Found>,
}

/// The write or host action a pending finding is about.
#[derive(Clone, Debug)]
struct Origin {
    id: EventId,
    step: Step,
    rip: u64,
    cause: Cause,
}

struct PendingStale {
    policy: u16,
    cause: Origin,
    decision: Decision,
    stale: mmu::StaleContext,
    regs: ControlRegs,
    /// One address per page, in the order the guest touched them.
    addrs: Vec<(u64, Access)>,
    diffs: Vec<TranslationDiff>,
    steps: u64,
}

/// The MMU model of every selected policy over one guest run.
pub struct Watch {
    trackers: Vec<Tracker>,
    cpu: CpuModel,
    pending: Vec<PendingStale>,
}

impl Watch {
    pub fn new(
        policies: &[&'static Policy],
        flavour: Flavour,
        cpu: CpuModel,
        initial: &ControlRegs,
    ) -> Watch {
        Watch {
            trackers: policies
                .iter()
                .map(|p| Tracker::new(p, flavour, cpu, initial))
                .collect(),
            cpu,
            pending: Vec::new(),
        }
    }

    /// A watch that goes on from `trackers` (kept from an earlier run) with nothing pending:
    /// the replayer recomputes a write's decisions this way from a tracker checkpoint rather
    /// than keeping every write's trackers, and gets the decisions `on_write` gave first time.
    pub fn resume(trackers: Vec<Tracker>, cpu: CpuModel) -> Watch {
        Watch {
            trackers,
            cpu,
            pending: Vec::new(),
        }
    }

    /// Every policy's tracker as it stands now.
    pub fn trackers(&self) -> &[Tracker] {
        &self.trackers
    }

    pub fn cpu(&self) -> &CpuModel {
        &self.cpu
    }

    /// Feeds write `write` (event `id` of step `step`, at `rip`) to every tracker, with the
    /// registers and memory right after it and what the writing code adds (`ctx`: CS.L, see
    /// [`insn::write_context`]). `None` for a write that is not an MMU input (XCR0).
    #[allow(clippy::too_many_arguments)]
    pub fn on_write(
        &mut self,
        id: EventId,
        step: Step,
        rip: u64,
        write: &CrWrite,
        ctx: &mmu::WriteContext,
        after: &ControlRegs,
        mem: &dyn GuestMemory,
    ) -> Option<WriteOutcome> {
        let input = crate::model_input(write)?;
        let cause = Origin {
            id,
            step,
            rip,
            cause: Cause::Write(write.clone()),
        };
        Some(self.feed(cause, &input, ctx, write.faulted, None, after, mem))
    }

    /// Feeds host action `action` (event `id`, before step `step`) to every tracker, taken
    /// with the vCPU's registers at `before`: what it means to the model is
    /// [`crate::host_effect`]'s, whose [`Effect`] (the registers and CPU after it) is returned
    /// with the outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn on_host(
        &mut self,
        id: EventId,
        step: Step,
        rip: u64,
        action: &HostAction,
        before: &ControlRegs,
        mem: &dyn GuestMemory,
    ) -> (Effect, WriteOutcome) {
        let e = crate::host_effect(action, before, &self.cpu, mem);
        let cause = Origin {
            id,
            step,
            rip,
            cause: Cause::Host(*action),
        };
        let new_cpu = matches!(action, HostAction::SetCpuid(_)).then_some(e.cpu);
        let out = self.feed(cause, &e.input, &e.ctx, e.faulted, new_cpu, &e.after, mem);
        (e, out)
    }

    /// One input to every tracker: `new_cpu` for a CPUID update (`Tracker::set_cpuid`).
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        cause: Origin,
        input: &mmu::Input,
        ctx: &mmu::WriteContext,
        faulted: bool,
        new_cpu: Option<CpuModel>,
        after: &ControlRegs,
        mem: &dyn GuestMemory,
    ) -> WriteOutcome {
        let mut findings = self.settle_all();
        let (id, step, rip) = (cause.id, cause.step, cause.rip);
        let mut decisions = Vec::with_capacity(self.trackers.len());
        let mut stale_before = Vec::with_capacity(self.trackers.len());
        for (i, t) in self.trackers.iter_mut().enumerate() {
            let policy = i as u16;
            stale_before.push(t.stale().is_some());
            let d = match new_cpu {
                Some(cpu) => t.set_cpuid(cpu, after, mem),
                None => t.apply_with(input, ctx, after, mem),
            };
            let found = |finding| Found {
                step,
                rip,
                finding,
                looked_at: 0,
            };
            if (d.outcome == mmu::Outcome::Gp) != faulted {
                findings.push(found(to_trace::gp_mismatch_finding(
                    policy,
                    id,
                    step,
                    &cause.cause,
                    d.gp.as_ref(),
                )));
            }
            if d.needless_reset {
                findings.push(found(to_trace::needless_reset_finding(
                    policy,
                    id,
                    step,
                    &cause.cause,
                )));
            }
            if let Some(stale) = d.stale.clone() {
                self.pending.push(PendingStale {
                    policy,
                    cause: cause.clone(),
                    decision: d.clone(),
                    stale,
                    regs: *after,
                    addrs: Vec::new(),
                    diffs: Vec::new(),
                    steps: 0,
                });
            }
            decisions.push(d);
        }
        if let Some(cpu) = new_cpu {
            self.cpu = cpu;
        }
        WriteOutcome {
            decisions,
            stale_before,
            findings,
        }
    }

    /// True while a stale-context finding waits for the addresses the guest touches next.
    pub fn wants_touches(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The addresses one instruction touched, with memory right after it; returns the
    /// findings that are now complete.
    pub fn on_touch(&mut self, touched: &[(u64, Access)], mem: &dyn GuestMemory) -> Vec<Found> {
        let cpu = self.cpu;
        for p in &mut self.pending {
            p.steps += 1;
            for &(gva, access) in touched {
                // One address per page: a page translates the same for every offset in it.
                if p.addrs.len() >= STALE_SAMPLE
                    || p.addrs.iter().any(|&(g, _)| g >> 12 == gva >> 12)
                {
                    continue;
                }
                p.addrs.push((gva, access));
                let diffs = mmu::compare_translations(
                    &p.stale.kept,
                    &p.stale.correct,
                    &p.regs,
                    &cpu,
                    mem,
                    &[(gva, access)],
                );
                p.diffs
                    .extend(diffs.iter().filter_map(to_trace::translation_diff));
            }
        }
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.addrs.len() >= STALE_SAMPLE || p.steps >= STALE_STEP_LIMIT);
        self.pending = keep;
        done.into_iter().map(Self::settle).collect()
    }

    /// Every pending finding, settled with the addresses it has (before another write, and at
    /// the end of the run).
    pub fn settle_all(&mut self) -> Vec<Found> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(Self::settle)
            .collect()
    }

    fn settle(p: PendingStale) -> Found {
        Found {
            step: p.cause.step,
            rip: p.cause.rip,
            looked_at: p.addrs.len(),
            finding: to_trace::stale_finding(
                p.policy,
                p.cause.id,
                p.cause.step,
                &p.cause.cause,
                p.decision.outcome,
                &p.stale,
                p.diffs,
                p.addrs.len(),
            ),
        }
    }
}
