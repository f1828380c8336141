//! The PC platform, as pure state machines on virtual time ([`clock`]): the same guest sees
//! the same device behaviour, and raises the same interrupts at the same instruction, on
//! every run. Two halves, split where KVM splits them, so that a guest sees the same machine
//! and the recorder the same exits on both backends:
//!
//! - [`Platform`]: what KVM's in-kernel irqchip and PIT provide (KVM_CREATE_IRQCHIP,
//!   KVM_CREATE_PIT2): local APIC, I/O APIC, the two 8259 PICs, the 8254 PIT with port 0x61,
//!   and the TSC. The emu backend runs it inside mmurr-emu; on kvm the kernel has it.
//! - [`Chipset`]: what a KVM guest's port accesses exit to userspace for: CMOS/RTC, PCI
//!   configuration mechanism #1 with an i440FX host bridge, the reset paths. The recorder's
//!   devices run it for both backends.
//!
//! Interrupt routing is KVM's default GSI routing (`kvm_setup_default_irq_routing`): GSI 0–15
//! go to the PIC input of the same number and to the IOAPIC pin of the same number; GSI 16–23
//! to the IOAPIC only. The PIT drives GSI 0.
//!
//! Crates considered first: `vm-superio` provides the i8042 used by [`reset`] (its serial
//! UART stays the recorder's own, which both backends share); crates.io has 8259/APIC
//! *drivers* for guest kernels (`pic8259`, `x2apic`, `complete-pic`) but no device models of
//! the PIC, PIT, LAPIC or IOAPIC, hence the modules here.

pub mod clock;
pub mod ioapic;
pub mod lapic;
pub mod madt;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod reset;
pub mod rtc;

pub use clock::Clock;
pub use reset::ResetCause;

/// What CPUID offers the guest, which decides the APIC features it may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub x2apic: bool,
    pub tsc_deadline: bool,
}

pub const MSR_TSC: u32 = 0x10;

/// What a vCPU is doing, as KVM's `kvm_mp_state` names it: the interleaving runs only the
/// runnable ones (a halted vCPU wakes when an interrupt is pending for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpState {
    Runnable,
    Halted,
    /// An AP after INIT (and every AP at power-on): waits for a startup IPI.
    InitReceived,
    /// A startup IPI with this vector arrived: the vCPU starts at `vector << 12` next.
    SipiReceived(u8),
}

/// The platform: every device, the clock, and the interrupt lines between them.
#[derive(Debug)]
pub struct Platform {
    pub clock: Clock,
    /// One local APIC per vCPU, indexed by vCPU; APIC ID = index.
    lapics: Vec<lapic::Lapic>,
    /// The vCPU now executing: LAPIC page and MSR accesses, the TSC and interrupt
    /// acknowledgement are its.
    cpu: usize,
    mp_state: Vec<MpState>,
    /// An NMI waits for each vCPU.
    nmi: Vec<bool>,
    pub ioapic: ioapic::IoApic,
    pub pics: pic::Pics,
    pub pit: pit::Pit,
    /// Added to the virtual TSC by WRMSR IA32_TSC.
    tsc_offset: u64,
}

impl Platform {
    /// A platform of one vCPU.
    pub fn new(features: Features) -> Platform {
        Platform::with_cpus(features, 1)
    }

