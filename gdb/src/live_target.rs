//! The live server: gdb drives a running guest through the recorder's stepping loop.
//!
//! Two threads. The VM thread is the recorder's own: before every instruction it calls
//! [`LiveControl::before_step`], which returns at once while the guest runs (a channel poll,
//! a RIP comparison, a control-register comparison) and blocks while gdb has it stopped,
//! answering gdb's requests with the backend it was handed. The backend never leaves its
//! thread (a KVM vCPU fd is best kept on one thread). The gdb thread owns the socket and runs
//! gdbstub with [`LiveTarget`], whose every operation is a request over a channel; while the
//! guest runs it waits for a stop event and watches the socket for Ctrl-C.
//!
//! Breakpoints are RIP comparisons, software and hardware alike: the loop single-steps anyway,
//! so nothing is patched into guest memory (`int3` at CPL0 fails on this host's PVM KVM, and
//! a patched HLT only exits without an in-kernel irqchip) and no debug register is armed.

use crate::arch::{SystemRegId, SystemRegs, X86_64System};
use crate::breakpoints::{write_notes, Breakpoints, WatchOrigin, Watchpoint};
use crate::guest_memory;
use crate::monitor::{self, Command};
use crate::server::console_packet;
use crate::threads::{self, copy_register};
use gdbstub::common::Signal;
use gdbstub::common::Tid;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason, SingleThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSingleStep,
    MultiThreadSingleStepOps,
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
use gdbstub::target::{Target, TargetError, TargetResult};
use mmu::Tracker;
use recorder::guest_view::BackendMemory;
use recorder::{Backend, StepView};
use replayer::views::{cpu_mode, event_line};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use traces::{EventKind, Regs};

/// How the VM thread should go on after [`LiveControl::before_step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Execute the next instruction.
    Run,
    /// Execute it, but gdb changed registers or memory first: re-read the machine state.
    RunModified,
    /// End the run (gdb sent `kill`, or the user interrupted a wait for gdb).
    Stop(String),
}

/// gdb thread -> VM thread. A `vcpu` of `None` is the one that ran the last instruction (the
/// only one of a one-vCPU guest); `Some(v)` is gdb thread `v + 1` (see [`threads`]).
#[derive(Debug)]
enum Request {
    ReadRegs(Option<u32>),
    WriteRegs(Box<SystemRegs>, Option<u32>),
    WriteReg(usize, Vec<u8>, Option<u32>),
    ReadMem(u64, usize, Option<u32>),
    WriteMem(u64, Vec<u8>, Option<u32>),
    AddBreakpoint(u64),
    RemoveBreakpoint(u64),
    /// gdb's `watch`: address and length (translated on the VM thread, which has the memory).
    AddWatch(u64, u64),
    RemoveWatch(u64, u64),
    Monitor(String),
    Continue,
    /// One instruction of this vCPU (`None`: of whichever runs next): the machine goes on
    /// in the recorder's round-robin order until that vCPU has retired one.
    Step(Option<u32>),
    /// Ctrl-C while running.
    Interrupt,
    /// gdb detached: run on without it.
    Detach,
    Kill,
}

/// Why the guest stopped.
#[derive(Clone, Debug)]
enum Why {
    Step,
    Breakpoint,
    Interrupt,
    Catch(String),
    /// The instruction just executed wrote to a watchpoint.
    Watch(Watchpoint),
}

/// VM thread -> gdb thread.
#[derive(Debug)]
enum Reply {
    Regs(Box<Regs>),
    Bytes(Vec<u8>),
    Done(bool),
    Text(String),
    /// Stopped after an instruction of this vCPU.
    Stopped(Why, u32),
    /// The run ended (guest exit, halt, error, budget): with an exit code for gdb when the
    /// guest exited through the debug-exit port.
    Ended {
        message: String,
        code: Option<u8>,
    },
}

/// What the VM side is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    /// Waiting for gdb (at entry, or after a stop).
    Stopped,
    /// Running until a breakpoint, catchpoint or Ctrl-C; `from` is the step it resumed at
    /// (a breakpoint there is the one gdb is stepping off, not a new hit). `single`: a
    /// `stepi`, of `vcpu` when named.
    Running {
        from: u64,
        single: bool,
        vcpu: Option<u32>,
    },
    /// gdb detached or went away.
    Free,
}

