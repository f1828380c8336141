//! The recorder's backend-neutral behaviour, driven by a scripted backend: no KVM, no Unicorn.

use recorder::exit::Outcome;
use recorder::{record, Backend, BackendError, Exit, RecordOptions, StepResult, Written};
use std::sync::atomic::Ordering;
use std::time::Duration;
use traces::{
    BackendInfo, BackendKind, EndReason, EventKind, GuestSpec, Reader, Record, Regs, Segment,
};

/// What the scripted backend does at step `n` (1-based) to RAM, and the exit it reports.
type Script = Box<dyn FnMut(u64, &mut Vec<u8>) -> StepResult>;

/// Real mode, NOPs everywhere: each step advances IP by one and does what `script` says.
struct Scripted {
    ram: Vec<u8>,
    regs: Regs,
    script: Script,
    steps: u64,
}

impl Scripted {
    fn new(script: impl FnMut(u64, &mut Vec<u8>) -> StepResult + 'static) -> Scripted {
        Scripted {
            ram: Vec::new(),
            regs: Regs::default(),
            script: Box::new(script),
            steps: 0,
        }
    }
}

fn stepped() -> StepResult {
    StepResult {
        exit: Exit::Stepped,
        written: Written::Ranges(Vec::new()),
    }
}

impl Backend for Scripted {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Emu,
            engine: "scripted test backend".into(),
            ..BackendInfo::default()
        }
    }
    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        self.ram = vec![0x90; guest.ram_size as usize];
        self.regs = guest.entry.clone();
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
        match self.ram.get(gpa as usize..gpa as usize + buf.len()) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.ram.get_mut(gpa as usize..gpa as usize + data.len()) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    fn ram_size(&self) -> u64 {
        self.ram.len() as u64
    }
    fn step(&mut self) -> Result<StepResult, BackendError> {
        self.steps += 1;
        self.regs.rip = (self.regs.rip + 1) & 0xffff;
        Ok((self.script)(self.steps, &mut self.ram))
    }
    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError> {
        self.regs.gpr[0] = data as u64;
        Ok(())
    }
    fn complete_mmio_read(&mut self, _data: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

fn guest() -> GuestSpec {
    let mut entry = Regs {
        rip: 0x1000,
        rflags: 2,
        cr0: 0x10,
        ..Regs::default()
    };
    entry.seg = [Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attrs: 0x93,
    }; 6];
    GuestSpec {
        ram_size: 0x20000,
        entry,
        origin: "scripted".into(),
        ..GuestSpec::default()
    }
}

fn opts(dir: &tempfile::TempDir) -> RecordOptions {
    let mut o = RecordOptions::new(dir.path().join("t.mmurr"));
    o.keyframe_interval = 16;
    o.self_check_every = 2;
    o
}

fn records(o: &RecordOptions) -> Vec<Record> {
    Reader::open(&o.output)
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn reported_writes_are_recorded_and_self_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir);
    o.max_steps = 100;
    let mut b = Scripted::new(|n, ram| {
        ram[0x8000 + n as usize] = n as u8;
        StepResult {
            exit: Exit::Stepped,
            written: Written::Ranges(vec![(0x8000 + n, 1)]),
        }
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::StepBudget);
    assert!(
        s.end.self_check_failures.is_empty(),
        "{:?}",
        s.end.self_check_failures
    );
    let mem: Vec<_> = records(&o)
        .into_iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s.mem),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(mem.len(), 100);
    assert_eq!((mem[41].gpa, mem[41].data.clone()), (0x8000 + 42, vec![42]));
}

