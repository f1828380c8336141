//! The kvm backend proper: one VM with its vCPUs and RAM, stepped one instruction at a time
//! with KVM_SET_GUEST_DEBUG (SINGLESTEP) and read through KVM_CAP_SYNC_REGS. With several
//! vCPUs the recorder selects which one steps ([`Backend::select_vcpu`]); the others are
//! parked with their state, and [`crate::smp`] says which can run.

use crate::dirty::DirtyLog;
use crate::mapping::{self, DirtyRing, GuestRam};
use crate::probe::HostReport;
use crate::regs::{kvm_regs_of, kvm_sregs_of, regs_from_kvm};
use crate::smp::{self, MpState, StartupWatch};
use kvm_bindings::{
    kvm_enable_cap, kvm_guest_debug, kvm_msr_entry, kvm_pit_config, CpuId, Msrs,
    KVM_CAP_DIRTY_LOG_RING, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    KVM_EXIT_DIRTY_RING_FULL, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use recorder::{Backend, BackendError, Delivery, DeliveryKind, Exit, StepResult, Written};
use traces::{BackendInfo, CpuidEntry, GuestSpec, HostAction, Regs};

const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
use mmu::bits::{CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
/// KVM needs three pages for the VMX real-mode TSS; put them where RAM never reaches.
const TSS_ADDRESS: usize = 0xfffb_d000;
/// RAM stays below the TSS pages and the 32-bit MMIO hole.
const MAX_RAM: u64 = 3 << 30;
/// The memory slot of guest RAM.
const RAM_SLOT: u32 = 0;
/// CPUID leaf of KVM's paravirtual features (Documentation/virt/kvm/x86/cpuid.rst).
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
const PAGE_SHIFT: u32 = 12;
/// Dirty-ring size: 4096 entries. A step publishes a handful (its writes, the A/D bits of a
/// walk) and the ring is reset at least every `dirty::HOT_REPORTS` steps.
const DIRTY_RING_BYTES: usize = 4096 * 16;

/// While no vCPU can run, [`Backend::wait_for_any`] sleeps this long before the recorder
/// looks again (KVM's timers run on host time)...
const WAIT: std::time::Duration = std::time::Duration::from_millis(1);
/// ... at most this many times in a row: then nothing is taken to wake any vCPU.
const MAX_WAITS: u32 = 10_000;

/// A vCPU not selected now, with the state the selected one keeps in [`KvmBackend`]'s fields.
struct Parked {
    fd: VcpuFd,
    regs: Regs,
    synced: bool,
    pending_read: bool,
    completion: Option<StepResult>,
}

/// A guest on /dev/kvm. Field order matters: the vCPUs and VM are closed before the RAM they
/// map is unmapped.
pub struct KvmBackend {
    /// The selected vCPU (the only one with one vCPU).
    vcpu: Option<VcpuFd>,
    /// The other vCPUs, by number; `None` at the selected one's.
    parked: Vec<Option<Parked>>,
    vm: Option<VmFd>,
    kvm: Kvm,
    ram: Option<GuestRam>,
    /// Read-only memory slots (a guest's ROM regions, e.g. below 4 GiB), by guest-physical
    /// base; after the VM in field order, like the RAM.
    roms: Vec<(u64, GuestRam)>,
    report: HostReport,
    /// Registers after the last step (from sync regs, plus the rarely-changing ones).
    regs: Regs,
    cpuid: Vec<CpuidEntry>,
    sync_regs: bool,
    /// An `in` or MMIO read is waiting for its data.
    pending_read: bool,
    /// Exact memory: `Ok` when KVM logs the pages the guest dirties (KVM_MEM_LOG_DIRTY_PAGES on
    /// the RAM slot, read after every step, see [`crate::dirty`]); `Err(why)` when the host
    /// refused, and the recorder infers writes from the decoded instruction instead.
    dirty_log: Result<DirtyLog, String>,
    /// Pages the VMM wrote itself (`write_phys`, e.g. gdb) since the last report: KVM's dirty
    /// log does not see them, so they are reported with the next step's pages.
    vmm_written: Vec<u64>,
    /// The rest of an instruction completed by `complete_io_in`/`complete_mmio_read`.
    completion: Option<StepResult>,
    /// The host's own KVM, watched through tracefs.
    host: crate::host::HostEvents,
    /// How many vCPUs the machine has, and the selected one.
    cpus: u32,
    cur: u32,
    /// The selected vCPU's sync-regs area holds its state: it has been through KVM_RUN (an AP
    /// that never ran is read and written with ioctls).
    synced: bool,
    /// Per vCPU: whether a startup IPI started it (reported by its next step).
    startups: Vec<StartupWatch>,
    /// The startup IPI the last step performed, for [`Backend::take_deliveries`].
    startup: Option<Delivery>,
    /// [`Backend::wait_for_any`] calls since the last step.
    waits: u32,
}

impl KvmBackend {
    /// Opens /dev/kvm for a machine of one vCPU. The VM itself is created by
    /// [`Backend::load`].
    pub fn new(report: HostReport) -> Result<KvmBackend, BackendError> {
        KvmBackend::with_vcpus(report, 1)
    }

    /// Opens /dev/kvm for a machine of `cpus` vCPUs (APIC IDs 0..cpus; the APs wait for
    /// INIT-SIPI), as many as this host's KVM allows.
    pub fn with_vcpus(report: HostReport, cpus: u32) -> Result<KvmBackend, BackendError> {
        if let Err(why) = &report.usable {
            return Err(BackendError::HostUnsupported(format!(
                "/dev/kvm is not usable: {why}; record with --backend emu"
            )));
        }
        let kvm = Kvm::new().map_err(|e| BackendError::Other(format!("opening /dev/kvm: {e}")))?;
        let sync_regs = report.has_cap("sync_regs");
        if !report.has_cap("set_guest_debug") {
            return Err(BackendError::HostUnsupported(
                "this host's KVM has no KVM_CAP_SET_GUEST_DEBUG, so it cannot single-step; \
                 record with --backend emu"
                    .into(),
            ));
        }
        let max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
        if cpus == 0 || cpus > max {
            return Err(BackendError::Other(format!(
                "--cpus {cpus}: this host's KVM runs 1 to {max} vCPUs"
            )));
        }
        if cpus > 1 && !report.has_cap("mp_state") {
            return Err(BackendError::HostUnsupported(format!(
                "--cpus {cpus}: this host's KVM has no KVM_CAP_MP_STATE, so mmurr cannot tell \
                 which vCPU can run; record with --backend emu"
            )));
        }
        let host = crate::host::HostEvents::new(&report);
        Ok(KvmBackend {
            host,
            vcpu: None,
            parked: Vec::new(),
            cpus,
            cur: 0,
            synced: false,
            startups: vec![StartupWatch::default(); cpus as usize],
            startup: None,
            waits: 0,
            vm: None,
            kvm,
            ram: None,
            roms: Vec::new(),
            report,
            regs: Regs::default(),
            cpuid: Vec::new(),
            sync_regs,
            pending_read: false,
            dirty_log: Err("no guest loaded".into()),
            vmm_written: Vec::new(),
            completion: None,
        })
    }

    /// One single step with nothing else: KVM_RUN and RIP from the sync-regs area, no exit
    /// handling and no register conversion. The floor the recorder's step rate is measured
    /// against (the step_rate bench); any exit but a debug exit is an error.
    /// (A full dirty ring is freed, as it must be for the vCPU to run on.)
    pub fn step_bare(&mut self) -> Result<u64, BackendError> {
        loop {
            self.synced = true;
            let vcpu = self.vcpu()?;
            match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => return Ok(vcpu.sync_regs().regs.rip),
                Ok(VcpuExit::Unsupported(KVM_EXIT_DIRTY_RING_FULL)) => self.dirty_ring_full()?,
                Ok(other) => return Err(BackendError::Other(format!("unexpected exit {other:?}"))),
                Err(e) => return Err(BackendError::Other(format!("KVM_RUN: {e}"))),
            }
        }
    }

    /// KVM_EXIT_DIRTY_RING_FULL: KVM stopped before running the instruction; the ring is
    /// harvested and freed (the pages stay in the log's hot set) and the vCPU can run on.
    fn dirty_ring_full(&mut self) -> Result<(), BackendError> {
        let vm = self
            .vm
            .as_ref()
            .ok_or_else(|| BackendError::Other("no guest loaded".into()))?;
        match self.dirty_log.as_mut() {
            Ok(log) => log.ring_full(vm).map_err(BackendError::Other),
            Err(_) => Err(BackendError::Other(
                "KVM_EXIT_DIRTY_RING_FULL without a dirty ring".into(),
            )),
        }
    }

    pub fn report(&self) -> &HostReport {
        &self.report
    }

    fn vcpu(&mut self) -> Result<&mut VcpuFd, BackendError> {
        self.vcpu
            .as_mut()
            .ok_or_else(|| BackendError::Other("no guest loaded".into()))
    }

    /// Reads regs + sregs after a run: from the sync-regs area, or with two ioctls.
    fn refresh(&mut self) -> Result<(), BackendError> {
        let sync = self.sync_regs && self.synced;
        let vcpu = self.vcpu()?;
        let (r, s) = if sync {
            let sr = vcpu.sync_regs();
            (sr.regs, sr.sregs)
        } else {
            let r = vcpu.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?;
            let s = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
            (r, s)
        };
        regs_from_kvm(&r, &s, &mut self.regs);
        Ok(())
    }

    /// Lets KVM finish a pending I/O or MMIO instruction without entering the guest again.
    /// `Some`: the instruction made one more MMIO access on the way — the write of a
    /// read-modify-write (`or dword [mmio], 1`: KVM completes the read, emulates on and exits
    /// again for the write), which is then completed too, or a read, which now waits for its
    /// data like any MMIO read.
    fn complete_pending(&mut self) -> Result<Option<Exit>, BackendError> {
        let mut further = None;
        loop {
            self.synced = true;
            let vcpu = self.vcpu()?;
            vcpu.set_kvm_immediate_exit(1);
            // Ok(None): completed (a debug exit is the single-step trap of the completed
            // instruction; EINTR is the immediate exit itself).
            let result = match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => Ok(None),
                Ok(VcpuExit::MmioWrite(gpa, data)) => Ok(Some(Ok(mmio_write(gpa, data)))),
                Ok(VcpuExit::MmioRead(gpa, data)) => Ok(Some(Ok(Exit::MmioRead {
                    gpa,
                    size: data.len().min(8) as u8,
                }))),
                Ok(other) => Ok(Some(Err(format!("{other:?}")))),
                Err(e) if e.errno() == libc::EINTR => Ok(None),
                Err(e) => Err(e),
            };
            vcpu.set_kvm_immediate_exit(0);
            match result {
                Ok(None) => break,
                Ok(Some(Ok(exit))) if further.is_none() => {
                    let read = matches!(exit, Exit::MmioRead { .. });
                    further = Some(exit);
                    if read {
                        self.pending_read = true;
                        break;
                    }
                    // A write is delivered by reporting it; the next run finishes the instruction.
                }
                Ok(Some(Ok(exit))) => {
                    return Err(BackendError::Engine(format!(
                        "KVM returned a third MMIO access {exit:?} for one instruction \
                         (after {further:?}); mmurr records at most a read and a write"
                    )))
                }
                Ok(Some(Err(exit))) => {
                    return Err(BackendError::Engine(format!(
                        "KVM returned {exit} while completing an I/O instruction"
                    )))
                }
                Err(e) => return Err(BackendError::Other(format!("KVM_RUN (completion): {e}"))),
            }
        }
        self.refresh()?;
        Ok(further)
    }

    /// What the guest may have written since the last call: the pages KVM logged dirty (and
    /// those still writable since, see [`crate::dirty`]) and those the VMM wrote; `Unknown`
    /// without a dirty log.
    fn written(&mut self) -> Result<Written, BackendError> {
        let Ok(log) = self.dirty_log.as_mut() else {
            return Ok(Written::Unknown);
        };
        let vm = self
            .vm
            .as_ref()
            .ok_or_else(|| BackendError::Other("no guest loaded".into()))?;
        let mut pages = std::mem::take(&mut self.vmm_written);
        let vmm = pages.len();
        log.read(vm, &mut pages).map_err(BackendError::Other)?;
        for p in &mut pages[vmm..] {
            *p <<= PAGE_SHIFT;
        }
        Ok(Written::DirtyPages(pages))
    }

    /// A step's result with what it wrote.
    fn stepped(&mut self, exit: Exit) -> Result<StepResult, BackendError> {
        let written = self.written()?;
        Ok(StepResult { exit, written })
    }

    /// After `complete_*`: the rest of the instruction, for [`Backend::take_completion`].
    fn completed(&mut self, further: Option<Exit>) -> Result<(), BackendError> {
        let written = self.written()?;
        self.completion = Some(StepResult {
            exit: further.unwrap_or(Exit::Stepped),
            written,
        });
        Ok(())
    }

    /// Up to 15 bytes at RIP, read from RAM through KVM_TRANSLATE when paging is on.
    fn bytes_at_rip(&self) -> Vec<u8> {
        let cs = self.regs.seg[traces::regs::CS];
        let linear = if self.regs.efer & EFER_LMA != 0 && cs.attrs & (1 << 13) != 0 {
            self.regs.rip
        } else {
            cs.base.wrapping_add(self.regs.rip) & 0xffff_ffff
        };
        let gpa = if self.regs.cr0 & CR0_PG != 0 {
            match self.vcpu.as_ref().map(|v| v.translate_gva(linear)) {
                Some(Ok(t)) if t.valid != 0 => t.physical_address,
                _ => return Vec::new(),
            }
        } else {
            linear
        };
        let mut bytes = [0u8; 15];
        let Some(ram) = &self.ram else {
            return Vec::new();
        };
        let n = (0..=15)
            .rev()
            .find(|&n| ram.read(gpa, &mut bytes[..n]))
            .unwrap_or(0);
        bytes[..n].to_vec()
    }

    /// `"int3" (cc)` for the instruction at RIP.
    fn instruction_at_rip(&self) -> String {
        recorder::insn::describe(
            &self.bytes_at_rip(),
            recorder::insn::bitness(&self.regs),
            self.regs.rip,
        )
    }

    /// The paging mode the instruction at RIP tries to enter, if it is a CR0/CR4 write that
    /// would turn on legacy (32-bit or PAE) paging.
    fn entering_legacy_paging(&self) -> Option<&'static str> {
        let bytes = self.bytes_at_rip();
        let insn =
            recorder::insn::decode(&bytes, recorder::insn::bitness(&self.regs), self.regs.rip)?;
        let w = recorder::planned_write(&insn, &self.regs)?;
        let (cr0, cr4) = match w.reg {
            traces::ControlReg::Cr0 => (w.attempted, self.regs.cr4),
            traces::ControlReg::Cr4 => (self.regs.cr0, w.attempted),
            _ => return None,
        };
        let legacy = cr0 & CR0_PG != 0 && self.regs.efer & EFER_LME == 0;
        legacy.then_some(if cr4 & CR4_PAE != 0 { "PAE" } else { "32-bit" })
    }

    fn engine_failure(&mut self) -> BackendError {
        let rip = self.regs.rip;
        let insn = self.instruction_at_rip();
        let detail = self
            .vcpu
            .as_mut()
            .and_then(|v| mapping::internal_error(v.get_kvm_run()))
            .map(|(sub, data)| format!(" (KVM_EXIT_INTERNAL_ERROR suberror {sub}, data {data:x?})"))
            .unwrap_or_default();
        let host = if self.report.pvm {
            "this host's KVM (PVM)"
        } else {
            "this host's KVM"
        };
        BackendError::EngineAt(format!(
            "instruction {insn} at RIP {rip:#x} cannot be emulated by {host}{detail}; \
             use --backend emu"
        ))
    }

    fn read_msr(&self, index: u32) -> Option<u64> {
        let vcpu = self.vcpu.as_ref()?;
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .ok()?;
        (vcpu.get_msrs(&mut msrs).ok()? == 1).then(|| msrs.as_slice()[0].data)
    }

    fn write_rare_regs(&mut self, regs: &Regs) -> Result<(), BackendError> {
        let vcpu = self
            .vcpu
            .as_ref()
            .ok_or_else(|| BackendError::Other("no guest".into()))?;
        if regs.kernel_gs_base != self.regs.kernel_gs_base {
            let msrs = Msrs::from_entries(&[kvm_msr_entry {
                index: MSR_KERNEL_GS_BASE,
                data: regs.kernel_gs_base,
                ..Default::default()
            }])
            .map_err(|e| BackendError::Other(format!("MSR list: {e:?}")))?;
            vcpu.set_msrs(&msrs).map_err(ioctl_err("KVM_SET_MSRS"))?;
        }
        if regs.xcr0 != self.regs.xcr0 && regs.xcr0 != 0 {
            let mut xcrs = vcpu.get_xcrs().map_err(ioctl_err("KVM_GET_XCRS"))?;
            xcrs.nr_xcrs = 1;
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = regs.xcr0;
            vcpu.set_xcrs(&xcrs).map_err(ioctl_err("KVM_SET_XCRS"))?;
        }
        Ok(())
    }

    /// vCPU `v`'s descriptor and registers (the selected one's live in the fields).
    fn vcpu_of(&self, v: u32) -> Option<(&VcpuFd, &Regs)> {
        if v == self.cur {
            return self.vcpu.as_ref().map(|fd| (fd, &self.regs));
        }
        let p = self.parked.get(v as usize)?.as_ref()?;
        Some((&p.fd, &p.regs))
    }

    /// What KVM_GET_MP_STATE says of vCPU `v` now, noting a startup IPI that started it.
    fn mp_state(&mut self, v: u32) -> Option<MpState> {
        let (fd, _) = self.vcpu_of(v)?;
        let state = MpState::of(fd).ok()?;
        let regs = || {
            let r = fd.get_regs().ok()?;
            let s = fd.get_sregs().ok()?;
            let mut regs = Regs::default();
            regs_from_kvm(&r, &s, &mut regs);
            Some(regs)
        };
        let mut watch = *self.startups.get(v as usize)?;
        watch.observe(state, regs);
        self.startups[v as usize] = watch;
        Some(state)
    }

    /// The step of a startup IPI (as on emu): KVM already put the AP at the vector's page;
    /// no instruction runs.
    fn started(&mut self, vector: u8) -> Result<StepResult, BackendError> {
        let vcpu = self.vcpu()?;
        let r = vcpu.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?;
        let s = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
        regs_from_kvm(&r, &s, &mut self.regs);
        self.startup = Some(Delivery {
            vector,
            kind: DeliveryKind::Startup,
            error_code: None,
            cr2: None,
        });
        self.stepped(Exit::Stepped)
    }

    /// Is the guest, as of the last step, in a mode this host's KVM shuts down on?
    fn in_legacy_paging(&self) -> bool {
        self.regs.cr0 & CR0_PG != 0 && self.regs.efer & EFER_LME == 0
    }
}

