//! One `mmu::Tracker` per selected policy, fed every control-register write; turns their
//! decisions into `Mmu` and `Finding` events, and shows stale contexts concretely by
//! translating the addresses the guest touches next with the kept and the correct context.

use crate::to_trace;
use mmu::{Access, ControlRegs, CpuModel, Flavour, GuestMemory, Input, Policy, Tracker};
use traces::{ControlReg, CrWrite, EventId, EventKind, WriteVia};

/// How many addresses, on distinct pages, a stale-context finding translates both ways.
pub const STALE_SAMPLE: usize = 8;
/// A pending finding is settled after this many steps even with fewer addresses.
const STALE_STEP_LIMIT: u64 = 10_000;

struct PendingStale {
    policy: u16,
    cause: EventId,
    stale: mmu::StaleContext,
    regs: ControlRegs,
    addrs: Vec<(u64, Access)>,
    steps: u64,
}

pub struct MmuWatch {
    trackers: Vec<Tracker>,
    cpu: CpuModel,
    pending: Vec<PendingStale>,
}

impl MmuWatch {
    pub fn new(
        policies: &[&'static Policy],
        flavour: Flavour,
        cpu: CpuModel,
        initial: &ControlRegs,
    ) -> MmuWatch {
        let trackers = policies
            .iter()
            .map(|p| Tracker::new(p, flavour, cpu, initial))
            .collect();
        MmuWatch {
            trackers,
            cpu,
            pending: Vec::new(),
        }
    }

    /// The model input for a guest write; `None` for XCR0 (not an MMU input).
    fn input(w: &CrWrite, attempted: u64) -> Option<Input> {
        let (old, new) = (w.old, attempted);
        Some(match (w.reg, w.via) {
            (ControlReg::Cr0, _) => Input::Cr0 { old, new },
            (ControlReg::Cr3, _) => Input::Cr3 { old, new },
            (ControlReg::Cr4, _) => Input::Cr4 { old, new },
            (ControlReg::Efer, WriteVia::Host) => Input::EferHost { old, new },
            (ControlReg::Efer, _) => Input::Efer { old, new },
            (ControlReg::Xcr0, _) => return None,
        })
    }

    /// Feeds one write (event `cause`; `attempted` is the value the instruction tried to
    /// write; `ctx` what the writing code's state adds, see [`insn::write_context`]) to every
    /// tracker; returns the events to append, decisions first.
    pub fn on_write(
        &mut self,
        w: &CrWrite,
        attempted: u64,
        cause: EventId,
        ctx: &mmu::WriteContext,
        after: &ControlRegs,
        mem: &dyn GuestMemory,
    ) -> Vec<EventKind> {
        let Some(input) = Self::input(w, attempted) else {
            return Vec::new();
        };
        // A new write changes the contexts: settle earlier findings with what they have.
        let mut events = self.settle_all(mem);
        let mut findings = Vec::new();
        for (i, t) in self.trackers.iter_mut().enumerate() {
            let policy = i as u16;
            let name = t.policy().name;
            let d = t.apply_with(&input, ctx, after, mem);
            events.push(EventKind::Mmu(to_trace::decision(policy, cause, &d)));
            let model_gp = d.outcome == mmu::Outcome::Gp;
            if model_gp != w.faulted {
                findings.push(to_trace::gp_mismatch_finding(policy, name, cause, model_gp));
            }
            if d.needless_reset {
                findings.push(to_trace::needless_reset_finding(policy, name, cause));
            }
            if let Some(stale) = d.stale {
                self.pending.push(PendingStale {
                    policy,
                    cause,
                    stale,
                    regs: *after,
                    addrs: Vec::new(),
                    steps: 0,
                });
            }
        }
        events.extend(findings.into_iter().map(EventKind::Finding));
        events
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Addresses the guest touched in one step; returns findings that are now complete.
    pub fn on_touch(&mut self, touched: &[(u64, Access)], mem: &dyn GuestMemory) -> Vec<EventKind> {
        for p in &mut self.pending {
            p.steps += 1;
            for &(gva, access) in touched {
                // One address per page: a page translates the same for every offset in it.
                if p.addrs.len() < STALE_SAMPLE
                    && !p.addrs.iter().any(|&(g, _)| g >> 12 == gva >> 12)
                {
                    p.addrs.push((gva, access));
                }
            }
        }
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.addrs.len() >= STALE_SAMPLE || p.steps >= STALE_STEP_LIMIT);
        self.pending = keep;
        done.into_iter().map(|p| self.settle(p, mem)).collect()
    }

    /// Every pending finding, settled now (before another write, and at the end of the run).
    pub fn settle_all(&mut self, mem: &dyn GuestMemory) -> Vec<EventKind> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| self.settle(p, mem))
            .collect()
    }

    fn settle(&self, p: PendingStale, mem: &dyn GuestMemory) -> EventKind {
        let diffs = mmu::compare_translations(
            &p.stale.kept,
            &p.stale.correct,
            &p.regs,
            &self.cpu,
            mem,
            &p.addrs,
        );
        let name = self.trackers[p.policy as usize].policy().name;
        EventKind::Finding(to_trace::stale_finding(
            p.policy,
            name,
            p.cause,
            &p.stale,
            &diffs,
            p.addrs.len(),
        ))
    }
}
