//! The built-in scenarios and the memory layout they share.
//!
//! Every scenario uses the same physical layout (RAM 2 MiB, all of it identity-mapped by the
//! scenario's own page tables wherever paging is on):
//!
//! | gpa | contents |
//! |---|---|
//! | `0x1000` | 16-bit real-mode code, the entry point (CS:IP = 0000:1000) |
//! | `0x1400` | 32-bit protected-mode code (selector 0x08) |
//! | `0x2000` | 64-bit code (selector 0x18), where the scenario reaches long mode |
//! | `0x3000` | GDT (null, code32, data, code64); the `lgdt` pseudo-descriptor at `0x3020` |
//! | `0x4000`.. | page tables (per scenario, see each module) |
//! | `0x10000`, `0x11000` | data pages the scenarios write markers to |
//! | `0x20000` | top of the stack (grows down) |

use crate::asm::{assemble, gdt_blob, BuildError, Program, GDTR_OFFSET};
use crate::expect::ExpectedFinding;
use crate::image::{real_mode_entry, Image};
use crate::tables::Tables;
use crate::{CpuFeatures, Scenario};
use iced_x86::code_asm::CodeAssembler;
use traces::PagingMode;

pub mod accessed_dirty;
pub mod cr3_switch;
pub mod exceptions;
pub mod long_mode_entry;
pub mod long_mode_toggles;
pub mod pae_toggle;
pub mod smap_pke_toggle;
pub mod smp_bringup;
pub mod unpaged_cr4;

pub const RAM_SIZE: u64 = 2 << 20;
pub const CODE16: u64 = 0x1000;
pub const CODE16_MAX: usize = 0x400;
pub const CODE32: u64 = 0x1400;
pub const CODE32_MAX: usize = 0xc00;
pub const CODE64: u64 = 0x2000;
pub const CODE64_MAX: usize = 0x1000;
pub const GDT: u64 = 0x3000;
pub const GDTR: u64 = GDT + GDTR_OFFSET;
pub const TABLES: u64 = 0x4000;
/// Page-table block size: room for 11 tables (`0x4000..0xF000`).
pub const TABLES_LEN: usize = 0xb000;
pub const DATA_A: u64 = 0x10000;
pub const DATA_B: u64 = 0x11000;
pub const STACK_TOP: u64 = 0x20000;
/// Real-mode stack pointer (the 16-bit code never pushes; set for safety).
pub const STACK16: u16 = 0xfff0;
/// Pages the identity map covers: all of RAM.
pub const IDENTITY_PAGES: u64 = RAM_SIZE >> 12;

/// A scenario's builder: the expected sequence depends on the CPU features.
pub(crate) type Builder = fn(&CpuFeatures) -> Result<Scenario, BuildError>;

/// (name, builder) of every built-in scenario, in presentation order.
pub(crate) const ALL: &[(&str, Builder)] = &[
    ("pae-toggle", pae_toggle::build),
    ("long-mode-entry", long_mode_entry::build),
    ("long-mode-toggles", long_mode_toggles::build),
    ("cr3-switch", cr3_switch::build),
    ("unpaged-cr4", unpaged_cr4::build),
    ("smap-pke-toggle", smap_pke_toggle::build),
    ("accessed-dirty", accessed_dirty::build),
    ("exceptions", exceptions::build),
    ("smp-bringup", smp_bringup::build),
];

/// The code sections of a scenario, each assembled at its fixed slot.
pub(crate) struct Code {
    pub a16: CodeAssembler,
    pub a32: CodeAssembler,
    pub a64: Option<CodeAssembler>,
}

impl Code {
    pub fn new(long: bool) -> Result<Self, BuildError> {
        Ok(Code {
            a16: CodeAssembler::new(16)?,
            a32: CodeAssembler::new(32)?,
            a64: if long {
                Some(CodeAssembler::new(64)?)
            } else {
                None
            },
        })
    }

    /// The 64-bit section; a long-mode scenario without one is a layout error.
    pub fn a64(&mut self) -> Result<&mut CodeAssembler, BuildError> {
        self.a64
            .as_mut()
            .ok_or_else(|| BuildError::Layout("long-mode scenario without 64-bit code".into()))
    }
}

