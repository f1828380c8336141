//! What a scenario promises: the control-register writes and paging-mode transitions it
//! performs, in order, and the MMU-context findings it provokes; plus the architectural model
//! that derives the transitions from the writes, so code and expectations cannot drift apart.

use traces::{ControlReg, FindingKind, PagingMode};

/// One event of a scenario's exact, ordered event sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedEvent {
    /// A write to CR0, CR3, CR4, EFER or XCR0; `new` is the value the register holds after the
    /// instruction (see the crate documentation for the conventions).
    Cr { reg: ControlReg, new: u64 },
    /// The paging mode changed; it directly follows the `Cr` event that caused it.
    Transition { from: PagingMode, to: PagingMode },
    /// A write the CPU answered with #GP: the register kept its value; `attempted` is what the
    /// instruction tried to write (the trace's `CrWrite.new` with `faulted: true`). The
    /// `Exception` event of the #GP follows it.
    CrFaulted { reg: ControlReg, attempted: u64 },
    /// An exception delivered to the guest's handler: vector, the error code for the vectors
    /// that push one, CR2 for #PF.
    Exception {
        vector: u8,
        error_code: Option<u32>,
        cr2: Option<u64>,
    },
}

/// A finding the recorder must report for one policy (under TDP).
///
/// The list of a scenario is what the scenario exists to provoke (stale contexts of the
/// modelled regressions), not everything a policy may report: needless-reset findings, whose
/// presence depends on the model's definition of "identical context", are not listed. A
/// recorder test checks that every expected finding is reported, and that policies with none
/// listed report no stale context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExpectedFinding {
    /// Policy name as the `mmu` crate spells it, e.g. `v5.1-rc3`.
    pub policy: &'static str,
    pub kind: FindingKind,
    /// Index into [`crate::Scenario::expected`] of the event the finding is about.
    pub at_event: usize,
}

/// The CPUID features a scenario's run-time checks look at. The guest code is the same for
/// every value; only the expected event sequence depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuFeatures {
    /// CPUID.(7,0):ECX bit 3: CR4.PKE.
    pub pku: bool,
    /// CPUID.(7,0):ECX bit 16: CR4.LA57.
    pub la57: bool,
    /// CPUID.1:ECX bit 17: CR4.PCIDE.
    pub pcid: bool,
    /// CPUID.(7,0):EBX bit 7: CR4.SMEP.
    pub smep: bool,
    /// CPUID.(7,0):EBX bit 20: CR4.SMAP.
    pub smap: bool,
}

impl Default for CpuFeatures {
    /// The development hosts (PVM KVM): SMEP and SMAP, no PKU, LA57 or PCID.
    fn default() -> Self {
        CpuFeatures {
            pku: false,
            la57: false,
            pcid: false,
            smep: true,
            smap: true,
        }
    }
}

impl CpuFeatures {
    /// Reads the features from a CPUID table as a backend exposes it to the guest (entries for
    /// leaves the table lacks count as "feature absent", as they do for the guest's checks,
    /// which also require the maximum basic leaf to reach 7).
    pub fn from_cpuid(entries: &[traces::CpuidEntry]) -> Self {
        let leaf = |function: u32, index: u32| {
            entries
                .iter()
                .find(|e| e.function == function && e.index == index)
        };
        let max_basic = leaf(0, 0).map_or(0, |e| e.eax);
        let l1 = leaf(1, 0);
        let l7 = if max_basic >= 7 { leaf(7, 0) } else { None };
        let bit = |v: Option<u32>, b: u32| v.is_some_and(|v| v & (1 << b) != 0);
        CpuFeatures {
            pku: bit(l7.map(|e| e.ecx), 3),
            la57: bit(l7.map(|e| e.ecx), 16),
            pcid: bit(l1.map(|e| e.ecx), 17),
            smep: bit(l7.map(|e| e.ebx), 7),
            smap: bit(l7.map(|e| e.ebx), 20),
        }
    }

