//! `mmurr diff` and the comparison under `mmurr verify`: walk two traces of the same guest in
//! lockstep and report the first place they diverge — registers, memory written, a control
//! register event, or an MMU decision.
//!
//! Engines disagree on what one "step" of a `rep` string instruction is (KVM single-step stops
//! after every iteration, an emulator may not), so consecutive steps at the same RIP are
//! folded into one instruction before comparing. They also disagree on how many instructions
//! one step retires (a KVM single step on some hosts runs `endbr64` and the next `push`
//! together, recorded as [`EventKind::Retired`]): the two traces are aligned by retired
//! instructions, so such a step is compared with the two steps the other trace took.
//!
//! [`Compare::GuestOnly`] compares what the guest did (registers, memory written, control
//! register writes and transitions, exceptions, port I/O) and leaves out what the machine
//! model decided (MMU decisions), for traces of machines whose CPUID or MAXPHYADDR differ.

use crate::memory::MemoryImage;
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use traces::{EventKind, Parked, Reader, Record, Regs, Step};

/// Architectural state compared at every instruction boundary. Hidden segment attributes and
/// descriptor-cache details are left out: engines legitimately differ there (e.g. the accessed
/// bit), and they are not what a reproduction is about.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Visible {
    /// The vCPU that ran the instruction (0 in one-vCPU traces).
    vcpu: u32,
    gpr: [u64; 16],
    rip: u64,
    /// RFLAGS without RF (bit 16), which engines set differently around single-steps, and
    /// without AF (bit 4), which the SDM leaves undefined after logic instructions and shifts
    /// (hardware and Unicorn differ there) and which nothing in 64-bit code branches on.
    rflags: u64,
    selectors: [u16; 6],
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

impl Visible {
    fn of(vcpu: u32, r: &Regs) -> Visible {
        Visible {
            vcpu,
            gpr: r.gpr,
            rip: r.rip,
            rflags: r.rflags & !(1 << 16 | 1 << 4),
            selectors: r.seg.map(|s| s.selector),
            cr0: r.cr0,
            cr2: r.cr2,
            cr3: r.cr3,
            cr4: r.cr4,
            efer: r.efer,
        }
    }

    fn differences(&self, other: &Visible) -> Vec<String> {
        const GPR: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        const SEG: [&str; 6] = ["es", "cs", "ss", "ds", "fs", "gs"];
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: u64, b: u64| {
            if a != b {
                out.push(format!("{name}: {a:#x} vs {b:#x}"));
            }
        };
        cmp("vcpu", self.vcpu.into(), other.vcpu.into());
        for (name, (a, b)) in GPR.iter().zip(self.gpr.iter().zip(&other.gpr)) {
            cmp(name, *a, *b);
        }
        cmp("rip", self.rip, other.rip);
        cmp("rflags", self.rflags, other.rflags);
        for (name, (a, b)) in SEG.iter().zip(self.selectors.iter().zip(&other.selectors)) {
            cmp(name, *a as u64, *b as u64);
        }
        cmp("cr0", self.cr0, other.cr0);
        cmp("cr2", self.cr2, other.cr2);
        cmp("cr3", self.cr3, other.cr3);
        cmp("cr4", self.cr4, other.cr4);
        cmp("efer", self.efer, other.efer);
        out
    }
}

/// One architectural instruction of a trace: where it was, the state after it, the memory it
/// wrote (final bytes per address) and the events it caused, in a comparable form.
#[derive(Clone, Debug, Default)]
struct Instruction {
    first_step: Step,
    last_step: Step,
    rip: u64,
    after: Option<Visible>,
    writes: BTreeMap<u64, u8>,
    events: Vec<String>,
    /// Architectural instructions this stands for: 1, or more for a step that retired several
    /// (and for instructions merged to align with such a step).
    retired: u64,
    /// A run (format 3) is part of this unit: its memory is compared as the bytes that
    /// changed (a run stores only those; a step stores whole operands and entries).
    has_run: bool,
    /// The value before this unit of each byte in `writes`.
    before: BTreeMap<u64, u8>,
}

impl Instruction {
    /// Takes in the instruction that followed: together they are one unit of comparison.
    fn absorb(&mut self, next: Instruction) {
        self.last_step = next.last_step;
        self.after = next.after;
        self.writes.extend(next.writes);
        self.events.extend(next.events);
        self.retired += next.retired;
        self.has_run |= next.has_run;
        for (addr, old) in next.before {
            self.before.entry(addr).or_insert(old);
        }
    }

    /// The bytes this unit left changed.
    fn changed(&self) -> BTreeMap<u64, u8> {
        self.writes
            .iter()
            .filter(|(a, v)| self.before.get(a) != Some(v))
            .map(|(a, v)| (*a, *v))
            .collect()
    }

