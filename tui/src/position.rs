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
use traces::Step;

/// Instructions shown before RIP (from the step records) and after it.
pub const DISASM_BEFORE: u64 = 4;
pub const DISASM_AFTER: usize = 8;
/// How far back the page-walk panel looks for the last data access.
pub const LOOKBACK: u64 = 16;

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
    /// The instructions executed just before `step`, kept so one step forward costs one
    /// step of replay rather than a seek back.
    recent: Vec<Executed>,
}

impl PositionView {
    /// The panels at `step`; `previous` is the view being replaced (its work is reused when
    /// moving one step forward).
    pub fn compute<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        cpu: &CpuModel,
        step: Step,
        walk_address: Option<u64>,
        kept: Option<(&'static str, MmuContext)>,
        previous: &PositionView,
    ) -> PositionView {
        // A model-level scenario's trace: its steps are a script's actions, not instructions.
        let model = timeline.header().backend.kind == traces::BackendKind::Model;
        let recent = match (&previous.snapshot, previous.step) {
            _ if model => Vec::new(),
            (Some(before), Some(p)) if p.checked_add(1) == Some(step) => {
                let mut recent = previous.recent.clone();
                if recent.len() as u64 >= LOOKBACK {
                    recent.remove(0);
                }
                recent.push(Executed {
                    step,
                    rip: before.regs.rip,
                    touches: accesses::of_instruction(&before.regs, cpu, &before.memory),
                });
                recent
            }
            (_, Some(p)) if p == step => previous.recent.clone(),
            _ => match recent_instructions(timeline, cpu, step) {
                Ok(r) => r,
                Err(e) => return PositionView::failed(e),
            },
        };
        let snap = match timeline.seek(step) {
            Ok(s) => s.clone(),
            Err(e) => return PositionView::failed(e.to_string()),
        };
        let history: Vec<u64> = recent
            .iter()
            .rev()
            .take(DISASM_BEFORE as usize)
            .rev()
            .map(|r| r.rip)
            .collect();
        let (disasm, walk) = if model {
            // Reads `▶ 0 no instructions (model trace)` in the narrow panel.
            let none = DisasmLine {
                rip: snap.regs.rip,
                bytes: "no instructions".into(),
                text: "(model trace)".into(),
                current: true,
            };
            let walk =
                walk_address.and_then(|_| walk_view(&snap, &recent, cpu, walk_address, kept));
            (vec![none], walk)
        } else {
            (
                disasm::around(&snap.regs, cpu, &snap.memory, &history, DISASM_AFTER),
                walk_view(&snap, &recent, cpu, walk_address, kept),
            )
        };
        PositionView {
            step: Some(step),
            general: registers::general(&snap.regs),
            control: registers::control(&snap.regs),
            disasm,
            walk,
            snapshot: Some(snap),
            error: None,
            recent,
        }
    }

    fn failed(error: String) -> PositionView {
        PositionView {
            error: Some(error),
            ..Default::default()
        }
    }
}

/// An instruction executed shortly before the current position.
#[derive(Clone, Debug)]
struct Executed {
    /// The step it was (its record's number).
    step: Step,
    rip: u64,
    touches: Vec<insn::Touch>,
}

/// The last [`LOOKBACK`] instructions up to `step`, oldest first, each with the accesses it
/// made (computed from the state before it ran). One seek, then single steps forward.
fn recent_instructions<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    cpu: &CpuModel,
    step: Step,
) -> Result<Vec<Executed>, String> {
    let mut out = Vec::new();
    for s in step.saturating_sub(LOOKBACK)..step {
        let snap = timeline.seek(s).map_err(|e| e.to_string())?;
        out.push(Executed {
            step: s + 1,
            rip: snap.regs.rip,
            touches: accesses::of_instruction(&snap.regs, cpu, &snap.memory),
        });
    }
    Ok(out)
}

fn walk_view(
    snap: &Snapshot,
    recent: &[Executed],
    cpu: &CpuModel,
    address: Option<u64>,
    kept: Option<(&'static str, MmuContext)>,
) -> Option<WalkView> {
    let (gva, access, source) = match address {
        Some(a) => (a, None, "entered with w".to_string()),
        None => {
            // The last data access of the recent instructions, else the last fetch, else
            // what the next instruction touches.
            let data = recent.iter().rev().find_map(|e| {
                e.touches
                    .iter()
                    .rev()
                    .find(|t| t.access != Access::Fetch)
                    .map(|t| (*t, e.step))
            });
            let fetch = || {
                recent
                    .last()
                    .and_then(|e| e.touches.first().map(|t| (*t, e.step)))
            };
            match data.or_else(fetch) {
                Some((t, s)) => (
                    t.linear,
                    Some(t.access),
                    format!("last touched, by the instruction of step {s}"),
                ),
                None => {
                    let t = accesses::last_touched(&snap.regs, cpu, &snap.memory)?;
                    (
                        t.linear,
                        Some(t.access),
                        "touched by the next instruction".to_string(),
                    )
                }
            }
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