#[test]
fn a_write_nobody_reported_fails_the_self_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir);
    o.max_steps = 40;
    let mut b = Scripted::new(|n, ram| {
        if n == 5 {
            ram[0x9000] = 0xaa; // not in the reported ranges
        }
        stepped()
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(
        s.end.self_check_failures.len(),
        1,
        "{:?}",
        s.end.self_check_failures
    );
    assert!(s.end.self_check_failures[0].contains("0x9000"));
    // The page keyframe still carries the real page, so replay is right from there on.
    let pages: Vec<u64> = records(&o)
        .into_iter()
        .filter_map(|r| match r {
            Record::Keyframe(k) => Some(k.pages.into_iter().map(|p| p.gpa).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(pages.contains(&0x9000));
}

#[test]
fn a_debug_exit_after_a_failed_self_check_does_not_exit_as_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dir);
    let mut b = Scripted::new(|n, ram| {
        if n == 5 {
            ram[0x9000] = 0xaa; // not in the reported ranges
        }
        match n {
            10 => StepResult {
                exit: Exit::IoOut {
                    port: 0xf4,
                    size: 1,
                    data: 0,
                },
                written: Written::Ranges(vec![]),
            },
            _ => stepped(),
        }
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::DebugExit { status: 0 });
    assert_eq!(s.end.self_check_failures.len(), 1);
    // The guest said "pass" (QEMU's exit code 1); the recording is wrong, so mmurr says 16.
    assert_eq!(s.exit_code, Some(1));
    let outcome = Outcome::of_recording(&s.end);
    assert_eq!(outcome, Outcome::SelfCheckFailed);
    assert_eq!(outcome.code(), 16);
}

#[test]
fn polling_an_absent_port_ends_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir);
    o.poll_limit = 50;
    let mut b = Scripted::new(|_, _| StepResult {
        exit: Exit::IoIn {
            port: 0x2f8,
            size: 1,
        },
        written: Written::Ranges(vec![]),
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::Error);
    assert!(
        s.end
            .message
            .contains("read of port 0x2f8 (the serial port COM2?")
            && s.end.message.contains("50 times"),
        "{}",
        s.end.message
    );
    assert_eq!(s.steps, 50);
    assert_eq!(
        s.unhandled,
        vec![(
            "read of port 0x2f8 (the serial port COM2?, which mmurr does not emulate)".to_string(),
            50
        )]
    );
    let ios = records(&o)
        .into_iter()
        .filter(|r| matches!(r, Record::Event(e) if matches!(e.kind, EventKind::Io(io) if io.port == 0x2f8 && io.data == 0xff)))
        .count();
    assert_eq!(ios, 50);
}

#[test]
fn serial_output_fw_cfg_and_debug_exit() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dir);
    let script = [
        Exit::IoOut {
            port: 0x3f8,
            size: 1,
            data: b'o' as u32,
        },
        Exit::IoOut {
            port: 0xe9,
            size: 1,
            data: b'k' as u32,
        },
        Exit::IoOut {
            port: 0x510,
            size: 2,
            data: 0,
        },
        Exit::IoIn {
            port: 0x511,
            size: 1,
        },
        Exit::IoOut {
            port: 0xf4,
            size: 1,
            data: 3,
        },
    ];
    let mut b = Scripted::new(move |n, _| StepResult {
        exit: script[(n - 1) as usize].clone(),
        written: Written::Ranges(vec![]),
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::DebugExit { status: 3 });
    assert_eq!(s.exit_code, Some(7));
    assert_eq!(s.serial_output, b"ok");
    let fw = records(&o).into_iter().find_map(|r| match r {
        Record::Event(e) => match e.kind {
            EventKind::Io(io) if io.port == 0x511 => Some(io.data),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(fw, Some(b'Q' as u32));
}

#[test]
fn the_interrupt_flag_and_the_timeout_end_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dir);
    let flag = o.interrupted.clone();
    let mut b = Scripted::new(move |n, _| {
        if n == 30 {
            flag.store(true, Ordering::Relaxed);
        }
        stepped()
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::Interrupted);
    assert_eq!(s.steps, 30);
    assert!(Reader::open(&o.output).unwrap().is_complete());

    let mut o = opts(&dir);
    o.timeout = Some(Duration::from_millis(50));
    let mut b = Scripted::new(|_, _| {
        std::thread::sleep(Duration::from_micros(200));
        stepped()
    });
    let s = record(&mut b, &guest(), &o).unwrap();
    assert_eq!(s.end.reason, EndReason::Timeout);
}

#[test]
fn unknown_policies_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir);
    o.policies = vec!["v9.99".into()];
    let mut b = Scripted::new(|_, _| stepped());
    let e = record(&mut b, &guest(), &o).unwrap_err();
    assert!(e.to_string().contains("v9.99"));
    assert!(!o.output.exists());
}