    /// Takes in the bytes of one record's memory write; `memory` is the state before it.
    fn record_writes(&mut self, memory: &mut MemoryImage, mem: &[traces::MemWrite]) {
        for w in mem {
            for (i, b) in w.data.iter().enumerate() {
                let addr = w.gpa.wrapping_add(i as u64);
                if !self.writes.contains_key(&addr) {
                    let mut old = [0u8];
                    if memory.read(addr, &mut old) {
                        self.before.insert(addr, old[0]);
                    }
                }
                self.writes.insert(addr, *b);
            }
            memory.write(w.gpa, &w.data);
        }
    }
}

/// What [`diff_with`] compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compare {
    /// Everything the traces record about the guest and every policy's MMU decision.
    #[default]
    Everything,
    /// What the guest did only: MMU decisions are left out (findings, MMIO and engine notes
    /// never take part).
    GuestOnly,
}

/// Which trace ended first at a divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Yields instructions (folded `rep` iterations) from a trace. Events are attached by step
/// number: every event of a step precedes the next step's record, so an instruction is complete
/// once the next one starts. Events at step 0 (entry) go with the first instruction.
struct Instructions<'a, R> {
    records: traces::Records<'a, R>,
    policies: Vec<String>,
    compare: Compare,
    regs: Regs,
    /// The other vCPUs' registers (format 5).
    parked: Parked,
    pending: Option<Instruction>,
    events: BTreeMap<Step, Vec<String>>,
    /// Steps that retired more than one instruction, and how many.
    retired: BTreeMap<Step, u64>,
    done: bool,
    /// Memory as the records so far leave it: what a byte held before a unit wrote it.
    memory: MemoryImage,
}

