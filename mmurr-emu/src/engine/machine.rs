//! The PC platform inside the emu backend: the devices KVM's in-kernel irqchip and PIT give a
//! kvm guest ([`platform::Platform`]: LAPIC and IOAPIC pages, PIC, PIT and port 0x61, the TSC
//! and the APIC MSRs), so that a guest sees the same machine, and the recorder the same exits,
//! on both backends. External interrupts are delivered here, architecturally, at instruction
//! boundaries: when RFLAGS.IF is set and no STI / MOV SS / POP SS shadow covers the boundary,
//! one step delivers the vector (the instruction at RIP does not run) and reports it as a
//! [`recorder::DeliveryKind::External`] delivery. Virtual time advances by one instruction per
//! executed step (and by a run's count after a run: [`EmuBackend::run_window`] says how far a
//! run may go), and a HLT with IF set waits, in virtual time, for the next timer.

use super::{engine_err, EmuBackend, HookState};
use crate::decode::{Decoded, Kind};
use iced_x86::{Mnemonic, Register};
use platform::{ioapic, lapic, Features, Platform};
use recorder::{BackendError, Exit, StepResult};
use std::cell::RefCell;
use std::rc::Rc;
use traces::Regs;
use unicorn_engine::{RegisterX86, Unicorn};

const RFLAGS_IF: u64 = 1 << 9;

/// The platform and the CPU's interrupt-shadow state, kept in the hook state so that the
/// engine's port and MMIO hooks reach the devices while an instruction runs.
pub struct Machine {
    /// Shared by the engines of all vCPUs; the one executing is the platform's current CPU.
    pub platform: Rc<RefCell<Platform>>,
    /// The boundary after the last instruction is in an interrupt shadow.
    shadow: bool,
}

/// What [`EmuBackend::run_window`] allows a run.
pub(super) struct RunWindow {
    pub budget: u64,
    /// An interrupt waits for RFLAGS.IF: an instruction that may set IF must be a step, so
    /// the boundary after it delivers the interrupt as stepping would.
    pub irq_waiting: bool,
}

/// The `out` hook: a platform port is handled here (true); others go to the recorder.
pub(super) fn out_hook(st: &mut HookState, port: u16, size: u8, value: u32) -> bool {
    match st.machine.as_mut() {
        Some(m) if Platform::claims_port(port) => {
            m.platform.borrow_mut().io_write(port, size, value);
            true
        }
        _ => false,
    }
}

/// Which CPUID features the platform offers: x2APIC (leaf 1 ECX bit 21) and the TSC-deadline
/// timer (leaf 1 ECX bit 24).
fn features(cpuid: &[traces::CpuidEntry]) -> Features {
    let ecx = cpuid
        .iter()
        .find(|e| e.function == 1 && e.index == 0)
        .map_or(0, |e| e.ecx);
    Features {
        x2apic: ecx & (1 << 21) != 0,
        tsc_deadline: ecx & (1 << 24) != 0,
    }
}

fn overlaps(ranges: &[(u64, u64)], base: u64, size: u64) -> bool {
    ranges
        .iter()
        .any(|&(b, s)| b < base + size && base < b.saturating_add(s))
}

/// Whether `gpa` lies on a platform register page (LAPIC, IOAPIC).
pub(super) fn is_platform_page(gpa: u64) -> bool {
    [lapic::BASE, ioapic::BASE].contains(&(gpa & !0xfff))
}

impl EmuBackend {
    fn machine(&mut self) -> Option<&mut Machine> {
        self.uc.get_data_mut().machine.as_mut()
    }

    /// The platform, for the engines of the machine's other vCPUs.
    pub(crate) fn platform_handle(&self) -> Option<Rc<RefCell<Platform>>> {
        self.uc
            .get_data()
            .machine
            .as_ref()
            .map(|m| m.platform.clone())
    }

    /// Creates the platform and maps its register pages (unless the guest declared its own
    /// memory there). Called by `load` once memory is mapped.
    pub(super) fn attach_platform(&mut self) -> Result<(), BackendError> {
        let platform = Rc::new(RefCell::new(Platform::with_cpus(
            features(&self.cpuid),
            self.smp_cpus,
        )));
        self.attach_shared_platform(platform)
    }

