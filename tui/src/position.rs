//! What the panels show about the current position, computed once per move so drawing is
//! only formatting: registers, disassembly around RIP, and the page walk of one address by
//! the architecture and by the selected policy's kept MMU context — all of one vCPU (the
//! replayer's registers of that vCPU at the step; the only one of most traces).

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
    /// The vCPU they describe, and how many the trace has.
    pub vcpu: u32,
    pub vcpus: u32,
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
    /// The panels at `step` for vCPU `vcpu` (`None`: the one that executed the step);
    /// `previous` is the view being replaced (its work is reused when moving one step
    /// forward). `kept` is the selected policy's context of that vCPU. `host_steps` (sorted)
    /// are the steps of host actions, in which no instruction ran.
    #[allow(clippy::too_many_arguments)]
    pub fn compute<R: Read + Seek>(
        timeline: &mut Timeline<R>,
        cpu: &CpuModel,
        step: Step,
        vcpu: Option<u32>,
        walk_address: Option<u64>,
        kept: Option<(&'static str, MmuContext)>,
        host_steps: &[Step],
        previous: &PositionView,
    ) -> PositionView {
        // A model-level scenario's trace: its steps are a script's actions, not instructions.
        let model = timeline.header().backend.kind == traces::BackendKind::Model;
        let incremental = match (&previous.snapshot, previous.step) {
            _ if model => None,
            (Some(before), Some(p)) if p.checked_add(1) == Some(step) => Some(before.clone()),
            _ => None,
        };
        let recent = if model {
            Vec::new()
        } else if incremental.is_some() || previous.step == Some(step) {
            previous.recent.clone()
        } else {
            match recent_instructions(timeline, cpu, step, host_steps) {
                Ok(r) => r,
                Err(e) => return PositionView::failed(e),
            }
        };
        let snap = match timeline.seek(step) {
            Ok(s) => s.clone(),
            Err(e) => return PositionView::failed(e.to_string()),
        };
        let mut recent = recent;
        if let Some(before) = incremental.filter(|_| host_steps.binary_search(&step).is_err()) {
            if recent.len() as u64 >= LOOKBACK {
                recent.remove(0);
            }
            recent.push(Executed::of(&before, &snap, cpu));
        }
        let vcpus = timeline.header().vcpu_count();
        let vcpu = vcpu.filter(|&v| v < vcpus).unwrap_or(snap.vcpu());
        let regs = snap.regs_of(vcpu).unwrap_or(&snap.regs).clone();
        // That vCPU's own instructions: the others' ran in other address spaces.
        let mine: Vec<&Executed> = recent.iter().filter(|r| r.vcpu == vcpu).collect();
        let history: Vec<u64> = mine
            .iter()
            .rev()
            .take(DISASM_BEFORE as usize)
            .rev()
            .map(|r| r.rip)
            .collect();
        let (disasm, walk) = if model {
            // Reads `▶ 0 no instructions (model trace)` in the narrow panel.
            let none = DisasmLine {
                rip: regs.rip,
                bytes: "no instructions".into(),
                text: "(model trace)".into(),
                current: true,
            };
            let walk =
                walk_address.and_then(|_| walk_view(&regs, &snap, &mine, cpu, walk_address, kept));
            (vec![none], walk)
        } else {
            (
                disasm::around(&regs, cpu, &snap.memory, &history, DISASM_AFTER),
                walk_view(&regs, &snap, &mine, cpu, walk_address, kept),
            )
        };
        PositionView {
            step: Some(step),
            vcpu,
            vcpus,
            general: registers::general(&regs),
            control: registers::control(&regs),
            disasm,
            walk,
            snapshot: Some(snap),
            error: None,
            recent,
        }
    }

    /// The registers of the vCPU these panels describe.
    pub fn regs(&self) -> Option<&traces::Regs> {
        let snap = self.snapshot.as_ref()?;
        snap.regs_of(self.vcpu).or(Some(&snap.regs))
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
    /// The step it was (its record's number), and the vCPU that executed it.
    step: Step,
    vcpu: u32,
    rip: u64,
    touches: Vec<insn::Touch>,
}

impl Executed {
    /// The instruction that took the machine from `before` to `after` (one step later): run
    /// by the vCPU `after` names, from that vCPU's registers in `before`.
    fn of(before: &Snapshot, after: &Snapshot, cpu: &CpuModel) -> Executed {
        let vcpu = after.vcpu();
        let regs = before.regs_of(vcpu).unwrap_or(&before.regs);
        Executed {
            step: after.step,
            vcpu,
            rip: regs.rip,
            touches: accesses::of_instruction(regs, cpu, &before.memory),
        }
    }
}

/// The last [`LOOKBACK`] instructions up to `step`, oldest first, each with the accesses it
/// made (computed from the state before it ran). One seek, then single steps forward; the
/// steps of host actions (`host_steps`) ran none.
fn recent_instructions<R: Read + Seek>(
    timeline: &mut Timeline<R>,
    cpu: &CpuModel,
    step: Step,
    host_steps: &[Step],
) -> Result<Vec<Executed>, String> {
    let first = step.saturating_sub(LOOKBACK);
    let mut before = timeline.seek(first).map_err(|e| e.to_string())?.clone();
    let mut out = Vec::new();
    for s in first + 1..=step {
        let after = timeline.seek(s).map_err(|e| e.to_string())?.clone();
        if host_steps.binary_search(&s).is_err() {
            out.push(Executed::of(&before, &after, cpu));
        }
        before = after;
    }
    Ok(out)
}

fn walk_view(
    regs: &traces::Regs,
    snap: &Snapshot,
    recent: &[&Executed],
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
                    let t = accesses::last_touched(regs, cpu, &snap.memory)?;
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
    let regs = insn::control_regs(regs);
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