    /// A platform of `cpus` vCPUs: vCPU 0 is the BSP and runs; the APs wait for INIT-SIPI.
    pub fn with_cpus(features: Features, cpus: u32) -> Platform {
        let lapics = (0..cpus.max(1))
            .map(|id| {
                let mut lapic = if id == 0 {
                    lapic::Lapic::default()
                } else {
                    lapic::Lapic::new_ap(id)
                };
                lapic.x2apic_supported = features.x2apic;
                lapic.tsc_deadline_supported = features.tsc_deadline;
                lapic
            })
            .collect::<Vec<_>>();
        let n = lapics.len();
        Platform {
            clock: Clock::default(),
            lapics,
            cpu: 0,
            mp_state: (0..n)
                .map(|i| {
                    if i == 0 {
                        MpState::Runnable
                    } else {
                        MpState::InitReceived
                    }
                })
                .collect(),
            nmi: vec![false; n],
            ioapic: ioapic::IoApic::default(),
            pics: pic::Pics::default(),
            pit: pit::Pit::default(),
            tsc_offset: 0,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The executing vCPU's local APIC.
    pub fn lapic(&self) -> &lapic::Lapic {
        &self.lapics[self.cpu]
    }

    pub fn lapic_mut(&mut self) -> &mut lapic::Lapic {
        &mut self.lapics[self.cpu]
    }

    /// How many vCPUs the platform has.
    pub fn cpus(&self) -> usize {
        self.lapics.len()
    }

    /// Makes vCPU `cpu` the executing one (ignored past the last).
    pub fn select_cpu(&mut self, cpu: usize) {
        if cpu < self.lapics.len() {
            self.cpu = cpu;
        }
    }

    pub fn current_cpu(&self) -> usize {
        self.cpu
    }

    pub fn mp_state(&self, cpu: usize) -> Option<MpState> {
        self.mp_state.get(cpu).copied()
    }

    pub fn set_mp_state(&mut self, cpu: usize, state: MpState) {
        if let Some(s) = self.mp_state.get_mut(cpu) {
            *s = state;
        }
    }

    /// Whether an interrupt or NMI waits for vCPU `cpu` (what wakes it from HLT; a maskable
    /// one only when `if_set`).
    pub fn wakes(&self, cpu: usize, if_set: bool) -> bool {
        let Some(l) = self.lapics.get(cpu) else {
            return false;
        };
        self.nmi[cpu]
            || (if_set && (l.pending().is_some() || (l.accepts_pic() && self.pics.intr())))
    }

    /// The executing vCPU takes its pending NMI, if any.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi[self.cpu])
    }

    /// Whether a port access is the platform's (KVM's in-kernel PIC, ELCR, PIT and port 0x61).
    pub fn claims_port(port: u16) -> bool {
        pic::Pics::claims(port) || pit::Pit::claims(port)
    }

    /// A port read; each byte of a wider access comes from consecutive ports.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let now = self.now();
        (0..size.min(4) as u16)
            .map(|i| {
                let p = port.wrapping_add(i);
                let b = if pic::Pics::claims(p) {
                    self.pics.read(p)
                } else if pit::Pit::claims(p) {
                    self.pit.read(p, now)
                } else {
                    0xff
                };
                (b as u32) << (8 * i)
            })
            .fold(0, |a, b| a | b)
    }

    pub fn io_write(&mut self, port: u16, size: u8, data: u32) {
        let now = self.now();
        for i in 0..size.min(4) as u16 {
            let p = port.wrapping_add(i);
            let b = (data >> (8 * i)) as u8;
            if pic::Pics::claims(p) {
                self.pics.write(p, b);
            } else if pit::Pit::claims(p) {
                self.pit.write(p, b, now);
            }
        }
        self.update();
    }

    /// Whether guest-physical `gpa` is a platform register page (the LAPIC page only while
    /// the APIC is in xAPIC mode).
    pub fn claims_mmio(&self, gpa: u64) -> bool {
        ioapic::IoApic::claims(gpa)
            || (self.lapic().mmio_enabled() && (lapic::BASE..lapic::BASE + 0x1000).contains(&gpa))
    }

