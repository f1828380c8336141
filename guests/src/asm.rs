//! Building blocks the scenarios share: code sections at fixed addresses, mode switches,
//! control-register writes that record the events they cause, CPUID feature gates, memory
//! touches with read-back checks, and the debug-exit.
//!
//! Every control-register write loads an immediate (`mov eax, imm; mov crN, eax`) rather
//! than read-modify-write: the value written is then a constant of the program, the same one
//! the expected event carries, whatever the entry state was.

use crate::expect::{CpuFeatures, Model};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// Why a scenario or loader structure could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("assembler: {0}")]
    Asm(#[from] IcedError),
    #[error("section at {base:#x} is {len} bytes, more than its {max}-byte slot")]
    SectionTooLong { base: u64, len: usize, max: usize },
    #[error("the program would fault: {0}")]
    Model(String),
    #[error("memory layout: {0}")]
    Layout(String),
}

/// The debug-exit port: writing a byte ends the run with that status.
pub const DEBUG_EXIT_PORT: u32 = 0xf4;
/// EFER's MSR index.
pub const MSR_EFER: u32 = 0xC000_0080;

/// Segment selectors of [`flat_gdt`].
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_CODE64: u16 = 0x18;

/// A flat GDT: null, 32-bit code, data, 64-bit code (all base 0, limit 4 GiB). The accessed
/// bits are preset so segment loads never write to the GDT.
pub fn flat_gdt() -> [u64; 4] {
    [
        0,
        0x00CF_9B00_0000_FFFF,
        0x00CF_9300_0000_FFFF,
        0x00AF_9B00_0000_FFFF,
    ]
}

/// The GDT bytes followed, at `gdt + 0x20`, by the 6-byte pseudo-descriptor `lgdt` reads.
pub fn gdt_blob(gdt_base: u64) -> Vec<u8> {
    let mut v: Vec<u8> = flat_gdt().iter().flat_map(|d| d.to_le_bytes()).collect();
    let limit = (flat_gdt().len() * 8 - 1) as u16;
    v.extend_from_slice(&limit.to_le_bytes());
    v.extend_from_slice(&(gdt_base as u32).to_le_bytes());
    v
}

/// Offset of the `lgdt` pseudo-descriptor within [`gdt_blob`].
pub const GDTR_OFFSET: u64 = 0x20;

