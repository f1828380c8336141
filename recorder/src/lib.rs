//! The mmurr VMM core: the backend contract, the devices, and the tracer that turns
//! execution into trace records. Backend-neutral: the kvm backend (`recorder-kvm`) and the emu
//! backend (`mmurr-emu`) both call [`record`] with their own [`Backend`].

mod accesses;
pub mod backend;
pub mod control;
mod cr_watch;
mod decode_cache;
pub mod devices;
mod engine_check;
mod exceptions;
pub mod exit;
pub mod guest_view;
pub mod host_actions;
pub mod insn;
mod options;
mod progress;
mod record;
mod shadow;
pub mod signals;
mod sink;
mod stuck;
pub mod test_support;
mod tlb;
mod tracer;

pub use backend::{
    Backend, BackendError, Delivery, DeliveryKind, Exit, HostEventsChoice, HostWatch, RunResult,
    StepResult, Written,
};
pub use control::{StepControl, StepVerdict, StepView};
pub use cr_watch::{planned_write, PlannedWrite};
pub use options::{
    RecordError, RecordOptions, RecordSummary, SerialSink, RUNS_KEYFRAME_INTERVAL,
    STEPS_KEYFRAME_INTERVAL,
};
pub use record::{record, record_with, resolve_policies};
