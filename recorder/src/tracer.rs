//! The step tracer: runs the backend one instruction at a time and turns each step into
//! trace records (register delta, memory writes, events, keyframes).

use crate::accesses::{self, LinearAccess};
use crate::control::{StepControl, StepVerdict};
use crate::cr_watch;
use crate::devices::{DebugExit, Devices, IoEffect};
use crate::engine_check;
use crate::exceptions;
use crate::guest_view::{self, BackendMemory};
use crate::insn;
use crate::mmu_watch::MmuWatch;
use crate::options::RecordOptions;
use crate::progress::Progress;
use crate::shadow::{self, Shadow};
use crate::sink::RecordSink;
use crate::stuck::{self, StuckWatch};
use crate::{Backend, BackendError, Exit, Written};
use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic};
use std::sync::atomic::Ordering;
use std::time::Instant;
use traces::{
    EndReason, EndRecord, Event, EventKind, IoAccess, Keyframe, MemWrite, MmioAccess, Record,
    RegId, Regs, StepRecord,
};

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;

/// Why the step loop stopped, before it becomes the end record.
pub struct Stop {
    pub reason: EndReason,
    pub message: String,
}

pub struct Tracer<'a> {
    backend: &'a mut dyn Backend,
    sink: &'a mut dyn RecordSink,
    opts: &'a RecordOptions,
    pub devices: Devices,
    cpu: mmu::CpuModel,
    mmu: MmuWatch,
    shadow: Shadow,
    regs: Regs,
    pub step: u64,
    pub next_event: u64,
    factory: InstructionInfoFactory,
    keyframes_since_check: u64,
    pub self_check_failures: Vec<String>,
    /// A trace write failed: the run stops and the error is reported.
    pub sink_error: Option<traces::Error>,
    /// A CR event happened in the previous step: compare the engine's translations with the
    /// walker's for this one (cleared for good when the backend cannot translate itself).
    engine_check_pending: bool,
    engine_check_supported: bool,
    /// Ends the run when the guest makes no progress; off while a debugger drives the loop
    /// (the user there decides, and may change the state to leave the loop).
    stuck: Option<StuckWatch>,
}

/// What the instruction about to run will do, decoded with the registers before it.
struct Plan {
    insn: Option<Instruction>,
    accesses: Vec<LinearAccess>,
    /// Guest-physical ranges the operands write.
    writes: Vec<(u64, u64)>,
    /// Paging-structure entries whose accessed/dirty bits this step may set.
    ad_entries: Vec<(u64, u8)>,
}

