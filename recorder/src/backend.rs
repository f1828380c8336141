//! The execution-backend contract shared by the kvm backend (`recorder-kvm`) and the emu
//! backend (`mmurr-emu`). One small core trait; what only some backends can do lives in
//! extension traits, as in the `gdbstub` crate.

use traces::{BackendInfo, CpuidEntry, GuestSpec, HostAction, HostMmu, HostRecord, Regs};

/// Why a backend could not go on. The message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The host cannot run this guest (e.g. a PVM KVM and 32-bit paging); suggest another backend.
    #[error("{0}")]
    HostUnsupported(String),
    /// The engine failed; the recorder adds where (RIP and the instruction).
    #[error("{0}")]
    Engine(String),
    /// The engine failed, and the message already names the instruction and its RIP (e.g. a
    /// KVM emulation failure with the instruction's bytes); the recorder shows it as it is.
    #[error("{0}")]
    EngineAt(String),
    #[error("{0}")]
    Other(String),
}

/// What one [`Backend::step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// One instruction retired, nothing for the VMM to do.
    Stepped,
    /// `out`: the instruction retired; the VMM must handle the write.
    IoOut {
        port: u16,
        size: u8,
        data: u32,
    },
    /// `in`: the VMM must answer with [`Backend::complete_io_in`] before the next step, which
    /// retires the instruction.
    IoIn {
        port: u16,
        size: u8,
    },
    /// An access to guest-physical memory outside RAM (reads answered with `complete_mmio_read`).
    MmioWrite {
        gpa: u64,
        size: u8,
        data: u64,
    },
    MmioRead {
        gpa: u64,
        size: u8,
    },
    /// HLT retired with no interrupt able to wake the vCPU.
    Halted,
    /// Triple fault / shutdown.
    Shutdown,
    /// A host signal interrupted the engine before any instruction retired (the recorder
    /// checks its stop conditions and steps again).
    Interrupted,
}

/// Guest-physical bytes an instruction wrote, as far as the backend knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Exact ranges (gpa, len), e.g. from an emulator's memory-write hook.
    Ranges(Vec<(u64, u64)>),
    /// The backend cannot tell; the tracer infers the writes by decoding the instruction.
    Unknown,
    /// The 4 KiB pages (guest-physical, page-aligned) that may have changed, e.g. from KVM's
    /// dirty log plus the pages the VMM wrote itself; nothing outside them changed. The tracer
    /// diffs each against its shadow and records exactly the bytes that differ.
    DirtyPages(Vec<u64>),
}

impl Written {
    /// What two parts of one step wrote together (the exit that asked for an `in`/MMIO value
    /// and the completion): exact only when both parts are.
    pub fn merge(self, other: Written) -> Written {
        match (self, other) {
            (Written::Ranges(mut a), Written::Ranges(b)) => {
                a.extend(b);
                Written::Ranges(a)
            }
            (Written::DirtyPages(mut a), Written::DirtyPages(b)) => {
                a.extend(b);
                Written::DirtyPages(a)
            }
            // Exact ranges are exact pages too.
            (Written::DirtyPages(mut pages), Written::Ranges(r))
            | (Written::Ranges(r), Written::DirtyPages(mut pages)) => {
                for (gpa, len) in r.into_iter().filter(|&(_, len)| len > 0) {
                    let last = gpa.saturating_add(len - 1) >> 12;
                    pages.extend(((gpa >> 12)..=last).map(|p| p << 12));
                }
                Written::DirtyPages(pages)
            }
            _ => Written::Unknown,
        }
    }
}

/// How a delivered vector came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// An exception (fault, trap or abort), including `int n`, `int3`, `into` and `int1`.
    Exception,
    /// A maskable external interrupt, at the boundary before the instruction that did not run.
    External,
    /// A non-maskable interrupt (vector 2), likewise at an instruction boundary.
    Nmi,
    /// A startup IPI (its vector) started an AP waiting for one: no instruction ran.
    Startup,
}

/// One exception or interrupt delivered to the guest: its handler was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    pub kind: DeliveryKind,
    /// The error code pushed, for the exceptions that push one (#DF, #TS, #NP, #SS, #GP, #PF,
    /// #AC, #CP); `None` for all others and for interrupts.
    pub error_code: Option<u32>,
    /// CR2 as the #PF left it.
    pub cr2: Option<u64>,
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub exit: Exit,
    pub written: Written,
}

/// What one [`Backend::run`] did: `count` steps (possibly none) with nothing among them that
/// the recorder must see one by one, and the memory they wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    pub count: u64,
    /// Architectural instructions retired: `count`, except for a run of one `rep` string
    /// instruction's iterations (a step each, as single-stepping counts them), which retired
    /// the instruction (1) or not yet (0).
    pub retired: u64,
    pub written: Written,
}