impl<'a, R: Read + Seek> Instructions<'a, R> {
    fn new(reader: &'a mut Reader<R>, compare: Compare) -> Instructions<'a, R> {
        let policies = reader.header().policies.clone();
        let parked = Parked::new(reader.header().vcpu_count());
        let regs = reader.header().guest.entry.clone();
        let memory = MemoryImage::from_guest(&reader.header().guest)
            .unwrap_or_else(|_| MemoryImage::zeroed(reader.header().guest.ram_size));
        Instructions {
            records: reader.records(),
            policies,
            compare,
            regs,
            parked,
            pending: None,
            events: BTreeMap::new(),
            retired: BTreeMap::new(),
            done: false,
            memory,
        }
    }

    fn describe_event(&self, kind: &EventKind) -> Option<String> {
        Some(match kind {
            EventKind::CrWrite(w) => format!(
                "{} write {:#x} -> {:#x}{}",
                w.reg.name(),
                w.old,
                w.new,
                if w.faulted { " (#GP)" } else { "" }
            ),
            EventKind::Transition { from, to } => {
                format!("transition {} -> {}", from.name(), to.name())
            }
            EventKind::Mmu(d) if self.compare == Compare::Everything => format!(
                "{}: {} cpu_role {:#x} -> {:#x}, root_role {:#x} -> {:#x}",
                self.policies
                    .get(d.policy as usize)
                    .map_or("?", |s| s.as_str()),
                d.outcome.name(),
                d.old_cpu_role,
                d.new_cpu_role,
                d.old_root_role,
                d.new_root_role
            ),
            EventKind::Io(io) => format!(
                "{} port {:#x} size {} data {:#x}",
                if io.write { "out" } else { "in" },
                io.port,
                io.size,
                io.data
            ),
            EventKind::Exception(e) => format!(
                "exception {} error {:?} cr2 {:?}",
                e.vector, e.error_code, e.cr2
            ),
            EventKind::ExternalInterrupt(i) => format!("interrupt {} nmi {}", i.vector, i.nmi),
            // Findings, MMIO and engine notes are derived or engine-specific: not compared
            // (nor MMU decisions with `GuestOnly`). `Retired` is counted, not compared.
            _ => return None,
        })
    }

    /// Completes an instruction with the events of its steps (and any earlier ones).
    fn finish(&mut self, mut i: Instruction, everything: bool) -> Instruction {
        let rest = if everything {
            BTreeMap::new()
        } else {
            self.events.split_off(&(i.last_step + 1))
        };
        for (_, mut e) in std::mem::replace(&mut self.events, rest) {
            i.events.append(&mut e);
        }
        let rest = if everything {
            BTreeMap::new()
        } else {
            self.retired.split_off(&(i.last_step + 1))
        };
        // A folded rep instruction is one instruction; a step that retired n adds n - 1.
        i.retired = 1 + std::mem::replace(&mut self.retired, rest)
            .values()
            .map(|n| n.saturating_sub(1))
            .sum::<u64>();
        i
    }

    fn next_instruction(&mut self) -> Option<traces::Result<Instruction>> {
        while !self.done {
            let record = match self.records.next() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => r,
            };
            match record {
                Record::Step(s) => {
                    self.regs.apply_delta(&s.regs);
                    let vcpu = self.parked.current();
                    let fold = self.pending.as_ref().is_some_and(|p| {
                        p.rip == s.rip
                            && p.last_step + 1 == s.step
                            && p.after.as_ref().is_some_and(|a| a.vcpu == vcpu)
                    });
                    let finished = if fold { None } else { self.pending.take() };
                    let p = self.pending.get_or_insert_with(|| Instruction {
                        first_step: s.step,
                        rip: s.rip,
                        ..Default::default()
                    });
                    p.last_step = s.step;
                    p.after = Some(Visible::of(self.parked.current(), &self.regs));
                    p.record_writes(&mut self.memory, &s.mem);
                    if let Some(f) = finished {
                        return Some(Ok(self.finish(f, false)));
                    }
                }
                Record::Event(e) => {
                    if let EventKind::Retired { count } = e.kind {
                        self.retired.insert(e.step, u64::from(count));
                    }
                    if let Some(text) = self.describe_event(&e.kind) {
                        self.events.entry(e.step).or_default().push(text);
                    }
                }
                // A run (format 3) is one unit of `count` retired instructions, aligned with as
                // many of the other trace's. Its writes are the bytes that differ after it.
                Record::Run(r) => {
                    self.regs.apply_delta(&r.regs);
                    // Iterations of a `rep` instruction whose earlier iterations came before
                    // (its RIP stays until the last): one instruction, as steps fold.
                    let fold = self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.rip == r.rip && p.last_step + 1 == r.first);
                    if let Some(p) = self.pending.as_mut().filter(|_| fold) {
                        p.last_step = r.step;
                        p.after = Some(Visible::of(self.parked.current(), &self.regs));
                        p.has_run = true;
                        p.record_writes(&mut self.memory, &r.mem);
                        self.retired.insert(r.first, r.count());
                        continue;
                    }
                    let finished = self.pending.take();
                    let mut unit = Instruction {
                        first_step: r.first,
                        last_step: r.step,
                        rip: r.rip,
                        after: Some(Visible::of(self.parked.current(), &self.regs)),
                        has_run: true,
                        ..Default::default()
                    };
                    unit.record_writes(&mut self.memory, &r.mem);
                    self.retired.insert(r.first, r.count());
                    self.pending = Some(unit);
                    if let Some(f) = finished {
                        return Some(Ok(self.finish(f, false)));
                    }
                }
                Record::Keyframe(k) => {
                    for page in &k.pages {
                        self.memory.set_page(page.gpa, &page.data);
                    }
                }
                // What the recording host's KVM did is not the guest's behaviour: two hosts
                // legitimately differ there (`check --host` compares it with the model).
                Record::End(_) | Record::Host(_) => {}
                // Which vCPU runs next (format 5): its registers become the current ones.
                Record::Vcpu(_) | Record::Vcpus(_) => {
                    if let Err(e) = self.parked.observe(&record, &mut self.regs) {
                        return Some(Err(traces::Error::InvalidRecord(e)));
                    }
                }
            }
        }
        let last = self.pending.take()?;
        Some(Ok(self.finish(last, true)))
    }
}

/// Where two traces first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction number (retired instructions before it, `rep` folded) and the steps in
    /// each trace.
    pub instruction: u64,
    pub step_a: Option<Step>,
    pub step_b: Option<Step>,
    pub rip: Option<u64>,
    /// What differs, one line each.
    pub differences: Vec<String>,
    /// The instructions before the divergence (RIP and events), oldest first.
    pub context: Vec<String>,
    /// The trace that ended here while the other went on (`None`: both went on and differ).
    pub ended: Option<Side>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffReport {
    /// Retired instructions compared (`rep` folded).
    pub instructions: u64,
    pub divergence: Option<Divergence>,
}

const CONTEXT: usize = 5;

/// Compares two traces of the same guest, everything they record.
pub fn diff<RA: Read + Seek, RB: Read + Seek>(
    a: &mut Reader<RA>,
    b: &mut Reader<RB>,
) -> traces::Result<DiffReport> {
    diff_with(a, b, Compare::Everything)
}

