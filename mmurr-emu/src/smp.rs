//! Several vCPUs: one Unicorn engine per vCPU ([`EmuBackend`]), all mapping the same guest RAM
//! and sharing one platform with a local APIC per vCPU (`platform::Platform::with_cpus`). The
//! recorder chooses which vCPU takes each step ([`Backend::select_vcpu`]); here the IPIs take
//! effect: an AP waits in the INIT state until a startup IPI, whose step loads CS:IP from its
//! vector; a halted vCPU waits until an interrupt is pending for it.
//!
//! One engine never sees the stores of another (QEMU tracks self-modifying code and its TLB
//! per engine), so the guest-physical ranges each step or run wrote are handed to the other
//! engines, which drop translated code there and flush their TLB before they run again.
//!
//! Recorded in runs, each vCPU has its own runner (engine/run.rs) and runs in turns
//! ([`recorder::RecordOptions::vcpu_quantum`]): a run is one vCPU's, with the others stopped.

use crate::engine::EmuBackend;
use guests::image::startup_entry;
use platform::MpState;
use recorder::{Backend, BackendError, Delivery, DeliveryKind, Exit, StepResult, Written};
use traces::{BackendInfo, CpuidEntry, GuestSpec, RegionKind, Regs};

/// The most vCPUs `--cpus` accepts on the emu backend (each is an engine of its own).
pub const MAX_CPUS: u32 = 64;

/// Ranges other vCPUs wrote that a vCPU keeps before it counts everything as written.
const MAX_STALE_RANGES: usize = 1 << 16;

/// What other vCPUs wrote since a vCPU last ran, and where it holds translated code.
#[derive(Default)]
struct Stale {
    ranges: Vec<(u64, u64)>,
    /// Writes that were not listed (an `in` completed later): drop everything.
    all: bool,
    /// Guest-physical pages this vCPU's engine ran code from since its code was last dropped.
    code_pages: std::collections::BTreeSet<u64>,
}

impl Stale {
    /// Whether the writes touch a page of code.
    fn hits_code(&self) -> bool {
        self.all
            || self.ranges.iter().any(|&(gpa, len)| {
                let last = gpa.saturating_add(len.max(1) - 1) & !0xfff;
                self.code_pages.range(gpa & !0xfff..=last).next().is_some()
            })
    }
}

/// The emu backend of a machine with several vCPUs.
pub struct SmpBackend {
    cpus: Vec<EmuBackend>,
    cur: usize,
    stale: Vec<Stale>,
    /// The startup IPI the current step performed, for [`Backend::take_deliveries`].
    startup: Option<Delivery>,
}

impl SmpBackend {
    /// A machine of `cpus` vCPUs (2 to [`MAX_CPUS`]).
    pub fn new(cpus: u32) -> Result<SmpBackend, BackendError> {
        if !(2..=MAX_CPUS).contains(&cpus) {
            return Err(BackendError::Other(format!(
                "mmurr-emu: --cpus {cpus}: the emu backend runs 1 to {MAX_CPUS} vCPUs"
            )));
        }
        let mut engines = Vec::new();
        for _ in 0..cpus {
            engines.push(EmuBackend::new()?);
        }
        engines[0].smp_cpus = cpus;
        Ok(SmpBackend {
            stale: (0..cpus).map(|_| Stale::default()).collect(),
            cpus: engines,
            cur: 0,
            startup: None,
        })
    }

    /// The BSP's engine (its warnings and entry fix-ups are the machine's).
    pub fn bsp(&self) -> &EmuBackend {
        &self.cpus[0]
    }

    fn platform(&self) -> Option<std::rc::Rc<std::cell::RefCell<platform::Platform>>> {
        self.cpus[0].platform_handle()
    }

    fn mp_state(&self, cpu: usize) -> Option<MpState> {
        self.platform()?.borrow().mp_state(cpu)
    }

    fn set_mp_state(&self, cpu: usize, state: MpState) {
        if let Some(p) = self.platform() {
            p.borrow_mut().set_mp_state(cpu, state);
        }
    }