/// The VM-thread half: call [`LiveControl::before_step`] before every instruction and
/// [`LiveControl::finished`] when the run ends.
pub struct LiveControl {
    requests: Receiver<Request>,
    replies: Sender<Reply>,
    state: RunState,
    bps: Breakpoints,
    phys: bool,
    modified: bool,
    /// The last control-register write seen (event line, id, every policy's decision), for
    /// `monitor role` and `check`.
    last_write: Option<(String, u64, Vec<mmu::Decision>)>,
    /// gdb may change registers and memory. Not while recording: the trace would no longer
    /// replay (its step records describe the guest's own changes only).
    allow_writes: bool,
    interrupted: Arc<AtomicBool>,
    last_note: Option<String>,
    /// The gdb thread: waited for when the run ends, so the exit reaches gdb before the
    /// process does.
    server: Option<std::thread::JoinHandle<()>>,
}

/// The gdb-thread half.
pub struct LiveTarget {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    /// A stop the VM reported while gdb thought it was already stopping (Ctrl-C race).
    ended: Option<(String, Option<u8>)>,
    /// The machine's vCPUs: with several, gdb sees threads (see [`threads`]).
    vcpus: u32,
    /// A multi-threaded resume steps (gdb's `vCont;s:N`): the vCPU of thread N.
    step_thread: Option<Option<u32>>,
}

/// A connected pair, for a machine of `vcpus` vCPUs.
pub fn pair(
    allow_writes: bool,
    vcpus: u32,
    interrupted: Arc<AtomicBool>,
) -> (LiveControl, LiveTarget) {
    let (req_tx, req_rx) = channel();
    let (rep_tx, rep_rx) = channel();
    (
        LiveControl {
            requests: req_rx,
            replies: rep_tx,
            state: RunState::Stopped,
            bps: Breakpoints::default(),
            phys: false,
            modified: false,
            last_write: None,
            allow_writes,
            interrupted,
            last_note: None,
            server: None,
        },
        LiveTarget {
            requests: req_tx,
            replies: rep_rx,
            ended: None,
            vcpus: vcpus.max(1),
            step_thread: None,
        },
    )
}

impl LiveControl {
    fn send(&self, r: Reply) {
        // The gdb thread gone means gdb went away; the next request poll notices.
        let _ = self.replies.send(r);
    }