/// The exit of an MMIO write of `data` (at most 8 bytes) to `gpa`.
fn mmio_write(gpa: u64, data: &[u8]) -> Exit {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    Exit::MmioWrite {
        gpa,
        size: n as u8,
        data: u64::from_le_bytes(b),
    }
}

fn ioctl_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> BackendError {
    move |e| BackendError::Other(format!("{what}: {e}"))
}

pub(crate) fn cpuid_entries(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            function: e.function,
            index: e.index,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect()
}

impl Backend for KvmBackend {
    fn info(&self) -> BackendInfo {
        let mut info = self.report.backend_info();
        info.kvm_facts.push((
            "memory_writes".into(),
            match &self.dirty_log {
                Ok(log) => format!(
                    "exact ({}, the pages it names diffed against a shadow every step)",
                    log.describe()
                ),
                Err(why) => format!(
                    "inferred from the decoded instruction: no dirty log ({why}); writes the \
                     decoder cannot see show up as self-check failures"
                ),
            },
        ));
        info
    }

    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        if guest.ram_size > MAX_RAM {
            return Err(BackendError::Other(format!(
                "{} MiB of RAM is more than the kvm backend maps (at most {} MiB)",
                guest.ram_size >> 20,
                MAX_RAM >> 20
            )));
        }
        let vm = self.kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(ioctl_err("KVM_SET_TSS_ADDR"))?;
        // Real kernels need the PIC, IOAPIC, LAPIC and PIT; KVM then handles HLT itself, which
        // is why the recorder decodes HLT before stepping it.
        vm.create_irq_chip()
            .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;
        // KVM_PIT_SPEAKER_DUMMY: KVM answers port 0x61 itself (gate and output of channel 2,
        // which kernels poll to calibrate the TSC), as the emu backend's platform does.
        vm.create_pit2(kvm_pit_config {
            flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(ioctl_err("KVM_CREATE_PIT2"))?;
        let mut ram = GuestRam::new(guest.ram_size).map_err(BackendError::Other)?;
        // The dirty ring costs no system call per step (see `dirty`); it must be enabled before
        // the vCPU exists and is mapped once it does.
        let ring = self
            .report
            .has_cap("dirty_log_ring")
            .then(|| {
                let max = self.kvm.check_extension_raw(KVM_CAP_DIRTY_LOG_RING.into());
                DIRTY_RING_BYTES.min(usize::try_from(max).unwrap_or(0))
            })
            .filter(|&bytes| {
                bytes > 0
                    && vm
                        .enable_cap(&kvm_enable_cap {
                            cap: KVM_CAP_DIRTY_LOG_RING,
                            args: [bytes as u64, 0, 0, 0],
                            ..Default::default()
                        })
                        .is_ok()
            });
        // Else the bitmap. Reading it must not write-protect the pages the guest keeps
        // writing; without the capability every read re-protects, slower but as exact.
        let manual = ring.is_none()
            && self.report.has_cap("manual_dirty_log_protect2")
            && vm
                .enable_cap(&kvm_enable_cap {
                    cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                    args: [u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0, 0, 0],
                    ..Default::default()
                })
                .is_ok();
        self.dirty_log = ram
            .register(&vm, RAM_SLOT, true)
            .map(|()| DirtyLog::bitmap(RAM_SLOT, ram.size(), manual));
        if let Err(why) = &self.dirty_log {
            // Without a dirty log the recorder falls back to inferring writes (and says so).
            ram.register(&vm, RAM_SLOT, false)
                .map_err(|e| BackendError::Other(format!("{e} (with dirty logging: {why})")))?;
        }
        self.vmm_written.clear();
        self.completion = None;
        self.pending_read = false;
        self.parked.clear();
        self.cur = 0;
        self.synced = false;
        self.startups = vec![StartupWatch::default(); self.cpus as usize];
        self.startup = None;
        let mut vcpu = vm.create_vcpu(0).map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        // With the ring enabled there is no bitmap to fall back to: one ring per vCPU.
        let ring = ring.filter(|_| self.dirty_log.is_ok());
        let mut rings = ring.map(|bytes| DirtyRing::map(&vcpu, bytes).map(|r| vec![r]));
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))?;
        // KVM's paravirtual features (kvmclock, steal time, async page faults, PV EOI: leaf
        // KVM_CPUID_FEATURES' EAX) let KVM write guest memory on its own, outside any
        // instruction and with the host's time: no recorded input could replay that, and a
        // trace of a guest that uses them would not re-execute. The guest still sees KVM's
        // signature, without them.
        for e in cpuid.as_mut_slice() {
            if e.function == KVM_CPUID_FEATURES {
                e.eax = 0;
            }
        }
        if !guest.cpuid.is_empty() {
            // The trace's CPUID wins (verify re-runs a trace with the CPUID it recorded).
            for e in cpuid.as_mut_slice() {
                if let Some(g) = guest
                    .cpuid
                    .iter()
                    .find(|g| g.function == e.function && g.index == e.index)
                {
                    (e.eax, e.ebx, e.ecx, e.edx) = (g.eax, g.ebx, g.ecx, g.edx);
                }
            }
        }
        vcpu.set_cpuid2(&cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))?;
        // What the guest's CPUID instruction returns can differ from the table (PVM): the
        // trace records what the guest sees. Probed while RAM is still all zero.
        let sync_regs = self.report.has_cap("sync_regs");
        self.cpuid = crate::cpuid_probe::guest_visible(&mut vcpu, &mut ram, &cpuid, sync_regs)
            .unwrap_or_else(|_| cpuid_entries(&cpuid));
        let mut roms = Vec::new();
        for r in guest
            .regions
            .iter()
            .filter(|r| r.kind == traces::RegionKind::Rom)
        {
            roms.push((r.gpa, GuestRam::new(r.size).map_err(BackendError::Other)?));
        }
        for load in &guest.loads {
            let blob = guest.blobs.get(load.blob as usize).ok_or_else(|| {
                BackendError::Other(format!("load refers to missing blob {}", load.blob))
            })?;
            let rom = roms
                .iter_mut()
                .find(|(base, rom)| load.gpa >= *base && load.gpa - *base < rom.size());
            if let Some((base, rom)) = rom {
                if !rom.write(load.gpa - *base, &blob.data) {
                    return Err(BackendError::Other(format!(
                        "blob {} ({} bytes) at {:#x} does not fit its ROM",
                        blob.name,
                        blob.data.len(),
                        load.gpa
                    )));
                }
                continue;
            }
            if !ram.write(load.gpa, &blob.data) {
                return Err(BackendError::Other(format!(
                    "blob {} ({} bytes) at {:#x} does not fit in {} MiB of RAM",
                    blob.name,
                    blob.data.len(),
                    load.gpa,
                    guest.ram_size >> 20
                )));
            }
        }

        for (i, (base, rom)) in roms.iter().enumerate() {
            rom.register_rom(&vm, RAM_SLOT + 1 + i as u32, *base)
                .map_err(|e| {
                    BackendError::HostUnsupported(format!(
                        "the ROM at {base:#x} needs a read-only memory slot: {e}"
                    ))
                })?;
        }
        self.roms = roms;
        let sregs = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&kvm_sregs_of(&guest.entry, &sregs))
            .map_err(ioctl_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&kvm_regs_of(&guest.entry))
            .map_err(ioctl_err("KVM_SET_REGS"))?;
        let debug = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
            ..Default::default()
        };
        vcpu.set_guest_debug(&debug)
            .map_err(ioctl_err("KVM_SET_GUEST_DEBUG"))?;
        self.parked.push(None);
        for id in 1..self.cpus {
            let ap = vm
                .create_vcpu(u64::from(id))
                .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
            if let (Some(bytes), Some(Ok(list))) = (ring, rings.as_mut()) {
                match DirtyRing::map(&ap, bytes) {
                    Ok(r) => list.push(r),
                    Err(why) => rings = Some(Err(why)),
                }
            }
            ap.set_cpuid2(&smp::cpuid_for_apic_id(&cpuid, id))
                .map_err(ioctl_err("KVM_SET_CPUID2"))?;
            ap.set_guest_debug(&debug)
                .map_err(ioctl_err("KVM_SET_GUEST_DEBUG"))?;
            let mut ap = ap;
            if sync_regs {
                ap.set_sync_valid_reg(SyncReg::Register);
                ap.set_sync_valid_reg(SyncReg::SystemRegister);
                ap.set_sync_valid_reg(SyncReg::VcpuEvents);
            }
            let r = ap.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?;
            let s = ap.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
            let mut regs = Regs::default();
            regs_from_kvm(&r, &s, &mut regs);
            self.parked.push(Some(Parked {
                fd: ap,
                regs,
                synced: false,
                pending_read: false,
                completion: None,
            }));
        }
        if let Some(rings) = rings {
            self.dirty_log = rings.map(|r| DirtyLog::rings(RAM_SLOT, r));
        }
        ram.populate_read();
        self.vm = Some(vm);
        self.vcpu = Some(vcpu);
        self.ram = Some(ram);
        self.regs = Regs::default();
        self.write_rare_regs(&guest.entry)?;
        self.regs.xcr0 = guest.entry.xcr0;
        self.regs.kernel_gs_base = guest.entry.kernel_gs_base;
        self.regs.pkru = guest.entry.pkru;
        self.regs.pdptrs = guest.entry.pdptrs;
        self.sync_regs = sync_regs;
        if self.sync_regs {
            let vcpu = self.vcpu()?;
            vcpu.set_sync_valid_reg(SyncReg::Register);
            vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            vcpu.set_sync_valid_reg(SyncReg::VcpuEvents);
        }
        // Until the first run fills the sync-regs area, read the state with ioctls.
        let vcpu = self.vcpu()?;
        let r = vcpu.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?;
        let s = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
        regs_from_kvm(&r, &s, &mut self.regs);
        Ok(())
    }

    fn regs(&mut self) -> Result<Regs, BackendError> {
        Ok(self.regs.clone())
    }

    fn regs_full(&mut self) -> Result<Regs, BackendError> {
        if let Some(vcpu) = self.vcpu.as_ref() {
            if self.report.has_cap("xcrs") {
                if let Ok(x) = vcpu.get_xcrs() {
                    let n = (x.nr_xcrs as usize).min(x.xcrs.len());
                    if let Some(x0) = x.xcrs[..n].iter().find(|x| x.xcr == 0) {
                        self.regs.xcr0 = x0.value;
                    }
                }
            }
        }
        if let Some(v) = self.read_msr(MSR_KERNEL_GS_BASE) {
            self.regs.kernel_gs_base = v;
        }
        // PAE paging: the PDPTE registers KVM loaded at the last CR write (KVM_GET_SREGS2);
        // without that ioctl, the PDPT in memory, which the recorder asks for right after the
        // loading write.
        let pae = self.regs.cr0 & CR0_PG != 0
            && self.regs.cr4 & CR4_PAE != 0
            && self.regs.efer & EFER_LMA == 0;
        if pae {
            let from_kvm = if self.report.has_cap("sregs2") {
                self.vcpu.as_ref().and_then(crate::sregs2::pdptrs)
            } else {
                None
            };
            match from_kvm {
                Some(p) => self.regs.pdptrs = p,
                None => {
                    if let Some(ram) = &self.ram {
                        let base = self.regs.cr3 & 0xffff_ffe0;
                        for (i, p) in self.regs.pdptrs.iter_mut().enumerate() {
                            let mut b = [0u8; 8];
                            if ram.read(base + 8 * i as u64, &mut b) {
                                *p = u64::from_le_bytes(b);
                            }
                        }
                    }
                }
            }
        }
        Ok(self.regs.clone())
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), BackendError> {
        self.write_rare_regs(regs)?;
        let sync = self.sync_regs && self.synced;
        let vcpu = self.vcpu()?;
        if sync {
            let base = vcpu.sync_regs().sregs;
            let area = vcpu.sync_regs_mut();
            area.regs = kvm_regs_of(regs);
            area.sregs = kvm_sregs_of(regs, &base);
            vcpu.set_sync_dirty_reg(SyncReg::Register);
            vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        } else {
            let base = vcpu.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
            vcpu.set_sregs(&kvm_sregs_of(regs, &base))
                .map_err(ioctl_err("KVM_SET_SREGS"))?;
            vcpu.set_regs(&kvm_regs_of(regs))
                .map_err(ioctl_err("KVM_SET_REGS"))?;
        }
        self.regs = regs.clone();
        Ok(())
    }

    fn host_action(&mut self, action: &HostAction) -> Result<(), BackendError> {
        let regs = self.regs_full()?;
        let vcpu = self
            .vcpu
            .as_ref()
            .ok_or_else(|| BackendError::Other("no guest loaded".into()))?;
        match *action {
            HostAction::SetSregs(l) => crate::host_action::set_sregs(
                vcpu,
                &recorder::host_actions::sregs_loaded(&regs, &l),
            )?,
            HostAction::SetMsrEfer { value } => crate::host_action::set_msr_efer(vcpu, value)?,
            HostAction::SetCpuid(c) => {
                crate::host_action::set_cpuid(vcpu, &history::cpu_model(&c))?;
                self.cpuid = insn::with_cpu_model(&self.cpuid, &history::cpu_model(&c));
            }
            HostAction::Init => {
                let vm = self
                    .vm
                    .as_ref()
                    .ok_or_else(|| BackendError::Other("no VM".into()))?;
                crate::host_action::init(vm, vcpu, self.cur)?;
            }
            HostAction::NestedVmrun { .. }
            | HostAction::SetNestedState { .. }
            | HostAction::VmEntryEpt { .. }
            | HostAction::VmExit { .. } => return Err(recorder::host_actions::needs_an_l2(action)),
        }
        // The sync-regs area holds the state before the ioctl until the next KVM_RUN.
        self.synced = false;
        self.refresh()
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.ram.as_ref().is_some_and(|r| r.read(gpa, buf))
            || self
                .roms
                .iter()
                .any(|(base, rom)| gpa >= *base && rom.read(gpa - base, buf))
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let written = self.ram.as_mut().is_some_and(|r| r.write(gpa, data));
        if written && !data.is_empty() {
            let last = (gpa + data.len() as u64 - 1) >> PAGE_SHIFT;
            self.vmm_written
                .extend(((gpa >> PAGE_SHIFT)..=last).map(|p| p << PAGE_SHIFT));
        }
        written
    }

    fn ram_size(&self) -> u64 {
        self.ram.as_ref().map_or(0, GuestRam::size)
    }

    fn ram(&self) -> Option<&[u8]> {
        self.ram.as_ref().map(GuestRam::as_slice)
    }

    fn cpuid(&self) -> Vec<CpuidEntry> {
        self.cpuid.clone()
    }

    fn step(&mut self) -> Result<StepResult, BackendError> {
        if self.pending_read {
            return Err(BackendError::Other(
                "step while an `in`/MMIO read still waits for its data".into(),
            ));
        }
        self.waits = 0;
        if let Some(vector) = self.startups[self.cur as usize].started.take() {
            return self.started(vector);
        }
        loop {
            self.synced = true;
            let vcpu = self.vcpu()?;
            let exit = match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => Exit::Stepped,
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut b = [0u8; 4];
                    let n = data.len().min(4);
                    b[..n].copy_from_slice(&data[..n]);
                    let exit = Exit::IoOut {
                        port,
                        size: n as u8,
                        data: u32::from_le_bytes(b),
                    };
                    if let Some(further) = self.complete_pending()? {
                        return Err(BackendError::Engine(format!(
                            "KVM returned {further:?} while completing an `out`"
                        )));
                    }
                    return self.stepped(exit);
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    let size = data.len().min(4) as u8;
                    self.pending_read = true;
                    self.refresh()?;
                    return self.stepped(Exit::IoIn { port, size });
                }
                Ok(VcpuExit::MmioWrite(gpa, data)) => {
                    let exit = mmio_write(gpa, data);
                    if let Some(further) = self.complete_pending()? {
                        return Err(BackendError::Engine(format!(
                            "KVM returned {further:?} while completing the MMIO write {exit:?}"
                        )));
                    }
                    return self.stepped(exit);
                }
                Ok(VcpuExit::MmioRead(gpa, data)) => {
                    let size = data.len().min(8) as u8;
                    self.pending_read = true;
                    self.refresh()?;
                    return self.stepped(Exit::MmioRead { gpa, size });
                }
                Ok(VcpuExit::Hlt) => Exit::Halted,
                Ok(VcpuExit::Shutdown) => {
                    let was_legacy = self.in_legacy_paging();
                    self.refresh()?;
                    if self.report.pvm {
                        // Either the CR write entering legacy paging itself shut down, or the
                        // first instruction after it did.
                        let mode = self.entering_legacy_paging().or_else(|| {
                            (was_legacy || self.in_legacy_paging()).then_some(
                                if self.regs.cr4 & CR4_PAE != 0 {
                                    "PAE"
                                } else {
                                    "32-bit"
                                },
                            )
                        });
                        if let Some(mode) = mode {
                            let on = if self.cpus > 1 {
                                format!(" on vCPU {}", self.cur)
                            } else {
                                String::new()
                            };
                            return Err(BackendError::HostUnsupported(format!(
                                "KVM_EXIT_SHUTDOWN at RIP {:#x} ({}){on} as the guest entered {mode} paging: this host's KVM (a PVM variant with shadow paging) cannot run 32-bit or PAE paging guests; record with --backend emu",
                                self.regs.rip,
                                self.instruction_at_rip()
                            )));
                        }
                    }
                    return self.stepped(Exit::Shutdown);
                }
                Ok(VcpuExit::InternalError) => {
                    self.refresh()?;
                    return Err(self.engine_failure());
                }
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    self.refresh()?;
                    return Err(BackendError::EngineAt(format!(
                        "KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}) at RIP {:#x}: the \
                         vCPU state is not enterable",
                        self.regs.rip
                    )));
                }
                // A signal (SIGINT/SIGTERM) kicked the vCPU out before an instruction retired.
                // The dirty log keeps what KVM wrote meanwhile (e.g. accessed bits of a walk)
                // for the step that retires the instruction.
                Ok(VcpuExit::Intr) => {
                    self.refresh()?;
                    return Ok(StepResult {
                        exit: Exit::Interrupted,
                        written: Written::DirtyPages(Vec::new()),
                    });
                }
                // KVM stopped before running the instruction: free the ring, then run it.
                Ok(VcpuExit::Unsupported(KVM_EXIT_DIRTY_RING_FULL)) => {
                    self.dirty_ring_full()?;
                    continue;
                }
                Ok(other) => {
                    let what = format!("{other:?}");
                    self.refresh()?;
                    return Err(BackendError::EngineAt(format!(
                        "unexpected KVM exit {what} at RIP {:#x}",
                        self.regs.rip
                    )));
                }
                Err(e) if e.errno() == libc::EINTR => {
                    self.refresh()?;
                    return Ok(StepResult {
                        exit: Exit::Interrupted,
                        written: Written::DirtyPages(Vec::new()),
                    });
                }
                Err(e) if e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(BackendError::Other(format!("KVM_RUN: {e}"))),
            };
            self.refresh()?;
            return self.stepped(exit);
        }
    }

    /// KVM_IRQ_LINE on the in-kernel irqchip (default routing: PIC input and IOAPIC pin
    /// `gsi`).
    fn set_irq_line(&mut self, gsi: u32, level: bool) -> Result<(), BackendError> {
        let vm = self
            .vm
            .as_ref()
            .ok_or_else(|| BackendError::Other("set_irq_line before load".into()))?;
        vm.set_irq_line(gsi, level)
            .map_err(ioctl_err("KVM_IRQ_LINE"))
    }

    fn take_deliveries(&mut self) -> Option<Vec<Delivery>> {
        // Everything else KVM delivers inside the kernel: the recorder infers it.
        self.startup.take().map(|d| vec![d])
    }

    fn vcpus(&self) -> u32 {
        self.cpus
    }

    fn select_vcpu(&mut self, vcpu: u32) -> Result<(), BackendError> {
        if vcpu == self.cur {
            return Ok(());
        }
        if vcpu >= self.cpus {
            return Err(BackendError::Other(format!(
                "vCPU {vcpu} does not exist ({} vCPUs)",
                self.cpus
            )));
        }
        if self.pending_read {
            return Err(BackendError::Other(format!(
                "vCPU {} waits for the data of an `in`/MMIO read",
                self.cur
            )));
        }
        let next = self
            .parked
            .get_mut(vcpu as usize)
            .and_then(Option::take)
            .ok_or_else(|| BackendError::Other("no guest loaded".into()))?;
        let old = Parked {
            fd: self
                .vcpu
                .replace(next.fd)
                .ok_or_else(|| BackendError::Other("no guest loaded".into()))?,
            regs: std::mem::replace(&mut self.regs, next.regs),
            synced: std::mem::replace(&mut self.synced, next.synced),
            pending_read: std::mem::replace(&mut self.pending_read, next.pending_read),
            completion: std::mem::replace(&mut self.completion, next.completion),
        };
        self.parked[self.cur as usize] = Some(old);
        self.cur = vcpu;
        Ok(())
    }

    fn vcpu_runnable(&mut self, vcpu: u32) -> bool {
        match self.mp_state(vcpu) {
            Some(MpState::Runnable) => true,
            Some(MpState::Halted) => {
                let pic = self.vm.as_ref().is_some_and(mapping::pic_requests);
                self.vcpu_of(vcpu)
                    .is_some_and(|(fd, regs)| smp::halted_wakes(fd, regs, pic))
            }
            Some(MpState::WaitsForSipi | MpState::Other(_)) | None => false,
        }
    }

    /// KVM's timers and the PIT run on host time: while a halted vCPU takes interrupts,
    /// wait a little for one (at most [`MAX_WAITS`] times in a row).
    fn wait_for_any(&mut self) -> bool {
        let may_wake = (0..self.cpus).any(|v| {
            self.mp_state(v) == Some(MpState::Halted)
                && self
                    .vcpu_of(v)
                    .is_some_and(|(_, r)| r.rflags & mmu::bits::RFLAGS_IF != 0)
        });
        if !may_wake || self.waits >= MAX_WAITS {
            return false;
        }
        self.waits += 1;
        std::thread::sleep(WAIT);
        true
    }

    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError> {
        let pending = self.pending_read;
        let vcpu = self.vcpu()?;
        if !pending || !mapping::write_io_in_data(vcpu.get_kvm_run(), data) {
            return Err(BackendError::Other("no `in` is waiting for data".into()));
        }
        self.pending_read = false;
        let further = self.complete_pending()?;
        self.completed(further)
    }

    fn complete_mmio_read(&mut self, data: u64) -> Result<(), BackendError> {
        let pending = self.pending_read;
        let vcpu = self.vcpu()?;
        if !pending || !mapping::write_mmio_read_data(vcpu.get_kvm_run(), data) {
            return Err(BackendError::Other(
                "no MMIO read is waiting for data".into(),
            ));
        }
        self.pending_read = false;
        let further = self.complete_pending()?;
        self.completed(further)
    }

    fn host(&mut self) -> Option<&mut dyn recorder::HostWatch> {
        Some(&mut self.host)
    }

    fn take_completion(&mut self) -> StepResult {
        self.completion.take().unwrap_or(StepResult {
            exit: Exit::Stepped,
            written: Written::Ranges(Vec::new()),
        })
    }
}