    /// An MMIO read (registers are 32 bits wide at 16-byte strides; narrower reads see part
    /// of the register, other offsets read 0).
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        let (reg, shift) = (gpa & !3, (gpa & 3) * 8);
        let v = if ioapic::IoApic::claims(gpa) {
            self.ioapic.read(reg - ioapic::IoApic::BASE_OF)
        } else {
            self.lapic()
                .read((reg - lapic::BASE) as u32 & 0xff0, self.now())
        };
        let v = (v as u64) >> shift;
        if size >= 8 {
            v
        } else {
            v & ((1u64 << (8 * size)) - 1)
        }
    }

    pub fn mmio_write(&mut self, gpa: u64, _size: u8, data: u64) {
        let (reg, shift) = (gpa & !3, (gpa & 3) * 8);
        let v = (data << shift) as u32;
        if ioapic::IoApic::claims(gpa) {
            let msgs = self.ioapic.write(reg - ioapic::IoApic::BASE_OF, v);
            self.deliver_messages(msgs);
        } else {
            let now = self.now();
            let effect = self
                .lapic_mut()
                .write((reg - lapic::BASE) as u32 & 0xff0, v, now);
            self.apply(effect);
        }
        self.update();
    }

    fn apply(&mut self, effect: lapic::Effect) {
        match effect {
            lapic::Effect::EoiBroadcast(v) => {
                let msgs = self.ioapic.eoi(v);
                self.deliver_messages(msgs);
            }
            lapic::Effect::Ipi(ipi) => self.send_ipi(&ipi),
            lapic::Effect::None => {}
        }
    }

    /// An IPI from the executing vCPU to every local APIC it names: fixed and lowest-priority
    /// vectors are accepted, an NMI waits, INIT puts an AP into wait-for-SIPI (the BSP's own
    /// INIT is not modelled), a startup IPI starts an AP that waits for one. An IPI to a vCPU
    /// that does not exist goes nowhere.
    fn send_ipi(&mut self, ipi: &lapic::Ipi) {
        for cpu in 0..self.lapics.len() {
            if !self.lapics[cpu].is_destination(ipi, cpu == self.cpu) {
                continue;
            }
            match ipi.mode {
                lapic::DM_FIXED | lapic::DM_LOWEST => self.lapics[cpu].accept(ipi.vector, false),
                lapic::DM_NMI => self.nmi[cpu] = true,
                lapic::DM_INIT if !ipi.deassert && cpu != 0 => {
                    self.mp_state[cpu] = MpState::InitReceived;
                }
                lapic::DM_STARTUP if self.mp_state[cpu] == MpState::InitReceived => {
                    self.mp_state[cpu] = MpState::SipiReceived(ipi.vector);
                }
                _ => {}
            }
        }
    }

    fn deliver_messages(&mut self, msgs: impl IntoIterator<Item = ioapic::Message>) {
        for m in msgs {
            self.deliver(m);
        }
    }

    /// An IOAPIC message to the local APICs it addresses: fixed messages go to each of them,
    /// lowest-priority ones to the first (the lowest APIC ID: deterministic); others (SMI,
    /// NMI, INIT, ExtINT through the IOAPIC) are not modelled and dropped.
    fn deliver(&mut self, m: ioapic::Message) {
        if m.mode > 1 {
            return;
        }
        for l in &mut self.lapics {
            let ours = if m.logical && l.x2apic_mode() {
                l.read(0xd0, 0) & m.dest as u32 != 0
            } else {
                l.addressed(m.dest as u32, m.logical)
            };
            if ours {
                l.accept(m.vector, m.level);
                if m.mode == 1 {
                    break;
                }
            }
        }
    }

    /// Drives interrupt line `gsi` (a device's IRQ): the PIC input and the IOAPIC pin.
    pub fn set_irq(&mut self, gsi: u32, level: bool) {
        if gsi < 16 {
            self.pics.set_irq(gsi as u8, level);
        }
        if let Some(m) = self.ioapic.set_irq(gsi as usize, level) {
            self.deliver(m);
        }
    }

    /// `n` instructions retired: time moves on and the timers fire.
    pub fn retire(&mut self, n: u64) {
        self.clock.retire(n);
        self.update();
    }

    /// Fires what is due: the PIT's IRQ 0 edge and the LAPIC timer.
    pub fn update(&mut self) {
        let now = self.now();
        if self.pit.irq0_due(now) {
            self.set_irq(0, true);
            self.set_irq(0, false);
        }
        for l in &mut self.lapics {
            l.update_timer(now);
        }
    }

    /// Whether an external interrupt waits for the CPU (it takes it when RFLAGS.IF allows).
    pub fn interrupt_pending(&self) -> bool {
        self.lapic().pending().is_some() || (self.lapic().accepts_pic() && self.pics.intr())
    }

    /// The CPU takes the interrupt: the vector, from the LAPIC first, else the PIC's INTA.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if let Some(v) = self.lapic_mut().acknowledge() {
            return Some(v);
        }
        if self.lapic().accepts_pic() && self.pics.intr() {
            return Some(self.pics.acknowledge());
        }
        None
    }

    /// The next moment a timer fires (virtual ns).
    pub fn next_deadline(&self) -> Option<u64> {
        let lapic = self.lapics.iter().filter_map(|l| l.next_deadline()).min();
        match (self.pit.next_deadline(), lapic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many instructions may retire before the next timer fires (`None`: none armed).
    /// After exactly that many, [`Platform::retire`] has fired it, so a run of the guest cut
    /// there reaches the boundary where a step-by-step run would first see the interrupt.
    pub fn instructions_to_next_deadline(&self) -> Option<u64> {
        Some(self.clock.instructions_until(self.next_deadline()?))
    }

    /// A halted CPU waits: time skips to the next timer, which fires. False when nothing can
    /// wake the CPU (no timer armed and no interrupt pending).
    pub fn wait_for_interrupt(&mut self) -> bool {
        while !self.interrupt_pending() {
            let Some(t) = self.next_deadline() else {
                return false;
            };
            self.clock.skip_to(t);
            self.update();
            // A masked timer fires into nothing; a periodic one keeps re-arming, so give up
            // once the deadline no longer moves forward.
            if !self.interrupt_pending() && self.next_deadline() == Some(t) {
                return false;
            }
            if !self.interrupt_pending() && self.masked_timers_only() {
                return false;
            }
        }
        true
    }

    /// Every vCPU that can take no step waits (each `(cpu, RFLAGS.IF)` of the halted ones):
    /// time skips to the next timer until an interrupt wakes one of them. False when nothing
    /// can (no timer armed, or every armed one fires into nothing).
    pub fn wait_for_any(&mut self, halted: &[(usize, bool)]) -> bool {
        let wakes = |p: &Platform| halted.iter().any(|&(cpu, if_set)| p.wakes(cpu, if_set));
        while !wakes(self) {
            let Some(t) = self.next_deadline() else {
                return false;
            };
            self.clock.skip_to(t);
            self.update();
            if !wakes(self) && (self.next_deadline() == Some(t) || self.masked_timers_only()) {
                return false;
            }
        }
        true
    }

    /// Every armed timer would fire into a masked input: waiting would never end.
    fn masked_timers_only(&self) -> bool {
        let lapic_timer_live = self.lapics.iter().any(|l| {
            l.next_deadline().is_some()
                && l.read(0x320, 0) & (1 << 16) == 0
                && l.read(0xf0, 0) & (1 << 8) != 0
        });
        let pit_live = self.pit.next_deadline().is_some();
        !lapic_timer_live && !pit_live
    }

    /// The time-stamp counter the guest reads (RDTSC, RDTSCP, RDMSR IA32_TSC).
    pub fn tsc(&self) -> u64 {
        self.clock.tsc().wrapping_add(self.tsc_offset)
    }

    /// The MSRs the platform owns: `None` when `msr` is not one of them; `Some(None)`: #GP.
    pub fn msr_read(&self, msr: u32) -> Option<Option<u64>> {
        let now = self.now();
        Some(match msr {
            MSR_TSC => Some(self.tsc()),
            lapic::MSR_APIC_BASE => Some(self.lapic().apic_base()),
            lapic::MSR_TSC_DEADLINE if self.lapic().tsc_deadline_supported => {
                Some(self.lapic().tsc_deadline())
            }
            0x800..=0x8ff if self.lapic().x2apic_supported => self.lapic().x2apic_read(msr, now),
            _ => return None,
        })
    }

    /// WRMSR to a platform MSR: `None` when not one of them; `Some(false)`: #GP.
    pub fn msr_write(&mut self, msr: u32, v: u64) -> Option<bool> {
        let now = self.now();
        let ok = match msr {
            MSR_TSC => {
                self.tsc_offset = v.wrapping_sub(self.clock.tsc());
                true
            }
            lapic::MSR_APIC_BASE => self.lapic_mut().set_apic_base(v).is_ok(),
            lapic::MSR_TSC_DEADLINE if self.lapic().tsc_deadline_supported => {
                // The deadline is in guest TSC; the LAPIC compares against the virtual clock.
                let offset = self.tsc_offset;
                self.lapic_mut()
                    .set_tsc_deadline(v.wrapping_sub(offset).max(u64::from(v != 0)));
                true
            }
            0x800..=0x8ff if self.lapic().x2apic_supported => {
                match self.lapic_mut().x2apic_write(msr, v, now) {
                    Ok(e) => {
                        self.apply(e);
                        true
                    }
                    Err(lapic::Gp) => false,
                }
            }
            _ => return None,
        };
        self.update();
        Some(ok)
    }
}

/// The chipset devices whose port accesses leave KVM for userspace.
#[derive(Debug)]
pub struct Chipset {
    pub rtc: rtc::Rtc,
    pub pci: pci::PciHost,
    pub reset: reset::Reset,
}

impl Chipset {
    /// For a machine with `ram_size` bytes of RAM (the CMOS memory-size bytes).
    pub fn new(ram_size: u64) -> Chipset {
        Chipset {
            rtc: rtc::Rtc::new(ram_size),
            pci: pci::PciHost::default(),
            reset: reset::Reset::default(),
        }
    }

    pub fn claims(port: u16, size: u8) -> bool {
        rtc::Rtc::claims(port)
            || pci::PciHost::claims(port, size)
            || reset::Reset::claims(port, size)
    }

    /// A port read at virtual time `now_ns` (the RTC's clock).
    pub fn io_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        if pci::PciHost::claims(port, size) {
            return self.pci.read(port, size);
        }
        (0..size.min(4) as u16)
            .map(|i| {
                let p = port.wrapping_add(i);
                let b = if rtc::Rtc::claims(p) {
                    self.rtc.read(p, now_ns)
                } else if reset::Reset::claims(p, 1) {
                    self.reset.read(p)
                } else {
                    0xff
                };
                (b as u32) << (8 * i)
            })
            .fold(0, |a, b| a | b)
    }

    pub fn io_write(&mut self, port: u16, size: u8, data: u32, now_ns: u64) {
        if pci::PciHost::claims(port, size) {
            self.pci.write(port, size, data);
            return;
        }
        for i in 0..size.min(4) as u16 {
            let p = port.wrapping_add(i);
            let b = (data >> (8 * i)) as u8;
            if rtc::Rtc::claims(p) {
                self.rtc.write(p, b, now_ns);
            } else if reset::Reset::claims(p, 1) {
                self.reset.write(p, b);
            }
        }
    }

    /// The reset the guest asked for, once.
    pub fn take_reset(&mut self) -> Option<ResetCause> {
        self.reset.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> Platform {
        Platform::new(Features::default())
    }

    #[test]
    fn pit_irq0_reaches_the_cpu_through_the_pic_and_lint0() {
        let mut p = platform();
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 4),
            (0x21, 1),
            (0x21, 0xfe),
        ] {
            p.io_write(port, 1, v);
        }
        p.io_write(0x43, 1, 0x34);
        p.io_write(0x40, 1, 100);
        p.io_write(0x40, 1, 0);
        assert!(!p.interrupt_pending());
        p.retire(20_000 / 8);
        assert!(!p.interrupt_pending());
        p.retire(100_000 / 8);
        assert!(p.interrupt_pending());
        assert_eq!(p.acknowledge(), Some(0x20));
        assert!(!p.interrupt_pending());
        // Masking LINT0 cuts the PIC off.
        p.io_write(0x20, 1, 0x20);
        p.mmio_write(0xfee0_0350, 4, 0x10700);
        p.retire(200_000 / 8);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn pit_irq0_through_the_ioapic_pin0() {
        let mut p = platform();
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        p.mmio_write(0xfee0_0350, 4, 0x10700); // PIC off
        p.mmio_write(0xfec0_0000, 4, 0x10);
        p.mmio_write(0xfec0_0010, 4, 0x31);
        p.io_write(0x43, 1, 0x34);
        p.io_write(0x40, 1, 0xe8);
        p.io_write(0x40, 1, 0x03);
        assert!(p.wait_for_interrupt());
        assert_eq!(p.clock.now_ns(), clock::ticks_to_ns(1000, clock::PIT_HZ));
        assert_eq!(p.acknowledge(), Some(0x31));
        assert_eq!(p.mmio_read(0xfee0_0100 + 0x10, 4), 1 << 17);
        p.mmio_write(0xfee0_00b0, 4, 0);
        assert_eq!(p.mmio_read(0xfee0_0110, 4), 0);
    }

    #[test]
    fn halting_with_nothing_armed_never_wakes() {
        let mut p = platform();
        assert!(!p.wait_for_interrupt());
        // A masked LAPIC timer does not wake the CPU either.
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        p.mmio_write(0xfee0_0320, 4, 0x30040);
        p.mmio_write(0xfee0_0380, 4, 1000);
        assert!(!p.wait_for_interrupt());
    }

    #[test]
    fn lapic_timer_wakes_a_halted_cpu_at_its_deadline() {
        let mut p = platform();
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        p.mmio_write(0xfee0_03e0, 4, 0xb);
        p.mmio_write(0xfee0_0320, 4, 0x40);
        p.retire(10);
        p.mmio_write(0xfee0_0380, 4, 5000);
        assert!(p.wait_for_interrupt());
        assert_eq!(p.clock.now_ns(), 80 + 5000);
        assert_eq!(p.acknowledge(), Some(0x40));
    }

    #[test]
    fn the_timer_fires_exactly_after_the_instructions_to_its_deadline() {
        let mut p = platform();
        assert_eq!(p.instructions_to_next_deadline(), None);
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        p.mmio_write(0xfee0_03e0, 4, 0xb); // divide by 1
        p.mmio_write(0xfee0_0320, 4, 0x40);
        p.retire(3);
        p.mmio_write(0xfee0_0380, 4, 1001); // 1001 ns: 125.125 instructions
        let n = p.instructions_to_next_deadline().unwrap();
        assert_eq!(n, 126);
        p.retire(n - 1);
        assert!(!p.interrupt_pending());
        p.retire(1);
        assert!(p.interrupt_pending());
        assert_eq!(p.acknowledge(), Some(0x40));
    }

    #[test]
    fn ports_and_msrs_claimed() {
        let mut p = platform();
        assert!(Platform::claims_port(0x61));
        assert!(Platform::claims_port(0x4d1));
        assert!(!Platform::claims_port(0xcf8));
        assert!(!Platform::claims_port(0x3f8));
        assert!(!Platform::claims_port(0x70));
        assert!(p.claims_mmio(0xfee0_0020));
        assert!(p.claims_mmio(0xfec0_0010));
        assert_eq!(p.mmio_read(0xfee0_0030, 4), 0x50014);
        assert_eq!(p.mmio_read(0xfee0_0032, 2), 0x5);
        assert_eq!(p.msr_read(0x1b), Some(Some(0xfee0_0900)));
        assert_eq!(p.msr_read(0x6e0), None);
        assert_eq!(p.msr_read(0x802), None);
        p.retire(125);
        assert_eq!(p.tsc(), 1000);
        assert_eq!(p.msr_write(MSR_TSC, 5000), Some(true));
        assert_eq!(p.msr_read(MSR_TSC), Some(Some(5000)));
        // Disabling the APIC unmaps its page and lets the PIC through.
        assert_eq!(p.msr_write(0x1b, 0xfee0_0100), Some(true));
        assert!(!p.claims_mmio(0xfee0_0020));
        assert!(p.lapic().accepts_pic());
        // A 16-bit PIC access covers both ports.
        p.io_write(0x20, 1, 0x11);
        p.io_write(0x21, 1, 0x08);
        p.io_write(0x21, 1, 0x04);
        p.io_write(0x21, 1, 0x01);
        p.io_write(0x21, 1, 0x5a);
        assert_eq!(p.io_read(0x20, 2) >> 8, 0x5a);
    }

    #[test]
    fn init_sipi_starts_an_ap_and_ipis_reach_their_cpus() {
        let mut p = Platform::with_cpus(Features::default(), 3);
        assert_eq!(p.mp_state(0), Some(MpState::Runnable));
        assert_eq!(p.mp_state(2), Some(MpState::InitReceived));
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        // A startup IPI before INIT is kept only by APs waiting for one: all of them now.
        p.mmio_write(0xfee0_0310, 4, 2 << 24);
        p.mmio_write(0xfee0_0300, 4, 0x4608); // SIPI, vector 8, to APIC 2
        assert_eq!(p.mp_state(2), Some(MpState::SipiReceived(8)));
        assert_eq!(p.mp_state(1), Some(MpState::InitReceived));
        p.set_mp_state(2, MpState::Runnable);
        // A second SIPI to a running AP is ignored; INIT (all excluding self) stops it again.
        p.mmio_write(0xfee0_0300, 4, 0x4609);
        assert_eq!(p.mp_state(2), Some(MpState::Runnable));
        p.mmio_write(0xfee0_0300, 4, 0xc4500);
        assert_eq!(p.mp_state(2), Some(MpState::InitReceived));
        assert_eq!(p.mp_state(0), Some(MpState::Runnable));
        // Fixed IPIs and NMIs go to the vCPU named, not to the sender.
        p.select_cpu(1);
        p.mmio_write(0xfee0_00f0, 4, 0x1ff);
        p.select_cpu(0);
        p.mmio_write(0xfee0_0310, 4, 1 << 24);
        p.mmio_write(0xfee0_0300, 4, 0x4041);
        p.mmio_write(0xfee0_0300, 4, 0x4400);
        assert!(!p.interrupt_pending());
        assert!(p.wakes(1, true) && !p.wakes(2, true) && !p.wakes(0, true));
        p.select_cpu(1);
        assert!(p.take_nmi() && !p.take_nmi());
        assert_eq!(p.acknowledge(), Some(0x41));
        assert_eq!(p.lapic().id(), 1);
    }

    #[test]
    fn chipset_ports() {
        let mut c = Chipset::new(64 << 20);
        assert!(Chipset::claims(0xcf8, 4) && Chipset::claims(0xcfd, 1));
        assert!(Chipset::claims(0x71, 1) && Chipset::claims(0x64, 1));
        assert!(!Chipset::claims(0xcf8, 1) && !Chipset::claims(0x61, 1));
        c.io_write(0xcf8, 4, 0x8000_0000, 0);
        assert_eq!(c.io_read(0xcfc, 4, 0), 0x1237_8086);
        c.io_write(0x70, 1, 0x0d, 0);
        assert_eq!(c.io_read(0x71, 1, 0), 0x80);
        c.io_write(0x64, 1, 0xfe, 0);
        assert_eq!(c.take_reset(), Some(ResetCause::KeyboardController));
        c.io_write(0xcf9, 1, 0x06, 0);
        assert_eq!(
            c.take_reset(),
            Some(ResetCause::ResetControl { hard: true })
        );
    }
}
