//! Presentation shared by the front ends (gdb server, TUI): text renderings of replayer and
//! MMU state. Each front end formats; none re-derives.

pub mod accesses;
pub mod cpu_mode;
pub mod disasm;
pub mod event_line;
pub mod mmu_role;
pub mod page_walk;
pub mod registers;