/// Compares two traces of the same guest, aligned by retired instructions.
pub fn diff_with<RA: Read + Seek, RB: Read + Seek>(
    a: &mut Reader<RA>,
    b: &mut Reader<RB>,
    compare: Compare,
) -> traces::Result<DiffReport> {
    let mut ia = Instructions::new(a, compare);
    let mut ib = Instructions::new(b, compare);
    let mut context: Vec<String> = Vec::new();
    let mut n = 0u64;
    loop {
        let (mut x, mut y) = (
            ia.next_instruction().transpose()?,
            ib.next_instruction().transpose()?,
        );
        // A step that retired several instructions meets as many of the other trace's.
        while let (Some(p), Some(q)) = (x.as_mut(), y.as_mut()) {
            let next = match p.retired.cmp(&q.retired) {
                std::cmp::Ordering::Equal => break,
                std::cmp::Ordering::Less => ia.next_instruction().transpose()?.map(|i| p.absorb(i)),
                std::cmp::Ordering::Greater => {
                    ib.next_instruction().transpose()?.map(|i| q.absorb(i))
                }
            };
            if next.is_none() {
                break; // a trace ended inside the other's step: reported below
            }
        }
        let mut differences = Vec::new();
        let mut ended = None;
        match (&x, &y) {
            (None, None) => {
                return Ok(DiffReport {
                    instructions: n,
                    divergence: None,
                })
            }
            (Some(_), None) => {
                ended = Some(Side::B);
                differences.push("trace B ends here; trace A goes on".into());
            }
            (None, Some(_)) => {
                ended = Some(Side::A);
                differences.push("trace A ends here; trace B goes on".into());
            }
            (Some(x), Some(y)) => {
                if x.retired != y.retired {
                    // One trace ended inside the other's multi-instruction step.
                    let side = if x.retired < y.retired { "A" } else { "B" };
                    ended = Some(if x.retired < y.retired {
                        Side::A
                    } else {
                        Side::B
                    });
                    differences.push(format!(
                        "trace {side} ends here; retired instructions {} vs {}",
                        x.retired, y.retired
                    ));
                }
                if x.rip != y.rip {
                    differences.push(format!("instruction address: {:#x} vs {:#x}", x.rip, y.rip));
                }
                if let (Some(va), Some(vb)) = (&x.after, &y.after) {
                    differences.extend(va.differences(vb));
                }
                if x.has_run || y.has_run {
                    let (a, b) = (x.changed(), y.changed());
                    if a != b {
                        differences.push(describe_write_difference(&a, &b));
                    }
                } else if x.writes != y.writes {
                    differences.push(describe_write_difference(&x.writes, &y.writes));
                }
                if x.events != y.events {
                    differences.push(describe_event_difference(&x.events, &y.events));
                }
            }
        }
        if !differences.is_empty() {
            return Ok(DiffReport {
                instructions: n,
                divergence: Some(Divergence {
                    instruction: n,
                    step_a: x.as_ref().map(|i| i.first_step),
                    step_b: y.as_ref().map(|i| i.first_step),
                    rip: x.as_ref().or(y.as_ref()).map(|i| i.rip),
                    differences,
                    context,
                    ended,
                }),
            });
        }
        if let Some(x) = x {
            let mut line = format!("step {} rip {:#x}", x.first_step, x.rip);
            if x.retired > 1 {
                line += &format!(" ({} instructions)", x.retired);
            }
            if !x.events.is_empty() {
                line += &format!(" [{}]", x.events.join("; "));
            }
            context.push(line);
            if context.len() > CONTEXT {
                context.remove(0);
            }
            n += x.retired;
        }
    }
}

fn describe_write_difference(a: &BTreeMap<u64, u8>, b: &BTreeMap<u64, u8>) -> String {
    let first = a
        .iter()
        .find(|(addr, v)| b.get(addr) != Some(v))
        .map(|(addr, _)| *addr)
        .or_else(|| b.keys().find(|addr| !a.contains_key(addr)).copied());
    match first {
        Some(addr) => format!(
            "memory written at {addr:#x}: {} vs {}",
            a.get(&addr)
                .map_or("nothing".into(), |v| format!("{v:#04x}")),
            b.get(&addr)
                .map_or("nothing".into(), |v| format!("{v:#04x}"))
        ),
        None => "memory written differs".into(),
    }
}

/// The first event that differs, e.g. `event 3 of this instruction: "v5.0: reinit ..." vs "..."`.
fn describe_event_difference(a: &[String], b: &[String]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let show = |e: Option<&String>| e.map_or("no event".to_string(), |e| format!("\"{e}\""));
    let mut line = format!(
        "event {} of this instruction: {} vs {}",
        i + 1,
        show(a.get(i)),
        show(b.get(i))
    );
    if a.len() != b.len() {
        line += &format!(" ({} events vs {})", a.len(), b.len());
    }
    line
}
