//! A model-level script as a guest a backend runs: its entry registers loaded directly, its
//! memory, and a program that makes its guest writes and stores with real instructions (MOV
//! to CR, WRMSR, MOV to memory), with each host action planned at the instruction it comes
//! before ([`Trigger::Rip`]), so the recorder performs it there for real (KVM_SET_SREGS,
//! KVM_SET_MSRS, KVM_SET_CPUID2, INIT on kvm; the same register changes on emu). The program
//! then touches the memory the script's tables map (the evidence of a stale context) and
//! exits through the debug-exit port.
//!
//! After INIT the vCPU runs from the reset vector in real mode: a 64 KiB ROM below 4 GiB
//! holds a far jump to real-mode code in RAM that touches memory and exits.
//!
//! Scripts with nested actions (VMRUN, VMLAUNCH, VM-exits, KVM_SET_NESTED_STATE) or a flavour
//! no recording is evaluated for stay model-level ([`recordable`]).

use super::{Action, Script};
use crate::asm::{self, BuildError, SEL_CODE32, SEL_CODE64};
use crate::host_actions::{CpuidChange, HostActionAt, PlannedAction, Trigger};
use crate::image::{long_entry, protected_entry};
use crate::Scenario;
use iced_x86::code_asm::*;
use mmu::bits::*;
use mmu::CrReg;
use traces::{Blob, Load, MemRegion, PagingMode, RegionKind};

/// RAM of a script's guest.
const RAM: u64 = 2 << 20;
/// The script's memory that the guest carries: every script's tables lie below it.
const SCRIPT_MEMORY: usize = 0x8000;
const GDT: u64 = 0x1_0000;
/// The program (inside the 2 MiB every script's tables map at 0).
const CODE: u64 = 0x18_0000;
/// Each section of the program (see [`scenario`]) has a slot of this many bytes.
const SLOT: u64 = 0x200;
/// After INIT: real-mode code at 0:REAL_CODE, reached from the ROM's reset vector.
const REAL_CODE: u64 = 0x8000;
const ROM: u64 = 0xffff_0000;
const ROM_SIZE: usize = 0x1_0000;
/// Addresses the program reads after the last action: the tables' pages and its own.
const TOUCHED: [u64; 4] = [0x1000, 0x3000, 0x5000, CODE];

/// Why a script has no guest, or `None` when it has one.
pub fn not_recordable(script: &Script) -> Option<String> {
    if let Some(a) = script.actions.iter().find(|a| {
        matches!(
            a,
            Action::NestedVmrun { .. }
                | Action::SetNestedState { .. }
                | Action::VmEntryEpt { .. }
                | Action::VmExit { .. }
        )
    }) {
        return Some(format!(
            "it runs an L2 ({}): no backend here runs a nested guest",
            a.describe()
        ));
    }
    if !script.flavour.evaluates_recordings() {
        return Some(format!(
            "its flavour {} has no input a recording carries",
            script.flavour.name()
        ));
    }
    let last_init = script.actions.iter().rposition(|a| *a == Action::Init);
    if last_init.is_some_and(|i| i + 1 != script.actions.len()) {
        return Some("it acts after INIT, which restarts the vCPU at the reset vector".into());
    }
    None
}

/// Whether `script` runs as a guest.
pub fn recordable(script: &Script) -> bool {
    not_recordable(script).is_none()
}

fn mode(r: &mmu::ControlRegs) -> PagingMode {
    history::to_trace::paging_mode(mmu::PagingMode::of(r.cr0, r.cr4, r.efer))
}

/// The paging modes the script's vCPU is in, entry first.
fn modes(script: &Script) -> Vec<PagingMode> {
    let mut runner = super::Runner::new(script, &[]);
    let mut out = vec![mode(runner.regs())];
    for (at, a) in script.actions.iter().enumerate() {
        let t = runner.take(a, at as u64, at as u64 + 1);
        out.push(mode(&t.after));
    }
    out
}

