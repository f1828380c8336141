//! Engine divergences in the trace: after every CR event the recorder compares the engine's
//! own translation (Unicorn's MMU) with the reference walker for the addresses the guest
//! touches next. On the built-in scenarios they agree; an engine that translates wrongly (a
//! wrapper that shifts Unicorn's answer by a page) is caught and recorded.

use guests::CpuFeatures;
use mmurr_emu::EmuBackend;
use recorder::{Backend, BackendError, RecordOptions, StepResult};
use traces::{BackendInfo, CpuidEntry, EventKind, GuestSpec, Reader, Record, Regs};

/// The emu backend with a broken MMU: every successful engine translation is one page off.
struct OnePageOff(EmuBackend);

impl Backend for OnePageOff {
    fn info(&self) -> BackendInfo {
        self.0.info()
    }
    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        self.0.load(guest)
    }
    fn regs(&mut self) -> Result<Regs, BackendError> {
        self.0.regs()
    }
    fn regs_full(&mut self) -> Result<Regs, BackendError> {
        self.0.regs_full()
    }
    fn set_regs(&mut self, regs: &Regs) -> Result<(), BackendError> {
        self.0.set_regs(regs)
    }
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.0.read_phys(gpa, buf)
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.0.write_phys(gpa, data)
    }
    fn ram_size(&self) -> u64 {
        self.0.ram_size()
    }
    fn ram(&self) -> Option<&[u8]> {
        self.0.ram()
    }
    fn cpuid(&self) -> Vec<CpuidEntry> {
        self.0.cpuid()
    }
    fn engine_translation(&mut self, gva: u64, access: mmu::Access) -> Option<Option<u64>> {
        self.0
            .engine_translation(gva, access)
            .map(|t| t.map(|gpa| gpa + 0x1000))
    }
    fn step(&mut self) -> Result<StepResult, BackendError> {
        self.0.step()
    }
    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError> {
        self.0.complete_io_in(data)
    }
    fn complete_mmio_read(&mut self, data: u64) -> Result<(), BackendError> {
        self.0.complete_mmio_read(data)
    }
}

/// Records `name` on `backend`; returns the engine-divergence events and the CR writes.
fn divergences(backend: &mut dyn Backend, name: &str) -> (Vec<(u64, String, String)>, usize) {
    let features = CpuFeatures::from_cpuid(&backend.cpuid());
    let scenario = guests::scenario(name, &features).expect("scenario");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.mmurr");
    let mut opts = RecordOptions::new(&out);
    opts.max_steps = 100_000;
    recorder::record(backend, &scenario.guest, &opts).expect("record");
    let mut reader = Reader::open(&out).expect("open trace");
    let (mut found, mut cr_writes) = (Vec::new(), 0);
    for r in reader.records() {
        if let Record::Event(e) = r.expect("record") {
            match e.kind {
                EventKind::EngineDivergence {
                    gva,
                    engine,
                    reference,
                } => found.push((gva, engine, reference)),
                EventKind::CrWrite(_) => cr_writes += 1,
                _ => {}
            }
        }
    }
    (found, cr_writes)
}

#[test]
fn unicorn_agrees_with_the_walker_after_every_cr_event_of_every_scenario() {
    for name in guests::scenario_names() {
        let mut b = EmuBackend::new().expect("open unicorn");
        let (found, cr_writes) = divergences(&mut b, name);
        assert!(cr_writes > 0, "{name}");
        assert!(found.is_empty(), "{name}: {found:x?}");
    }
}

#[test]
fn an_engine_that_translates_wrongly_is_recorded() {
    let mut b = OnePageOff(EmuBackend::new().expect("open unicorn"));
    let (found, _) = divergences(&mut b, "long-mode-toggles");
    assert!(!found.is_empty(), "no engine divergence recorded");
    for (gva, engine, reference) in &found {
        // The walker's answer and the engine's, one page apart, for the same access.
        let gpa = |s: &str| u64::from_str_radix(s.rsplit("0x").next().unwrap(), 16).unwrap();
        assert_eq!(
            gpa(engine),
            gpa(reference) + 0x1000,
            "{gva:#x}: {engine} vs {reference}"
        );
        assert_eq!(engine.split(' ').next(), reference.split(' ').next());
    }
}