    /// Every optional feature present: the expected sequence of a fully featured CPU.
    pub fn all() -> Self {
        CpuFeatures {
            pku: true,
            la57: true,
            pcid: true,
            smep: true,
            smap: true,
        }
    }

    /// No optional feature.
    pub fn none() -> Self {
        CpuFeatures {
            pku: false,
            la57: false,
            pcid: false,
            smep: false,
            smap: false,
        }
    }
}

// Architectural bits the model and the scenarios use (the `mmu` crate owns them).
pub(crate) use mmu::bits::{
    CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR3_NOFLUSH, CR4_LA57, CR4_PAE, CR4_PCIDE, CR4_PGE, CR4_PKE,
    CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE,
};
/// Reserved on every CPU so far (bits 63:32 are not all reserved: bit 32 is FRED).
pub(crate) const CR4_RESERVED_15: u64 = 1 << 15;

/// The paging mode selected by CR0/CR4/EFER (SDM Vol. 3A §4.1.1), as `mmu` decides it.
pub fn paging_mode(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
    history::to_trace::paging_mode(mmu::PagingMode::of(cr0, cr4, efer))
}

/// The control registers as the guest's writes leave them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl CpuState {
    /// The architectural reset state the scenarios start from (see [`crate::image::real_mode_entry`]).
    pub fn reset() -> Self {
        CpuState {
            cr0: 0x6000_0010,
            cr3: 0,
            cr4: 0,
            efer: 0,
        }
    }

    pub fn mode(&self) -> PagingMode {
        paging_mode(self.cr0, self.cr4, self.efer)
    }
}

/// Records the events one guest write produces, rejecting writes the architecture (as KVM
/// implements it) would answer with #GP: a scenario must never fault, as it has no IDT.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    pub state: CpuState,
    pub events: Vec<ExpectedEvent>,
    pub features: CpuFeatures,
}

impl Model {
    pub fn new(features: CpuFeatures) -> Self {
        Model {
            state: CpuState::reset(),
            events: Vec::new(),
            features,
        }
    }

    fn push(&mut self, reg: ControlReg, new: u64, before: PagingMode) {
        self.events.push(ExpectedEvent::Cr { reg, new });
        let after = self.state.mode();
        if after != before {
            self.events.push(ExpectedEvent::Transition {
                from: before,
                to: after,
            });
        }
    }

    /// `mov cr0, value`. The CPU forces ET to 1, so scenarios always write it set. Setting PG
    /// with EFER.LME=1 sets EFER.LMA as part of this write (no separate EFER event).
    pub fn cr0(&mut self, value: u64) -> Result<u64, String> {
        let s = self.state;
        if value >> 32 != 0 || value & CR0_ET == 0 {
            return Err(format!("cr0 {value:#x}: bits 63:32 set or ET clear"));
        }
        if value & CR0_PG != 0 && value & CR0_PE == 0 {
            return Err(format!("cr0 {value:#x}: PG without PE"));
        }
        let pg_on = s.cr0 & CR0_PG == 0 && value & CR0_PG != 0;
        let pg_off = s.cr0 & CR0_PG != 0 && value & CR0_PG == 0;
        if pg_on && s.efer & EFER_LME != 0 && s.cr4 & CR4_PAE == 0 {
            return Err("cr0.PG with EFER.LME and CR4.PAE clear".into());
        }
        if pg_off && s.efer & EFER_LMA != 0 {
            return Err("clearing CR0.PG in IA-32e mode (the scenarios never leave it)".into());
        }
        let before = s.mode();
        self.state.cr0 = value;
        if pg_on && s.efer & EFER_LME != 0 {
            self.state.efer |= EFER_LMA;
        }
        if pg_off {
            self.state.efer &= !EFER_LMA;
        }
        self.push(ControlReg::Cr0, value, before);
        Ok(value)
    }

