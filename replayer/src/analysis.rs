//! The MMU history of a trace under a set of policies: one `mmu::Tracker` per policy fed every
//! control-register write, keeping each decision and the tracker's state after it. This is what
//! `check`, the TUI's role panel and the gdb server's `monitor role` read, for policies the
//! recording used or not.

use crate::cpu::cpu_model;
use crate::timeline::{Result, Timeline};
use mmu::{CpuModel, Decision, Flavour, Input, Policy, Tracker};
use std::io::{Read, Seek};
use traces::{ControlReg, CrWrite, Event, EventKind, Record, Step, WriteVia};

/// One control-register write and what every policy made of it.
#[derive(Clone, Debug)]
pub struct WriteAnalysis {
    pub event: Event,
    pub write: CrWrite,
    /// Per policy, in [`Analysis::policies`] order.
    pub decisions: Vec<Decision>,
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
}

/// The tracker input a recorded write stands for; XCR0 is not an MMU input.
pub fn input_for(w: &CrWrite) -> Option<Input> {
    let (old, new) = (w.old, w.new);
    Some(match w.reg {
        ControlReg::Cr0 => Input::Cr0 { old, new },
        ControlReg::Cr3 => Input::Cr3 { old, new },
        ControlReg::Cr4 => Input::Cr4 { old, new },
        ControlReg::Efer if w.via == WriteVia::Host => Input::EferHost { old, new },
        ControlReg::Efer => Input::Efer { old, new },
        ControlReg::Xcr0 => return None,
    })
}

impl Analysis {
    /// Runs `policies` (all modelled ones when empty) over the trace's writes.
    pub fn run<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        policies: &[&'static Policy],
        flavour: Flavour,
    ) -> Result<Analysis> {
        let policies: Vec<&'static Policy> = if policies.is_empty() {
            mmu::policies().iter().collect()
        } else {
            policies.to_vec()
        };
        let cpu = cpu_model(&timeline.header().guest);
        let entry = insn::control_regs(&timeline.entry().regs);
        let initial: Vec<Tracker> = policies
            .iter()
            .map(|p| Tracker::new(p, flavour, cpu, &entry))
            .collect();
        let mut trackers = initial.clone();
        let mut writes = Vec::new();
        for (event, write) in cr_writes(timeline)? {
            let Some(input) = input_for(&write) else {
                continue;
            };
            let after = timeline.seek(event.step)?;
            let regs = insn::control_regs(&after.regs);
            // CS.L after the write: the writer's (a write leaves CS as it was; a faulted one
            // from 64-bit code enters a 64-bit handler).
            let ctx = insn::write_context(&after.regs);
            let decisions = trackers
                .iter_mut()
                .map(|t| t.apply_with(&input, &ctx, &regs, &after.memory))
                .collect();
            writes.push(WriteAnalysis {
                event,
                write,
                decisions,
                after: trackers.clone(),
            });
        }
        Ok(Analysis {
            flavour,
            cpu,
            policies,
            initial,
            writes,
        })
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