impl<'a> Tracer<'a> {
    pub fn new(
        backend: &'a mut dyn Backend,
        sink: &'a mut dyn RecordSink,
        opts: &'a RecordOptions,
        devices: Devices,
        cpu: mmu::CpuModel,
        mmu: MmuWatch,
    ) -> Result<Tracer<'a>, BackendError> {
        let regs = backend.regs_full()?;
        let shadow = Shadow::new(&shadow::ram(&*backend));
        Ok(Tracer {
            backend,
            sink,
            opts,
            devices,
            cpu,
            mmu,
            shadow,
            regs,
            step: 0,
            next_event: 0,
            factory: InstructionInfoFactory::new(),
            keyframes_since_check: 0,
            self_check_failures: Vec::new(),
            sink_error: None,
            engine_check_pending: false,
            engine_check_supported: true,
            stuck: Some(StuckWatch::default()),
        })
    }

    fn append(&mut self, record: Record) {
        if self.sink_error.is_none() {
            if let Err(e) = self.sink.append(&record) {
                self.sink_error = Some(e);
            }
        }
    }

    fn event(&mut self, rip: u64, kind: EventKind) {
        let e = Event {
            id: self.next_event,
            step: self.step,
            rip,
            kind,
        };
        self.next_event += 1;
        self.append(Record::Event(e));
    }

    /// The keyframe of the entry state (step 0): registers, no pages (memory = the loads).
    pub fn entry_keyframe(&mut self) {
        let ram = shadow::ram(&*self.backend);
        let kf = Keyframe {
            step: 0,
            regs: self.regs.clone(),
            pages: Vec::new(),
            carries_pages: true,
            memory_hash: shadow::hash(&ram),
        };
        drop(ram);
        self.append(Record::Keyframe(kf));
    }

    /// Runs until something ends the recording. `control`, a debugger (the live gdb server),
    /// is called before every instruction.
    pub fn run(
        &mut self,
        progress: &mut Progress,
        mut control: Option<&mut (dyn StepControl + '_)>,
    ) -> Stop {
        let deadline = self.opts.timeout.map(|t| Instant::now() + t);
        if control.is_some() {
            self.stuck = None;
        }
        loop {
            if self.sink_error.is_some() {
                return Stop {
                    reason: EndReason::Error,
                    message: "writing the trace failed".into(),
                };
            }
            if self.opts.interrupted.load(Ordering::Relaxed) {
                return Stop {
                    reason: EndReason::Interrupted,
                    message: format!("interrupted by a signal after {} steps", self.step),
                };
            }
            if self.step >= self.opts.max_steps {
                return Stop {
                    reason: EndReason::StepBudget,
                    message: format!(
                        "step budget of {} instructions reached",
                        self.opts.max_steps
                    ),
                };
            }
            if self.step & 255 == 0 {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Stop {
                        reason: EndReason::Timeout,
                        message: format!(
                            "wall-clock timeout of {:.1} s reached after {} steps",
                            self.opts.timeout.unwrap_or_default().as_secs_f64(),
                            self.step
                        ),
                    };
                }
                progress.tick(now, self.step, self.next_event);
            }
            if let Some(c) = control.as_deref_mut() {
                match c.before_step(self.step, &self.regs, &mut *self.backend) {
                    StepVerdict::Run => {}
                    // The debugger changed the machine: continue from what it holds now.
                    StepVerdict::RunModified => match self.backend.regs_full() {
                        Ok(r) => self.regs = r,
                        Err(e) => {
                            return Stop {
                                reason: EndReason::Error,
                                message: format!("reading registers after gdb changed them: {e}"),
                            }
                        }
                    },
                    StepVerdict::Stop(message) => {
                        return Stop {
                            reason: EndReason::Interrupted,
                            message,
                        }
                    }
                }
            }
            if let Some(stop) = self.step_once() {
                return stop;
            }
        }
    }

    fn plan(&mut self) -> Plan {
        let mem = BackendMemory(&*self.backend);
        let mut ad_entries = Vec::new();
        let mut bytes = [0u8; 15];
        let n = accesses::fetch_bytes(&self.regs, &self.cpu, &mem, &mut bytes, &mut ad_entries);
        let insn = insn::decode(&bytes[..n], insn::bitness(&self.regs), self.regs.rip);
        let accesses = match &insn {
            Some(i) => accesses::operand_accesses(&mut self.factory, i, &self.regs),
            None => Vec::new(),
        };
        let mut writes = Vec::new();
        for a in &accesses {
            if let Some(r) = accesses::translate_range(
                &self.regs,
                &self.cpu,
                &mem,
                a.linear,
                a.len,
                a.access,
                &mut ad_entries,
            ) {
                if a.access == mmu::Access::Write {
                    writes.extend(r);
                }
            }
        }
        Plan {
            insn,
            accesses,
            writes,
            ad_entries,
        }
    }

    /// One instruction; `Some` when the run ends.
    fn step_once(&mut self) -> Option<Stop> {
        let plan = self.plan();
        let before = self.regs.clone();
        if let Some(i) = &plan.insn {
            // With an in-kernel irqchip KVM would wait in HLT forever when nothing can wake it.
            if i.mnemonic() == Mnemonic::Hlt && before.rflags & RFLAGS_IF == 0 {
                return Some(Stop {
                    reason: EndReason::Halted,
                    message: format!("HLT with interrupts disabled at RIP {:#x}", before.rip),
                });
            }
        }
        let planned = plan
            .insn
            .as_ref()
            .and_then(|i| cr_watch::planned_write(i, &before));
        let result = match self.backend.step() {
            Ok(r) => r,
            Err(e) => return Some(self.backend_failure(e, &plan)),
        };
        if result.exit == Exit::Interrupted {
            return None; // no instruction retired; the loop re-checks its stop conditions
        }
        self.step += 1;
        let events_before = self.next_event;
        let mut io_events = Vec::new();
        let mut stop = None;
        match result.exit {
            Exit::Stepped | Exit::Interrupted => {}
            Exit::IoOut { port, size, data } => {
                io_events.push(EventKind::Io(IoAccess {
                    port,
                    write: true,
                    size,
                    data,
                }));
                if let IoEffect::Exit { status } = self.devices.io_out(port, size, data) {
                    stop = Some(Stop {
                        reason: EndReason::DebugExit { status },
                        message: format!(
                            "the guest wrote {status:#x} to the debug-exit port 0xf4 (exit code {})",
                            DebugExit::exit_code(status)
                        ),
                    });
                }
            }
            Exit::IoIn { port, size } => {
                let data = self.devices.io_in(port, size);
                io_events.push(EventKind::Io(IoAccess {
                    port,
                    write: false,
                    size,
                    data,
                }));
                if let Err(e) = self.backend.complete_io_in(data) {
                    return Some(self.backend_failure(e, &plan));
                }
                stop = self.polling_stop();
            }
            Exit::MmioRead { gpa, size } => {
                let data = self.devices.mmio_read(gpa, size);
                io_events.push(EventKind::Mmio(MmioAccess {
                    gpa,
                    write: false,
                    size,
                    data,
                }));
                if let Err(e) = self.backend.complete_mmio_read(data) {
                    return Some(self.backend_failure(e, &plan));
                }
                stop = self.polling_stop();
            }
            Exit::MmioWrite { gpa, size, data } => {
                self.devices.mmio_write(gpa);
                io_events.push(EventKind::Mmio(MmioAccess {
                    gpa,
                    write: true,
                    size,
                    data,
                }));
            }
            Exit::Halted => {
                stop = Some(Stop {
                    reason: EndReason::Halted,
                    message: format!("the guest halted at RIP {:#x}", before.rip),
                })
            }
            Exit::Shutdown => {
                stop = Some(Stop {
                    reason: EndReason::Shutdown,
                    message: format!(
                        "triple fault (shutdown) after the instruction at RIP {:#x}",
                        before.rip
                    ),
                })
            }
        }
        let full = plan
            .insn
            .as_ref()
            .is_some_and(cr_watch::writes_rare_registers);
        let after = match if full {
            self.backend.regs_full()
        } else {
            self.backend.regs()
        } {
            Ok(r) => r,
            Err(e) => return Some(self.backend_failure(e, &plan)),
        };
        let mem_writes = self.memory_writes(&plan, &result.written, &before, &after);
        let wrote = !mem_writes.is_empty();
        let regs = delta(&before, &after);
        self.append(Record::Step(StepRecord {
            step: self.step,
            rip: before.rip,
            regs,
            mem: mem_writes,
        }));
        for kind in io_events {
            self.event(before.rip, kind);
        }
        let mut excepted = false;
        if let Some(i) = &plan.insn {
            let mem = BackendMemory(&*self.backend);
            if let Some(x) = exceptions::delivered(i, &before, &after, &self.cpu, &mem) {
                excepted = true;
                self.event(before.rip, EventKind::Exception(x));
            }
        }
        let retired = plan
            .insn
            .as_ref()
            .is_some_and(|i| retired(i, &before, &after));
        // Addresses touched by this step count for findings caused by earlier writes only.
        if self.mmu.has_pending() {
            let mut touched = vec![(accesses::fetch_linear(&before), mmu::Access::Fetch)];
            touched.extend(plan.accesses.iter().map(|a| (a.linear, a.access)));
            let mem = BackendMemory(&*self.backend);
            let findings = self.mmu.on_touch(&touched, &mem);
            for f in findings {
                self.event(before.rip, f);
            }
        }
        if std::mem::take(&mut self.engine_check_pending)
            && retired
            && !excepted
            && engine_check::same_regime(&before, &after)
        {
            match engine_check::compare(
                &mut *self.backend,
                &self.cpu,
                &before,
                &after,
                &plan.accesses,
            ) {
                Some(divergences) => {
                    for kind in divergences {
                        self.event(before.rip, kind);
                    }
                }
                None => self.engine_check_supported = false,
            }
        }
        self.control_register_events(planned, retired, &before, &after);
        if let Some(watch) = self.stuck.as_mut().filter(|_| stop.is_none()) {
            let progress = wrote || self.next_event != events_before;
            stop = watch.observe(&after, progress).map(|s| Stop {
                reason: EndReason::Stuck,
                message: stuck::message(s, &before, plan.insn.as_ref()),
            });
        }
        self.regs = after;
        if self.step.checked_rem(self.opts.keyframe_interval) == Some(0) {
            self.keyframe(false);
        }
        stop
    }

    fn polling_stop(&self) -> Option<Stop> {
        let (access, n) = self.devices.unhandled.polling(self.opts.poll_limit)?;
        Some(Stop {
            reason: EndReason::Error,
            message: format!(
                "the guest keeps polling a device that is not there: {access} {n} times in a \
                 row with no other I/O; mmurr emulates only serial 0x3f8, debug-exit 0xf4, \
                 debugcon 0xe9 and fw_cfg 0x510"
            ),
        })
    }

    fn control_register_events(
        &mut self,
        planned: Option<cr_watch::PlannedWrite>,
        retired: bool,
        before: &Regs,
        after: &Regs,
    ) {
        let writes = cr_watch::detect(planned, retired, before, after);
        if writes.is_empty() {
            return;
        }
        self.engine_check_pending = self.engine_check_supported;
        let from = guest_view::paging_mode(before);
        let to = guest_view::paging_mode(after);
        let after_cr = guest_view::control_regs(after);
        let mut decisions = Vec::new();
        for (w, attempted) in writes {
            let cause = self.next_event;
            self.event(before.rip, EventKind::CrWrite(w.clone()));
            let mem = BackendMemory(&*self.backend);
            decisions.extend(self.mmu.on_write(&w, attempted, cause, &after_cr, &mem));
        }
        if from != to {
            self.event(before.rip, EventKind::Transition { from, to });
        }
        for kind in decisions {
            self.event(before.rip, kind);
        }
    }

    /// The memory the step wrote, as the trace records it; applied to the shadow.
    fn memory_writes(
        &mut self,
        plan: &Plan,
        written: &Written,
        before: &Regs,
        after: &Regs,
    ) -> Vec<MemWrite> {
        let mut ranges: Vec<(u64, u64)> = match written {
            Written::Ranges(r) => r.clone(),
            Written::Unknown => {
                let mut r = plan.writes.clone();
                r.extend(plan.ad_entries.iter().map(|&(gpa, len)| (gpa, len as u64)));
                if let Some(i) = &plan.insn {
                    r.extend(self.string_writes(i, before, after));
                    r.extend(self.implicit_writes(i, before, after));
                }
                r
            }
        };
        ranges.sort_unstable();
        let mut out: Vec<MemWrite> = Vec::new();
        for (gpa, len) in ranges {
            if len == 0 || len > 1 << 20 {
                continue;
            }
            let mut data = vec![0u8; len as usize];
            if !self.backend.read_phys(gpa, &mut data) {
                continue; // MMIO or outside RAM: not memory
            }
            let start = gpa as usize;
            if self.shadow.bytes().get(start..start + data.len()) == Some(&data[..]) {
                continue; // unchanged (a conditional write that did not happen, A/D already set)
            }
            match out.last_mut() {
                Some(last) if last.gpa + last.data.len() as u64 >= gpa => {
                    // Overlapping or adjacent: merge, the later read wins (same step, same RAM).
                    let off = (gpa - last.gpa) as usize;
                    let end = off + data.len();
                    if end > last.data.len() {
                        last.data.resize(end, 0);
                    }
                    last.data[off..end].copy_from_slice(&data);
                }
                _ => out.push(MemWrite { gpa, data }),
            }
        }
        for w in &out {
            self.shadow.apply(w);
        }
        out
    }

    /// Writes the CPU makes on its own: descriptor accessed bits (and the page-table A bits on
    /// the way to them) for segment loads, and the frame an exception or interrupt pushes.
    fn implicit_writes(&mut self, i: &Instruction, before: &Regs, after: &Regs) -> Vec<(u64, u64)> {
        let mut linear = accesses::descriptor_accesses(&mut self.factory, i, before, after);
        let entered_handler = i.flow_control() == iced_x86::FlowControl::Next
            && after.rip != i.next_ip()
            && after.rip != before.rip;
        if entered_handler || i.mnemonic() == Mnemonic::Int || i.mnemonic() == Mnemonic::Int3 {
            // The pushed frame lies between the new RSP and (at most) 48 bytes above it.
            linear.push(LinearAccess {
                linear: after.gpr[4],
                len: 48,
                access: mmu::Access::Write,
            });
            let gate = if after.efer & (1 << 10) != 0 { 16 } else { 8 };
            let idt = (after.idtr.limit as u64 + 1).min(256 * gate);
            linear.push(LinearAccess {
                linear: after.idtr.base,
                len: idt,
                access: mmu::Access::Read,
            });
        }
        // Walk over the memory as the trace knows it so far: the A/D bits this step set are
        // the ones still clear there.
        let mem = &self.shadow;
        let mut out = Vec::new();
        let mut ad = Vec::new();
        for a in linear {
            if let Some(r) =
                accesses::translate_range(after, &self.cpu, mem, a.linear, a.len, a.access, &mut ad)
            {
                if a.access == mmu::Access::Write {
                    out.extend(r);
                }
            }
        }
        out.extend(ad.into_iter().map(|(gpa, len)| (gpa, len as u64)));
        out
    }

    /// STOS/MOVS/INS write at RDI: the range between RDI before and after, in the direction
    /// DF says (a REP form may do several iterations in one step on some engines).
    fn string_writes(&self, i: &Instruction, before: &Regs, after: &Regs) -> Vec<(u64, u64)> {
        let elem: u64 = match i.mnemonic() {
            Mnemonic::Stosb | Mnemonic::Movsb | Mnemonic::Insb => 1,
            Mnemonic::Stosw | Mnemonic::Movsw | Mnemonic::Insw => 2,
            Mnemonic::Stosd | Mnemonic::Movsd | Mnemonic::Insd => 4,
            Mnemonic::Stosq | Mnemonic::Movsq => 8,
            _ => return Vec::new(),
        };
        // MOVSD is also the SSE move; only the string form (no register operand) writes at RDI.
        if i.mnemonic() == Mnemonic::Movsd
            && i.op_count() > 0
            && i.op0_kind() == iced_x86::OpKind::Register
        {
            return Vec::new();
        }
        let (rdi0, rdi1) = (before.gpr[7], after.gpr[7]);
        if rdi0 == rdi1 {
            return Vec::new();
        }
        // DF=0: [RDI before, RDI after); DF=1: the elements from RDI after (exclusive) up to
        // RDI before (inclusive).
        let (lo, hi) = if before.rflags & RFLAGS_DF == 0 {
            (rdi0, rdi1)
        } else {
            (rdi1.wrapping_add(elem), rdi0.wrapping_add(elem))
        };
        let len = hi.wrapping_sub(lo);
        if len > 1 << 20 {
            return Vec::new(); // not a plausible single step; the self-check will say so
        }
        let bits = insn::bitness(before);
        let seg_base = if bits == 64 {
            0
        } else {
            before.seg[traces::regs::ES].base
        };
        let linear = seg_base.wrapping_add(lo);
        let mem = BackendMemory(&*self.backend);
        let mut ad = Vec::new();
        accesses::translate_range(
            before,
            &self.cpu,
            &mem,
            linear,
            len,
            mmu::Access::Write,
            &mut ad,
        )
        .unwrap_or_default()
    }

    /// A keyframe: registers and the pages written since the previous keyframe. Every
    /// `self_check_every`-th (and the last) first compares the reconstructed memory with the
    /// guest's real RAM.
    pub fn keyframe(&mut self, last: bool) {
        self.keyframes_since_check += 1;
        let check = last || self.keyframes_since_check >= self.opts.self_check_every.max(1);
        let regs = match self.backend.regs_full() {
            Ok(r) => r,
            Err(_) => self.regs.clone(),
        };
        let ram = shadow::ram(&*self.backend);
        let memory_hash = shadow::hash(&ram);
        let pages = if check {
            self.keyframes_since_check = 0;
            let (pages, missed) = self.shadow.page_keyframe(&ram);
            if !missed.is_empty() {
                let list: Vec<String> = missed.iter().take(8).map(|g| format!("{g:#x}")).collect();
                self.self_check_failures.push(format!(
                    "step {}: {} page(s) of guest memory changed without a recorded write \
                     (first: {}); memory reconstructed between the previous self-check \
                     and this one is wrong there",
                    self.step,
                    missed.len(),
                    list.join(", ")
                ));
            }
            pages
        } else {
            self.shadow.take_dirty_pages()
        };
        drop(ram);
        self.regs = regs.clone();
        self.append(Record::Keyframe(Keyframe {
            step: self.step,
            regs,
            pages,
            carries_pages: true,
            memory_hash,
        }));
    }

    /// Findings still waiting for addresses, settled at the end of the run.
    pub fn settle_findings(&mut self) {
        let mem = BackendMemory(&*self.backend);
        let events = self.mmu.settle_all(&mem);
        let rip = self.regs.rip;
        for e in events {
            self.event(rip, e);
        }
    }

    fn backend_failure(&mut self, e: BackendError, plan: &Plan) -> Stop {
        let rip = self.backend.regs().map(|r| r.rip).unwrap_or(self.regs.rip);
        match e {
            BackendError::HostUnsupported(m) => Stop {
                reason: EndReason::HostUnsupported,
                message: m,
            },
            BackendError::Engine(m) | BackendError::Other(m) => {
                let what = plan
                    .insn
                    .as_ref()
                    .map(insn::format)
                    .unwrap_or_else(|| "(undecodable)".into());
                let message = if m.contains("RIP") {
                    m
                } else {
                    format!("the engine failed at RIP {rip:#x} on \"{what}\": {m}")
                };
                Stop {
                    reason: EndReason::Error,
                    message,
                }
            }
        }
    }

    pub fn end_record(&self, stop: &Stop) -> EndRecord {
        EndRecord {
            step: self.step,
            reason: stop.reason.clone(),
            message: stop.message.clone(),
            self_check_failures: self.self_check_failures.clone(),
        }
    }
}

