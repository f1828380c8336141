//! The replay target: a trace as a gdb target with reverse execution.
//!
//! Position = a step of the trace (the state after that many instructions). Forward and
//! backward motion are seeks on a [`Timeline`], so every stop is instruction-exact, memory
//! included. Breakpoints are searched for with a register-only scan of the step records
//! (cheap: no memory is rebuilt until the stop is known); backward searches go window by
//! window between register keyframes, so their cost is bounded by the distance travelled,
//! not by the trace length.

use crate::arch::{SystemRegId, SystemRegs, X86_64System};
use crate::breakpoints::{
    write_notes, Breakpoints, CatchKind, Catchpoint, Sites, WatchOrigin, Watchpoint,
};
use crate::guest_memory;
use crate::monitor::{self, Command};
use crate::whole_trace::Background;
use gdbstub::common::Signal;
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::base::reverse_exec::ReplayLogPosition;
use gdbstub::target::TargetError;
use mmu::CpuModel;
use replayer::views::{cpu_mode, event_line};
use replayer::Timeline;
use std::path::Path;
use traces::{Event, EventKind, Regs, Step};

/// How often (in steps) a long search looks for a Ctrl-C from gdb.
const POLL_EVERY: u64 = 4096;

/// What gdb asked for last; carried out in the event loop so a long search can be
/// interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    ReverseContinue,
    Step,
    ReverseStep,
}

/// How a resume ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// Stopped; with a line for gdb's console when a catchpoint did it.
    Stop(SingleThreadStopReason<u64>, Option<String>),
    /// gdb sent something (normally Ctrl-C) before the search finished; the position is where
    /// the search had got to, and the search goes on if gdb lets it.
    Interrupted,
}

enum Scan {
    Found(Step, Hit),
    Interrupted(Step),
    NotFound,
}

/// What a search stopped at.
enum Hit {
    Breakpoint,
    Watch(Watchpoint, Step),
}

pub struct ReplayTarget {
    timeline: Timeline,
    /// Events, policies' models and host events, read in the background (see `whole_trace`).
    whole: Background,
    cpu: CpuModel,
    bps: Breakpoints,
    sites: Sites,
    phys: bool,
    pending: Option<Resume>,
    last_note: Option<String>,
}

