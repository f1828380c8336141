//! The step tracer: runs the backend one instruction at a time and turns each step into
//! trace records (register delta, memory writes, events, keyframes).

use crate::accesses::{self, LinearAccess};
use crate::control::{StepControl, StepVerdict};
use crate::cr_watch;
use crate::decode_cache::DecodeCache;
use crate::devices::{DebugExit, Devices, IoEffect};
use crate::engine_check;
use crate::exceptions;
use crate::guest_view::{self, BackendMemory};
use crate::host_actions;
use crate::insn;
use crate::options::RecordOptions;
use crate::progress::Progress;
use crate::shadow::{self, Shadow};
use crate::sink::RecordSink;
use crate::stuck::{self, StuckWatch};
use crate::tlb::Tlb;
use crate::{Backend, BackendError, Delivery, DeliveryKind, Exit, StepResult, Written};
use guests::host_actions::{HostActionAt, PlannedAction};
use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic};
use std::sync::atomic::Ordering;
use std::time::Instant;
use traces::{
    EndReason, EndRecord, Event, EventKind, IoAccess, Keyframe, MemWrite, MmioAccess, Record,
    RegId, Regs, RunRecord, StepRecord,
};

use mmu::bits::{RFLAGS_DF, RFLAGS_IF};

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
    mmu: history::Watch,
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
    /// The control-register writes of the last step, with the model's decisions, and its
    /// paging-mode transition: what a debugger in the loop is shown.
    step_writes: Vec<(Event, history::WriteOutcome)>,
    step_transition: Option<(traces::PagingMode, traces::PagingMode)>,
    /// The guest-physical memory the last step wrote, kept only while a debugger is in the
    /// loop (its watchpoints); `None` otherwise, so a recording copies nothing.
    step_memory: Option<Vec<traces::MemWrite>>,
    /// Ends the run when the guest makes no progress; off while a debugger drives the loop
    /// (the user there decides, and may change the state to leave the loop).
    stuck: Option<StuckWatch>,
    /// Runs ([`RecordOptions::runs`]): whether the backend can run, and the instructions run
    /// since the last progress (past [`stuck::quiet_run_allowance`] the guest is stepped, so
    /// that the stuck watch judges it instruction by instruction), and the probes that found
    /// no loop since the last progress.
    runs_supported: bool,
    quiet_run_steps: u64,
    quiet_probes: u32,
    /// Reading the host's events failed once (reported, not retried noisily).
    host_failed: bool,
    /// The latest host records, for a debugger (at most [`RECENT_HOST`]).
    recent_host: Vec<traces::HostRecord>,
    host_layout: &'static mmu::Layout,
    /// A debugger drives the loop: host events are read after every step.
    host_every_step: bool,
    /// A buffer reused by every step for the guest bytes it compares with the shadow.
    scratch: Vec<u8>,
    /// Translations of the planning walks (see [`crate::tlb`] for when it is cleared).
    tlb: Tlb,
    decoded: DecodeCache,
    /// The vCPU now stepped, how many there are, and the state of the others (see [`Vcpu`]).
    vcpu: u32,
    vcpus: u32,
    parked: Vec<Option<Vcpu>>,
    /// The step at which the current vCPU's turn began ([`RecordOptions::vcpu_quantum`]).
    turn_start: u64,
    /// A loop the stuck watch found waits with interrupts enabled for a timer due in virtual
    /// time: it is judged once past this step (cleared by progress).
    stuck_judged_after: Option<u64>,
    /// Host actions still to perform ([`RecordOptions::host_actions`], or the original
    /// trace's when re-executing), in the order given.
    host_actions: Vec<HostActionAt>,
}

/// What the tracer keeps per vCPU: its registers, its MMU model (KVM keeps one MMU per vCPU)
/// and its translation cache. The current vCPU's live in the tracer's own fields; the others
/// are parked here until the interleaving selects them.
pub(crate) struct Vcpu {
    pub(crate) regs: Regs,
    pub(crate) mmu: history::Watch,
    engine_check_pending: bool,
    tlb: Tlb,
}

/// Host records a debugger is shown (`monitor host`).
const RECENT_HOST: usize = 64;

/// Host events are read out of the kernel's buffers every this many steps (and at the end):
/// often enough that its per-CPU buffers never fill, rarely enough to cost little.
const HOST_DRAIN_STEPS: u64 = 2048;

