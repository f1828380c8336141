//! What the panels show about the current position, computed once per move so drawing is
//! only formatting: registers, disassembly around RIP, and the page walk of one address by
//! the architecture and by the selected policy's kept MMU context.

use mmu::{Access, CpuModel, MmuContext};
use replayer::views::accesses::{self, access_letter};
use replayer::views::disasm::{self, DisasmLine};
use replayer::views::page_walk;
use replayer::views::registers::{self, RegisterLine};
use replayer::{Snapshot, Timeline};
use std::io::{Read, Seek};
use traces::{Record, Step};

/// Instructions shown before RIP (from the step records) and after it.
pub const DISASM_BEFORE: u64 = 4;
pub const DISASM_AFTER: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct WalkView {
    pub gva: u64,
    pub access: Option<Access>,
    /// Where the address came from.
    pub source: String,
    pub mode: String,
    pub architecture: Vec<String>,
    /// Policy name, its context in a few words, and its walk.
    pub kept: Option<(String, String, Vec<String>)>,
    /// Whether the two translations agree (None without a kept context).
    pub agree: Option<bool>,
    pub arch_result: String,
    pub kept_result: String,
}

#[derive(Clone, Debug, Default)]
pub struct PositionView {
    /// The step these panels describe (None until the first successful seek).
    pub step: Option<Step>,
    pub snapshot: Option<Snapshot>,
    pub general: Vec<RegisterLine>,
    pub control: Vec<RegisterLine>,
    pub disasm: Vec<DisasmLine>,
    pub walk: Option<WalkView>,
    pub error: Option<String>,
}

impl PositionView {
    pub fn compute<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        cpu: &CpuModel,
        step: Step,
        walk_address: Option<u64>,
        kept: Option<(&'static str, MmuContext)>,
    ) -> PositionView {
        let before = match step.checked_sub(1) {
            Some(s) => match timeline.seek(s) {
                Ok(snap) => Some(snap.clone()),
                Err(e) => return PositionView::failed(e.to_string()),
            },
            None => None,
        };
        let snap = match timeline.seek(step) {
            Ok(s) => s.clone(),
            Err(e) => return PositionView::failed(e.to_string()),
        };
        let history = executed_rips(timeline, step);
        let disasm = disasm::around(&snap.regs, cpu, &snap.memory, &history, DISASM_AFTER);
        let walk = walk_view(&snap, before.as_ref(), cpu, walk_address, kept);
        PositionView {
            step: Some(step),
            general: registers::general(&snap.regs),
            control: registers::control(&snap.regs),
            disasm,
            walk,
            snapshot: Some(snap),
            error: None,
        }
    }

    fn failed(error: String) -> PositionView {
        PositionView {
            error: Some(error),
            ..Default::default()
        }
    }
}

/// RIPs of the last few instructions executed up to `step`, oldest first.
fn executed_rips<R: Read + Seek>(timeline: &mut Timeline<R>, step: Step) -> Vec<u64> {
    let first = step.saturating_sub(DISASM_BEFORE - 1).max(1);
    let mut out = Vec::new();
    for s in first..=step {
        let Ok(records) = timeline.reader().records_at_step(s) else {
            continue;
        };
        out.extend(records.iter().find_map(|r| match r {
            Record::Step(st) => Some(st.rip),
            _ => None,
        }));
    }
    out
}

fn walk_view(
    snap: &Snapshot,
    before: Option<&Snapshot>,
    cpu: &CpuModel,
    address: Option<u64>,
    kept: Option<(&'static str, MmuContext)>,
) -> Option<WalkView> {
    let (gva, access, source) = match address {
        Some(a) => (a, None, "entered with w".to_string()),
        None => {
            let (touch, source) = match before {
                Some(b) => (
                    accesses::last_touched(&b.regs, cpu, &b.memory),
                    format!("last touched, by the instruction of step {}", snap.step),
                ),
                None => (
                    accesses::last_touched(&snap.regs, cpu, &snap.memory),
                    "touched by the first instruction".to_string(),
                ),
            };
            let t = touch?;
            (t.linear, Some(t.access), source)
        }
    };
    let source = match access {
        Some(a) => format!("{source} ({})", access_letter(a)),
        None => source,
    };
    let regs = insn::control_regs(&snap.regs);
    let req = page_walk::debugger_request(access.unwrap_or(Access::Read));
    let arch = mmu::walk(&regs, cpu, &snap.memory, gva, &req);
    let mut view = WalkView {
        gva,
        access,
        source,
        mode: arch.mode.name().to_string(),
        architecture: page_walk::describe(&arch),
        arch_result: short(&arch),
        ..Default::default()
    };
    if let Some((name, ctx)) = kept {
        let theirs = mmu::translate_with_context(&ctx, &regs, &snap.memory, gva, &req);
        view.agree = Some(match (&arch.result, &theirs.result) {
            (Ok(a), Ok(b)) => a.gpa == b.gpa,
            (Err(a), Err(b)) => a == b,
            _ => false,
        });
        view.kept_result = short(&theirs);
        view.kept = Some((
            name.to_string(),
            format!("root_level {}, {}", ctx.root_level, ctx.walker.name()),
            page_walk::describe(&theirs),
        ));
    }
    Some(view)
}

fn short(w: &mmu::Walk) -> String {
    match &w.result {
        Ok(t) => format!("GPA {:#x}", t.gpa),
        Err(f) => f.to_string(),
    }
}