/// `script` as a guest scenario with its host actions; an error for a script that has none
/// ([`not_recordable`]).
pub fn scenario(script: &Script) -> Result<Scenario, BuildError> {
    if let Some(why) = not_recordable(script) {
        return Err(BuildError::Layout(format!(
            "model-level scenario {} does not run as a guest: {why}",
            script.name
        )));
    }
    let long = script.entry.efer & EFER_LMA != 0;
    // One section per stretch between host actions, each in a slot of its own: an action
    // comes before the first instruction of the next section, whose code size is the one
    // the action leaves (a VMM that leaves long mode loads a 32-bit CS).
    let mut cs64 = long;
    let mut section = Section::new(0, cs64)?;
    let mut prog = crate::asm::Program::new(crate::CpuFeatures::default());
    for bit in cpuid_needed(script) {
        prog.require_cpuid(&mut section.a, bit)?;
    }
    let mut code = Vec::new();
    let mut host_actions = Vec::new();
    for action in &script.actions {
        match *action {
            Action::Write(reg, value) => write(&mut section.a, cs64, reg, value)?,
            Action::Store { gpa, value } => store(&mut section.a, cs64, gpa, value)?,
            _ => {
                let planned = match *action {
                    Action::SetCpuid(cpu) => PlannedAction::Cpuid(CpuidChange::all_of(&cpu)),
                    _ => PlannedAction::Exact(action.host().expect("a host action")),
                };
                if let Action::SetSregs { efer, .. } = *action {
                    cs64 &= efer & EFER_LMA != 0;
                }
                let next = Section::new(section.slot + 1, cs64)?;
                host_actions.push(HostActionAt {
                    at: Trigger::Rip(next.start()),
                    action: planned,
                    vcpu: None,
                });
                code.push(std::mem::replace(&mut section, next).finish(true)?);
            }
        }
    }
    for gva in TOUCHED {
        if cs64 {
            section.a.mov(rax, qword_ptr(gva))?;
        } else {
            section.a.mov(eax, dword_ptr(gva as u32))?;
        }
    }
    asm::exit(&mut section.a, 0)?;
    code.push(section.finish(false)?);

    let memory = &script.memory.bytes;
    if memory[SCRIPT_MEMORY..].iter().any(|&b| b != 0) {
        return Err(BuildError::Layout(format!(
            "model-level scenario {}'s memory reaches above {SCRIPT_MEMORY:#x}",
            script.name
        )));
    }
    let mut img = crate::image::Image::new(RAM);
    img.add(
        &format!("{} memory", script.name),
        0,
        memory[..SCRIPT_MEMORY].to_vec(),
    )?;
    img.add("gdt", GDT, asm::gdt_blob(GDT))?;
    for (i, bytes) in code.into_iter().enumerate() {
        img.add(
            &format!("program, section {i}"),
            CODE + i as u64 * SLOT,
            bytes,
        )?;
    }
    let init = script.actions.last() == Some(&Action::Init);
    if init {
        img.add("real-mode code after INIT", REAL_CODE, after_init()?)?;
    }
    let mut entry = if long {
        long_entry(CODE, GDT, script.entry.cr3)
    } else {
        protected_entry(CODE as u32, GDT)
    };
    debug_assert_eq!(
        entry.seg[traces::regs::CS].selector,
        if long { SEL_CODE64 } else { SEL_CODE32 }
    );
    let regs = script.entry_regs();
    entry.cr0 = regs.cr0;
    entry.cr3 = regs.cr3;
    entry.cr4 = regs.cr4;
    entry.efer = regs.efer;
    entry.pdptrs = regs.pdptrs;
    entry.gpr[4] = RAM - 0x1000; // rsp
    let mut guest = img.into_spec(
        entry,
        format!("model-level scenario {} as a guest", script.name),
        String::new(),
    );
    if init {
        add_reset_rom(&mut guest)?;
    }
    // The backend's own CPUID (a table made of the script's CPU alone would lack what the
    // CPU needs to run, e.g. long mode); the script's MAXPHYADDR, which its CPUID update
    // changes.
    guest.maxphyaddr = script.cpu.maxphyaddr;
    let mut needs: Vec<PagingMode> = Vec::new();
    for m in modes(script) {
        if !matches!(m, PagingMode::Real | PagingMode::Unpaged) && !needs.contains(&m) {
            needs.push(m);
        }
    }
    Ok(Scenario {
        name: script.name,
        description: script.description,
        needs,
        guest,
        expected: Vec::new(),
        expected_findings: Vec::new(),
        aps: Vec::new(),
        host_actions,
        flavour: Some(script.flavour),
    })
}

