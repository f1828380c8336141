//! The live server's protocol side driven by the real gdb, on a stand-in backend whose every
//! instruction is a `nop` (RAM is all 0x90), run by the recorder's own stepping loop:
//! stepping, breakpoints, register and memory writes, a control-register catchpoint answered
//! from the recorder's MMU model, Ctrl-C of a running continue, and the guest's exit reported
//! to gdb. The same server on the real backends is tested through `mmurr record --gdb` in
//! `live_backends.rs`.

mod common;

use mmurr_gdb::live_target;
use recorder::{Backend, BackendError, Exit, RecordOptions, StepResult, Written};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use traces::{BackendInfo, GuestSpec, Regs, Segment};

/// Every byte is `nop`; RIP advances by one per step. At step 100 "something" sets CR4.PGE,
/// as a `mov cr4` would, so the catchpoint has a write to see; at step `last` the guest
/// writes 1 to the debug-exit port.
struct NopMachine {
    regs: Regs,
    ram: Vec<u8>,
    steps: u64,
    last: u64,
    /// Instructions run so far, for tests that wait until the guest runs.
    ran: Arc<AtomicU64>,
}

impl NopMachine {
    fn new(last: u64) -> NopMachine {
        let mut regs = Regs {
            rip: 0x1000,
            rflags: 2,
            cr0: 0x11,
            ..Default::default()
        };
        regs.seg[traces::regs::CS] = Segment {
            selector: 8,
            base: 0,
            limit: 0xffff_ffff,
            attrs: 0xc09b,
        };
        NopMachine {
            regs,
            ram: vec![0x90; 1 << 20],
            steps: 0,
            last,
            ran: Arc::default(),
        }
    }
}

impl Backend for NopMachine {
    fn info(&self) -> BackendInfo {
        BackendInfo::default()
    }
    fn load(&mut self, _guest: &GuestSpec) -> Result<(), BackendError> {
        Ok(())
    }
    fn regs(&mut self) -> Result<Regs, BackendError> {
        Ok(self.regs.clone())
    }
    fn set_regs(&mut self, regs: &Regs) -> Result<(), BackendError> {
        self.regs = regs.clone();
        Ok(())
    }
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = (gpa as usize).checked_add(buf.len()) else {
            return false;
        };
        match self.ram.get(gpa as usize..end) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(end) = (gpa as usize).checked_add(data.len()) else {
            return false;
        };
        match self.ram.get_mut(gpa as usize..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    fn ram_size(&self) -> u64 {
        self.ram.len() as u64
    }
    fn step(&mut self) -> Result<StepResult, BackendError> {
        self.regs.rip += 1;
        self.steps += 1;
        self.ran.fetch_add(1, Ordering::Relaxed);
        if self.steps == 100 {
            self.regs.cr4 |= 0x80;
        }
        let exit = if self.steps == self.last {
            Exit::IoOut {
                port: 0xf4,
                size: 1,
                data: 1,
            }
        } else {
            Exit::Stepped
        };
        Ok(StepResult {
            exit,
            written: Written::Ranges(Vec::new()),
        })
    }
    fn complete_io_in(&mut self, _data: u32) -> Result<(), BackendError> {
        Ok(())
    }
    fn complete_mmio_read(&mut self, _data: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Records nops under the live server (in a thread) until the guest exits after `last`
/// instructions; returns the port.
fn start(last: u64) -> u16 {
    start_counting(last).0
}

/// [`start`], also returning the count of instructions run so far.
fn start_counting(last: u64) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let mut m = NopMachine::new(last);
        m.ran = counter;
        let (mut ctl, target) = live_target::pair(true, 1, Arc::new(AtomicBool::new(false)));
        let server = live_target::spawn_server(listener, target);
        ctl.set_server(server);
        let mut opts = RecordOptions::new(dir.path().join("t.mmurr"));
        opts.max_steps = u64::MAX;
        let guest = GuestSpec {
            ram_size: 1 << 20,
            ..GuestSpec::default()
        };
        recorder::record_with(&mut m, &guest, &opts, Some(&mut ctl)).unwrap();
    });
    (port, ran)
}

#[test]
fn step_break_write_catch_and_exit() {
    let port = start(1000);
    let out = common::run_gdb(
        port,
        "p $pc
x/2i $pc
stepi
stepi
p $pc
break *0x1010
continue
p $pc
set $rax = 0x1234
p/x $rax
set {unsigned char}0x2000 = 0xcc
x/bx 0x2000
monitor break-on cr4
continue
p $cr4
monitor role v5.1-rc3
monitor events
delete
monitor break-on clear
continue",
    );
    common::expect(&out, "$1 = (void (*)()) 0x1000");
    common::expect(&out, "=> 0x1000:\tnop");
    common::expect(&out, "$2 = (void (*)()) 0x1002");
    common::expect(&out, "Breakpoint 1, 0x0000000000001010 in ?? ()");
    common::expect(&out, "$3 = (void (*)()) 0x1010");
    common::expect(&out, "$4 = 0x1234");
    common::expect(&out, "0x2000:\t0xcc");
    let catch = common::after(&out, "continue stops at every cr4");
    common::expect(catch, "cr4 0x0 -> 0x80 (+PGE)");
    common::expect(catch, "Program received signal SIGTRAP");
    common::expect(catch, "$5 = [ PGE ]");
    common::expect(catch, "policy v5.1-rc3 (tdp MMU");
    common::expect(catch, "error: this needs a trace");
    common::expect(catch, "mmurr: the guest's run ended: debug-exit");
    common::expect(catch, "exited with code 03");
}

#[test]
fn ctrl_c_interrupts_a_running_continue() {
    let (port, ran) = start_counting(u64::MAX);
    // Interrupt once the continue has run the guest (no step runs before it).
    let running = |_: &str| ran.load(Ordering::Relaxed) > 0;
    let out = common::run_gdb_interrupting(
        port,
        "continue
p $pc > 0x1000
kill",
        Some(&running),
    );
    common::expect(&out, "Program received signal SIGINT");
    common::expect(&out, "$1 = 1");
}