/// A vCPU with its guest memory that can execute one instruction at a time.
pub trait Backend {
    /// What engine and host this is, for the trace header.
    fn info(&self) -> BackendInfo;
    /// Lays out memory, loads the images and sets the entry registers.
    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError>;
    /// Registers after the last step. A backend may serve the rarely-written ones (XCR0,
    /// KERNEL_GS_BASE, PKRU, PDPTRs) from a cache; [`Backend::regs_full`] reads them all.
    fn regs(&mut self) -> Result<Regs, BackendError>;
    /// Every register read afresh; the recorder calls it after instructions that may write the
    /// cached ones (XSETBV, WRMSR, SWAPGS, WRPKRU, CR writes) and at keyframes.
    fn regs_full(&mut self) -> Result<Regs, BackendError> {
        self.regs()
    }
    fn set_regs(&mut self, regs: &Regs) -> Result<(), BackendError>;
    /// Reads guest-physical memory; false if any byte is outside RAM.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool;
    fn ram_size(&self) -> u64;
    /// All of RAM at once, where the backend has it mapped (for hashing and page diffs).
    fn ram(&self) -> Option<&[u8]> {
        None
    }
    /// The CPUID the guest sees, for the trace header when the guest spec left it empty.
    fn cpuid(&self) -> Vec<CpuidEntry> {
        Vec::new()
    }
    /// Extension for emulators (the emu backend): the engine's *own* translation of a
    /// guest-linear address for `access` at the current CPL under the current registers, so
    /// the recorder can compare it with the reference walker after CR events
    /// ([`traces::EventKind::EngineDivergence`]). `None`: the backend cannot tell (the
    /// default; KVM). `Some(None)`: the engine would fault. The recorder asks only about
    /// accesses the instruction just made, so any accessed/dirty update is the instruction's own.
    fn engine_translation(&mut self, _gva: u64, _access: mmu::Access) -> Option<Option<u64>> {
        None
    }
    /// Executes exactly one instruction (or delivers one exception/interrupt).
    fn step(&mut self) -> Result<StepResult, BackendError>;
    /// Extension for engines that deliver exceptions themselves (the emu backend): what the
    /// last step (with its `complete_io_in`/`complete_mmio_read`) delivered, in order, taken
    /// so the next call starts empty. `None` (the default; KVM, which delivers inside the
    /// kernel): the backend cannot tell, and the recorder infers deliveries from the state.
    fn take_deliveries(&mut self) -> Option<Vec<Delivery>> {
        None
    }
    /// Extension for engines that can run many instructions at once (the emu backend):
    /// executes at most `max` instructions from the current state and stops *before* any that
    /// could write a control register, EFER or XCR0, raise or deliver an exception or
    /// interrupt, do I/O or MMIO, read a nondeterministic input, or otherwise need a step of
    /// its own (the recorder then calls [`Backend::step`]). The written memory must be exact
    /// (e.g. `DirtyPages` covering every page the instructions or the engine's page walker
    /// changed). `None` (the default; KVM): the backend cannot.
    fn run(&mut self, _max: u64) -> Option<Result<RunResult, BackendError>> {
        None
    }
    /// Drives interrupt line `gsi` of the machine's interrupt controllers to `level`: the
    /// 8259 input of the same number (0–15) and the I/O APIC pin of the same number (0–23),
    /// KVM's default routing. This is how the recorder's devices interrupt the guest (the
    /// serial port's IRQ 4). The kvm backend uses KVM_IRQ_LINE, the emu backend its own
    /// PIC/IOAPIC. The default, for a backend without interrupt controllers: the line goes
    /// nowhere.
    fn set_irq_line(&mut self, _gsi: u32, _level: bool) -> Result<(), BackendError> {
        Ok(())
    }
    /// Extension for backends with virtual time (the emu backend): guest time in nanoseconds,
    /// which the recorder's devices use as their clock (the RTC). `None` (the default; KVM):
    /// the recorder derives one from the step count.
    fn virtual_time_ns(&mut self) -> Option<u64> {
        None
    }
    /// Extension for backends with virtual time (the emu backend): how many instructions until
    /// the next timer deadline of the machine, `None` when no timer is armed (the default;
    /// KVM, whose timers run in host time). The stuck watch lets a loop that waits with
    /// interrupts enabled run past it: the tick it waits for may be far in instructions.
    fn instructions_to_next_timer(&mut self) -> Option<u64> {
        None
    }
    /// Extension for backends on a host KVM whose own events can be watched (the kvm backend,
    /// through tracefs): see [`HostWatch`]. `None` (the default; emu): there is no host KVM.
    fn host(&mut self) -> Option<&mut dyn HostWatch> {
        None
    }
    /// Extension for machines of several vCPUs: how many (the default: one). The recorder
    /// chooses which runs each step ([`Backend::select_vcpu`]), so that the trace is one
    /// total order of instructions; every other method acts on the selected vCPU.
    fn vcpus(&self) -> u32 {
        1
    }
    /// Makes vCPU `vcpu` (0 = the BSP, selected at load) the one the other methods act on.
    fn select_vcpu(&mut self, _vcpu: u32) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether vCPU `vcpu` can take a step now: it runs, or it halted and an interrupt
    /// wakes it, or it waited for a startup IPI and one came.
    fn vcpu_runnable(&mut self, _vcpu: u32) -> bool {
        true
    }
    /// No vCPU can take a step: time skips to the next timer. False when nothing can wake
    /// any of them (the run ends).
    fn wait_for_any(&mut self) -> bool {
        false
    }
    /// Extension for backends that act as the VMM on the vCPU between two of its
    /// instructions: performs host action `action` (KVM_SET_SREGS, KVM_SET_MSRS(EFER),
    /// KVM_SET_CPUID2, INIT) on the selected vCPU, for real where the backend is a VMM (kvm:
    /// the ioctl) and as its register changes where it is an engine (emu). The next
    /// [`Backend::regs_full`] shows its effect. The default: the backend cannot
    /// ([`BackendError::HostUnsupported`]); a host that refuses the action says so the same way.
    fn host_action(&mut self, action: &HostAction) -> Result<(), BackendError> {
        Err(BackendError::HostUnsupported(format!(
            "this backend cannot perform {}",
            action.name()
        )))
    }
    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError>;
    fn complete_mmio_read(&mut self, data: u64) -> Result<(), BackendError>;
    /// The rest of the instruction after [`Backend::complete_io_in`] or
    /// [`Backend::complete_mmio_read`]: `exit` is [`Exit::Stepped`] when it retired, or a
    /// further exit of the same instruction — the write of an MMIO read-modify-write such as
    /// `or dword [mmio], 1`, handled like any `MmioWrite`, or another MMIO read to answer;
    /// `written` is what the completion wrote. The default: it retired, and the step's own
    /// `written` covered its writes.
    fn take_completion(&mut self) -> StepResult {
        StepResult {
            exit: Exit::Stepped,
            written: Written::Ranges(Vec::new()),
        }
    }
}