/// The program's code between two host actions, at its slot.
struct Section {
    slot: u64,
    a: CodeAssembler,
}

impl Section {
    fn new(slot: u64, cs64: bool) -> Result<Section, BuildError> {
        Ok(Section {
            slot,
            a: CodeAssembler::new(if cs64 { 64 } else { 32 })?,
        })
    }

    fn start(&self) -> u64 {
        CODE + self.slot * SLOT
    }

    /// The bytes, ending with a jump to the next slot when one follows.
    fn finish(mut self, jump_on: bool) -> Result<Vec<u8>, BuildError> {
        if jump_on {
            self.a.jmp(self.start() + SLOT)?;
        }
        let start = self.start();
        asm::assemble(self.a, start, SLOT as usize)
    }
}

/// The CPU features a script's control registers use: the CR4 bit, the CPUID bit the guest
/// tests, its name, and whether a CPU model has it (PGE: every long-mode CPU).
type Feature = (
    u64,
    crate::asm::CpuidBit,
    &'static str,
    fn(&mmu::CpuModel) -> bool,
);

fn features_used(script: &Script) -> Vec<Feature> {
    use crate::asm::{CPUID_LA57, CPUID_PCID, CPUID_PGE, CPUID_PKU, CPUID_SMAP, CPUID_SMEP};
    let mut used = script.entry.cr4;
    for a in &script.actions {
        match *a {
            Action::Write(CrReg::Cr4, v) => used |= v,
            Action::SetSregs { cr4: v, .. } => used |= v,
            _ => {}
        }
    }
    let all: [Feature; 6] = [
        (CR4_PGE, CPUID_PGE, "PGE", |_| true),
        (CR4_PCIDE, CPUID_PCID, "PCID", |c| c.pcid),
        (CR4_SMEP, CPUID_SMEP, "SMEP", |c| c.smep),
        (CR4_SMAP, CPUID_SMAP, "SMAP", |c| c.smap),
        (CR4_PKE, CPUID_PKU, "PKU", |c| c.pku),
        (CR4_LA57, CPUID_LA57, "LA57", |c| c.la57),
    ];
    all.into_iter().filter(|f| used & f.0 != 0).collect()
}

/// The CPUID features the script's control registers use: the guest checks them first and
/// exits with `status::MISSING_FEATURE` (2) on a CPU without them, rather than fault.
fn cpuid_needed(script: &Script) -> Vec<crate::asm::CpuidBit> {
    features_used(script).into_iter().map(|f| f.1).collect()
}

/// The names of the CPU features the script's guest checks for (PCID, LA57, ...).
pub fn features(script: &Script) -> Vec<&'static str> {
    features_used(script).into_iter().map(|f| f.2).collect()
}

/// The features the script's guest needs that `cpu` (the guest CPU a backend offers) lacks:
/// there the guest exits with status 2 before its first action.
pub fn features_missing(script: &Script, cpu: &mmu::CpuModel) -> Vec<&'static str> {
    features_used(script)
        .into_iter()
        .filter(|f| !(f.3)(cpu))
        .map(|f| f.2)
        .collect()
}