    /// `mov cr3, value`. With CR4.PCIDE=1 bit 63 is the no-flush hint and is not stored.
    pub fn cr3(&mut self, value: u64) -> Result<u64, String> {
        let pcide = self.state.cr4 & CR4_PCIDE != 0;
        let stored = if pcide { value & !CR3_NOFLUSH } else { value };
        if stored >> 52 != 0 || (!pcide && value & CR3_NOFLUSH != 0) {
            return Err(format!("cr3 {value:#x}: reserved bits"));
        }
        let before = self.state.mode();
        self.state.cr3 = stored;
        self.push(ControlReg::Cr3, stored, before);
        Ok(stored)
    }

    /// `mov cr4, value`.
    pub fn cr4(&mut self, value: u64, live: bool) -> Result<u64, String> {
        let s = self.state;
        let f = self.features;
        if value & CR4_RESERVED_15 != 0 {
            return Err(format!("cr4 {value:#x}: reserved bit 15"));
        }
        let needs = [
            (CR4_SMEP, f.smep, "SMEP"),
            (CR4_SMAP, f.smap, "SMAP"),
            (CR4_PKE, f.pku, "PKE"),
            (CR4_LA57, f.la57, "LA57"),
            (CR4_PCIDE, f.pcid, "PCIDE"),
        ];
        for (bit, have, name) in needs {
            if live && value & bit != 0 && !have {
                return Err(format!("cr4.{name} set but the CPU lacks it"));
            }
        }
        let lma = s.efer & EFER_LMA != 0;
        if lma && value & CR4_PAE == 0 {
            return Err("clearing CR4.PAE in IA-32e mode".into());
        }
        if lma && (value ^ s.cr4) & CR4_LA57 != 0 {
            return Err("changing CR4.LA57 in IA-32e mode".into());
        }
        if s.cr4 & CR4_PCIDE == 0 && value & CR4_PCIDE != 0 && (!lma || s.cr3 & 0xfff != 0) {
            return Err("setting CR4.PCIDE outside IA-32e mode or with CR3[11:0] != 0".into());
        }
        let before = s.mode();
        self.state.cr4 = value;
        self.push(ControlReg::Cr4, value, before);
        Ok(value)
    }

    /// `wrmsr` to EFER. LMA is read-only: the recorded value keeps the current LMA.
    pub fn efer(&mut self, value: u64) -> Result<u64, String> {
        let s = self.state;
        // The bits the scenarios know; any other is reserved or a feature they never use.
        let known = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        if value & !known != 0 {
            return Err(format!("efer {value:#x}: bits outside SCE, LME, LMA, NXE"));
        }
        if (value ^ s.efer) & EFER_LME != 0 && s.cr0 & CR0_PG != 0 {
            return Err("changing EFER.LME while paging is on".into());
        }
        let stored = (value & !EFER_LMA) | (s.efer & EFER_LMA);
        let before = s.mode();
        self.state.efer = stored;
        self.push(ControlReg::Efer, stored, before);
        Ok(stored)
    }

    /// A write the architecture answers with #GP (the model must reject it): the state stays,
    /// and the event is `CrFaulted` with the attempted value.
    pub fn faulted_write(&mut self, reg: ControlReg, attempted: u64) -> Result<(), String> {
        let mut probe = self.clone();
        let verdict = match reg {
            ControlReg::Cr0 => probe.cr0(attempted),
            ControlReg::Cr3 => probe.cr3(attempted),
            ControlReg::Cr4 => probe.cr4(attempted, true),
            ControlReg::Efer => probe.efer(attempted),
            ControlReg::Xcr0 => return Err("XCR0 writes are not modelled".into()),
        };
        if let Ok(v) = verdict {
            return Err(format!(
                "{reg:?} write of {attempted:#x} was meant to fault but is valid ({v:#x})"
            ));
        }
        self.events
            .push(ExpectedEvent::CrFaulted { reg, attempted });
        Ok(())
    }
}