    /// Called before instruction `view.step + 1`, with what the recorder knows then.
    pub fn before_step(&mut self, view: &StepView<'_>, backend: &mut dyn Backend) -> Verdict {
        let (step, regs) = (view.step, view.regs);
        let catch = self.observe(view);
        match self.state {
            RunState::Free => return Verdict::Run,
            RunState::Stopped => {}
            RunState::Running { from, single, vcpu } => {
                let why = match self.requests.try_recv() {
                    Ok(Request::Interrupt) => Some(Why::Interrupt),
                    Ok(Request::Detach) => {
                        self.state = RunState::Free;
                        return Verdict::Run;
                    }
                    Ok(Request::Kill) => return Verdict::Stop("killed from gdb".into()),
                    // Nothing else is sent while running; ignore a confused client.
                    Ok(_) => None,
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.state = RunState::Free;
                        return Verdict::Run;
                    }
                };
                let why = why.or_else(|| {
                    if single && step > from && vcpu.is_none_or(|v| v == view.vcpu) {
                        Some(Why::Step)
                    } else if let Some(w) = self.bps.watch_hit(view.memory).filter(|_| step > from)
                    {
                        Some(Why::Watch(w.clone()))
                    } else if step > from && self.bps.has_addr(insn::linear_ip(regs)) {
                        Some(Why::Breakpoint)
                    } else {
                        catch.map(Why::Catch)
                    }
                });
                match why {
                    None => return Verdict::Run,
                    Some(w) => {
                        self.state = RunState::Stopped;
                        self.send(Reply::Stopped(w, view.vcpu));
                    }
                }
            }
        }
        self.serve_stopped(view, backend)
    }

    /// What the catchpoints say about the instruction just executed: its control-register
    /// writes as the recorder's own MMU model decided them, and its paging-mode transition.
    fn observe(&mut self, view: &StepView<'_>) -> Option<String> {
        // Called before every instruction: most made no write and no transition.
        if view.writes.is_empty() && view.transition.is_none() {
            return None;
        }
        let names: Vec<&'static str> = view
            .mmu
            .trackers()
            .iter()
            .map(|t| t.policy().name)
            .collect();
        let recorded: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut notes = Vec::new();
        for (event, outcome) in view.writes {
            let EventKind::CrWrite(w) = &event.kind else {
                continue;
            };
            let line = event_line::line(event, &recorded);
            notes.extend(write_notes(
                self.bps.catches(),
                &line,
                Some(w.reg),
                &names,
                &outcome.decisions,
                &outcome.stale_before,
            ));
            self.last_write = Some((line, event.id, outcome.decisions.clone()));
        }
        if let Some((from, to)) = view.transition {
            if self.catching("transition") {
                notes.push(format!("transition {} -> {}", from.name(), to.name()));
            }
        }
        if notes.is_empty() {
            return None;
        }
        let note = format!("mmurr: break-on stop:\n  {}\n", notes.join("\n  "));
        self.last_note = Some(note.clone());
        Some(note)
    }

    fn last_write(&self) -> Option<monitor::LastWrite<'_>> {
        self.last_write
            .as_ref()
            .map(|(line, id, decisions)| monitor::LastWrite {
                line: line.clone(),
                id: *id,
                decisions,
            })
    }

    fn catching(&self, kind: &str) -> bool {
        self.bps.catches().iter().any(|c| c.kind.name() == kind)
    }

    /// Serves gdb while the guest is stopped; returns when gdb resumes it.
    fn serve_stopped(&mut self, view: &StepView<'_>, backend: &mut dyn Backend) -> Verdict {
        let step = view.step;
        let cpu = *view.mmu.cpu();
        let mut regs = view.regs.clone();
        // Another vCPU's registers, as the interleaving parked them; the current one's are
        // `regs`, which gdb may have changed.
        let regs_of = |v: Option<u32>, regs: &Regs| -> Option<Regs> {
            match v {
                None => Some(regs.clone()),
                Some(v) if v == view.vcpu => Some(regs.clone()),
                Some(v) => view.regs_of(v).cloned(),
            }
        };
        // gdb changes only the vCPU that ran last: the others are parked in the recorder.
        let writable = |v: Option<u32>| v.is_none_or(|v| v == view.vcpu);
        loop {
            let req = match self.requests.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    if self.interrupted.load(Ordering::Relaxed) {
                        return Verdict::Stop("interrupted while gdb had the guest stopped".into());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.state = RunState::Free;
                    return self.resume_verdict();
                }
            };
            match req {
                Request::ReadRegs(v) => match regs_of(v, &regs) {
                    Some(r) => self.send(Reply::Regs(Box::new(r))),
                    None => self.send(Reply::Done(false)),
                },
                Request::WriteRegs(_, v) | Request::WriteReg(_, _, v) if !writable(v) => {
                    eprintln!(
                        "mmurr: refused gdb's change to the registers of vCPU {}: only the vCPU \
                         that ran the last instruction (vCPU {}) can be changed",
                        v.unwrap_or_default(),
                        view.vcpu
                    );
                    self.send(Reply::Done(false));
                }
                Request::WriteRegs(..) | Request::WriteReg(..) | Request::WriteMem(..)
                    if !self.allow_writes =>
                {
                    eprintln!(
                        "mmurr: refused gdb's change to registers or memory while recording (the \
                         trace could not replay it); `mmurr run --gdb` allows changes"
                    );
                    self.send(Reply::Done(false));
                }
                Request::WriteRegs(g, _) => {
                    let mut next = regs.clone();
                    g.apply_to(&mut next);
                    let ok = backend.set_regs(&next).is_ok();
                    if ok {
                        regs = next;
                        self.modified = true;
                    }
                    self.send(Reply::Done(ok));
                }
                Request::WriteReg(n, bytes, _) => {
                    let mut g = SystemRegs::from_trace(&regs);
                    let mut ok = g.set(n, &bytes);
                    if ok {
                        let mut next = regs.clone();
                        g.apply_to(&mut next);
                        ok = backend.set_regs(&next).is_ok();
                        if ok {
                            regs = next;
                            self.modified = true;
                        }
                    }
                    self.send(Reply::Done(ok));
                }
                Request::ReadMem(addr, len, v) => {
                    // Through the address space of the thread gdb reads with.
                    let mut buf = vec![0u8; len.min(1 << 20)];
                    let space = regs_of(v, &regs).unwrap_or_else(|| regs.clone());
                    let mem = BackendMemory(&*backend);
                    let n = guest_memory::read(&space, &cpu, &mem, self.phys, addr, &mut buf);
                    buf.truncate(n);
                    self.send(Reply::Bytes(buf));
                }
                Request::WriteMem(addr, data, v) => {
                    let space = regs_of(v, &regs).unwrap_or_else(|| regs.clone());
                    let pieces = {
                        let mem = BackendMemory(&*backend);
                        guest_memory::pieces(&space, &cpu, &mem, self.phys, addr, data.len())
                    };
                    let covered: usize = pieces.iter().map(|p| p.1).sum();
                    let mut ok = covered == data.len();
                    let mut at = 0;
                    for (gpa, n) in pieces {
                        ok &= backend.write_phys(gpa, &data[at..at + n]);
                        at += n;
                    }
                    self.modified |= at > 0;
                    self.send(Reply::Done(ok));
                }
                Request::AddBreakpoint(a) => {
                    let ok = self.bps.add_addr(a);
                    self.send(Reply::Done(ok));
                }
                Request::RemoveBreakpoint(a) => {
                    let ok = self.bps.remove_addr(a);
                    self.send(Reply::Done(ok));
                }
                Request::AddWatch(addr, len) => {
                    let mem = BackendMemory(&*backend);
                    let w = guest_memory::watchpoint(&regs, &cpu, &mem, self.phys, addr, len);
                    let ok = w.is_some();
                    if let Some(w) = w {
                        self.bps.add_watch(w);
                    }
                    self.send(Reply::Done(ok));
                }
                Request::RemoveWatch(addr, len) => {
                    self.bps.remove_watch(WatchOrigin::Gdb, Some((addr, len)));
                    self.send(Reply::Done(true));
                }
                Request::Monitor(line) => {
                    let host = replayer::HostHistory::new(view.host.to_vec(), view.host_layout);
                    let host = (&host, view.host_layout);
                    let at = (step, view.vcpu, view.vcpus);
                    let text = self.monitor(view.mmu, host, at, &regs, backend, &line);
                    self.send(Reply::Text(text));
                }
                Request::Continue => {
                    self.state = RunState::Running {
                        from: step,
                        single: false,
                        vcpu: None,
                    };
                    return self.resume_verdict();
                }
                Request::Step(vcpu) => {
                    self.state = RunState::Running {
                        from: step,
                        single: true,
                        vcpu,
                    };
                    return self.resume_verdict();
                }
                // Already stopped: the stop gdb is waiting for was sent when we stopped.
                Request::Interrupt => {}
                Request::Detach => {
                    self.state = RunState::Free;
                    return self.resume_verdict();
                }
                Request::Kill => return Verdict::Stop("killed from gdb".into()),
            }
        }
    }

    fn resume_verdict(&mut self) -> Verdict {
        if std::mem::take(&mut self.modified) {
            Verdict::RunModified
        } else {
            Verdict::Run
        }
    }

    /// The gdb thread serving this session.
    pub fn set_server(&mut self, server: std::thread::JoinHandle<()>) {
        self.server = Some(server);
    }

    /// The run ended; tell gdb (if it is waiting for a stop), and give the gdb thread a few
    /// seconds to deliver it: the process may exit right after this returns, and gdb would
    /// then see "Remote connection closed" instead of the guest's exit.
    pub fn finished(&mut self, message: &str, code: Option<u8>) {
        let told = matches!(self.state, RunState::Running { .. } | RunState::Stopped);
        if told {
            self.send(Reply::Ended {
                message: message.to_string(),
                code,
            });
        }
        self.state = RunState::Free;
        if let (true, Some(server)) = (told, self.server.take()) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !server.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if server.is_finished() {
                let _ = server.join();
            }
        }
    }

    /// A policy of the session by name (its index and tracker); none named: the first one
    /// recorded, as the replay server defaults.
    fn policy<'w>(
        mmu: &'w history::Watch,
        name: Option<&str>,
    ) -> Result<(usize, &'w Tracker), String> {
        match name {
            None => mmu
                .trackers()
                .first()
                .map(|t| (0, t))
                .ok_or_else(|| "no MMU model in this session".to_string()),
            Some(n) => {
                let p = mmu::policy(n).ok_or_else(|| {
                    format!("unknown policy {n:?}; `monitor policies` lists them")
                })?;
                mmu.trackers()
                    .iter()
                    .enumerate()
                    .find(|(_, t)| t.policy().name == p.name)
                    .ok_or_else(|| format!("policy {n} is not modelled in this session"))
            }
        }
    }

    fn monitor(
        &mut self,
        mmu: &history::Watch,
        host: (&replayer::HostHistory, &'static mmu::Layout),
        (step, vcpu, vcpus): (u64, u32, u32),
        regs: &Regs,
        backend: &dyn Backend,
        line: &str,
    ) -> String {
        let cpu = *mmu.cpu();
        let result: Result<String, String> = (|| {
            Ok(match monitor::parse(line.as_bytes())? {
                Command::Help => monitor::HELP.to_string(),
                Command::Mode => format!(
                    "live, before instruction {}{}\n{}\nmemory: {} addresses",
                    step + 1,
                    if vcpus > 1 { format!(" (vCPU {vcpu}'s registers)") } else { String::new() },
                    cpu_mode::describe(regs),
                    if self.phys { "physical" } else { "virtual" }
                ),
                Command::Disas(n) => {
                    monitor::disassembly(regs, &cpu, &BackendMemory(backend), n)
                }
                Command::Phys => {
                    self.phys = true;
                    "gdb memory accesses now use guest-physical addresses".into()
                }
                Command::Virt => {
                    self.phys = false;
                    "gdb memory accesses now use virtual addresses (through the guest's page tables)".into()
                }
                Command::Role(p) => {
                    let (i, t) = Self::policy(mmu, p.as_deref())?;
                    monitor::role_text(step, t, i, self.last_write().as_ref())
                }
                Command::Walk(addr, p) => {
                    let cr = insn::control_regs(regs);
                    let mem = BackendMemory(backend);
                    let kept: Vec<&Tracker> = match p {
                        Some(name) => vec![Self::policy(mmu, Some(&name))?.1],
                        None => mmu.trackers().iter().filter(|t| t.stale().is_some()).collect(),
                    };
                    monitor::walk_text(&cr, &cpu, &mem, addr, &kept)
                }
                Command::Host => {
                    let (history, layout) = host;
                    if history.records.is_empty() {
                        "no host events (recorded with --no-host-events, on emu, or where \
                         tracefs is not usable: see the trace header)"
                            .to_string()
                    } else {
                        history.text(step, layout)
                    }
                }
                Command::Policies => mmu
                    .trackers()
                    .iter()
                    .map(|t| format!("  {:<10} {}", t.policy().name, t.policy().summary))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Command::Check => {
                    let trackers: Vec<&Tracker> = mmu.trackers().iter().collect();
                    monitor::check_text(step, &trackers, self.last_write().as_ref())
                }
                Command::When => {
                    let mut s = format!("live, {step} instructions executed");
                    if vcpus > 1 {
                        s += &format!(", the last by vCPU {vcpu} (thread {})", vcpu + 1);
                    }
                    if let Some(n) = &self.last_note {
                        s += &format!("\n{}", n.trim_end());
                    }
                    s
                }
                Command::Events(_) | Command::Seek(_) | Command::GotoEvent(_) => {
                    return Err("this needs a trace: record with `mmurr record`, then `mmurr gdb TRACE` (events, seek and goto-event move through history)".into())
                }
                Command::BreakOn(c) => {
                    if let Some(p) = &c.policy {
                        Self::policy(mmu, Some(p))?;
                    }
                    let text = format!("continue stops at every {c}");
                    self.bps.add_catch(c);
                    text
                }
                Command::BreakOnClear => {
                    self.bps.clear_catches();
                    "break-on cleared".into()
                }
                Command::Mappings { coalesce } => {
                    monitor::mappings_text(regs, &cpu, &BackendMemory(backend), coalesce)
                }
                c @ (Command::WatchPhys(..) | Command::WatchPhysClear | Command::WatchList) => {
                    monitor::watch_phys(&mut self.bps, &c)
                }
                Command::BreakOnList => {
                    let list: Vec<String> = self.bps.catches().iter().map(|c| c.to_string()).collect();
                    if list.is_empty() { "no break-on set".into() } else { format!("break-on: {}", list.join(", ")) }
                }
            })
        })();
        match result {
            Ok(t) => t,
            Err(e) => format!("error: {e}"),
        }
    }
}

