//! A model-level scenario written as a trace: its steps are the script's actions (step `n` is
//! action `n - 1`), its memory the script's [`FlatMemory`], its registers the script's control
//! registers after each action. Guest writes are the usual `CrWrite` events, host actions
//! `HostAction` events (format 6); the decisions and findings of every policy come from the
//! [`Runner`]'s [`history::Watch`], written as the recorder writes its own (the write, a
//! paging-mode transition, one `Mmu` decision per policy, then the findings complete at it).
//! The header names the `model` backend: there is no engine and nothing to re-execute.

use super::{Runner, Script};
use history::{to_trace, Cause};
use mmu::{ControlRegs, Policy};
use traces::{
    BackendInfo, BackendKind, Blob, EndReason, EndRecord, Event, EventId, EventKind, GuestSpec,
    Header, Keyframe, Load, MemRegion, MemWrite, Record, RegionKind, Regs, Step, StepRecord,
};

/// The trace's registers for the model's control registers (everything else stays at reset).
fn regs_of(c: &ControlRegs, like: &Regs) -> Regs {
    Regs {
        cr0: c.cr0,
        cr3: c.cr3,
        cr4: c.cr4,
        efer: c.efer,
        pdptrs: c.pdptrs,
        pkru: c.pkru,
        ..like.clone()
    }
}

/// The header of `script`'s trace evaluated under `policies` (names in that order).
pub fn header(script: &Script, policies: &[&'static Policy], command_line: Vec<String>) -> Header {
    let ram = script.memory.bytes.clone();
    let ram_size = ram.len() as u64;
    let entry = regs_of(&script.entry_regs(), &Regs::default());
    Header {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        backend: BackendInfo {
            kind: BackendKind::Model,
            engine: "mmurr MMU model (no engine: the script's actions fed to the model)".into(),
            host_kernel: String::new(),
            cpu_vendor: if script.cpu.amd {
                "AuthenticAMD"
            } else {
                "GenuineIntel"
            }
            .into(),
            cpu_model_name: "model CPU".into(),
            ..Default::default()
        },
        guest: GuestSpec {
            ram_size,
            regions: vec![MemRegion {
                gpa: 0,
                size: ram_size,
                kind: RegionKind::Ram,
                name: "ram".into(),
            }],
            blobs: vec![Blob {
                hash: xxhash_rust::xxh3::xxh3_64(&ram),
                name: format!("{}.memory", script.name),
                data: ram,
            }],
            loads: vec![Load { blob: 0, gpa: 0 }],
            entry,
            cpuid: insn::cpuid_entries(&script.cpu),
            origin: format!("model-level scenario {}", script.name),
            cmdline: String::new(),
            maxphyaddr: script.cpu.maxphyaddr,
        },
        policies: policies.iter().map(|p| p.name.to_string()).collect(),
        mmu_flavour: script.flavour.name().into(),
        scenario: Some(script.name.into()),
        command_line,
        keyframe_interval: script.actions.len() as u64 + 1,
        host: None,
        vcpus: 0,
    }
}

/// The records written so far, and the id of the next event.
struct Events<'a> {
    out: &'a mut Vec<Record>,
    next: EventId,
}

impl Events<'_> {
    fn push(&mut self, step: Step, kind: EventKind) -> EventId {
        let id = self.next;
        self.out.push(Record::Event(Event {
            id,
            step,
            rip: 0,
            kind,
        }));
        self.next += 1;
        id
    }
}

/// Every record of `script`'s trace under `policies`, in file order.
pub fn records(script: &Script, policies: &[&'static Policy]) -> Vec<Record> {
    let mut runner = Runner::new(script, policies);
    let mut regs = regs_of(runner.regs(), &Regs::default());
    let mut out = vec![Record::Keyframe(Keyframe {
        step: 0,
        regs: regs.clone(),
        pages: Vec::new(),
        carries_pages: true,
        memory_hash: xxhash_rust::xxh3::xxh3_64(&runner.memory().bytes),
    })];
    let mut events = Events {
        out: &mut out,
        next: 0,
    };
    for (at, a) in script.actions.iter().enumerate() {
        let step = at as Step + 1;
        let t = runner.take(a, events.next, step);
        let after = regs_of(&t.after, &regs);
        let mem = match *a {
            super::Action::Store { gpa, value } => vec![MemWrite {
                gpa,
                data: value.to_le_bytes().to_vec(),
            }],
            _ => Vec::new(),
        };
        events.out.push(Record::Step(StepRecord {
            step,
            rip: 0,
            regs: after.delta_from(&regs),
            mem,
        }));
        if let Some(cause) = t.cause {
            let kind = match cause {
                Cause::Write(w) => EventKind::CrWrite(w),
                Cause::Host(h) => EventKind::HostAction(h),
            };
            let id = events.push(step, kind);
            let (from, to) = (to_trace::mode_of(&regs), to_trace::mode_of(&after));
            if from != to {
                events.push(step, EventKind::Transition { from, to });
            }
            if let Some(o) = t.outcome {
                for (p, d) in o.decisions.iter().enumerate() {
                    events.push(step, EventKind::Mmu(to_trace::decision(p as u16, id, d)));
                }
                for f in o.findings {
                    events.push(f.step, EventKind::Finding(f.finding));
                }
            }
        }
        regs = after;
    }
    let last = script.actions.len() as Step;
    for f in runner.finish() {
        events.push(f.step, EventKind::Finding(f.finding));
    }
    events.out.push(Record::End(EndRecord {
        step: last,
        reason: EndReason::Halted,
        message: format!(
            "model-level scenario {}: all {last} actions applied to the model",
            script.name
        ),
        self_check_failures: Vec::new(),
    }));
    out
}

/// Writes `script`'s trace under `policies` to `path`.
pub fn write(
    script: &Script,
    policies: &[&'static Policy],
    command_line: Vec<String>,
    path: &std::path::Path,
) -> traces::Result<traces::WriteSummary> {
    let mut w = traces::Writer::create(path, &header(script, policies, command_line))?;
    for r in records(script, policies) {
        w.append(&r)?;
    }
    Ok(w.finish()?.1)
}