/// Assembles a section at `base`, refusing it if it outgrows its slot.
pub fn assemble(mut a: CodeAssembler, base: u64, max: usize) -> Result<Vec<u8>, BuildError> {
    let bytes = a.assemble(base)?;
    if bytes.len() > max {
        return Err(BuildError::SectionTooLong {
            base,
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Status codes the guest writes to the debug-exit port on an unexpected path.
pub mod status {
    /// First status used for failed read-back checks (numbered upwards from here).
    pub const FIRST_CHECK: u8 = 0x20;
    /// A feature every long-mode CPU has (NX, PGE) is missing.
    pub const MISSING_FEATURE: u8 = 0x02;
}

/// A CPUID feature bit the guest tests at run time.
#[derive(Clone, Copy, Debug)]
pub struct CpuidBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: CpuidReg,
    pub bit: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum CpuidReg {
    Ebx,
    Ecx,
    Edx,
}

pub const CPUID_SMEP: CpuidBit = CpuidBit {
    leaf: 7,
    subleaf: 0,
    reg: CpuidReg::Ebx,
    bit: 7,
};
pub const CPUID_SMAP: CpuidBit = CpuidBit {
    leaf: 7,
    subleaf: 0,
    reg: CpuidReg::Ebx,
    bit: 20,
};
pub const CPUID_PKU: CpuidBit = CpuidBit {
    leaf: 7,
    subleaf: 0,
    reg: CpuidReg::Ecx,
    bit: 3,
};
pub const CPUID_LA57: CpuidBit = CpuidBit {
    leaf: 7,
    subleaf: 0,
    reg: CpuidReg::Ecx,
    bit: 16,
};
pub const CPUID_PCID: CpuidBit = CpuidBit {
    leaf: 1,
    subleaf: 0,
    reg: CpuidReg::Ecx,
    bit: 17,
};
pub const CPUID_PGE: CpuidBit = CpuidBit {
    leaf: 1,
    subleaf: 0,
    reg: CpuidReg::Edx,
    bit: 13,
};
pub const CPUID_NX: CpuidBit = CpuidBit {
    leaf: 0x8000_0001,
    subleaf: 0,
    reg: CpuidReg::Edx,
    bit: 20,
};

/// A scenario under construction: the architectural model (which turns each write into the
/// expected events) plus the bookkeeping for checks and feature gates.
pub struct Program {
    pub model: Model,
    /// False while emitting a feature-gated block whose feature the CPU lacks: its code is
    /// still assembled, but its events are not expected.
    live: bool,
    next_status: u8,
    next_marker: u32,
}

fn is64(a: &CodeAssembler) -> bool {
    a.bitness() == 64
}

impl Program {
    pub fn new(features: CpuFeatures) -> Self {
        Program {
            model: Model::new(features),
            live: true,
            next_status: status::FIRST_CHECK,
            next_marker: 0x6d6d_7501,
        }
    }

    /// Index the next expected event will have.
    pub fn next_event(&self) -> usize {
        self.model.events.len()
    }

    fn load_acc(a: &mut CodeAssembler, value: u64) -> Result<(), BuildError> {
        if is64(a) {
            a.mov(rax, value)?;
        } else {
            let v = u32::try_from(value)
                .map_err(|_| BuildError::Model(format!("{value:#x} needs 64-bit code")))?;
            a.mov(eax, v)?;
        }
        Ok(())
    }

    fn model_err(r: Result<u64, String>) -> Result<u64, BuildError> {
        r.map_err(BuildError::Model)
    }

    /// `mov eax, value; mov cr0, eax` (rax in 64-bit code).
    pub fn mov_cr0(&mut self, a: &mut CodeAssembler, value: u64) -> Result<(), BuildError> {
        Self::load_acc(a, value)?;
        if is64(a) {
            a.mov(cr0, rax)?;
        } else {
            a.mov(cr0, eax)?;
        }
        Self::model_err(self.model.cr0(value))?;
        Ok(())
    }

    /// `mov eax, value; mov cr3, eax` (rax in 64-bit code).
    pub fn mov_cr3(&mut self, a: &mut CodeAssembler, value: u64) -> Result<(), BuildError> {
        Self::load_acc(a, value)?;
        if is64(a) {
            a.mov(cr3, rax)?;
        } else {
            a.mov(cr3, eax)?;
        }
        Self::model_err(self.model.cr3(value))?;
        Ok(())
    }

    /// `mov eax, value; mov cr4, eax` (rax in 64-bit code).
    pub fn mov_cr4(&mut self, a: &mut CodeAssembler, value: u64) -> Result<(), BuildError> {
        Self::load_acc(a, value)?;
        if is64(a) {
            a.mov(cr4, rax)?;
        } else {
            a.mov(cr4, eax)?;
        }
        Self::model_err(self.model.cr4(value, self.live))?;
        Ok(())
    }

    /// CR4 with `set` bits added and `clear` bits removed from the modelled value.
    pub fn cr4_update(
        &mut self,
        a: &mut CodeAssembler,
        set: u64,
        clear: u64,
    ) -> Result<(), BuildError> {
        let v = (self.model.state.cr4 | set) & !clear;
        self.mov_cr4(a, v)
    }

    /// `wrmsr` of EFER with an immediate value (LMA written as the CPU currently has it, as a
    /// read-modify-write would).
    pub fn wrmsr_efer(&mut self, a: &mut CodeAssembler, value: u64) -> Result<(), BuildError> {
        let value =
            (value & !crate::expect::EFER_LMA) | (self.model.state.efer & crate::expect::EFER_LMA);
        a.mov(ecx, MSR_EFER)?;
        a.mov(eax, value as u32)?;
        a.mov(edx, (value >> 32) as u32)?;
        a.wrmsr()?;
        Self::model_err(self.model.efer(value))?;
        Ok(())
    }

    /// Emits `cmp eax, expected; je ok; <exit with a fresh non-zero status>; ok:`.
    pub fn expect_eax(&mut self, a: &mut CodeAssembler, expected: u32) -> Result<(), BuildError> {
        let code = self.next_status;
        self.next_status = self.next_status.wrapping_add(1).max(status::FIRST_CHECK);
        let mut ok = a.create_label();
        a.cmp(eax, expected)?;
        a.je(ok)?;
        exit(a, code)?;
        a.set_label(&mut ok)?;
        a.nop()?;
        Ok(())
    }

    fn addr_reg(a: &mut CodeAssembler, addr: u64) -> Result<AsmMemoryOperand, BuildError> {
        if is64(a) {
            a.mov(rbx, addr)?;
            Ok(dword_ptr(rbx))
        } else {
            let v = u32::try_from(addr)
                .map_err(|_| BuildError::Model(format!("{addr:#x} needs 64-bit code")))?;
            a.mov(ebx, v)?;
            Ok(dword_ptr(ebx))
        }
    }

    /// Writes `value` at linear `addr` and reads it back (exit with a non-zero status if the
    /// read differs).
    pub fn touch(
        &mut self,
        a: &mut CodeAssembler,
        addr: u64,
        value: u32,
    ) -> Result<(), BuildError> {
        let m = Self::addr_reg(a, addr)?;
        a.mov(m, value)?;
        a.mov(eax, m)?;
        self.expect_eax(a, value)
    }

    /// A fresh marker value, distinct from every earlier one and from zero.
    pub fn marker(&mut self) -> u32 {
        let m = self.next_marker;
        self.next_marker = self.next_marker.wrapping_add(1);
        m
    }

    /// [`Program::touch`] with a fresh marker; returns the marker.
    pub fn touch_new(&mut self, a: &mut CodeAssembler, addr: u64) -> Result<u32, BuildError> {
        let m = self.marker();
        self.touch(a, addr, m)?;
        Ok(m)
    }

    /// Reads linear `addr` and checks it holds `value`.
    pub fn check(
        &mut self,
        a: &mut CodeAssembler,
        addr: u64,
        value: u32,
    ) -> Result<(), BuildError> {
        let m = Self::addr_reg(a, addr)?;
        a.mov(eax, m)?;
        self.expect_eax(a, value)
    }

    /// Emits `cpuid` for `bit` and a jump to `absent` when the bit is clear. For leaves 7 and
    /// 0x8000_0001 it first checks that the maximum leaf reaches them (otherwise CPUID returns
    /// the highest leaf's data, which must not be taken for feature bits). Clobbers
    /// eax/ebx/ecx/edx.
    fn test_cpuid(
        a: &mut CodeAssembler,
        bit: CpuidBit,
        absent: CodeLabel,
    ) -> Result<(), BuildError> {
        if bit.leaf != 0 && bit.leaf != 1 && bit.leaf != 0x8000_0000 {
            a.mov(eax, bit.leaf & 0x8000_0000)?;
            a.cpuid()?;
            a.cmp(eax, bit.leaf)?;
            a.jb(absent)?;
        }
        a.mov(eax, bit.leaf)?;
        a.mov(ecx, bit.subleaf)?;
        a.cpuid()?;
        let mask = 1u32 << bit.bit;
        match bit.reg {
            CpuidReg::Ebx => a.test(ebx, mask)?,
            CpuidReg::Ecx => a.test(ecx, mask)?,
            CpuidReg::Edx => a.test(edx, mask)?,
        }
        a.jz(absent)?;
        Ok(())
    }

    /// Runs `body` only when CPUID has `bit`. `present` says whether the CPU the expectations
    /// are for has it; the block must leave the control registers as it found them, so the
    /// expected sequence after it does not depend on the branch taken.
    pub fn if_cpuid(
        &mut self,
        a: &mut CodeAssembler,
        bit: CpuidBit,
        present: bool,
        body: impl FnOnce(&mut Program, &mut CodeAssembler) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let mut skip = a.create_label();
        Self::test_cpuid(a, bit, skip)?;
        let saved_state = self.model.state;
        let saved_len = self.model.events.len();
        let saved_live = self.live;
        self.live = saved_live && present;
        body(self, a)?;
        self.live = saved_live;
        if self.model.state != saved_state {
            return Err(BuildError::Model(format!(
                "feature block for CPUID {:#x} bit {} does not restore the control registers",
                bit.leaf, bit.bit
            )));
        }
        if !(saved_live && present) {
            self.model.events.truncate(saved_len);
        }
        a.set_label(&mut skip)?;
        a.nop()?;
        Ok(())
    }

    /// Exits with [`status::MISSING_FEATURE`] unless CPUID has `bit`.
    pub fn require_cpuid(
        &mut self,
        a: &mut CodeAssembler,
        bit: CpuidBit,
    ) -> Result<(), BuildError> {
        let mut absent = a.create_label();
        let mut ok = a.create_label();
        Self::test_cpuid(a, bit, absent)?;
        a.jmp(ok)?;
        a.set_label(&mut absent)?;
        exit(a, status::MISSING_FEATURE)?;
        a.set_label(&mut ok)?;
        a.nop()?;
        Ok(())
    }

    /// Real mode → 16-bit prologue → CR0.PE → far jump to 32-bit code at `code32`.
    /// Emits `cli`, zeroes the data segments, sets SP, `lgdt [gdtr]`, then one CR0 write
    /// (event: Cr0 0x11, Transition Real→Unpaged).
    pub fn real_to_protected(
        &mut self,
        a: &mut CodeAssembler,
        gdtr: u64,
        stack: u16,
        code32: u32,
    ) -> Result<(), BuildError> {
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, stack as u32)?;
        let gdtr = u32::try_from(gdtr).ok().filter(|g| *g <= 0xffff);
        let gdtr = gdtr.ok_or_else(|| BuildError::Layout("GDTR beyond 64 KiB".into()))?;
        a.lgdt(ptr(gdtr))?;
        self.mov_cr0(a, crate::expect::CR0_PE | crate::expect::CR0_ET)?;
        a.jmp_far(SEL_CODE32, code32)?;
        Ok(())
    }

    /// 32-bit prologue: flat data segments and a stack.
    pub fn protected_prologue(a: &mut CodeAssembler, stack: u32) -> Result<(), BuildError> {
        a.mov(ax, SEL_DATA as u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, stack)?;
        Ok(())
    }

    /// From 32-bit protected mode with paging off into 64-bit code at `code64`:
    /// CR3 ← `pml4`, CR4 ← current | PAE, EFER ← LME, CR0 ← PE|ET|PG, far jump.
    /// Events: Cr3, Cr4, Efer, Cr0, Transition Unpaged→Level4.
    pub fn protected_to_long(
        &mut self,
        a: &mut CodeAssembler,
        pml4: u64,
        code64: u32,
    ) -> Result<(), BuildError> {
        use crate::expect::*;
        self.mov_cr3(a, pml4)?;
        self.cr4_update(a, CR4_PAE, 0)?;
        self.wrmsr_efer(a, self.model.state.efer | EFER_LME)?;
        self.mov_cr0(a, CR0_PE | CR0_ET | CR0_PG)?;
        a.jmp_far(SEL_CODE64, code64)?;
        Ok(())
    }

    /// 64-bit prologue: data segments and a stack.
    pub fn long_prologue(a: &mut CodeAssembler, stack: u64) -> Result<(), BuildError> {
        a.mov(ax, SEL_DATA as u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(rsp, stack)?;
        Ok(())
    }
}

/// `mov al, status; out 0xf4, al; hlt`. The VMM ends the run at the `out`; the `hlt` (and the
/// jump back to it) only guard against a VMM that does not.
pub fn exit(a: &mut CodeAssembler, status: u8) -> Result<(), BuildError> {
    let mut here = a.create_label();
    a.mov(al, status as u32)?;
    a.out(DEBUG_EXIT_PORT, al)?;
    a.set_label(&mut here)?;
    a.hlt()?;
    a.jmp(here)?;
    Ok(())
}
