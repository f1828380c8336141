//! The inputs a recorded guest took from outside its machine state, in the order it took them:
//! the results of nondeterministic instructions (which ones is `insn::nondeterministic`'s
//! call) and the values of port and MMIO reads. They are data of the trace: the replayer
//! derives them from a trace's steps and events (`replayer::inputs`), and the recorder's
//! re-execution (`mmurr verify`) feeds them back in order, so a guest that reads the
//! time-stamp counter runs the same path again on the same host and on the emulator.

use crate::Step;

/// One input, consumed in order by the re-execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// What a nondeterministic instruction at `rip` produced: general registers (index into
    /// `Regs::gpr`, value) and the RFLAGS bits in `rflags_mask`.
    Results {
        step: Step,
        rip: u64,
        mnemonic: String,
        gprs: Vec<(u8, u64)>,
        rflags_mask: u64,
        rflags: u64,
    },
    PortRead {
        step: Step,
        port: u16,
        size: u8,
        data: u32,
    },
    MmioRead {
        step: Step,
        gpa: u64,
        size: u8,
        data: u64,
    },
}

impl Input {
    /// E.g. `rdtsc at rip 0x1000 (step 12)`, for divergence messages.
    pub fn describe(&self) -> String {
        match self {
            Input::Results {
                step,
                rip,
                mnemonic,
                ..
            } => format!("{mnemonic} at rip {rip:#x} (step {step})"),
            Input::PortRead {
                step, port, size, ..
            } => format!("a {size}-byte read of port {port:#x} (step {step})"),
            Input::MmioRead {
                step, gpa, size, ..
            } => format!("a {size}-byte MMIO read at {gpa:#x} (step {step})"),
        }
    }
}

/// A trace's inputs, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedInputs {
    pub inputs: Vec<Input>,
    /// The VMM's actions on the vCPUs (`HostAction` events of the guest's VMM, not the guest's
    /// own nested entries and exits), each with the step it was and the vCPU it acted on:
    /// re-execution performs them before the same steps, on the same vCPUs.
    pub host_actions: Vec<(Step, u32, crate::HostAction)>,
}
