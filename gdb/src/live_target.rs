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
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
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

/// gdb thread -> VM thread.
#[derive(Debug)]
enum Request {
    ReadRegs,
    WriteRegs(Box<SystemRegs>),
    WriteReg(usize, Vec<u8>),
    ReadMem(u64, usize),
    WriteMem(u64, Vec<u8>),
    AddBreakpoint(u64),
    RemoveBreakpoint(u64),
    /// gdb's `watch`: address and length (translated on the VM thread, which has the memory).
    AddWatch(u64, u64),
    RemoveWatch(u64, u64),
    Monitor(String),
    Continue,
    Step,
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
    Stopped(Why),
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
    /// (a breakpoint there is the one gdb is stepping off, not a new hit).
    Running { from: u64, single: bool },
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
}

/// A connected pair.
pub fn pair(allow_writes: bool, interrupted: Arc<AtomicBool>) -> (LiveControl, LiveTarget) {
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
            RunState::Running { from, single } => {
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
                    if single && step > from {
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
                        self.send(Reply::Stopped(w));
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
                Request::ReadRegs => self.send(Reply::Regs(Box::new(regs.clone()))),
                Request::WriteRegs(_) | Request::WriteReg(..) | Request::WriteMem(..)
                    if !self.allow_writes =>
                {
                    eprintln!(
                        "mmurr: refused gdb's change to registers or memory while recording (the \
                         trace could not replay it); `mmurr run --gdb` allows changes"
                    );
                    self.send(Reply::Done(false));
                }
                Request::WriteRegs(g) => {
                    let mut next = regs.clone();
                    g.apply_to(&mut next);
                    let ok = backend.set_regs(&next).is_ok();
                    if ok {
                        regs = next;
                        self.modified = true;
                    }
                    self.send(Reply::Done(ok));
                }
                Request::WriteReg(n, bytes) => {
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
                Request::ReadMem(addr, len) => {
                    let mut buf = vec![0u8; len.min(1 << 20)];
                    let mem = BackendMemory(&*backend);
                    let n = guest_memory::read(&regs, &cpu, &mem, self.phys, addr, &mut buf);
                    buf.truncate(n);
                    self.send(Reply::Bytes(buf));
                }
                Request::WriteMem(addr, data) => {
                    let pieces = {
                        let mem = BackendMemory(&*backend);
                        guest_memory::pieces(&regs, &cpu, &mem, self.phys, addr, data.len())
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
                    let text = self.monitor(view.mmu, host, step, &regs, backend, &line);
                    self.send(Reply::Text(text));
                }
                Request::Continue => {
                    self.state = RunState::Running {
                        from: step,
                        single: false,
                    };
                    return self.resume_verdict();
                }
                Request::Step => {
                    self.state = RunState::Running {
                        from: step,
                        single: true,
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
        step: u64,
        regs: &Regs,
        backend: &dyn Backend,
        line: &str,
    ) -> String {
        let cpu = *mmu.cpu();
        let result: Result<String, String> = (|| {
            Ok(match monitor::parse(line.as_bytes())? {
                Command::Help => monitor::HELP.to_string(),
                Command::Mode => format!(
                    "live, before instruction {}\n{}\nmemory: {} addresses",
                    step + 1,
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
                Ok(Reply::Stopped(_)) => continue,
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

fn stop_reason(why: &Why) -> SingleThreadStopReason<u64> {
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
        BaseOps::SingleThread(self)
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
        match self.ask(Request::ReadRegs).map_err(TargetError::Fatal)? {
            Reply::Regs(r) => {
                *regs = SystemRegs::from_trace(&r);
                Ok(())
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_registers(&mut self, regs: &SystemRegs) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteRegs(Box::new(regs.clone())))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self
            .ask(Request::ReadMem(start, data.len()))
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

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteMem(start, data.to_vec()))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
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
        let mut regs = SystemRegs::default();
        self.read_registers(&mut regs)?;
        match regs.get(id.0) {
            Some(bytes) if bytes.len() <= buf.len() => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            _ => Ok(0),
        }
    }

    fn write_register(&mut self, _tid: (), id: SystemRegId, val: &[u8]) -> TargetResult<(), Self> {
        match self
            .ask(Request::WriteReg(id.0, val.to_vec()))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
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
        self.tell(Request::Step)
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
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut LiveTarget,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<Error, <TcpStream as Connection>::Error>,
    > {
        loop {
            match target.replies.recv_timeout(Duration::from_millis(10)) {
                Ok(Reply::Stopped(why)) => {
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
                    return Ok(run_blocking::Event::TargetStopped(stop_reason(&why)));
                }
                Ok(Reply::Ended { message, code }) => {
                    return Ok(run_blocking::Event::TargetStopped(ended(
                        conn, &message, code,
                    )?));
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    let (message, code) = target
                        .ended
                        .take()
                        .unwrap_or_else(|| ("the guest's run has ended".into(), None));
                    return Ok(run_blocking::Event::TargetStopped(ended(
                        conn, &message, code,
                    )?));
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
                Ok(Reply::Stopped(why)) => return Ok(Some(stop_reason(&why))),
                Ok(Reply::Ended { message, code }) => {
                    target.ended = Some((message, code));
                    return Ok(Some(match code {
                        Some(c) => SingleThreadStopReason::Exited(c),
                        None => SingleThreadStopReason::Terminated(Signal::SIGKILL),
                    }));
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
