//! The PC platform devices of the emu backend (see the Platform once it lands).

pub mod clock;
pub mod pic;
pub mod pit;
pub mod lapic;
pub mod ioapic;
pub mod rtc;
pub mod pci;
pub mod reset;
