//! mmurr-emu: mmurr's reference emulator backend on Unicorn (QEMU's TCG core).
//!
//! This crate is GPL-2.0-only because it links Unicorn; it never links kvm-bindings (Apache-2.0
//! only). The main `mmurr` binary runs the `mmurr-emu` executable as a child process for
//! `--backend emu`.

pub mod cpuid;
pub mod ctx;
pub mod decode;
pub mod engine;
pub mod exceptions;
mod host_action;
pub mod io;
pub mod ram;
pub mod regs;
pub mod smp;
pub mod trampoline;

pub use engine::EmuBackend;
pub use smp::SmpBackend;