/// What the instruction about to run will do, decoded with the registers before it.
struct Plan {
    insn: Option<Instruction>,
    /// [`accesses::segment_writes`] of `insn`.
    segment_writes: u8,
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
        mut mmu: Vec<history::Watch>,
    ) -> Result<Tracer<'a>, BackendError> {
        let vcpus = backend.vcpus().max(1);
        if mmu.len() != vcpus as usize {
            return Err(BackendError::Other(format!(
                "{} MMU models for {vcpus} vCPU(s)",
                mmu.len()
            )));
        }
        let mut parked = vec![None];
        for (i, mmu) in mmu.drain(1..).enumerate() {
            backend.select_vcpu(i as u32 + 1)?;
            parked.push(Some(Vcpu {
                regs: backend.regs_full()?,
                mmu,
                engine_check_pending: false,
                tlb: Tlb::default(),
            }));
        }
        backend.select_vcpu(0)?;
        let mmu = mmu.pop().expect("one MMU model per vCPU");
        let regs = backend.regs_full()?;
        let shadow = Shadow::new(&shadow::ram(&*backend));
        let host_layout = mmu::policy_for_release(&backend.info().host_kernel)
            .unwrap_or_else(|| mmu::policies().last().expect("policies"))
            .layout;
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
            step_writes: Vec::new(),
            step_transition: None,
            step_memory: None,
            stuck: Some(StuckWatch::default()),
            runs_supported: true,
            quiet_run_steps: 0,
            quiet_probes: 0,
            host_failed: false,
            recent_host: Vec::new(),
            host_layout,
            host_every_step: false,
            scratch: Vec::new(),
            tlb: Tlb::default(),
            decoded: DecodeCache::default(),
            vcpu: 0,
            vcpus,
            parked,
            turn_start: 0,
            stuck_judged_after: None,
            host_actions: match &opts.replay_inputs {
                Some(inputs) => host_actions::replayed(inputs),
                None => opts.host_actions.clone(),
            },
        })
    }

    /// The interleaving: the current vCPU keeps its turn for
    /// [`RecordOptions::vcpu_quantum`] instructions while it can run; then the next vCPU after
    /// it that can take a step, round robin (step by step: one instruction each). Halted
    /// vCPUs and APs waiting for a startup IPI are skipped. When none can run, time skips to
    /// the next timer; when nothing can wake any, the run ends. The switch points depend only
    /// on instruction counts and the guest's own state, so a re-recording makes the same.
    fn schedule(&mut self) -> Option<Stop> {
        if self.vcpus == 1 {
            return None;
        }
        let quantum = self.opts.vcpu_quantum();
        if quantum > 1 && self.turn_left() > 0 && self.backend.vcpu_runnable(self.vcpu) {
            return None;
        }
        self.turn_start = self.step;
        loop {
            let next = (1..=self.vcpus)
                .map(|k| (self.vcpu + k) % self.vcpus)
                .find(|&v| self.backend.vcpu_runnable(v));
            if let Some(v) = next {
                return self.switch_to(v).err();
            }
            if !self.backend.wait_for_any() {
                return Some(Stop {
                    reason: EndReason::Halted,
                    message: format!(
                        "every vCPU halted or waits for a startup IPI, and nothing can wake \
                         one (after {} steps)",
                        self.step
                    ),
                });
            }
        }
    }

    /// Instructions left in the current vCPU's turn (several vCPUs).
    fn turn_left(&self) -> u64 {
        let used = self.step - self.turn_start;
        self.opts.vcpu_quantum().saturating_sub(used)
    }

    /// Makes `v` the stepped vCPU: the current one's state is parked, `v`'s taken out, and
    /// the trace says that the records that follow are `v`'s.
    fn switch_to(&mut self, v: u32) -> Result<(), Stop> {
        if v == self.vcpu {
            return Ok(());
        }
        let Some(next) = self.parked.get_mut(v as usize).and_then(Option::take) else {
            return Err(Stop {
                reason: EndReason::Error,
                message: format!("vCPU {v} does not exist"),
            });
        };
        if let Err(e) = self.backend.select_vcpu(v) {
            self.parked[v as usize] = Some(next);
            return Err(Stop {
                reason: EndReason::Error,
                message: format!("selecting vCPU {v}: {e}"),
            });
        }
        let old = Vcpu {
            regs: std::mem::replace(&mut self.regs, next.regs),
            mmu: std::mem::replace(&mut self.mmu, next.mmu),
            engine_check_pending: std::mem::replace(
                &mut self.engine_check_pending,
                next.engine_check_pending,
            ),
            tlb: std::mem::replace(&mut self.tlb, next.tlb),
        };
        self.parked[self.vcpu as usize] = Some(old);
        self.vcpu = v;
        // Other vCPUs wrote memory since this one ran: its cached translations may be stale.
        self.tlb.clear();
        self.append(Record::Vcpu(traces::VcpuSwitch {
            step: self.step,
            vcpu: v,
        }));
        Ok(())
    }

    /// Every vCPU's registers after a keyframe of the current one's (several vCPUs only).
    fn vcpus_keyframe(&mut self) {
        if self.vcpus == 1 {
            return;
        }
        let regs = self
            .parked
            .iter()
            .map(|p| {
                p.as_ref()
                    .map_or_else(|| self.regs.clone(), |p| p.regs.clone())
            })
            .collect();
        self.append(Record::Vcpus(traces::VcpusKeyframe {
            step: self.step,
            current: self.vcpu,
            regs,
        }));
    }

    fn append(&mut self, record: Record) {
        if self.sink_error.is_none() {
            if let Err(e) = self.sink.append(&record) {
                self.sink_error = Some(e);
            }
        }
    }

    fn event(&mut self, rip: u64, kind: EventKind) {
        self.event_at(self.step, rip, kind);
    }

    /// An event about an earlier step (a finding settled after its write).
    fn event_at(&mut self, step: u64, rip: u64, kind: EventKind) {
        let e = Event {
            id: self.next_event,
            step,
            rip,
            kind,
        };
        self.next_event += 1;
        self.append(Record::Event(e));
    }

    /// The host's KVM is told that this step ended; every [`HOST_DRAIN_STEPS`] steps its
    /// events so far are written.
    fn host_step_ended(&mut self) {
        let Some(host) = self.backend.host() else {
            return;
        };
        host.step_ended(self.step);
        if self.host_every_step || self.step.is_multiple_of(HOST_DRAIN_STEPS) {
            self.host_records();
        }
    }

    /// Writes the host events of the steps ended so far (each record names its step, which
    /// may be before records already written). A host that stops answering is reported once
    /// as a record of lost events and left alone.
    pub fn host_records(&mut self) {
        let Some(host) = self.backend.host() else {
            return;
        };
        match host.take() {
            Ok(records) => {
                for r in records {
                    if self.host_every_step {
                        if self.recent_host.len() == RECENT_HOST {
                            self.recent_host.remove(0);
                        }
                        self.recent_host.push(r.clone());
                    }
                    self.append(Record::Host(r));
                }
            }
            Err(why) => {
                if !self.host_failed {
                    self.host_failed = true;
                    eprintln!("mmurr: warning: reading the host's events failed: {why}");
                }
            }
        }
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
        self.vcpus_keyframe();
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
            self.step_memory = Some(Vec::new());
            self.host_every_step = true;
        }
        // Runs advance the step count by many at once: tick when it crosses a multiple of 256.
        let mut next_tick = 0u64;
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
            if self.step >= next_tick {
                next_tick = (self.step | 255) + 1;
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
                // The debugger may change memory the tracer does not see written.
                self.tlb.clear();
                let view = crate::StepView {
                    step: self.step,
                    regs: &self.regs,
                    mmu: &self.mmu,
                    writes: &self.step_writes,
                    transition: self.step_transition,
                    memory: self.step_memory.as_deref().unwrap_or_default(),
                    host: &self.recent_host,
                    host_layout: self.host_layout,
                    vcpu: self.vcpu,
                    vcpus: self.vcpus,
                    parked: &self.parked,
                };
                match c.before_step(&view, &mut *self.backend) {
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
            if let Some(stop) = self.schedule() {
                return stop;
            }
            if let Some(action) = self.due_host_action() {
                match action.map_or_else(Some, |a| self.host_action_step(a)) {
                    Some(stop) => return stop,
                    // The loop re-checks its stop conditions before the next instruction.
                    None => continue,
                }
            }
            if control.is_none() {
                match self.run_once() {
                    Ok(0) => {}
                    // The loop re-checks its stop conditions before the next instruction.
                    Ok(_) => continue,
                    Err(stop) => return stop,
                }
            }
            if let Some(stop) = self.step_once() {
                return stop;
            }
        }
    }

    // --- runs (RecordOptions::runs; the backend's side is mmurr-emu's engine/run.rs) ---

    /// Lets the backend run instructions that need no step of their own, up to the next
    /// keyframe or the step budget, and records them as one [`RunRecord`]. Returns how many
    /// retired (0: step the next instruction).
    fn run_once(&mut self) -> Result<u64, Stop> {
        // Pending findings want the addresses each instruction touches, and the engine check
        // after a CR event looks at the next instruction's accesses: step those.
        // A loop judged only after a timer due in virtual time runs up to it.
        let judged_after = self.stuck_judged_after.filter(|&j| self.step < j);
        if !self.opts.runs
            || !self.runs_supported
            || self.mmu.wants_touches()
            || self.engine_check_pending
            || (self.stuck.is_some()
                && judged_after.is_none()
                && self.quiet_run_steps >= stuck::quiet_run_allowance(self.quiet_probes))
        {
            return Ok(0);
        }
        let interval = self.opts.keyframe_interval.max(1);
        let mut max =
            (interval - self.step % interval).min(self.opts.max_steps.saturating_sub(self.step));
        if let Some(from) = self.opts.single_step_from {
            max = max.min(from.saturating_sub(self.step));
            if max == 0 {
                return Ok(0);
            }
        }
        match host_actions::run_limit(&self.host_actions, self.step) {
            Some(0) => return Ok(0),
            Some(limit) => max = max.min(limit),
            None => {}
        }
        if let Some(j) = judged_after {
            max = max.min(j - self.step);
        } else if self.stuck.is_some() {
            // Quiet runs go no further than the stuck watch's threshold; past it, steps.
            max = max.min(stuck::quiet_run_allowance(self.quiet_probes) - self.quiet_run_steps);
        }
        if self.vcpus > 1 {
            // A run ends with the vCPU's turn.
            max = max.min(self.turn_left());
            if max == 0 {
                return Ok(0);
            }
        }
        let ran = match self.backend.run(max) {
            None => {
                self.runs_supported = false;
                return Ok(0);
            }
            Some(r) => r,
        };
        let no_plan = Plan {
            insn: None,
            segment_writes: 0,
            accesses: Vec::new(),
            writes: Vec::new(),
            ad_entries: Vec::new(),
        };
        let ran = match ran {
            Ok(r) if r.count > max => {
                return Err(self.backend_failure(
                    BackendError::Engine(format!(
                        "the backend ran {} instructions when asked for at most {max}",
                        r.count
                    )),
                    &no_plan,
                ))
            }
            Ok(r) => r,
            Err(e) => return Err(self.backend_failure(e, &no_plan)),
        };
        if ran.count == 0 {
            return Ok(0);
        }
        let before = self.regs.clone();
        let after = match self.backend.regs_full() {
            Ok(r) => r,
            Err(e) => return Err(self.backend_failure(e, &no_plan)),
        };
        let mem = self.memory_writes(&no_plan, &ran.written, false, &before, &after);
        let wrote = !mem.is_empty();
        let first = self.step + 1;
        self.step += ran.count;
        self.append(Record::Run(RunRecord {
            first,
            step: self.step,
            rip: before.rip,
            regs: delta(&before, &after),
            mem,
        }));
        if ran.retired != ran.count {
            // Iterations of one `rep` instruction: `mmurr diff` counts instructions.
            let count = u32::try_from(ran.retired).unwrap_or(u32::MAX);
            self.event_at(first, before.rip, EventKind::Retired { count });
        }
        self.quiet_run_steps = if wrote {
            self.quiet_probes = 0;
            0
        } else {
            self.quiet_run_steps.saturating_add(ran.count)
        };
        if wrote {
            if let Some(watch) = self.stuck.as_mut() {
                // Progress: the stuck watch starts afresh, as after a step that wrote.
                let _ = watch.observe(&after, true);
                self.stuck_judged_after = None;
            }
        }
        self.regs = after;
        if self.step.checked_rem(self.opts.keyframe_interval) == Some(0) {
            self.keyframe(false);
        }
        Ok(ran.count)
    }
    // --- end runs ---

    fn plan(&mut self) -> Plan {
        let mem = BackendMemory(&*self.backend);
        let mut ad_entries = Vec::new();
        let mut bytes = [0u8; 15];
        let n = accesses::fetch_bytes(
            &mut self.tlb,
            &self.regs,
            &self.cpu,
            &mem,
            &mut bytes,
            &mut ad_entries,
        );
        let bitness = insn::bitness(&self.regs);
        let decoded = self
            .decoded
            .decode(&mut self.factory, &bytes[..n], bitness, self.regs.rip);
        let (insn, accesses, segment_writes) = match decoded {
            Some(d) => (
                Some(d.insn),
                accesses::operand_accesses_of(&d.memory, &self.regs),
                d.segment_writes,
            ),
            None => (None, Vec::new(), 0),
        };
        let mut writes = Vec::new();
        for a in &accesses {
            if let Some(r) =
                self.tlb
                    .translate_range(&self.regs, &self.cpu, &mem, a, &mut ad_entries)
            {
                if a.access == mmu::Access::Write {
                    writes.extend(r);
                }
            }
        }
        Plan {
            insn,
            segment_writes,
            accesses,
            writes,
            ad_entries,
        }
    }

    /// One instruction; `Some` when the run ends.
    fn step_once(&mut self) -> Option<Stop> {
        self.step_writes.clear();
        self.step_transition = None;
        let mut plan = self.plan();
        let before = self.regs.clone();
        if let Some(i) = &plan.insn {
            // With an in-kernel irqchip KVM would wait in HLT forever when nothing can wake it
            // (with several vCPUs, another may still run, or wake this one with an NMI).
            if i.mnemonic() == Mnemonic::Hlt && before.rflags & RFLAGS_IF == 0 && self.vcpus == 1 {
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
        let StepResult { exit, mut written } = match self.backend.step() {
            Ok(r) => r,
            Err(e) => return Some(self.backend_failure(e, &plan)),
        };
        if exit == Exit::Interrupted {
            // No instruction retired, but the engine may have written (A/D bits) already.
            self.tlb.clear();
            return None; // the loop re-checks its stop conditions
        }
        self.step += 1;
        let events_before = self.next_event;
        let mut io_events = Vec::new();
        let mut stop = None;
        match exit {
            Exit::Stepped | Exit::Interrupted => {}
            Exit::IoOut { port, size, data } => {
                io_events.push(EventKind::Io(IoAccess {
                    port,
                    write: true,
                    size,
                    data,
                }));
                self.device_time();
                match self.devices.io_out(port, size, data) {
                    IoEffect::Exit { status } => {
                        stop = Some(Stop {
                            reason: EndReason::DebugExit { status },
                            message: format!(
                                "the guest wrote {status:#x} to the debug-exit port 0xf4 (exit code {})",
                                DebugExit::exit_code(status)
                            ),
                        });
                    }
                    IoEffect::Reset(cause) => {
                        stop = Some(Stop {
                            reason: EndReason::Shutdown,
                            message: format!(
                                "the guest reset the machine with {cause} at RIP {:#x}; mmurr ends \
                                 the run at a reset, as at a triple fault",
                                before.rip
                            ),
                        });
                    }
                    IoEffect::None => {}
                }
                if let Err(e) = self.device_interrupts() {
                    return Some(self.backend_failure(e, &plan));
                }
            }
            Exit::IoIn { port, size } => {
                self.device_time();
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
                if let Err(e) = self
                    .finish_read(&mut written, &mut io_events)
                    .and_then(|()| self.device_interrupts())
                {
                    return Some(self.backend_failure(e, &plan));
                }
                stop = self.polling_stop();
            }
            Exit::MmioRead { gpa, size } => {
                let read = self.mmio_read(gpa, size);
                if let Err(e) = read.and_then(|e| {
                    io_events.push(e);
                    self.finish_read(&mut written, &mut io_events)
                }) {
                    return Some(self.backend_failure(e, &plan));
                }
                stop = self.polling_stop();
            }
            Exit::MmioWrite { gpa, size, data } => io_events.push(self.mmio_write(gpa, size, data)),
            // With several vCPUs, the halted one waits and the others run on.
            Exit::Halted if self.vcpus > 1 => {}
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
        let mut after = match if full {
            self.backend.regs_full()
        } else {
            self.backend.regs()
        } {
            Ok(r) => r,
            Err(e) => return Some(self.backend_failure(e, &plan)),
        };
        let beyond = self.retired_beyond(&mut plan, &exit, &before, &after);
        if let Err(e) = self.replay_results(&plan, &beyond, &exit, &before, &mut after) {
            return Some(self.backend_failure(e, &plan));
        }
        let (deliveries, delivered_and_ran) = self.deliveries(&plan, &before, &after);
        // A step that delivered and also ran the handler's first instruction, or returned with
        // `iret` and ran the instruction returned to (PVM): two instructions, as on emu.
        let also_ran = match delivered_and_ran {
            Some(ran) => Some(ran),
            None if beyond.is_empty() && exit == Exit::Stepped => {
                plan.insn.as_ref().and_then(|i| {
                    exceptions::returned_and_ran(i, &before, &after, &self.cpu, &self.shadow)
                })
            }
            None => None,
        };
        if let Some((i, regs)) = &also_ran {
            self.plan_accesses(&mut plan, i, regs);
        }
        let delivered = !deliveries.is_empty();
        let mem_writes = self.memory_writes(&plan, &written, delivered, &before, &after);
        let wrote = !mem_writes.is_empty();
        if let Some(kept) = self.step_memory.as_mut() {
            kept.clone_from(&mem_writes);
        }
        let regs = delta(&before, &after);
        self.append(Record::Step(StepRecord {
            step: self.step,
            rip: before.rip,
            regs,
            mem: mem_writes,
        }));
        self.host_step_ended();
        let count = 1 + beyond.len() as u32 + u32::from(also_ran.is_some());
        if count > 1 {
            self.event(before.rip, EventKind::Retired { count });
        }
        for kind in io_events {
            self.event(before.rip, kind);
        }
        let excepted = !deliveries.is_empty();
        // A step that delivered an external interrupt at the boundary ran no instruction: the
        // planned CR write did not happen (not even as a faulting attempt).
        let planned = planned.filter(|_| {
            !deliveries
                .first()
                .is_some_and(|d| d.kind != DeliveryKind::Exception)
        });
        let retired = plan
            .insn
            .as_ref()
            .is_some_and(|i| retired(i, &before, &after));
        // Addresses touched by this step count for findings caused by earlier writes only.
        if self.mmu.wants_touches() {
            let touched = ::insn::touched(plan.insn.as_ref(), &before);
            let mem = BackendMemory(&*self.backend);
            let found = self.mmu.on_touch(&touched, &mem);
            self.found_events(found);
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
        // After the write it answered with #GP, if any: attempted write, then the fault.
        for d in &deliveries {
            self.event(before.rip, exceptions::event(d));
        }
        if let Some(watch) = self.stuck.as_mut().filter(|_| stop.is_none()) {
            let progress = wrote
                || self.next_event != events_before
                || plan.insn.as_ref().is_some_and(stuck::reads_port);
            if progress {
                self.quiet_run_steps = 0; // runs: see run_once
                self.quiet_probes = 0;
            }
            let found = watch.observe(&after, progress);
            let found = match found {
                // A loop waiting with interrupts enabled for a timer still to come in virtual
                // time (a tick is 500 000 instructions at HZ 250) is judged after it: it is
                // stuck only if the deadline passes and still nothing arrives.
                Some(_) if after.rflags & RFLAGS_IF != 0 => {
                    match self.backend.instructions_to_next_timer() {
                        Some(n) if self.step < self.stuck_judged_after.unwrap_or(u64::MAX) => {
                            let at = self.step.saturating_add(n).saturating_add(1);
                            let judge = *self.stuck_judged_after.get_or_insert(at);
                            (self.step >= judge).then_some(found).flatten()
                        }
                        _ => found,
                    }
                }
                f => f,
            };
            if progress {
                self.stuck_judged_after = None;
            }
            stop = found.map(|s| Stop {
                reason: EndReason::Stuck,
                message: stuck::message(s, &before, plan.insn.as_ref()),
            });
            let (quiet, looping) = watch.probing();
            if self.opts.runs
                && !looping
                && self.quiet_run_steps >= stuck::quiet_run_allowance(self.quiet_probes)
                && quiet >= stuck::probe_steps(self.quiet_probes)
            {
                // The probe saw no loop: run again, longer before the next probe.
                *watch = StuckWatch::default();
                self.quiet_probes += 1;
                self.quiet_run_steps = 0;
            }
        }
        self.regs = after;
        if self.step.checked_rem(self.opts.keyframe_interval) == Some(0) {
            self.keyframe(false);
        }
        stop.or_else(|| {
            let message = self.devices.replay_divergence()?;
            Some(Stop {
                reason: EndReason::Error,
                message,
            })
        })
    }

    /// The instructions after the planned one that this step also retired (a KVM single step
    /// on some hosts runs `endbr64` and the next `push` together), added to the plan so their
    /// memory writes and accesses are traced. They are decoded with the registers before the
    /// step, exact for what such a step retires: `endbr64` changes none of them.
    fn retired_beyond(
        &mut self,
        plan: &mut Plan,
        exit: &Exit,
        before: &Regs,
        after: &Regs,
    ) -> Vec<Instruction> {
        let Some(first) = plan.insn.as_ref().filter(|_| *exit == Exit::Stepped) else {
            return Vec::new();
        };
        let mem = BackendMemory(&*self.backend);
        let beyond = ::insn::retired_beyond(first, before, &self.cpu, &mem, after.rip);
        let mut regs = before.clone();
        for i in &beyond {
            regs.rip = i.ip();
            self.plan_accesses(plan, i, &regs);
        }
        beyond
    }

    /// Adds the operand accesses of `i`, run from `regs`, to the plan (another instruction the
    /// step retired).
    fn plan_accesses(&mut self, plan: &mut Plan, i: &Instruction, regs: &Regs) {
        let mem = BackendMemory(&*self.backend);
        for a in accesses::operand_accesses(&mut self.factory, i, regs) {
            if let Some(r) = accesses::translate_range(
                regs,
                &self.cpu,
                &mem,
                a.linear,
                a.len,
                a.access,
                &mut plan.ad_entries,
            ) {
                if a.access == mmu::Access::Write {
                    plan.writes.extend(r);
                }
            }
            plan.accesses.push(a);
        }
    }

    /// Input replay (`mmurr verify`): the nondeterministic instructions this step retired
    /// (`insn::nondeterministic`) get the results the recording has for them, written into
    /// the guest's registers.
    fn replay_results(
        &mut self,
        plan: &Plan,
        beyond: &[Instruction],
        exit: &Exit,
        before: &Regs,
        after: &mut Regs,
    ) -> Result<(), BackendError> {
        if self.opts.replay_inputs.is_none() || *exit != Exit::Stepped {
            return Ok(());
        }
        let Some(first) = &plan.insn else {
            return Ok(());
        };
        if beyond.is_empty() && after.rip != ::insn::fall_through(first, before) {
            return Ok(()); // faulted or a rep iteration: nothing retired with results
        }
        let mut changed = false;
        let mut rip = before.rip;
        for i in std::iter::once(first).chain(beyond) {
            if ::insn::nondeterministic(i).is_some() {
                let Some(r) = self.devices.replayed_results(rip, &insn::format(i)) else {
                    break; // diverged: the step loop ends the run after this step
                };
                for (n, v) in r.gprs {
                    if let Some(g) = after.gpr.get_mut(n as usize) {
                        *g = v;
                    }
                }
                after.rflags = (after.rflags & !r.rflags_mask) | (r.rflags & r.rflags_mask);
                changed = true;
            }
            rip = ::insn::fall_through(i, before);
        }
        if changed {
            self.backend.set_regs(after)?;
        }
        Ok(())
    }

    /// Answers an MMIO read from the devices and hands the value to the backend.
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<EventKind, BackendError> {
        let data = self.devices.mmio_read(gpa, size);
        self.backend.complete_mmio_read(data)?;
        Ok(EventKind::Mmio(MmioAccess {
            gpa,
            write: false,
            size,
            data,
        }))
    }

    fn mmio_write(&mut self, gpa: u64, size: u8, data: u64) -> EventKind {
        self.devices.mmio_write(gpa);
        EventKind::Mmio(MmioAccess {
            gpa,
            write: true,
            size,
            data,
        })
    }

    /// The rest of an instruction that waited for an `in`/MMIO value: what the completion
    /// wrote, and the further MMIO accesses of the same instruction (the write of a
    /// read-modify-write such as `or [mmio], 1`), which belong to this step.
    fn finish_read(
        &mut self,
        written: &mut Written,
        io_events: &mut Vec<EventKind>,
    ) -> Result<(), BackendError> {
        loop {
            let rest = self.backend.take_completion();
            *written = std::mem::replace(written, Written::Unknown).merge(rest.written);
            match rest.exit {
                Exit::Stepped => return Ok(()),
                Exit::MmioWrite { gpa, size, data } => {
                    io_events.push(self.mmio_write(gpa, size, data))
                }
                Exit::MmioRead { gpa, size } => io_events.push(self.mmio_read(gpa, size)?),
                other => {
                    return Err(BackendError::Engine(format!(
                        "the backend reported {other:?} while completing an I/O instruction"
                    )))
                }
            }
        }
    }

    /// What the step delivered to the guest: as the backend reports it, or (KVM) inferred
    /// from the state after the step, with the handler's first instruction when the step also
    /// ran it.
    fn deliveries(
        &mut self,
        plan: &Plan,
        before: &Regs,
        after: &Regs,
    ) -> (Vec<Delivery>, Option<(Instruction, Regs)>) {
        if let Some(d) = self.backend.take_deliveries() {
            return (d, None);
        }
        let mem = BackendMemory(&*self.backend);
        match exceptions::infer(plan.insn.as_ref(), before, after, &self.cpu, &mem) {
            Some(i) => (vec![i.delivery], i.also_ran),
            None => (Vec::new(), None),
        }
    }

    /// Gives the devices the guest's time: the backend's virtual time, or (KVM) one derived
    /// from the step count at the emu backend's rate, so the RTC reads alike on both.
    fn device_time(&mut self) {
        let ns = self
            .backend
            .virtual_time_ns()
            .unwrap_or(self.step << platform::clock::ICOUNT_SHIFT);
        self.devices.set_time(ns);
    }

    /// Interrupt lines the devices changed, driven on the backend's interrupt controllers.
    fn device_interrupts(&mut self) -> Result<(), BackendError> {
        for (gsi, level) in self.devices.take_irq_changes() {
            self.backend.set_irq_line(gsi, level)?;
        }
        Ok(())
    }

    fn polling_stop(&self) -> Option<Stop> {
        let (access, n) = self.devices.unhandled.polling(self.opts.poll_limit)?;
        Some(Stop {
            reason: EndReason::Error,
            message: format!(
                "the guest keeps polling a device that is not there: {access} {n} times in a \
                 row with no other I/O; mmurr emulates {}",
                crate::devices::EMULATED
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
        let ctx = ::insn::write_context(before);
        let mut decisions = Vec::new();
        let mut found = Vec::new();
        for w in writes {
            let cause = self.next_event;
            let kind = EventKind::CrWrite(w.clone());
            self.event(before.rip, kind.clone());
            let mem = BackendMemory(&*self.backend);
            if let Some(out) = self
                .mmu
                .on_write(cause, self.step, before.rip, &w, &ctx, &after_cr, &mem)
            {
                decisions.extend(
                    out.decisions.iter().enumerate().map(|(p, d)| {
                        EventKind::Mmu(history::to_trace::decision(p as u16, cause, d))
                    }),
                );
                found.extend(out.findings.iter().cloned());
                let event = Event {
                    id: cause,
                    step: self.step,
                    rip: before.rip,
                    kind,
                };
                self.step_writes.push((event, out));
            }
        }
        if from != to {
            self.event(before.rip, EventKind::Transition { from, to });
            self.step_transition = Some((from, to));
        }
        for kind in decisions {
            self.event(before.rip, kind);
        }
        self.found_events(found);
    }

    /// Findings as events at the step of the write they are about.
    fn found_events(&mut self, found: Vec<history::Found>) {
        for f in found {
            self.event_at(f.step, f.rip, EventKind::Finding(f.finding));
        }
    }

    /// The memory the step wrote, as the trace records it; applied to the shadow.
    fn memory_writes(
        &mut self,
        plan: &Plan,
        written: &Written,
        delivered: bool,
        before: &Regs,
        after: &Regs,
    ) -> Vec<MemWrite> {
        let ranges: Vec<(u64, u64)> = match written {
            Written::Ranges(r) => r.clone(),
            Written::Unknown | Written::DirtyPages(_) => {
                let mut r = plan.writes.clone();
                r.extend(plan.ad_entries.iter().map(|&(gpa, len)| (gpa, len as u64)));
                if let Some(i) = &plan.insn {
                    r.extend(self.string_writes(i, before, after));
                }
                r.extend(self.implicit_writes(plan, delivered, before, after));
                r
            }
        };
        let mut out = self.read_ranges(ranges, true);
        let mut applied = false;
        if let Written::DirtyPages(pages) = written {
            // Exact: every byte that changed. The decoded ranges only widen a change to the
            // whole operand or paging-structure entry it belongs to, as the emu backend records
            // writes, so traces of the two backends compare equal. Applied first, they leave a
            // page whose every write was decoded equal to the shadow: one compare, no diff.
            for w in &out {
                self.shadow.apply(w);
            }
            applied = true;
            let mut rest = Vec::new();
            self.changed_bytes(pages, &mut rest);
            if !rest.is_empty() {
                rest.extend(out.iter().map(|w| (w.gpa, w.data.len() as u64)));
                out = self.read_ranges(rest, false);
                applied = false;
            }
        }
        if !applied {
            for w in &out {
                self.shadow.apply(w);
            }
        }
        match written {
            Written::Unknown => self.tlb.clear(), // inferred: a write may be missing
            _ => self.tlb.observe(&out),
        }
        out
    }

    /// The bytes of RAM in `ranges`, overlapping or adjacent ones merged, in address order;
    /// with `changed_only`, leaving out the ranges the shadow already holds.
    fn read_ranges(&mut self, mut ranges: Vec<(u64, u64)>, changed_only: bool) -> Vec<MemWrite> {
        ranges.sort_unstable();
        let mut out: Vec<MemWrite> = Vec::new();
        let mut data = std::mem::take(&mut self.scratch);
        for (gpa, len) in ranges {
            if len == 0 || len > 1 << 20 {
                continue;
            }
            data.resize(len as usize, 0);
            if !self.backend.read_phys(gpa, &mut data) {
                continue; // MMIO or outside RAM: not memory
            }
            if changed_only && self.shadow.holds(gpa, &data) {
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
                _ => out.push(MemWrite {
                    gpa,
                    data: data.clone(),
                }),
            }
        }
        self.scratch = data;
        out
    }

    /// Exact memory: the runs of bytes of the possibly-dirty pages that differ from the shadow,
    /// appended to `out`. No inference: accessed/dirty bits, exception frames and writes the
    /// decoder cannot see are all there.
    fn changed_bytes(&mut self, pages: &[u64], out: &mut Vec<(u64, u64)>) {
        // Usually one or two pages, already in order: sorted (a copy) only when not.
        let sorted;
        let pages = if pages.windows(2).all(|w| w[0] < w[1]) {
            pages
        } else {
            let mut p = pages.to_vec();
            p.sort_unstable();
            p.dedup();
            sorted = p;
            &sorted[..]
        };
        // Only for a backend whose RAM is not mapped (filled lazily: zeroing a page per call
        // showed in the step rate).
        let mut buf = std::mem::take(&mut self.scratch);
        for &gpa in pages {
            let mapped = usize::try_from(gpa).ok().and_then(|start| {
                let ram = self.backend.ram()?;
                ram.get(start..start.checked_add(shadow::PAGE)?)
            });
            let real = match mapped {
                Some(r) => r,
                None => {
                    buf.resize(shadow::PAGE, 0);
                    if !self.backend.read_phys(gpa, &mut buf) {
                        continue; // not RAM
                    }
                    &buf[..]
                }
            };
            self.shadow.changed_ranges(gpa, real, out);
        }
        self.scratch = buf;
    }

    /// Writes the CPU makes on its own: descriptor accessed bits (and the page-table A bits on
    /// the way to them) for segment loads, and the frame an exception or interrupt pushes.
    fn implicit_writes(
        &mut self,
        plan: &Plan,
        delivered: bool,
        before: &Regs,
        after: &Regs,
    ) -> Vec<(u64, u64)> {
        let i = plan.insn.as_ref();
        let mut linear = match i {
            Some(_) => accesses::descriptor_accesses(plan.segment_writes, before, after),
            None => Vec::new(),
        };
        let entered_handler = delivered
            || i.is_some_and(|i| {
                i.flow_control() == iced_x86::FlowControl::Next
                    && after.rip != i.next_ip()
                    && after.rip != before.rip
                    || matches!(i.mnemonic(), Mnemonic::Int | Mnemonic::Int3)
            });
        if entered_handler {
            // The pushed frame lies between the new RSP and (at most) 48 bytes above it, in
            // slots the CPU writes one by one (as the emu backend records them): a slot the
            // delivery wrote with its old value, e.g. an error code of 0, is no write.
            let slot = if after.efer & (1 << 10) != 0 {
                8
            } else if after.cr0 & 1 != 0 {
                4
            } else {
                2
            };
            linear.extend((0..48 / slot).map(|n| LinearAccess {
                linear: after.gpr[4].wrapping_add(n * slot),
                len: slot,
                access: mmu::Access::Write,
            }));
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

    /// The host action due before the next instruction, taken off the list, with the vCPU it
    /// names made the current one.
    fn due_host_action(&mut self) -> Option<Result<PlannedAction, Stop>> {
        if self.host_actions.is_empty() {
            return None;
        }
        let rip = ::insn::linear_ip(&self.regs);
        let i = host_actions::due(&self.host_actions, self.step, self.vcpu, rip)?;
        let due = self.host_actions.remove(i);
        if let Some(v) = due.vcpu.filter(|&v| v != self.vcpu) {
            if let Err(stop) = self.switch_to(v) {
                return Some(Err(stop));
            }
            // Its turn starts with the action.
            self.turn_start = self.step;
        }
        Some(Ok(due.action))
    }

    /// Performs host action `planned` on the backend as a step of its own: no instruction
    /// runs, the step's registers are the action's effect, and its events are those of a
    /// control-register write (the action, a transition, one MMU decision per policy, the
    /// findings complete). The backend's registers after it must be the model's
    /// ([`history::host_effect`]): a difference is a self-check failure. `Some` when the run
    /// ends (the backend refused the action).
    fn host_action_step(&mut self, planned: PlannedAction) -> Option<Stop> {
        let action = planned.resolve(&self.cpu);
        let before = self.regs.clone();
        if let Err(e) = self.backend.host_action(&action) {
            let (reason, why) = match e {
                BackendError::HostUnsupported(m) => (EndReason::HostUnsupported, m),
                BackendError::Engine(m) | BackendError::EngineAt(m) | BackendError::Other(m) => {
                    (EndReason::Error, m)
                }
            };
            return Some(Stop {
                reason,
                message: format!(
                    "host action {} before step {} failed: {why}",
                    action.describe(),
                    self.step + 1
                ),
            });
        }
        let after = match self.backend.regs_full() {
            Ok(r) => r,
            Err(e) => {
                return Some(Stop {
                    reason: EndReason::Error,
                    message: format!("reading registers after {}: {e}", action.name()),
                })
            }
        };
        self.step += 1;
        self.append(Record::Step(StepRecord {
            step: self.step,
            rip: before.rip,
            regs: delta(&before, &after),
            mem: Vec::new(),
        }));
        self.host_step_ended();
        let id = self.next_event;
        self.event(before.rip, EventKind::HostAction(action));
        let mem = BackendMemory(&*self.backend);
        let (effect, out) = self.mmu.on_host(
            id,
            self.step,
            before.rip,
            &action,
            &guest_view::control_regs(&before),
            &mem,
        );
        if let Some(failure) = host_actions::self_check(&action, &effect, &after, self.step) {
            self.self_check_failures.push(failure);
        }
        self.cpu = effect.cpu;
        let (from, to) = (
            guest_view::paging_mode(&before),
            guest_view::paging_mode(&after),
        );
        if from != to {
            self.event(before.rip, EventKind::Transition { from, to });
        }
        self.step_writes.clear();
        self.step_transition = (from != to).then_some((from, to));
        for (p, d) in out.decisions.iter().enumerate() {
            let kind = EventKind::Mmu(history::to_trace::decision(p as u16, id, d));
            self.event(before.rip, kind);
        }
        self.step_writes.push((
            Event {
                id,
                step: self.step,
                rip: before.rip,
                kind: EventKind::HostAction(action),
            },
            out.clone(),
        ));
        self.found_events(out.findings);
        // The vCPU's translations and the code it runs may mean something else now.
        self.tlb.clear();
        self.engine_check_pending = self.engine_check_supported;
        self.quiet_run_steps = 0;
        if let Some(watch) = self.stuck.as_mut() {
            let _ = watch.observe(&after, true);
        }
        self.regs = after;
        if self.step.checked_rem(self.opts.keyframe_interval) == Some(0) {
            self.keyframe(false);
        }
        None
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
                self.tlb.clear();
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
        self.vcpus_keyframe();
    }

    /// Findings still waiting for addresses, settled at the end of the run (each vCPU's
    /// under its own records).
    pub fn settle_findings(&mut self) {
        let found = self.mmu.settle_all();
        self.found_events(found);
        let last = self.vcpu;
        for v in 0..self.vcpus {
            let waiting = self.parked[v as usize]
                .as_mut()
                .is_some_and(|p| p.mmu.wants_touches());
            if waiting && self.switch_to(v).is_ok() {
                let found = self.mmu.settle_all();
                self.found_events(found);
            }
        }
        // The last keyframe is the vCPU's that ran the last step, as every keyframe is.
        if self.vcpu != last {
            let _ = self.switch_to(last);
        }
    }

    fn backend_failure(&mut self, e: BackendError, plan: &Plan) -> Stop {
        let rip = self.backend.regs().map(|r| r.rip).unwrap_or(self.regs.rip);
        match e {
            BackendError::HostUnsupported(m) => Stop {
                reason: EndReason::HostUnsupported,
                message: m,
            },
            BackendError::EngineAt(message) => Stop {
                reason: EndReason::Error,
                message,
            },
            BackendError::Engine(m) | BackendError::Other(m) => {
                let what = plan
                    .insn
                    .as_ref()
                    .map(insn::format)
                    .unwrap_or_else(|| "(undecodable)".into());
                Stop {
                    reason: EndReason::Error,
                    message: format!("the engine failed at RIP {rip:#x} on \"{what}\": {m}"),
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
    after.rip == ::insn::fall_through(i, before)
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
