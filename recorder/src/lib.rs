//! The mmurr VMM core: the backend contract, the devices, and the tracer.

pub mod backend;
pub mod insn;

pub use backend::{Backend, BackendError, Exit, StepResult, Written};