/// The instruction completed: RIP is at its end (in the code size it ran in).
fn retired(i: &Instruction, before: &Regs, after: &Regs) -> bool {
    let mask = match insn::bitness(before) {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    after.rip == i.next_ip() & mask
}

/// The registers that changed: GPRs, RIP and RFLAGS compared directly (the common case), the
/// rest only when some system register changed.
pub fn delta(before: &Regs, after: &Regs) -> Vec<(RegId, u64)> {
    let mut d = Vec::new();
    for (i, (a, b)) in before.gpr.iter().zip(after.gpr.iter()).enumerate() {
        if a != b {
            d.push((RegId::Gpr(i as u8), *b));
        }
    }
    if before.rip != after.rip {
        d.push((RegId::Rip, after.rip));
    }
    if before.rflags != after.rflags {
        d.push((RegId::Rflags, after.rflags));
    }
    let system_changed = before.seg != after.seg
        || before.ldtr != after.ldtr
        || before.tr != after.tr
        || before.gdtr != after.gdtr
        || before.idtr != after.idtr
        || (
            before.cr0,
            before.cr2,
            before.cr3,
            before.cr4,
            before.cr8,
            before.efer,
            before.xcr0,
        ) != (
            after.cr0, after.cr2, after.cr3, after.cr4, after.cr8, after.efer, after.xcr0,
        )
        || before.kernel_gs_base != after.kernel_gs_base
        || before.pkru != after.pkru
        || before.pdptrs != after.pdptrs;
    if system_changed {
        d.extend(
            after
                .delta_from(before)
                .into_iter()
                .filter(|(id, _)| !matches!(id, RegId::Gpr(_) | RegId::Rip | RegId::Rflags)),
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_matches_the_full_comparison() {
        let before = Regs::default();
        let mut after = before.clone();
        after.gpr[3] = 9;
        after.rip = 4;
        assert_eq!(delta(&before, &after), after.delta_from(&before));
        after.cr4 = 0x20;
        after.seg[2].base = 0x100;
        let mut full = after.delta_from(&before);
        let mut fast = delta(&before, &after);
        full.sort();
        fast.sort();
        assert_eq!(fast, full);
    }
}