pub type Error = String;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl ReplayTarget {
    /// Opens a trace and starts running every modelled policy over it in the background (what
    /// `role`, `walk`, `check` and the policy catchpoints read).
    pub fn open(path: &Path) -> anyhow::Result<ReplayTarget> {
        let mut timeline = Timeline::open(path)?;
        let cpu = replayer::cpu_model(&timeline.header().guest);
        timeline.seek(0)?;
        Ok(ReplayTarget {
            whole: Background::start(path),
            timeline,
            cpu,
            bps: Breakpoints::default(),
            sites: Sites::default(),
            phys: false,
            pending: None,
            last_note: None,
        })
    }

    /// A new gdb connection starts at step 0 with nothing set.
    pub fn reset_session(&mut self) -> Result<(), Error> {
        self.timeline.seek(0).map_err(err)?;
        self.bps = Breakpoints::default();
        self.sites = Sites::default();
        self.phys = false;
        self.pending = None;
        self.last_note = None;
        Ok(())
    }

    pub fn position(&self) -> Step {
        self.timeline.current().step
    }

    pub fn last_step(&self) -> Step {
        self.timeline.last_step()
    }

    pub fn event_count(&mut self) -> u64 {
        self.timeline.reader().event_count()
    }

    pub fn regs(&self) -> &Regs {
        &self.timeline.current().regs
    }

    pub fn set_pending(&mut self, r: Resume) {
        self.pending = Some(r);
    }

    pub fn cancel_pending(&mut self) {
        self.pending = None;
    }

    fn seek(&mut self, step: Step) -> Result<(), Error> {
        self.timeline.seek(step).map_err(err)?;
        Ok(())
    }

    fn policy_names(&self) -> Vec<String> {
        self.timeline.header().policies.clone()
    }

    /// Carries out the pending resume. `poll` says whether gdb sent something.
    pub fn run(&mut self, mut poll: impl FnMut() -> bool) -> Result<RunOutcome, Error> {
        let Some(action) = self.pending else {
            // Nothing asked: report where we are (gdb never waits without resuming).
            return Ok(RunOutcome::Stop(SingleThreadStopReason::DoneStep, None));
        };
        let cur = self.position();
        let last = self.last_step();
        let outcome = match action {
            Resume::Step if cur >= last => end_of_log(ReplayLogPosition::End),
            Resume::Step => {
                self.seek(cur + 1)?;
                RunOutcome::Stop(SingleThreadStopReason::DoneStep, None)
            }
            Resume::ReverseStep if cur == 0 => end_of_log(ReplayLogPosition::Begin),
            Resume::ReverseStep => {
                self.seek(cur - 1)?;
                RunOutcome::Stop(SingleThreadStopReason::DoneStep, None)
            }
            Resume::Continue => {
                let site = self.sites.next_after(cur);
                let limit = site.unwrap_or(last);
                match self.scan_forward(cur, limit, &mut poll)? {
                    Scan::Found(s, hit) => self.stop_at_hit(s, hit)?,
                    Scan::Interrupted(s) => {
                        self.seek(s)?;
                        return Ok(RunOutcome::Interrupted);
                    }
                    Scan::NotFound => match site {
                        Some(s) => self.stop_at_site(s)?,
                        None => {
                            self.seek(last)?;
                            end_of_log(ReplayLogPosition::End)
                        }
                    },
                }
            }
            Resume::ReverseContinue => {
                let site = self.sites.prev_before(cur);
                let floor = site.unwrap_or(0);
                match self.scan_backward(cur, floor, &mut poll)? {
                    Scan::Found(s, hit) => self.stop_at_hit(s, hit)?,
                    Scan::Interrupted(s) => {
                        self.seek(s)?;
                        return Ok(RunOutcome::Interrupted);
                    }
                    Scan::NotFound => match site {
                        Some(s) => self.stop_at_site(s)?,
                        None => {
                            self.seek(0)?;
                            end_of_log(ReplayLogPosition::Begin)
                        }
                    },
                }
            }
        };
        self.pending = None;
        Ok(outcome)
    }

    /// Stops at `s` for a breakpoint or a watchpoint; a watchpoint gdb did not set
    /// (`watch-phys`) is a SIGTRAP with a console line saying which write it was.
    fn stop_at_hit(&mut self, s: Step, hit: Hit) -> Result<RunOutcome, Error> {
        self.seek(s)?;
        let (w, wrote) = match hit {
            Hit::Breakpoint => {
                return Ok(RunOutcome::Stop(SingleThreadStopReason::SwBreak(()), None));
            }
            Hit::Watch(w, wrote) => (w, wrote),
        };
        if w.origin == WatchOrigin::Gdb {
            return Ok(RunOutcome::Stop(
                SingleThreadStopReason::Watch {
                    tid: (),
                    kind: WatchKind::Write,
                    addr: w.addr,
                },
                None,
            ));
        }
        let note = format!("mmurr: watch-phys stop: {w} written by step {wrote}\n");
        self.last_note = Some(note.clone());
        Ok(RunOutcome::Stop(
            SingleThreadStopReason::Signal(Signal::SIGTRAP),
            Some(note),
        ))
    }

    fn stop_at_site(&mut self, s: Step) -> Result<RunOutcome, Error> {
        self.seek(s)?;
        let what = self.sites.at(s).join("\n  ");
        let note = format!("mmurr: break-on stop at step {s}:\n  {what}\n");
        self.last_note = Some(note.clone());
        Ok(RunOutcome::Stop(
            SingleThreadStopReason::Signal(Signal::SIGTRAP),
            Some(note),
        ))
    }

    /// The first state in `(cur, limit]` whose linear pc is a breakpoint, or that a write to
    /// a watchpoint made.
    fn scan_forward(
        &mut self,
        cur: Step,
        limit: Step,
        poll: &mut dyn FnMut() -> bool,
    ) -> Result<Scan, Error> {
        if !self.bps.any_addr() && self.bps.watches().is_empty() {
            return Ok(Scan::NotFound);
        }
        let bps = self.bps.clone();
        let mut result = Scan::NotFound;
        let regs = self.regs().clone();
        let parked = self.timeline.current().parked.clone();
        self.timeline
            .walk_steps(cur, regs, parked, limit, &mut |v| {
                if let Some(w) = bps.watch_hit(v.mem) {
                    result = Scan::Found(v.step, Hit::Watch(w.clone(), v.step));
                    return true;
                }
                if bps.has_addr(insn::linear_ip(v.regs)) {
                    result = Scan::Found(v.step, Hit::Breakpoint);
                    return true;
                }
                if v.step % POLL_EVERY == 0 && poll() {
                    result = Scan::Interrupted(v.step);
                    return true;
                }
                false
            })
            .map_err(err)?;
        Ok(result)
    }

    /// Going back from `cur` to `floor`: the last state in `(floor, cur)` whose linear pc is a
    /// breakpoint, or the state before the last instruction at or before `cur` that wrote to a
    /// watchpoint, whichever is later; searched window by window between keyframes.
    fn scan_backward(
        &mut self,
        cur: Step,
        floor: Step,
        poll: &mut dyn FnMut() -> bool,
    ) -> Result<Scan, Error> {
        if !self.bps.any_addr() && self.bps.watches().is_empty() {
            return Ok(Scan::NotFound);
        }
        let bps = self.bps.clone();
        let lo = floor + 1;
        let mut end = cur; // states strictly before `end`, writes up to `end`, are still to search
        while end > floor {
            let (kstep, kregs, kparked) = match self
                .timeline
                .reader()
                .keyframe_cpus_at_or_before(end - 1)
                .map_err(err)?
            {
                Some(k) => k,
                None => {
                    let entry = self.timeline.entry();
                    (0, entry.regs.clone(), entry.parked.clone())
                }
            };
            let mut last: Option<(Step, Hit)> = None;
            if kstep >= lo && bps.has_addr(insn::linear_ip(&kregs)) {
                last = Some((kstep, Hit::Breakpoint));
            }
            self.timeline
                .walk_steps(kstep, kregs, kparked, end, &mut |v| {
                    // The write of step `v.step` is undone at the state before it.
                    if let Some(w) = bps.watch_hit(v.mem).filter(|_| v.step >= lo) {
                        last = Some((v.step - 1, Hit::Watch(w.clone(), v.step)));
                    }
                    if v.step < end && v.step >= lo && bps.has_addr(insn::linear_ip(v.regs)) {
                        last = Some((v.step, Hit::Breakpoint));
                    }
                    false
                })
                .map_err(err)?;
            if let Some((s, hit)) = last {
                return Ok(Scan::Found(s, hit));
            }
            if kstep >= end {
                return Err(format!(
                    "the trace's keyframe at step {kstep} is out of order"
                ));
            }
            end = kstep;
            if poll() {
                return Ok(Scan::Interrupted(end.max(floor)));
            }
        }
        Ok(Scan::NotFound)
    }

    // ---- gdb's view of the state ----

    pub fn gdb_regs(&self) -> SystemRegs {
        SystemRegs::from_trace(self.regs())
    }

    /// The registers of gdb thread `tid`.
    fn gdb_regs_of(&self, tid: Tid) -> Option<SystemRegs> {
        let v = threads::vcpu_of(tid)?;
        self.timeline
            .current()
            .regs_of(v)
            .map(SystemRegs::from_trace)
    }

    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> usize {
        let snap = self.timeline.current();
        guest_memory::read(&snap.regs, &self.cpu, &snap.memory, self.phys, addr, buf)
    }

    /// [`ReplayTarget::read_memory`] through the address space of gdb thread `tid`.
    fn read_memory_of(&self, tid: Tid, addr: u64, buf: &mut [u8]) -> usize {
        let snap = self.timeline.current();
        let regs = threads::vcpu_of(tid)
            .and_then(|v| snap.regs_of(v))
            .unwrap_or(&snap.regs);
        guest_memory::read(regs, &self.cpu, &snap.memory, self.phys, addr, buf)
    }

    /// vCPUs of the trace: gdb threads 1..=N, as QEMU's gdbstub presents CPUs.
    pub fn vcpus(&self) -> u32 {
        self.timeline.header().vcpu_count()
    }

    /// A stop as gdb is told it: the whole machine moves in the recorded total order, as rr
    /// does, and with several vCPUs every stop names the thread (vCPU) that executed the step
    /// stopped at.
    pub fn stop_reason(&self, r: SingleThreadStopReason<u64>) -> MultiThreadStopReason<u64> {
        threads::stop_reason(self.vcpus(), self.timeline.current().vcpu(), r)
    }

    pub fn add_breakpoint(&mut self, addr: u64) -> bool {
        self.bps.add_addr(addr)
    }

    pub fn remove_breakpoint(&mut self, addr: u64) -> bool {
        self.bps.remove_addr(addr)
    }

    // ---- catchpoints ----

    fn policy_index(&self, name: &str) -> Result<usize, String> {
        self.whole
            .get()?
            .analysis
            .policy_index(name)
            .ok_or_else(|| format!("unknown policy {name:?}; `monitor policies` lists them"))
    }

    /// Where each catchpoint stops, recomputed whenever the set changes.
    fn compute_sites(&self) -> Result<Sites, String> {
        let names = self.policy_names();
        let whole = self.whole.get()?;
        let mut sites = Vec::new();
        for c in self.bps.catches() {
            if let Some(p) = &c.policy {
                self.policy_index(p)?;
            }
            match c.kind {
                CatchKind::Transition => {
                    for e in &whole.events {
                        if matches!(e.kind, EventKind::Transition { .. }) {
                            sites.push((e.step, event_line::line(e, &names)));
                        }
                    }
                }
                CatchKind::Divergence if c.policy.is_none() => {
                    for e in &whole.events {
                        if matches!(
                            e.kind,
                            EventKind::Finding(_) | EventKind::EngineDivergence { .. }
                        ) {
                            sites.push((
                                e.step,
                                format!("recorded {}", event_line::line(e, &names)),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let policy_names: Vec<&'static str> =
            whole.analysis.policies.iter().map(|p| p.name).collect();
        for w in &whole.analysis.writes {
            let cause = event_line::line(&w.event, &names);
            for note in write_notes(
                self.bps.catches(),
                &cause,
                w.write().map(|cw| cw.reg),
                &policy_names,
                &w.decisions,
                &w.stale_before,
            ) {
                sites.push((w.event.step, note));
            }
        }
        Ok(Sites::new(sites))
    }

    // ---- monitor ----

    /// Every policy's tracker as it stood after `step`.
    fn trackers_at(&self, step: u64) -> Result<Vec<&mmu::Tracker>, String> {
        let analysis = &self.whole.get()?.analysis;
        Ok(match analysis.last_write_at(step) {
            Some(w) => w.after.iter().collect(),
            None => analysis.initial.iter().collect(),
        })
    }

    /// The last control-register write at or before `step`.
    fn last_write(
        &self,
        step: u64,
        names: &[String],
    ) -> Result<Option<monitor::LastWrite<'_>>, String> {
        Ok(self
            .whole
            .get()?
            .analysis
            .last_write_at(step)
            .map(|w| monitor::LastWrite {
                line: event_line::line(&w.event, names),
                id: w.event.id,
                decisions: &w.decisions,
            }))
    }

    /// The policy `role` and friends use when none is named: the first one the trace was
    /// recorded with, else the newest modelled.
    fn default_policy(&self) -> Result<usize, String> {
        let analysis = &self.whole.get()?.analysis;
        Ok(self
            .timeline
            .header()
            .policies
            .iter()
            .find_map(|n| analysis.policy_index(n))
            .unwrap_or(analysis.policies.len().saturating_sub(1)))
    }

    /// Every event of the trace, in order.
    fn events(&self) -> Result<&[Event], String> {
        Ok(&self.whole.get()?.events)
    }

    fn event_index_at_or_before(&self, step: Step) -> Result<Option<usize>, String> {
        Ok(self
            .events()?
            .partition_point(|e| e.step <= step)
            .checked_sub(1))
    }

    /// Runs one monitor command; the text to print, or the error to print.
    pub fn monitor(&mut self, line: &[u8]) -> Result<String, String> {
        let cmd = monitor::parse(line)?;
        let step = self.position();
        let names = self.policy_names();
        Ok(match cmd {
            Command::Help => monitor::HELP.to_string(),
            Command::Mode => format!(
                "step {step} of {}\n{}\nmemory: {} addresses",
                self.last_step(),
                cpu_mode::describe(self.regs()),
                if self.phys { "physical" } else { "virtual" }
            ),
            Command::Disas(n) => {
                let snap = self.timeline.current();
                monitor::disassembly(&snap.regs, &self.cpu, &snap.memory, n)
            }
            Command::Phys => {
                self.phys = true;
                "gdb memory accesses now use guest-physical addresses".into()
            }
            Command::Virt => {
                self.phys = false;
                "gdb memory accesses now use virtual addresses (through the guest's page tables)"
                    .into()
            }
            Command::Role(p) => {
                let p = match p {
                    Some(name) => self.policy_index(&name)?,
                    None => self.default_policy()?,
                };
                let t = self
                    .whole
                    .get()?
                    .analysis
                    .tracker_at(p, step)
                    .ok_or("no MMU state for this policy")?;
                monitor::role_text(step, t, p, self.last_write(step, &names)?.as_ref())
            }
            Command::Walk(addr, p) => {
                let trackers = self.trackers_at(step)?;
                let kept: Vec<&mmu::Tracker> = match p {
                    Some(name) => vec![trackers[self.policy_index(&name)?]],
                    None => trackers
                        .into_iter()
                        .filter(|t| t.stale().is_some())
                        .collect(),
                };
                let snap = self.timeline.current();
                let cr = insn::control_regs(&snap.regs);
                monitor::walk_text(&cr, &self.cpu, &snap.memory, addr, &kept)
            }
            Command::Host => match &self.timeline.header().host {
                Some(h) if matches!(h.events, traces::HostEventsStatus::Recorded { .. }) => self
                    .whole
                    .get()?
                    .host
                    .text(step, replayer::host_layout(self.timeline.header())),
                Some(h) => format!("this trace has no host events: {:?}", h.events),
                None => "this trace has no host facts (recorded by an older mmurr or on emu)"
                    .to_string(),
            },
            Command::Policies => {
                let default = self.default_policy()?;
                let analysis = &self.whole.get()?.analysis;
                let mut out = vec![format!(
                    "policies analysed ({} MMU); recorded with: {}",
                    analysis.flavour.name(),
                    if names.is_empty() {
                        "-".to_string()
                    } else {
                        names.join(", ")
                    }
                )];
                for (i, p) in analysis.policies.iter().enumerate() {
                    out.push(format!(
                        "{} {:<10} {}",
                        if i == default { "*" } else { " " },
                        p.name,
                        p.summary
                    ));
                }
                out.join("\n")
            }
            Command::Check => monitor::check_text(
                step,
                &self.trackers_at(step)?,
                self.last_write(step, &names)?.as_ref(),
            ),
            Command::Events(n) => {
                // Start at the first event of the latest step with events at or before here,
                // and mark that step's events: they are what brought us here.
                let events = self.events()?;
                let here = self.event_index_at_or_before(step)?.map(|i| events[i].step);
                let start = here.map_or(0, |s| events.partition_point(|e| e.step < s));
                let mut out: Vec<String> = events
                    .iter()
                    .skip(start)
                    .take(n)
                    .map(|e| {
                        let mark = if Some(e.step) == here { ">" } else { " " };
                        format!("{mark} {}", event_line::line(e, &names))
                    })
                    .collect();
                if out.is_empty() {
                    out.push("no events".into());
                }
                out.join("\n")
            }
            Command::When => {
                let mut out = vec![format!("step {step} of {}", self.last_step())];
                let events = self.events()?;
                match self.event_index_at_or_before(step)? {
                    Some(i) => out.push(format!(
                        "last event: {}",
                        event_line::line(&events[i], &names)
                    )),
                    None => out.push("no event yet".into()),
                }
                let next = events.partition_point(|e| e.step <= step);
                if let Some(e) = events.get(next) {
                    out.push(format!("next event: {}", event_line::line(e, &names)));
                }
                if let Some(note) = &self.last_note {
                    out.push(note.trim_end().to_string());
                }
                out.join("\n")
            }
            Command::Seek(s) => {
                if s > self.last_step() {
                    return Err(format!(
                        "step {s} is past the end (last step {})",
                        self.last_step()
                    ));
                }
                self.seek(s)?;
                format!("at step {s}; run `maintenance flush register-cache` so gdb rereads the registers")
            }
            Command::GotoEvent(id) => {
                let e = self
                    .events()?
                    .iter()
                    .find(|e| e.id == id)
                    .ok_or_else(|| format!("no event #{id}"))?
                    .clone();
                self.seek(e.step)?;
                format!(
                    "at step {} after {}; run `maintenance flush register-cache` so gdb rereads the registers",
                    e.step,
                    event_line::line(&e, &names)
                )
            }
            Command::BreakOn(c) => {
                let mut next = self.bps.clone();
                next.add_catch(c.clone());
                let before = std::mem::replace(&mut self.bps, next);
                match self.compute_sites() {
                    Ok(s) => self.sites = s,
                    Err(e) => {
                        self.bps = before;
                        return Err(e);
                    }
                }
                format!("continue and reverse-continue stop at every {c}")
            }
            Command::BreakOnClear => {
                self.bps.clear_catches();
                self.sites = Sites::default();
                "break-on cleared".into()
            }
            Command::Mappings { coalesce } => {
                let snap = self.timeline.current();
                monitor::mappings_text(&snap.regs, &self.cpu, &snap.memory, coalesce)
            }
            c @ (Command::WatchPhys(..) | Command::WatchPhysClear | Command::WatchList) => {
                monitor::watch_phys(&mut self.bps, &c)
            }
            Command::BreakOnList => {
                let list: Vec<String> = self
                    .bps
                    .catches()
                    .iter()
                    .map(Catchpoint::to_string)
                    .collect();
                if list.is_empty() {
                    "no break-on set".into()
                } else {
                    format!("break-on: {}", list.join(", "))
                }
            }
        })
    }
}

fn end_of_log(pos: ReplayLogPosition) -> RunOutcome {
    RunOutcome::Stop(SingleThreadStopReason::ReplayLog { tid: None, pos }, None)
}

// ---- gdbstub plumbing ----

use crate::threads::{self, copy_register};
use gdbstub::common::Tid;
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSingleStep,
    MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints as GdbBreakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint,
    HwWatchpointOps, SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetResult};

impl Target for ReplayTarget {
    type Arch = X86_64System;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        if self.vcpus() > 1 {
            BaseOps::MultiThread(self)
        } else {
            BaseOps::SingleThread(self)
        }
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for ReplayTarget {
    fn read_registers(&mut self, regs: &mut SystemRegs) -> TargetResult<(), Self> {
        *regs = self.gdb_regs();
        Ok(())
    }

    /// A trace is history: its registers cannot be changed.
    fn write_registers(&mut self, _regs: &SystemRegs) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_memory(start, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    /// A trace is history: its memory cannot be changed.
    fn write_addrs(&mut self, _start: u64, _data: &[u8]) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<()> for ReplayTarget {
    fn read_register(
        &mut self,
        _tid: (),
        id: SystemRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        Ok(copy_register(&self.gdb_regs(), id, buf))
    }

    fn write_register(
        &mut self,
        _tid: (),
        _id: SystemRegId,
        _val: &[u8],
    ) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }
}

impl SingleThreadResume for ReplayTarget {
    fn resume(&mut self, signal: Option<Signal>) -> Result<(), Self::Error> {
        // A replay cannot deliver signals; gdb passes back the one we stopped with, ignore it.
        let _ = signal;
        self.set_pending(Resume::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, (), Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, (), Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for ReplayTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.set_pending(Resume::Step);
        Ok(())
    }
}

impl ReverseStep<()> for ReplayTarget {
    fn reverse_step(&mut self, _tid: ()) -> Result<(), Self::Error> {
        self.set_pending(Resume::ReverseStep);
        Ok(())
    }
}

// ---- several vCPUs: gdb threads ----

impl MultiThreadBase for ReplayTarget {
    fn read_registers(&mut self, regs: &mut SystemRegs, tid: Tid) -> TargetResult<(), Self> {
        *regs = self.gdb_regs_of(tid).ok_or(TargetError::NonFatal)?;
        Ok(())
    }

    /// A trace is history: its registers cannot be changed.
    fn write_registers(&mut self, _regs: &SystemRegs, _tid: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        match self.read_memory_of(tid, start, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, _start: u64, _data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        threads::list(self.vcpus(), thread_is_active);
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for ReplayTarget {
    fn read_register(
        &mut self,
        tid: Tid,
        id: SystemRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let regs = self.gdb_regs_of(tid).ok_or(TargetError::NonFatal)?;
        Ok(copy_register(&regs, id, buf))
    }

    fn write_register(
        &mut self,
        _tid: Tid,
        _id: SystemRegId,
        _val: &[u8],
    ) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }
}

/// The machine moves as a whole, in the recorded order: stepping any thread steps the
/// machine one instruction (of whichever vCPU ran next), continuing any continues it.
impl MultiThreadResume for ReplayTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        if self.pending.is_none() {
            self.set_pending(Resume::Continue);
        }
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.cancel_pending();
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        if self.pending != Some(Resume::Step) {
            self.set_pending(Resume::Continue);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for ReplayTarget {
    fn set_resume_action_step(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.set_pending(Resume::Step);
        Ok(())
    }
}

impl ReverseStep<Tid> for ReplayTarget {
    fn reverse_step(&mut self, _tid: Tid) -> Result<(), Self::Error> {
        self.set_pending(Resume::ReverseStep);
        Ok(())
    }
}

impl ReverseCont<Tid> for ReplayTarget {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.set_pending(Resume::ReverseContinue);
        Ok(())
    }
}

impl ReverseCont<()> for ReplayTarget {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.set_pending(Resume::ReverseContinue);
        Ok(())
    }
}

impl GdbBreakpoints for ReplayTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

/// gdb's `watch` (write watchpoints; reads are not recorded, so `rwatch`/`awatch` are refused
/// and gdb says it could not insert them).
impl HwWatchpoint for ReplayTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        if kind != WatchKind::Write {
            return Ok(false);
        }
        let snap = self.timeline.current();
        Ok(
            match guest_memory::watchpoint(
                &snap.regs,
                &self.cpu,
                &snap.memory,
                self.phys,
                addr,
                len,
            ) {
                Some(w) => {
                    self.bps.add_watch(w);
                    true
                }
                None => false,
            },
        )
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        _kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        self.bps.remove_watch(WatchOrigin::Gdb, Some((addr, len)));
        Ok(true)
    }
}

impl SwBreakpoint for ReplayTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_breakpoint(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_breakpoint(addr))
    }
}

impl HwBreakpoint for ReplayTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_breakpoint(addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_breakpoint(addr))
    }
}

impl MonitorCmd for ReplayTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        match self.monitor(cmd) {
            Ok(text) => gdbstub::outputln!(out, "{text}"),
            Err(e) => gdbstub::outputln!(out, "error: {e}"),
        }
        Ok(())
    }
}

impl TargetDescriptionXmlOverride for ReplayTarget {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        _length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        crate::target_xml::read_annex(annex, offset, buf).ok_or(TargetError::NonFatal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::NamedTempFile;

    fn synth_trace(steps: u64) -> NamedTempFile {
        let file = NamedTempFile::new().unwrap();
        let header = traces::synth::header("synth", 7);
        let mut w = traces::Writer::create(file.path(), &header).unwrap();
        for r in traces::synth::Synth::new(7, steps, 1000, 500) {
            w.append(&r).unwrap();
        }
        w.finish().unwrap();
        file
    }

    #[test]
    fn long_searches_stop_when_gdb_speaks_and_resume_after() {
        let trace = synth_trace(20_000);
        let mut t = ReplayTarget::open(trace.path()).unwrap();
        let last = t.last_step();
        assert_eq!(last, 20_000);
        t.add_breakpoint(0xdead_0000); // never reached: the whole trace is searched
        t.set_pending(Resume::Continue);
        assert!(matches!(t.run(|| true).unwrap(), RunOutcome::Interrupted));
        assert_eq!(t.position(), POLL_EVERY);
        // A byte that was not Ctrl-C: gdbstub waits again and the search goes on.
        match t.run(|| false).unwrap() {
            RunOutcome::Stop(SingleThreadStopReason::ReplayLog { pos, .. }, None) => {
                assert_eq!(pos, ReplayLogPosition::End)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.position(), last);
        t.set_pending(Resume::ReverseContinue);
        assert!(matches!(t.run(|| true).unwrap(), RunOutcome::Interrupted));
        assert!(t.position() < last);
        match t.run(|| false).unwrap() {
            RunOutcome::Stop(SingleThreadStopReason::ReplayLog { pos, .. }, None) => {
                assert_eq!(pos, ReplayLogPosition::Begin)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.position(), 0);
    }

    #[test]
    fn breakpoints_are_found_forward_and_backward_across_keyframe_windows() {
        let trace = synth_trace(5_000);
        let mut t = ReplayTarget::open(trace.path()).unwrap();
        let pc_at = |t: &mut ReplayTarget, s: Step| {
            t.seek(s).unwrap();
            insn::linear_ip(t.regs())
        };
        let (a, b) = (pc_at(&mut t, 1_234), pc_at(&mut t, 3_999));
        t.seek(0).unwrap();
        t.add_breakpoint(a);
        t.add_breakpoint(b);
        t.set_pending(Resume::Continue);
        assert!(matches!(
            t.run(|| false).unwrap(),
            RunOutcome::Stop(SingleThreadStopReason::SwBreak(()), None)
        ));
        assert_eq!(t.position(), 1_234);
        t.set_pending(Resume::Continue);
        t.run(|| false).unwrap();
        assert_eq!(t.position(), 3_999);
        // Backward from the end: the later one first, across several keyframe windows.
        t.seek(5_000).unwrap();
        t.set_pending(Resume::ReverseContinue);
        t.run(|| false).unwrap();
        assert_eq!(t.position(), 3_999);
        t.set_pending(Resume::ReverseContinue);
        t.run(|| false).unwrap();
        assert_eq!(t.position(), 1_234);
        // The registers there are the timeline's, memory included.
        assert_eq!(insn::linear_ip(t.regs()), a);
    }
}