// ---- the gdb thread ----

type Error = String;

impl LiveTarget {
    fn ask(&mut self, r: Request) -> Result<Reply, Error> {
        self.requests
            .send(r)
            .map_err(|_| "the guest's run has ended".to_string())?;
        loop {
            match self.replies.recv() {
                Ok(Reply::Ended { message, code }) => {
                    self.ended = Some((message, code));
                    return Err("the guest's run has ended".into());
                }
                // A stop from before this request (Ctrl-C race): it was already reported.
                Ok(Reply::Stopped(..)) => continue,
                Ok(r) => return Ok(r),
                Err(_) => return Err("the guest's run has ended".into()),
            }
        }
    }

    fn tell(&mut self, r: Request) -> Result<(), Error> {
        self.requests
            .send(r)
            .map_err(|_| "the guest's run has ended".to_string())
    }
}

impl LiveTarget {
    /// A stop after an instruction of `vcpu`, as gdb is told it (naming the thread when
    /// there are several).
    fn stop_reason(&self, why: &Why, vcpu: u32) -> MultiThreadStopReason<u64> {
        threads::stop_reason(self.vcpus, vcpu, single_stop_reason(why))
    }

    fn read_regs(&mut self, vcpu: Option<u32>) -> TargetResult<SystemRegs, Self> {
        match self
            .ask(Request::ReadRegs(vcpu))
            .map_err(TargetError::Fatal)?
        {
            Reply::Regs(r) => Ok(SystemRegs::from_trace(&r)),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_regs(&mut self, regs: &SystemRegs, vcpu: Option<u32>) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteRegs(Box::new(regs.clone()), vcpu))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_reg(
        &mut self,
        id: SystemRegId,
        val: &[u8],
        vcpu: Option<u32>,
    ) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteReg(id.0, val.to_vec(), vcpu))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_mem(
        &mut self,
        start: u64,
        data: &mut [u8],
        vcpu: Option<u32>,
    ) -> TargetResult<usize, Self> {
        match self
            .ask(Request::ReadMem(start, data.len(), vcpu))
            .map_err(TargetError::Fatal)?
        {
            Reply::Bytes(b) if !b.is_empty() || data.is_empty() => {
                let n = b.len().min(data.len());
                data[..n].copy_from_slice(&b[..n]);
                Ok(n)
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_mem(&mut self, start: u64, data: &[u8], vcpu: Option<u32>) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteMem(start, data.to_vec(), vcpu))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    /// The vCPU of a gdb thread of this machine (`NonFatal` for one it does not have).
    fn vcpu(&self, tid: Tid) -> TargetResult<u32, Self> {
        threads::vcpu_of(tid)
            .filter(|&v| v < self.vcpus)
            .ok_or(TargetError::NonFatal)
    }
}

fn single_stop_reason(why: &Why) -> SingleThreadStopReason<u64> {
    match why {
        Why::Step => SingleThreadStopReason::DoneStep,
        Why::Breakpoint => SingleThreadStopReason::SwBreak(()),
        Why::Interrupt => SingleThreadStopReason::Signal(Signal::SIGINT),
        Why::Catch(_) => SingleThreadStopReason::Signal(Signal::SIGTRAP),
        Why::Watch(w) if w.origin == WatchOrigin::Gdb => SingleThreadStopReason::Watch {
            tid: (),
            kind: WatchKind::Write,
            addr: w.addr,
        },
        Why::Watch(_) => SingleThreadStopReason::Signal(Signal::SIGTRAP),
    }
}

impl Target for LiveTarget {
    type Arch = X86_64System;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        if self.vcpus > 1 {
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

impl SingleThreadBase for LiveTarget {
    fn read_registers(&mut self, regs: &mut SystemRegs) -> TargetResult<(), Self> {
        *regs = self.read_regs(None)?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &SystemRegs) -> TargetResult<(), Self> {
        self.write_regs(regs, None)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        self.read_mem(start, data, None)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.write_mem(start, data, None)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<()> for LiveTarget {
    fn read_register(
        &mut self,
        _tid: (),
        id: SystemRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        Ok(copy_register(&self.read_regs(None)?, id, buf))
    }

    fn write_register(&mut self, _tid: (), id: SystemRegId, val: &[u8]) -> TargetResult<(), Self> {
        self.write_reg(id, val, None)
    }
}

impl SingleThreadResume for LiveTarget {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.tell(Request::Continue)
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for LiveTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.tell(Request::Step(None))
    }
}

// ---- several vCPUs: gdb threads ----

impl MultiThreadBase for LiveTarget {
    fn read_registers(&mut self, regs: &mut SystemRegs, tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu(tid)?;
        *regs = self.read_regs(Some(v))?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &SystemRegs, tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu(tid)?;
        self.write_regs(regs, Some(v))
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    /// Through the address space of thread `tid` (its vCPU's page tables).
    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let v = self.vcpu(tid)?;
        self.read_mem(start, data, Some(v))
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let v = self.vcpu(tid)?;
        self.write_mem(start, data, Some(v))
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        threads::list(self.vcpus, thread_is_active);
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for LiveTarget {
    fn read_register(
        &mut self,
        tid: Tid,
        id: SystemRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let v = self.vcpu(tid)?;
        Ok(copy_register(&self.read_regs(Some(v))?, id, buf))
    }

    fn write_register(&mut self, tid: Tid, id: SystemRegId, val: &[u8]) -> TargetResult<(), Self> {
        let v = self.vcpu(tid)?;
        self.write_reg(id, val, Some(v))
    }
}

/// The machine moves as a whole in the recorder's round-robin order, as it records: `stepi`
/// of a thread runs it until that vCPU has retired one instruction (the others taking their
/// turns meanwhile), continuing any thread continues them all.
impl MultiThreadResume for LiveTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        match self.step_thread.take() {
            Some(v) => self.tell(Request::Step(v)),
            None => self.tell(Request::Continue),
        }
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step_thread = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for LiveTarget {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // A thread this machine lacks (gdb is confused): one instruction of whichever vCPU
        // runs next.
        self.step_thread = Some(threads::vcpu_of(tid).filter(|&v| v < self.vcpus));
        Ok(())
    }
}

impl GdbBreakpoints for LiveTarget {
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

/// gdb's `watch`: write watchpoints on the memory each instruction writes (reads are not
/// tracked, so `rwatch`/`awatch` are refused).
impl HwWatchpoint for LiveTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        if kind != WatchKind::Write {
            return Ok(false);
        }
        match self
            .ask(Request::AddWatch(addr, len))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(ok) => Ok(ok),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        _kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        match self
            .ask(Request::RemoveWatch(addr, len))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(ok) => Ok(ok),
            _ => Err(TargetError::NonFatal),
        }
    }
}

impl SwBreakpoint for LiveTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self
            .ask(Request::AddBreakpoint(addr))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(ok) => Ok(ok),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self
            .ask(Request::RemoveBreakpoint(addr))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(ok) => Ok(ok),
            _ => Err(TargetError::NonFatal),
        }
    }
}

impl HwBreakpoint for LiveTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.add_sw_breakpoint(addr, kind)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.remove_sw_breakpoint(addr, kind)
    }
}

