//! Built-in guest scenarios and guest image loaders for mmurr.
//!
//! A [`Scenario`] is a small x86 program, assembled in Rust with iced-x86's code assembler,
//! that starts in real mode, builds its own GDT and page tables, switches paging modes itself
//! and ends by writing status 0 to the debug-exit port `0xf4` (a non-zero status on any
//! unexpected path, e.g. a marker read back wrong). Interrupts stay disabled and no scenario
//! has an IDT, so a fault would end the run with a triple fault.
//!
//! Each scenario carries the **exact** sequence of events a recorder must see, as
//! [`ExpectedEvent`]s, and the MMU-context findings it must provoke, as [`ExpectedFinding`]s.
//!
//! # Event conventions
//!
//! * Every write to CR0, CR3, CR4, EFER (by `wrmsr`) and XCR0 is one `Cr` event, in program
//!   order, **including writes that leave the value unchanged** (e.g. a CR3 reload).
//! * `new` is the value the register holds after the instruction: CR0 with ET as the CPU
//!   forces it (the scenarios always write ET=1, so this is the value written); CR3 without
//!   bit 63 when CR4.PCIDE=1 (the no-flush hint is not stored); EFER with LMA as the CPU keeps
//!   it (`wrmsr` cannot change LMA, so an EFER write before paging is on has LMA clear).
//! * EFER.LMA changes as a consequence of a CR0.PG write with EFER.LME=1. A recorder reports
//!   that as part of the CR0 event (whose `CrWrite` shows the new CR0), **not** as a separate
//!   EFER event.
//! * A `Transition { from, to }` directly follows the `Cr` event whose write changed the
//!   paging mode ([`expect::paging_mode`]: CR0.PE, CR0.PG, CR4.PAE, EFER.LMA, CR4.LA57). The
//!   far jumps that follow mode switches (into 32-bit code, into 64-bit code) change no paging
//!   mode and produce no event.
//!
//! Optional CPU features (SMEP, SMAP, PKU, LA57, PCID) are tested by the guest with CPUID at
//! run time, so a scenario's guest image is the same on every CPU; the expected sequence is a
//! function of [`CpuFeatures`], which a recorder derives from the guest's CPUID
//! ([`CpuFeatures::from_cpuid`]).
//!
//! The scenarios, their memory layouts and their event lists are described in the modules of
//! [`mod@scenarios`]; the shared building blocks (mode switches, recorded control-register writes,
//! CPUID gates, checked memory touches) are in the private `asm` module.
//!
//! # KVM's MMU history
//!
//! [`catalogue`] lists the entries of KVM's MMU-role history (the reference sheet's §6.1-6.2)
//! with the scenario that reproduces each, or why none can. [`model`] holds the model-level
//! scenarios: scripts of guest writes and host-side actions (KVM_SET_SREGS, KVM_SET_MSRS,
//! KVM_SET_CPUID2, INIT) run on the `mmu` crate's trackers, each declaring its verdicts per
//! policy; [`model::from_scenario`] runs a guest scenario's exact writes the same way, and
//! [`model::guest`] makes a script that runs no L2 a guest scenario whose host actions
//! ([`host_actions`], which also owns their `--host-action` spelling) the recorder performs.
//!
//! # Loaders
//!
//! [`loader::load_raw`] places a raw binary and enters it in real, protected or long mode;
//! [`loader::load_multiboot`] loads a multiboot (v1) kernel (ELF, or the a.out kludge) with a
//! command line and modules, builds the multiboot information (memory map included) and the
//! entry state the specification defines. [`test_kernels::build_hello`] assembles the
//! committed multiboot test kernel with the system's binutils for tests.

mod asm;
pub mod catalogue;
pub mod expect;
pub mod host_actions;
pub mod image;
pub mod loader;
pub mod model;
pub mod probes;
pub mod scenarios;
pub mod tables;
#[doc(hidden)]
pub mod test_kernels;

pub use asm::{gdt_blob, BuildError};
pub use expect::{CpuFeatures, ExpectedEvent, ExpectedFinding};
pub use scenarios::RAM_SIZE as SCENARIO_RAM_SIZE;

use traces::{GuestSpec, PagingMode};