/// A guest write with the instruction that makes it.
fn write(a: &mut CodeAssembler, long: bool, reg: CrReg, value: u64) -> Result<(), BuildError> {
    if reg == CrReg::Efer {
        a.mov(ecx, 0xc000_0080u32)?;
        a.mov(eax, value as u32)?;
        a.mov(edx, (value >> 32) as u32)?;
        a.wrmsr()?;
        return Ok(());
    }
    if long {
        a.mov(rax, value)?;
        match reg {
            CrReg::Cr0 => a.mov(cr0, rax)?,
            CrReg::Cr3 => a.mov(cr3, rax)?,
            _ => a.mov(cr4, rax)?,
        }
    } else {
        a.mov(eax, value as u32)?;
        match reg {
            CrReg::Cr0 => a.mov(cr0, eax)?,
            CrReg::Cr3 => a.mov(cr3, eax)?,
            _ => a.mov(cr4, eax)?,
        }
    }
    Ok(())
}

/// A guest store of 8 bytes.
fn store(a: &mut CodeAssembler, long: bool, gpa: u64, value: u64) -> Result<(), BuildError> {
    if long {
        a.mov(rax, value)?;
        a.mov(qword_ptr(gpa), rax)?;
    } else {
        a.mov(dword_ptr(gpa as u32), value as u32)?;
        a.mov(dword_ptr(gpa as u32 + 4), (value >> 32) as u32)?;
    }
    Ok(())
}

/// Real mode after INIT (DS base 0): read the script's tables and exit.
fn after_init() -> Result<Vec<u8>, BuildError> {
    let mut a = CodeAssembler::new(16)?;
    for gva in TOUCHED.iter().filter(|&&g| g < 0x1_0000) {
        a.mov(ax, word_ptr(*gva as u32))?;
    }
    asm::exit(&mut a, 0)?;
    asm::assemble(a, REAL_CODE, 0x100)
}

/// The 64 KiB ROM below 4 GiB whose reset vector (F000:FFF0, linear 0xfffffff0) jumps to
/// 0:[`REAL_CODE`].
fn add_reset_rom(guest: &mut traces::GuestSpec) -> Result<(), BuildError> {
    let mut rom = vec![0xf4u8; ROM_SIZE]; // hlt
                                          // jmp far 0000:REAL_CODE
    let jump = [0xea, REAL_CODE as u8, (REAL_CODE >> 8) as u8, 0, 0];
    rom[ROM_SIZE - 16..ROM_SIZE - 16 + jump.len()].copy_from_slice(&jump);
    guest.blobs.push(Blob {
        hash: xxhash_rust::xxh3::xxh3_64(&rom),
        name: "reset-vector ROM".into(),
        data: rom,
    });
    guest.loads.push(Load {
        blob: (guest.blobs.len() - 1) as u32,
        gpa: ROM,
    });
    guest.regions.push(MemRegion {
        gpa: ROM,
        size: ROM_SIZE as u64,
        kind: RegionKind::Rom,
        name: "reset-vector ROM below 4 GiB".into(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scripts;

    #[test]
    fn every_script_without_an_l2_runs_as_a_guest_and_the_others_say_why() {
        let mut guests = 0;
        for (name, build) in scripts::ALL {
            let s = build();
            match not_recordable(&s) {
                None => {
                    let g = scenario(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let host = s.actions.iter().filter(|a| a.is_host()).count();
                    assert_eq!(g.host_actions.len(), host, "{name}");
                    assert_eq!(g.flavour, Some(s.flavour));
                    guests += 1;
                }
                Some(why) => {
                    assert!(name.starts_with("nested-"), "{name}: {why}");
                    assert!(scenario(&s).is_err());
                }
            }
        }
        assert_eq!(guests, 11);
    }

    #[test]
    fn init_scripts_get_a_reset_vector_that_reaches_their_real_mode_code() {
        let g = scenario(&scripts::script_named("init-long-mode").unwrap()).unwrap();
        let rom = g
            .guest
            .regions
            .iter()
            .find(|r| r.kind == RegionKind::Rom)
            .unwrap();
        assert_eq!(rom.gpa + rom.size, 1 << 32);
        let load = g.guest.loads.iter().find(|l| l.gpa == ROM).unwrap();
        let bytes = &g.guest.blobs[load.blob as usize].data;
        assert_eq!(bytes[ROM_SIZE - 16], 0xea);
        assert_eq!(g.needs, vec![PagingMode::Level4]);
    }
}