/// Everything that describes a scenario besides its code.
pub(crate) struct Meta {
    pub name: &'static str,
    pub description: &'static str,
    pub needs: Vec<PagingMode>,
    pub findings: Vec<ExpectedFinding>,
}

/// Assembles the sections, places them with the GDT and the page tables, and packages the
/// scenario.
pub(crate) fn finish(
    meta: Meta,
    prog: Program,
    code: Code,
    tables: Tables,
) -> Result<Scenario, BuildError> {
    finish_with(meta, prog, code, tables, Image::new(RAM_SIZE))
}

/// [`finish`] into an image that already holds more (another vCPU's code and tables).
pub(crate) fn finish_with(
    meta: Meta,
    prog: Program,
    code: Code,
    tables: Tables,
    mut img: Image,
) -> Result<Scenario, BuildError> {
    img.add(
        "real-mode code",
        CODE16,
        assemble(code.a16, CODE16, CODE16_MAX)?,
    )?;
    img.add(
        "protected-mode code",
        CODE32,
        assemble(code.a32, CODE32, CODE32_MAX)?,
    )?;
    if let Some(a64) = code.a64 {
        img.add("64-bit code", CODE64, assemble(a64, CODE64, CODE64_MAX)?)?;
    }
    img.add("gdt", GDT, gdt_blob(GDT))?;
    img.add("page tables", tables.base(), tables.into_bytes())?;
    let guest = img.into_spec(
        real_mode_entry(CODE16 as u16),
        format!("scenario {}", meta.name),
        String::new(),
    );
    Ok(Scenario {
        name: meta.name,
        description: meta.description,
        needs: meta.needs,
        guest,
        expected: prog.model.events,
        expected_findings: meta.findings,
        aps: Vec::new(),
        host_actions: Vec::new(),
        flavour: None,
    })
}

/// 4-level identity map of all RAM with 4 KiB pages: PML4 `0x4000` → PDPT `0x5000` → PD
/// `0x6000` → PT `0x7000`. `upper` are the extra flags of the PML4E/PDPTE (e.g. U/S, so that a
/// PD entry can make some region a user-mode address); the identity pages stay supervisor.
pub(crate) const PML4: u64 = 0x4000;
pub(crate) const PDPT: u64 = 0x5000;
pub(crate) const PD: u64 = 0x6000;
pub(crate) const PT_IDENTITY: u64 = 0x7000;

/// The page tables of a scenario that needs only the identity map.
pub(crate) fn identity_tables() -> Result<Tables, BuildError> {
    let mut t = Tables::new(TABLES, TABLES_LEN);
    long_identity(&mut t, 0)?;
    Ok(t)
}

pub(crate) fn long_identity(t: &mut Tables, upper: u64) -> Result<(), BuildError> {
    use crate::tables::{P, RW};
    t.set64(PML4, 0, PDPT | P | RW | upper)?;
    t.set64(PDPT, 0, PD | P | RW | upper)?;
    t.set64(PD, 0, PT_IDENTITY | P | RW)?;
    t.identity64(PT_IDENTITY, IDENTITY_PAGES, P | RW)
}

/// The common start of the long-mode scenarios: real mode → protected mode → long mode with
/// CR3 = [`PML4`]. Returns the 64-bit assembler positioned after the 64-bit prologue.
/// Events: Cr0 0x11, Real→Unpaged, Cr3 0x4000, Cr4 (current | PAE), Efer 0x100, Cr0
/// 0x80000011, Unpaged→Level4.
pub(crate) fn enter_long_mode(p: &mut Program, code: &mut Code) -> Result<(), BuildError> {
    p.real_to_protected(&mut code.a16, GDTR, STACK16, CODE32 as u32)?;
    Program::protected_prologue(&mut code.a32, STACK_TOP as u32)?;
    p.protected_to_long(&mut code.a32, PML4, CODE64 as u32)?;
    Program::long_prologue(code.a64()?, STACK_TOP)
}