impl MonitorCmd for LiveTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(cmd).into_owned();
        match self.ask(Request::Monitor(line)) {
            Ok(Reply::Text(t)) => gdbstub::outputln!(out, "{t}"),
            Ok(_) => gdbstub::outputln!(out, "error: no answer from the guest"),
            Err(e) => gdbstub::outputln!(out, "error: {e}"),
        }
        Ok(())
    }
}

impl TargetDescriptionXmlOverride for LiveTarget {
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

enum LiveLoop {}

impl BlockingEventLoop for LiveLoop {
    type Target = LiveTarget;
    type Connection = TcpStream;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut LiveTarget,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<Error, <TcpStream as Connection>::Error>,
    > {
        loop {
            match target.replies.recv_timeout(Duration::from_millis(10)) {
                Ok(Reply::Stopped(why, vcpu)) => {
                    let note = match &why {
                        Why::Catch(note) => Some(note.clone()),
                        Why::Watch(w) if w.origin == WatchOrigin::Monitor => {
                            Some(format!("mmurr: watch-phys stop: {w} written\n"))
                        }
                        _ => None,
                    };
                    if let Some(note) = note {
                        Write::write_all(conn, &console_packet(&note))
                            .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                    }
                    return Ok(run_blocking::Event::TargetStopped(
                        target.stop_reason(&why, vcpu),
                    ));
                }
                Ok(Reply::Ended { message, code }) => {
                    return Ok(run_blocking::Event::TargetStopped(
                        ended(conn, &message, code)?.into(),
                    ));
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    let (message, code) = target
                        .ended
                        .take()
                        .unwrap_or_else(|| ("the guest's run has ended".into(), None));
                    return Ok(run_blocking::Event::TargetStopped(
                        ended(conn, &message, code)?.into(),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if conn
                .peek()
                .map_err(run_blocking::WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = ConnectionExt::read(conn)
                    .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                return Ok(run_blocking::Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut LiveTarget) -> Result<Option<Self::StopReason>, Error> {
        target.tell(Request::Interrupt)?;
        loop {
            match target.replies.recv() {
                Ok(Reply::Stopped(why, vcpu)) => return Ok(Some(target.stop_reason(&why, vcpu))),
                Ok(Reply::Ended { message, code }) => {
                    target.ended = Some((message, code));
                    let stop = match code {
                        Some(c) => SingleThreadStopReason::Exited(c),
                        None => SingleThreadStopReason::Terminated(Signal::SIGKILL),
                    };
                    return Ok(Some(stop.into()));
                }
                Ok(_) => continue,
                Err(_) => return Err("the guest's run has ended".into()),
            }
        }
    }
}

/// The run ended while gdb waited: say why on gdb's console, then report an exit (with the
/// debug-exit code when there is one) so gdb prints `[Inferior 1 (process 1) exited ...]`.
fn ended(
    conn: &mut TcpStream,
    message: &str,
    code: Option<u8>,
) -> Result<SingleThreadStopReason<u64>, run_blocking::WaitForStopReasonError<Error, std::io::Error>>
{
    Write::write_all(
        conn,
        &console_packet(&format!("mmurr: the guest's run ended: {message}\n")),
    )
    .map_err(run_blocking::WaitForStopReasonError::Connection)?;
    Ok(SingleThreadStopReason::Exited(code.unwrap_or(0)))
}

/// Runs the gdb thread: accepts one gdb, serves it, and on detach lets the guest run free.
/// Returns the thread's handle; the VM thread keeps calling the [`LiveControl`].
pub fn spawn_server(listener: TcpListener, mut target: LiveTarget) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let stream = match listener.accept() {
            Ok((s, peer)) => {
                eprintln!("mmurr: gdb connected from {peer}");
                s
            }
            Err(e) => {
                eprintln!("mmurr: gdb server: accept failed: {e}; the guest runs on");
                let _ = target.tell(Request::Detach);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            GdbStub::new(stream).run_blocking::<LiveLoop>(&mut target)
        }));
        match result {
            Ok(Ok(DisconnectReason::Kill)) => {
                eprintln!("mmurr: gdb sent kill; ending the run");
                let _ = target.tell(Request::Kill);
            }
            Ok(Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_))) => {}
            Ok(Ok(DisconnectReason::Disconnect)) => {
                eprintln!("mmurr: gdb detached; the guest runs on");
                let _ = target.tell(Request::Detach);
            }
            Ok(Err(e)) => {
                eprintln!("mmurr: gdb session ended: {e}; the guest runs on");
                let _ = target.tell(Request::Detach);
            }
            Err(_) => {
                eprintln!("mmurr: gdb session failed; the guest runs on");
                let _ = target.tell(Request::Detach);
            }
        }
    })
}
