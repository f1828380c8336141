//! Derives the inputs a recorded guest took from outside its machine state
//! ([`traces::inputs`]) from a trace: the results of nondeterministic instructions and the
//! values of port and MMIO reads, in the order the guest took them. `mmurr verify` loads them
//! and hands them to the recorder's re-execution.

use crate::memory::{ImageError, MemoryImage};
use std::io::{Read, Seek};
pub use traces::inputs::{Input, RecordedInputs};
use traces::{EventKind, Reader, Record, Regs, Step};

#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("cannot read the recorded inputs of {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: traces::Error,
    },
    #[error(transparent)]
    Trace(#[from] traces::Error),
    #[error("the trace's guest image is inconsistent: {0}")]
    Image(#[from] ImageError),
}

/// The inputs recorded in the trace at `path`, for the recorder's re-execution.
pub fn load(path: &std::path::Path) -> Result<std::sync::Arc<RecordedInputs>, InputsError> {
    let mut reader = Reader::open(path).map_err(|source| InputsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(std::sync::Arc::new(recorded_inputs(&mut reader)?))
}

/// The step being read: registers and memory before it, the instruction it ran.
struct Pending {
    step: Step,
    before: Regs,
    first: Option<iced_x86::Instruction>,
    retired: u32,
    reads: Vec<Input>,
}

/// Reads the whole trace once, rebuilding registers and memory as it goes so every step's
/// instruction can be decoded where and when it ran.
pub fn recorded_inputs<R: Read + Seek>(
    reader: &mut Reader<R>,
) -> Result<RecordedInputs, InputsError> {
    let guest = reader.header().guest.clone();
    let cpu = crate::cpu_model(&guest);
    let mut memory = MemoryImage::from_guest(&guest)?;
    let mut regs = guest.entry.clone();
    let mut parked = traces::Parked::new(reader.header().vcpu_count());
    let mut out = RecordedInputs::default();
    let mut pending: Option<Pending> = None;
    let finish = |p: Pending, regs: &Regs, memory: &MemoryImage, out: &mut RecordedInputs| {
        let port_read = p.reads.iter().any(|r| matches!(r, Input::PortRead { .. }));
        let step = Retirement {
            first: p.first.as_ref(),
            retired: p.retired,
            port_read,
            step: p.step,
        };
        results(&step, &p.before, regs, &cpu, memory, out);
        out.inputs.extend(p.reads);
    };
    for record in reader.records() {
        match record? {
            Record::Step(s) => {
                if let Some(p) = pending.take() {
                    finish(p, &regs, &memory, &mut out);
                }
                regs.rip = s.rip;
                let first = insn::decode(
                    &insn::fetch(&regs, &cpu, &memory),
                    insn::bitness(&regs),
                    s.rip,
                );
                let before = regs.clone();
                regs.apply_delta(&s.regs);
                for w in &s.mem {
                    memory.write(w.gpa, &w.data);
                }
                pending = Some(Pending {
                    step: s.step,
                    before,
                    first,
                    retired: 1,
                    reads: Vec::new(),
                });
            }
            Record::Event(e) => {
                let Some(p) = pending.as_mut().filter(|p| p.step == e.step) else {
                    continue; // events at entry carry no input
                };
                match e.kind {
                    EventKind::Io(io) if !io.write => p.reads.push(Input::PortRead {
                        step: e.step,
                        port: io.port,
                        size: io.size,
                        data: io.data,
                    }),
                    EventKind::Mmio(m) if !m.write => p.reads.push(Input::MmioRead {
                        step: e.step,
                        gpa: m.gpa,
                        size: m.size,
                        data: m.data,
                    }),
                    EventKind::Retired { count } => p.retired = count.max(1),
                    // The VMM acted before this step: no instruction ran in it.
                    EventKind::HostAction(a) if a.is_vmm() => {
                        p.first = None;
                        out.host_actions.push((e.step, parked.current(), a));
                    }
                    _ => {}
                }
            }
            Record::Keyframe(k) => {
                // State after step k, read from the machine: correct whatever the deltas missed.
                regs = k.regs;
                for page in &k.pages {
                    memory.set_page(page.gpa, &page.data);
                }
            }
            // A run (format 3) holds no input: its instructions read nothing from outside.
            Record::Run(r) => {
                if let Some(p) = pending.take() {
                    finish(p, &regs, &memory, &mut out);
                }
                regs.apply_delta(&r.regs);
                for w in &r.mem {
                    memory.write(w.gpa, &w.data);
                }
            }
            // The host's events are no input to the guest.
            Record::End(_) | Record::Host(_) => {}
            // Another vCPU runs next (format 5): its registers become the current ones.
            r @ (Record::Vcpu(_) | Record::Vcpus(_)) => {
                if let Some(p) = pending.take() {
                    finish(p, &regs, &memory, &mut out);
                }
                parked
                    .observe(&r, &mut regs)
                    .map_err(traces::Error::InvalidRecord)?;
            }
        }
    }
    if let Some(p) = pending.take() {
        finish(p, &regs, &memory, &mut out);
    }
    Ok(out)
}

/// What a step retired: its first instruction, how many, and whether one of them was a port
/// read that reached a device (an I/O event, so its value is a port-read input already).
struct Retirement<'a> {
    first: Option<&'a iced_x86::Instruction>,
    retired: u32,
    port_read: bool,
    step: Step,
}

/// The results of the nondeterministic instructions a step retired (the step's own one and,
/// when it retired several, those after it), taken from the registers after the step.
fn results(
    s: &Retirement<'_>,
    before: &Regs,
    after: &Regs,
    cpu: &mmu::CpuModel,
    memory: &MemoryImage,
    out: &mut RecordedInputs,
) {
    let (retired, step) = (s.retired, s.step);
    let Some(first) = s.first else { return };
    let beyond = if retired > 1 {
        insn::retired_beyond(first, before, cpu, memory, after.rip)
    } else {
        Vec::new()
    };
    let single_retired = after.rip == insn::fall_through(first, before);
    if beyond.is_empty() && !single_retired {
        return; // faulted (or a rep iteration): no results
    }
    let mut rip = before.rip;
    for i in std::iter::once(first).chain(beyond.iter()) {
        let exited = s.port_read && insn::is_port_read(i);
        if let Some(o) = insn::nondeterministic(i).filter(|_| !exited) {
            out.inputs.push(Input::Results {
                step,
                rip,
                mnemonic: insn::format(i),
                gprs: o.gpr_indices().map(|n| (n as u8, after.gpr[n])).collect(),
                rflags_mask: o.rflags,
                rflags: after.rflags & o.rflags,
            });
        }
        rip = insn::fall_through(i, before);
    }
}
