//! A guest scenario on the model alone: its exact control-register writes (the
//! [`ExpectedEvent`]s a recorder must see) replayed from its image as a [`Script`], so its
//! verdicts per policy are known without a VM and two policies can be compared on it.

use super::{Action, Expect, Script, Shows};
use crate::{CpuFeatures, ExpectedEvent, Scenario};
use mmu::{ControlRegs, CpuModel, FlatMemory, Flavour};
use traces::FindingKind;

/// The CPU the expectations of `features` stand for.
pub fn cpu_model(features: &CpuFeatures) -> CpuModel {
    CpuModel {
        pku: features.pku,
        la57: features.la57,
        pcid: features.pcid,
        smep: features.smep,
        smap: features.smap,
        ..CpuModel::default_x86_64()
    }
}

/// A scenario as a script, and for each action the index of the expected event it is.
pub struct FromScenario {
    pub script: Script,
    pub event_of_action: Vec<usize>,
}

/// `s` (built for `features`) under `flavour`, its stale-context findings as the declared
/// verdicts (the only findings a scenario lists, see [`crate::ExpectedFinding`]).
pub fn from_scenario(s: &Scenario, features: &CpuFeatures, flavour: Flavour) -> FromScenario {
    let g = &s.guest;
    let mut memory = FlatMemory::new(0, g.ram_size as usize);
    for l in &g.loads {
        if let Some(b) = g.blobs.get(l.blob as usize) {
            let at = l.gpa as usize;
            if let Some(dst) = memory.bytes.get_mut(at..at + b.data.len()) {
                dst.copy_from_slice(&b.data);
            }
        }
    }
    let e = &g.entry;
    let entry = ControlRegs {
        cr0: e.cr0,
        cr3: e.cr3,
        cr4: e.cr4,
        efer: e.efer,
        ..Default::default()
    };
    let mut actions = Vec::new();
    let mut event_of_action = Vec::new();
    for (i, ev) in s.expected.iter().enumerate() {
        let (reg, value) = match *ev {
            ExpectedEvent::Cr { reg, new } => (reg, new),
            ExpectedEvent::CrFaulted { reg, attempted } => (reg, attempted),
            _ => continue,
        };
        if let Some(r) = history::cr_reg(reg) {
            actions.push(Action::Write(r, value));
            event_of_action.push(i);
        }
    }
    let expects = s
        .expected_findings
        .iter()
        .filter(|f| f.kind == FindingKind::StaleContext)
        .filter_map(|f| {
            let at = event_of_action.iter().position(|&e| e == f.at_event)?;
            let policy = mmu::policy(f.policy)?;
            Some(Expect {
                at,
                shows: Shows::Stale,
                policies: std::slice::from_ref(&policy.name),
            })
        })
        .collect();
    FromScenario {
        script: Script {
            name: s.name,
            description: s.description,
            flavour,
            cpu: cpu_model(features),
            entry,
            memory,
            actions,
            expects,
        },
        event_of_action,
    }
}