/// Whether to record the host KVM's own events (`--host-events` / `--no-host-events`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostEventsChoice {
    /// When the host allows it (root, tracefs), silently without.
    #[default]
    Auto,
    /// Asked for: the recorder warns when the host does not allow it.
    On,
    Off,
}

/// The host's own KVM seen from the recording thread: its MMU facts for the trace header and
/// the events its tracepoints emit, attributed to steps.
pub trait HostWatch {
    /// Starts watching the calling thread's vCPU (called on the thread that will step it,
    /// after the guest is loaded); the header's facts, saying why events are not recorded
    /// when they are not.
    fn start(&mut self, choice: HostEventsChoice) -> HostMmu;
    /// Step `step` has ended: every host event from now on belongs to a later step.
    fn step_ended(&mut self, step: u64);
    /// The events of the steps ended so far that were not taken yet, one record per step
    /// that had any, in step order.
    fn take(&mut self) -> Result<Vec<HostRecord>, String>;
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn merged_writes_are_exact_only_when_both_parts_are() {
        let r = |v: &[(u64, u64)]| Written::Ranges(v.to_vec());
        assert_eq!(r(&[(1, 2)]).merge(r(&[(5, 1)])), r(&[(1, 2), (5, 1)]));
        assert_eq!(
            Written::DirtyPages(vec![0x1000]).merge(Written::DirtyPages(vec![0x3000])),
            Written::DirtyPages(vec![0x1000, 0x3000])
        );
        assert_eq!(Written::Unknown.merge(r(&[])), Written::Unknown);
        assert_eq!(
            r(&[]).merge(Written::DirtyPages(vec![0])),
            Written::DirtyPages(vec![0])
        );
        assert_eq!(
            Written::DirtyPages(vec![0]).merge(Written::Unknown),
            Written::Unknown
        );
        assert_eq!(r(&[(1, 1)]).merge(Written::Unknown), Written::Unknown);
        assert_eq!(
            r(&[(0x1ffe, 4)]).merge(Written::DirtyPages(vec![0x5000])),
            Written::DirtyPages(vec![0x5000, 0x1000, 0x2000])
        );
    }
}