/// A built-in guest scenario with the events it must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    /// One line for `mmurr scenarios`.
    pub description: &'static str,
    /// Paging modes the scenario runs in (a backend must support all of them). Real mode and
    /// unpaged protected mode, which every scenario passes through, are not listed.
    pub needs: Vec<PagingMode>,
    pub guest: GuestSpec,
    /// The exact event sequence (see the crate documentation for the conventions).
    pub expected: Vec<ExpectedEvent>,
    /// Findings under TDP, each naming a policy and the index of the event it is about.
    pub expected_findings: Vec<ExpectedFinding>,
    /// What each application processor the scenario starts must do, when the machine has it
    /// (`--cpus`): AP `k` (APIC ID `k`) at index `k - 1`. `expected` and `expected_findings`
    /// are the BSP's (vCPU 0), the same for any number of vCPUs. Empty for one-CPU scenarios.
    pub aps: Vec<ApExpectation>,
    /// What the VMM does to the vCPU, and when (a model-level script run as a guest,
    /// [`model::guest`]); the recorder performs each for real.
    pub host_actions: Vec<host_actions::HostActionAt>,
    /// The MMU flavour the scenario is about, when it is not TDP (a record's default).
    pub flavour: Option<mmu::Flavour>,
}

/// The exact event sequence of one AP, and its findings (indexes into `expected`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApExpectation {
    pub expected: Vec<ExpectedEvent>,
    pub expected_findings: Vec<ExpectedFinding>,
}

impl Scenario {
    /// False when the scenario needs legacy 32-bit or PAE paging, which the PVM KVM of the
    /// development hosts cannot run (KVM_EXIT_SHUTDOWN); such scenarios need `--backend emu`
    /// there.
    pub fn runs_on_pvm_kvm(&self) -> bool {
        !self
            .needs
            .iter()
            .any(|m| matches!(m, PagingMode::Bits32 | PagingMode::Pae))
    }

    /// The paging modes the scenario needs on a machine of `cpus` vCPUs: those of [`Self::needs`]
    /// that the BSP or an AP the machine has enters (its expected transitions); all of them
    /// for a scenario without APs.
    pub fn needs_on(&self, cpus: u32) -> Vec<PagingMode> {
        if self.aps.is_empty() {
            return self.needs.clone();
        }
        let aps = self.aps.iter().take(cpus.saturating_sub(1) as usize);
        let entered: Vec<PagingMode> = std::iter::once(&self.expected)
            .chain(aps.map(|ap| &ap.expected))
            .flatten()
            .filter_map(|e| match e {
                ExpectedEvent::Transition { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        self.needs
            .iter()
            .copied()
            .filter(|m| entered.contains(m))
            .collect()
    }
}

/// Names of the built-in scenarios, in presentation order.
pub fn scenario_names() -> Vec<&'static str> {
    scenarios::ALL.iter().map(|(n, _)| *n).collect()
}

/// Every built-in scenario, with the expected sequences of the development hosts' CPU
/// ([`CpuFeatures::default`]).
pub fn scenarios() -> Vec<Scenario> {
    let f = CpuFeatures::default();
    scenario_names()
        .into_iter()
        .filter_map(|n| scenario(n, &f))
        .collect()
}

/// The scenario `name` with the expected sequence for a CPU with `features`; `None` for an
/// unknown name.
///
/// # Panics
///
/// Only if a built-in program fails to assemble or would fault, which the crate's tests rule
/// out for every scenario and every feature combination ([`try_scenario`] reports it instead).
pub fn scenario(name: &str, features: &CpuFeatures) -> Option<Scenario> {
    let (_, build) = scenarios::ALL.iter().find(|(n, _)| *n == name)?;
    match build(features) {
        Ok(s) => Some(s),
        Err(e) => panic!("built-in scenario {name} does not build: {e}"),
    }
}

/// Like [`scenario`], but reports a build failure instead of panicking.
///
/// A model-level script that runs as a guest ([`model::guest`]) is a scenario too, with its host
/// actions.
pub fn try_scenario(name: &str, features: &CpuFeatures) -> Result<Option<Scenario>, BuildError> {
    match scenarios::ALL.iter().find(|(n, _)| *n == name) {
        Some((_, build)) => build(features).map(Some),
        None => match model::scripts::script_named(name) {
            Some(s) if model::guest::recordable(&s) => model::guest::scenario(&s).map(Some),
            _ => Ok(None),
        },
    }
}