    /// What the current vCPU's step wrote becomes stale for every other engine.
    fn wrote(&mut self, written: &Written) {
        let cur = self.cur;
        for (_, s) in self.stale.iter_mut().enumerate().filter(|&(i, _)| i != cur) {
            if s.all {
                continue;
            }
            match written {
                Written::Ranges(r) => s.ranges.extend_from_slice(r),
                Written::DirtyPages(p) => s.ranges.extend(p.iter().map(|&g| (g, 0x1000))),
                Written::Unknown => s.all = true,
            }
            if s.ranges.len() > MAX_STALE_RANGES {
                // A vCPU that waited through much writing (an AP before its startup IPI)
                // starts afresh rather than checking each range.
                s.all = true;
                s.ranges = Vec::new();
            }
        }
    }

    /// Whether vCPU `cpu`'s RFLAGS.IF is set.
    fn interrupts_enabled(&mut self, cpu: usize) -> bool {
        self.cpus[cpu]
            .regs()
            .is_ok_and(|r| r.rflags & mmu::bits::RFLAGS_IF != 0)
    }
}

impl Backend for SmpBackend {
    fn info(&self) -> BackendInfo {
        self.cpus[0].info()
    }

    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        let page = |x: u64| (x + 0xfff) & !0xfff;
        if let Some(r) = guest.regions.iter().find(|r| {
            r.kind != RegionKind::Mmio && r.gpa.saturating_add(r.size) > page(guest.ram_size)
        }) {
            return Err(BackendError::Other(format!(
                "mmurr-emu: several vCPUs share guest RAM only: region {} at {:#x} lies beyond \
                 it (record this guest with one vCPU)",
                r.name, r.gpa
            )));
        }
        let (bsp, aps) = self.cpus.split_at_mut(1);
        bsp[0].load(guest)?;
        for (i, ap) in aps.iter_mut().enumerate() {
            ap.load_ap(guest, &bsp[0], i as u32 + 1)?;
        }
        Ok(())
    }

    fn regs(&mut self) -> Result<Regs, BackendError> {
        self.cpus[self.cur].regs()
    }

    fn regs_full(&mut self) -> Result<Regs, BackendError> {
        self.cpus[self.cur].regs_full()
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), BackendError> {
        self.cpus[self.cur].set_regs(regs)
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.cpus[self.cur].read_phys(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let ok = self.cpus[self.cur].write_phys(gpa, data);
        if ok {
            self.wrote(&Written::Ranges(vec![(gpa, data.len() as u64)]));
        }
        ok
    }

    fn ram_size(&self) -> u64 {
        self.cpus[0].ram_size()
    }

    fn ram(&self) -> Option<&[u8]> {
        self.cpus[0].ram()
    }

    fn cpuid(&self) -> Vec<CpuidEntry> {
        self.cpus[0].cpuid()
    }

    fn host_action(&mut self, action: &traces::HostAction) -> Result<(), BackendError> {
        self.cpus[self.cur].host_action(action)?;
        // INIT leaves an AP waiting for a startup IPI (`kvm_apic_accept_events`); the BSP
        // runs on from the reset vector.
        if *action == traces::HostAction::Init && self.cur != 0 {
            self.set_mp_state(self.cur, MpState::InitReceived);
        }
        Ok(())
    }

    fn engine_translation(&mut self, gva: u64, access: mmu::Access) -> Option<Option<u64>> {
        self.cpus[self.cur].engine_translation(gva, access)
    }

    fn step(&mut self) -> Result<StepResult, BackendError> {
        let cur = self.cur;
        match self.mp_state(cur) {
            Some(MpState::SipiReceived(vector)) => {
                // The startup IPI is this step: the INIT state at the vector's page.
                self.cpus[cur].set_regs(&startup_entry(vector))?;
                self.set_mp_state(cur, MpState::Runnable);
                self.startup = Some(Delivery {
                    vector,
                    kind: DeliveryKind::Startup,
                    error_code: None,
                    cr2: None,
                });
                return Ok(StepResult {
                    exit: Exit::Stepped,
                    written: Written::Ranges(Vec::new()),
                });
            }
            Some(MpState::InitReceived) => {
                return Err(BackendError::Other(format!(
                    "mmurr-emu: vCPU {cur} waits for a startup IPI and cannot take a step"
                )))
            }
            Some(MpState::Halted) => self.set_mp_state(cur, MpState::Runnable),
            Some(MpState::Runnable) | None => {}
        }
        let r = self.cpus[cur].step();
        let pages = std::mem::take(&mut self.cpus[cur].code_pages);
        self.stale[cur].code_pages.extend(pages);
        let r = r?;
        if r.exit == Exit::Halted {
            self.set_mp_state(cur, MpState::Halted);
        }
        self.wrote(&r.written);
        Ok(r)
    }

    /// Runs on the current vCPU's engine (its own runner). During the run the other vCPUs do
    /// not execute, so it is the run of one vCPU, re-executable from the memory before it and
    /// this vCPU's registers; what it wrote becomes stale for the others. A vCPU that must
    /// first take its startup IPI or wake from HLT steps.
    fn run(&mut self, max: u64) -> Option<Result<recorder::RunResult, BackendError>> {
        let cur = self.cur;
        if !matches!(self.mp_state(cur), Some(MpState::Runnable) | None) {
            return Some(Ok(recorder::RunResult {
                count: 0,
                retired: 0,
                written: Written::DirtyPages(Vec::new()),
            }));
        }
        let r = self.cpus[cur].run(max)?;
        if let Ok(ran) = &r {
            if ran.count > 0 {
                self.wrote(&ran.written);
            }
        }
        Some(r)
    }

    fn take_deliveries(&mut self) -> Option<Vec<Delivery>> {
        if let Some(d) = self.startup.take() {
            let _ = self.cpus[self.cur].take_deliveries();
            return Some(vec![d]);
        }
        self.cpus[self.cur].take_deliveries()
    }

    fn set_irq_line(&mut self, gsi: u32, level: bool) -> Result<(), BackendError> {
        self.cpus[self.cur].set_irq_line(gsi, level)
    }

    fn virtual_time_ns(&mut self) -> Option<u64> {
        self.cpus[self.cur].virtual_time_ns()
    }

    fn instructions_to_next_timer(&mut self) -> Option<u64> {
        self.cpus[self.cur].instructions_to_next_timer()
    }

    fn vcpus(&self) -> u32 {
        self.cpus.len() as u32
    }

    fn select_vcpu(&mut self, vcpu: u32) -> Result<(), BackendError> {
        let v = vcpu as usize;
        if v >= self.cpus.len() {
            return Err(BackendError::Other(format!(
                "mmurr-emu: vCPU {vcpu} does not exist ({} vCPUs)",
                self.cpus.len()
            )));
        }
        self.cur = v;
        if let Some(p) = self.platform() {
            p.borrow_mut().select_cpu(v);
        }
        let stale = &mut self.stale[v];
        if stale.all || !stale.ranges.is_empty() {
            let code = stale.hits_code();
            if code {
                stale.code_pages.clear();
            }
            let ranges = std::mem::take(&mut stale.ranges);
            let all = std::mem::take(&mut stale.all);
            self.cpus[v].others_wrote(&ranges, all, code);
        }
        Ok(())
    }

    fn vcpu_runnable(&mut self, vcpu: u32) -> bool {
        let v = vcpu as usize;
        match self.mp_state(v) {
            Some(MpState::Runnable | MpState::SipiReceived(_)) => true,
            Some(MpState::InitReceived) | None => false,
            Some(MpState::Halted) => {
                let if_set = self.interrupts_enabled(v);
                self.platform().is_some_and(|p| p.borrow().wakes(v, if_set))
            }
        }
    }

    fn wait_for_any(&mut self) -> bool {
        let halted: Vec<usize> = (0..self.cpus.len())
            .filter(|&v| self.mp_state(v) == Some(MpState::Halted))
            .collect();
        let halted: Vec<(usize, bool)> = halted
            .into_iter()
            .map(|v| (v, self.interrupts_enabled(v)))
            .collect();
        self.platform()
            .is_some_and(|p| p.borrow_mut().wait_for_any(&halted))
    }

    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError> {
        let r = self.cpus[self.cur].complete_io_in(data);
        // Its writes were reported as unknown: the other engines drop what they cached.
        self.wrote(&Written::Unknown);
        r
    }

    fn complete_mmio_read(&mut self, data: u64) -> Result<(), BackendError> {
        let r = self.cpus[self.cur].complete_mmio_read(data);
        self.wrote(&Written::Unknown);
        r
    }

    fn take_completion(&mut self) -> StepResult {
        self.cpus[self.cur].take_completion()
    }
}
