//! Guest instructions as mmurr sees them: decoded in the bitness of the current mode
//! (iced-x86), fetched through the guest's page tables (the `mmu` walker), and the linear
//! addresses they touch. Shared by the recorder (what an instruction is about to do) and the
//! replayer (disassembly, and the addresses a stale MMU context would mistranslate).

mod addresses;
mod cpu;
mod decode;
mod fetch;
mod flow;
mod nondeterministic;

pub use addresses::{
    memory_operands, memory_operands_of, memory_operands_with, register_value, touched, Touch,
};
pub use cpu::{cpu_model, cpuid_entries, with_apic_id, with_cpu_model};
pub use decode::{bitness, decode, describe, format};
pub use fetch::{
    control_regs, cpl, fetch, linear_ip, read_linear, translate, write_context, MAX_INSN_LEN,
};
pub use flow::{fall_through, retired_beyond};
pub use nondeterministic::{is_port_read, nondeterministic, Outputs};