    /// The platform of the machine this engine's vCPU belongs to (created by the BSP's
    /// engine): its register pages are mapped here, its devices reached from the hooks.
    pub(crate) fn attach_shared_platform(
        &mut self,
        platform: Rc<RefCell<Platform>>,
    ) -> Result<(), BackendError> {
        self.uc.get_data_mut().machine = Some(Machine {
            platform,
            shadow: false,
        });
        for base in [lapic::BASE, ioapic::BASE] {
            if overlaps(&self.ram, base, 0x1000) || overlaps(&self.mmio, base, 0x1000) {
                continue;
            }
            self.uc
                .mmio_map(
                    base,
                    0x1000,
                    Some(
                        move |uc: &mut Unicorn<'_, HookState>, off: u64, size: usize| {
                            if uc.get_data().run.active() {
                                super::run::device_access(uc);
                                return 0;
                            }
                            mmio_read(uc.get_data_mut(), base + off, size as u8)
                        },
                    ),
                    Some(
                        move |uc: &mut Unicorn<'_, HookState>, off: u64, size: usize, v: u64| {
                            if uc.get_data().run.active() {
                                super::run::device_access(uc);
                                return;
                            }
                            if let Some(m) = uc.get_data_mut().machine.as_mut() {
                                if m.platform.borrow_mut().claims_mmio(base + off) {
                                    m.platform
                                        .borrow_mut()
                                        .mmio_write(base + off, size as u8, v);
                                }
                            }
                        },
                    ),
                )
                .map_err(|e| engine_err("mmio_map platform page", e))?;
        }
        Ok(())
    }

    /// At the instruction boundary before a step: delivers a pending external interrupt when
    /// the CPU takes it (the whole step), or counts the instruction about to run.
    pub(super) fn interrupt_boundary(
        &mut self,
        before: &Regs,
    ) -> Result<Option<StepResult>, BackendError> {
        let Some(m) = self.machine() else {
            return Ok(None);
        };
        let shadow = std::mem::take(&mut m.shadow);
        // An NMI (an IPI from another vCPU) is taken first and ignores RFLAGS.IF; NMI
        // blocking until IRET is not modelled.
        let nmi = !shadow && m.platform.borrow_mut().take_nmi();
        let vector = if nmi {
            Some(2)
        } else if !shadow && before.rflags & RFLAGS_IF != 0 {
            m.platform.borrow_mut().acknowledge()
        } else {
            None
        };
        let Some(vector) = vector else {
            m.platform.borrow_mut().retire(1);
            return Ok(None);
        };
        let exit = self.deliver_vector(vector, None, false, before.rip)?;
        if let Some(d) = self.step_deliveries.last_mut() {
            d.kind = if nmi {
                recorder::DeliveryKind::Nmi
            } else {
                recorder::DeliveryKind::External
            };
            d.cr2 = None;
        }
        let fetch = (insn::linear_ip(before), 1);
        let written = self.take_written(before, fetch, None);
        Ok(Some(StepResult { exit, written }))
    }

    /// How far a run may go from the boundary before the next instruction without passing an
    /// interrupt the CPU would take there or later (RFLAGS as in `rflags`): `None` when that
    /// boundary must be a step (an interrupt shadow covers it, or the CPU takes an interrupt
    /// now); else `max` cut at the next timer deadline. Nothing else makes an interrupt pending
    /// inside a run: I/O and the platform's pages are steps of their own.
    pub(super) fn run_window(&mut self, rflags: u64, max: u64) -> Option<RunWindow> {
        let Some(m) = self.machine() else {
            return Some(RunWindow {
                budget: max,
                irq_waiting: false,
            });
        };
        let pending = m.platform.borrow_mut().interrupt_pending();
        if m.shadow || (pending && rflags & RFLAGS_IF != 0) {
            return None;
        }
        let budget = m
            .platform
            .borrow()
            .instructions_to_next_deadline()
            .map_or(max, |n| n.min(max));
        Some(RunWindow {
            budget,
            irq_waiting: pending,
        })
    }

    /// A run retired `n` instructions: virtual time moves on as step by step (where each
    /// step's boundary counts its instruction), firing what is due at the run's end.
    pub(super) fn platform_retired(&mut self, n: u64) {
        if let Some(m) = self.machine() {
            m.platform.borrow_mut().retire(n);
        }
    }

    /// Whether port `port` is the platform's (and the platform is attached).
    pub(super) fn platform_claims(&mut self, port: u16) -> bool {
        Platform::claims_port(port) && self.machine().is_some()
    }

    /// `in` from a platform port: its value, handed to the engine's `in` hook.
    pub(super) fn platform_in(&mut self, port: u16, size: u8) -> Option<u32> {
        let m = self.machine()?;
        Some(m.platform.borrow_mut().io_read(port, size))
    }

    /// RDMSR/WRMSR of a platform MSR (IA32_TSC, IA32_APIC_BASE, IA32_TSC_DEADLINE, the
    /// x2APIC range) at CPL 0: executed here, since the engine has no APIC and a host TSC.
    pub(super) fn platform_msr(
        &mut self,
        d: &Decoded,
        before: &Regs,
    ) -> Result<Option<StepResult>, BackendError> {
        let mnemonic = d.instr.mnemonic();
        if !matches!(mnemonic, Mnemonic::Rdmsr | Mnemonic::Wrmsr) {
            return Ok(None);
        }
        let cpl0 = before.cr0 & 1 == 0 || before.seg[traces::regs::CS].selector & 3 == 0;
        let vm86 = before.rflags & (1 << 17) != 0;
        if !cpl0 || vm86 {
            return Ok(None); // the engine raises the #GP
        }
        let msr = before.gpr[1] as u32;
        let value = ((before.gpr[2] & 0xffff_ffff) << 32) | (before.gpr[0] & 0xffff_ffff);
        let Some(m) = self.machine() else {
            return Ok(None);
        };
        let ok = if mnemonic == Mnemonic::Rdmsr {
            let read = m.platform.borrow_mut().msr_read(msr);
            match read {
                None => return Ok(None),
                Some(Some(v)) => {
                    self.w(RegisterX86::RAX, v & 0xffff_ffff)?;
                    self.w(RegisterX86::RDX, v >> 32)?;
                    true
                }
                Some(None) => false,
            }
        } else {
            let written = m.platform.borrow_mut().msr_write(msr, value);
            match written {
                None => return Ok(None),
                Some(ok) => ok,
            }
        };
        let exit = if ok {
            self.w(RegisterX86::RIP, before.rip.wrapping_add(d.len as u64))?;
            self.regs_cache = None;
            Exit::Stepped
        } else {
            self.deliver_vector(13, Some(0), false, before.rip)?
        };
        let fetch = (insn::linear_ip(before), d.len as u64);
        let written = self.take_written(before, fetch, Some(d));
        Ok(Some(StepResult { exit, written }))
    }

    /// After an instruction ran: RDTSC/RDTSCP read virtual time, MOV to CR8 sets the TPR,
    /// STI / MOV SS / POP SS open an interrupt shadow, and HLT with IF set waits for the next
    /// interrupt in virtual time (the run ends only when nothing can wake the CPU).
    pub(super) fn after_instruction(
        &mut self,
        exit: Exit,
        d: Option<&Decoded>,
        before: &Regs,
    ) -> Result<Exit, BackendError> {
        let delivered = !self.step_deliveries.is_empty();
        let Some(d) = d else { return Ok(exit) };
        let Some(m) = self.uc.get_data_mut().machine.as_mut() else {
            return Ok(exit);
        };
        let i = &d.instr;
        if !delivered {
            m.shadow = match i.mnemonic() {
                Mnemonic::Sti => before.rflags & RFLAGS_IF == 0,
                Mnemonic::Mov | Mnemonic::Pop => i.op0_register() == Register::SS,
                _ => false,
            };
        }
        match (i.mnemonic(), &exit) {
            (Mnemonic::Rdtsc | Mnemonic::Rdtscp, Exit::Stepped) if !delivered => {
                let tsc = m.platform.borrow_mut().tsc();
                self.w(RegisterX86::RAX, tsc & 0xffff_ffff)?;
                self.w(RegisterX86::RDX, tsc >> 32)?;
                self.regs_cache = None;
                Ok(exit)
            }
            // With several vCPUs the others run on while this one waits (see smp.rs).
            (_, Exit::Halted) if self.smp_cpus > 1 => Ok(exit),
            (_, Exit::Halted) if !delivered && before.rflags & RFLAGS_IF != 0 => {
                Ok(if m.platform.borrow_mut().wait_for_interrupt() {
                    Exit::Stepped
                } else {
                    Exit::Halted
                })
            }
            _ => {
                if let (Kind::MovCr(8), false) = (d.kind, delivered) {
                    let cr8 = insn::register_value(before, 64, i.op1_register()).unwrap_or(0) & 0xf;
                    m.platform
                        .borrow_mut()
                        .lapic_mut()
                        .write(0x80, (cr8 << 4) as u32, 0);
                }
                Ok(exit)
            }
        }
    }

    /// Drives interrupt line `gsi` ([`recorder::Backend::set_irq_line`]).
    pub(super) fn platform_irq_line(&mut self, gsi: u32, level: bool) {
        if let Some(m) = self.machine() {
            m.platform.borrow_mut().set_irq(gsi, level);
        }
    }

    /// Instructions until the platform's next timer deadline.
    pub(super) fn platform_instructions_to_next_deadline(&mut self) -> Option<u64> {
        self.machine()?
            .platform
            .borrow()
            .instructions_to_next_deadline()
    }

    /// Virtual time now, in nanoseconds.
    pub(super) fn platform_time_ns(&mut self) -> Option<u64> {
        self.machine()
            .map(|m| m.platform.borrow_mut().clock.now_ns())
    }
}

/// A read of a platform page; the LAPIC page of a disabled (or x2APIC-mode) APIC reads all
/// ones, like absent memory.
fn mmio_read(st: &mut HookState, gpa: u64, size: u8) -> u64 {
    match st.machine.as_mut() {
        Some(m) if m.platform.borrow_mut().claims_mmio(gpa) => {
            m.platform.borrow_mut().mmio_read(gpa, size)
        }
        _ => recorder::devices::mask(size),
    }
}
