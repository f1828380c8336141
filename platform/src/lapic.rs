//! A CPU's local APIC (one per vCPU; APIC ID = vCPU index): the xAPIC register page (at [`BASE`]) and the same
//! registers as x2APIC MSRs (0x800 + offset / 16) after the SDM, vol. 3A, chapter 11, with the
//! reset state KVM gives a BSP (LINT0 in ExtINT mode so the 8259's INTR reaches the CPU:
//! KVM_X86_QUIRK_LINT0_REENABLED). The timer counts on a 1 GHz bus clock in virtual time, in
//! one-shot, periodic and TSC-deadline mode.

use crate::clock::{ns_to_ticks, ticks_to_ns, APIC_BUS_HZ, TSC_HZ};

pub const BASE: u64 = 0xfee0_0000;
/// IA32_APIC_BASE: BSP flag (bit 8) and APIC global enable (bit 11).
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;

const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TPR: u32 = 0x80;
const APR: u32 = 0x90;
const PPR: u32 = 0xa0;
const EOI: u32 = 0xb0;
const LDR: u32 = 0xd0;
const DFR: u32 = 0xe0;
const SVR: u32 = 0xf0;
const ISR: u32 = 0x100;
const TMR: u32 = 0x180;
const IRR: u32 = 0x200;
const ESR: u32 = 0x280;
const LVT_CMCI: u32 = 0x2f0;
const ICR_LO: u32 = 0x300;
const ICR_HI: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const LVT_LINT0: u32 = 0x350;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;
const SELF_IPI: u32 = 0x3f0;

/// Version 0x14 (integrated APIC) with six LVT entries, as KVM reports.
pub(crate) const VERSION_VALUE: u32 = 0x14 | (5 << 16);
const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;
const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;
/// LVT timer mode field (bits 18:17).
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSC_DEADLINE: u32 = 2 << 17;
const DM_EXTINT: u32 = 7 << 8;

/// LVT registers: timer, thermal, performance, LINT0, LINT1, error, CMCI.
const LVTS: [u32; 7] = [
    LVT_TIMER, 0x330, 0x340, LVT_LINT0, 0x360, LVT_ERROR, LVT_CMCI,
];

/// The access raises #GP (a reserved MSR value or an x2APIC register not writable/readable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// What a register write asks of the rest of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// EOI of a level-triggered vector: the IOAPIC clears Remote IRR for it.
    EoiBroadcast(u8),
    /// A write of the ICR sent an inter-processor interrupt; the platform delivers it to the
    /// local APICs its destination names ([`Lapic::is_destination`]).
    Ipi(Ipi),
}

/// ICR delivery modes (SDM vol. 3A, 11.6.1).
pub const DM_FIXED: u8 = 0;
pub const DM_LOWEST: u8 = 1;
pub const DM_NMI: u8 = 4;
pub const DM_INIT: u8 = 5;
pub const DM_STARTUP: u8 = 6;

/// An IPI as the ICR describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub vector: u8,
    pub mode: u8,
    /// Destination shorthand: 0 none, 1 self, 2 all including self, 3 all excluding self.
    pub shorthand: u8,
    /// The destination field (8 bits in xAPIC mode, 32 in x2APIC mode).
    pub dest: u32,
    pub logical: bool,
    /// Level de-assert (level-triggered with level 0): the INIT de-assert of old MP systems,
    /// which modern CPUs ignore.
    pub deassert: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapic {
    apic_base: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    icr: u64,
    lvt: [u32; 7],
    divide_config: u32,
    timer_initial: u32,
    /// When the timer was (re)started in one-shot/periodic mode, while it runs.
    timer_start_ns: Option<u64>,
    tsc_deadline: u64,
    /// CPUID offers x2APIC / TSC-deadline (what the guest may enable).
    pub x2apic_supported: bool,
    pub tsc_deadline_supported: bool,
}

impl Default for Lapic {
    fn default() -> Self {
        let mut lvt = [LVT_MASKED; 7];
        lvt[3] = DM_EXTINT; // LINT0, unmasked (KVM_X86_QUIRK_LINT0_REENABLED)
        Lapic {
            apic_base: BASE | APIC_BASE_BSP | APIC_BASE_ENABLE,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            icr: 0,
            lvt,
            divide_config: 0,
            timer_initial: 0,
            timer_start_ns: None,
            tsc_deadline: 0,
            x2apic_supported: false,
            tsc_deadline_supported: false,
        }
    }
}

/// The vector a local APIC with these IRR, ISR and TPR presents to its CPU (enabled, and
/// interrupts on): the highest requested one whose priority class is above the processor
/// priority's, PPR = max(TPR, the highest in service) by class (SDM vol. 3A, 11.8.3.1). The one
/// rule for the emulated APIC ([`Lapic::pending`]) and for KVM's (the kvm backend's wake test
/// of a halted vCPU, from its KVM_GET_LAPIC page).
pub fn presentable(irr: &[u32; 8], isr: &[u32; 8], tpr: u32) -> Option<u8> {
    let v = highest(irr)?;
    ((v as u32 & 0xf0) > (ppr(isr, tpr) & 0xf0)).then_some(v)
}

fn ppr(isr: &[u32; 8], tpr: u32) -> u32 {
    let isrv = highest(isr).map_or(0, u32::from);
    if (tpr & 0xf0) >= (isrv & 0xf0) {
        tpr & 0xff
    } else {
        isrv & 0xf0
    }
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find_map(|i| {
        let w = bits[i];
        (w != 0).then(|| (i as u32 * 32 + 31 - w.leading_zeros()) as u8)
    })
}

fn set_bit(bits: &mut [u32; 8], v: u8, on: bool) {
    let (i, m) = ((v / 32) as usize, 1u32 << (v % 32));
    if on {
        bits[i] |= m;
    } else {
        bits[i] &= !m;
    }
}

fn bit(bits: &[u32; 8], v: u8) -> bool {
    bits[(v / 32) as usize] & (1 << (v % 32)) != 0
}

impl Lapic {
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_ENABLE != 0
    }

    pub fn x2apic_mode(&self) -> bool {
        self.hw_enabled() && self.apic_base & APIC_BASE_X2APIC != 0
    }

    fn sw_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// Whether the xAPIC page answers MMIO (hardware-enabled, not in x2APIC mode).
    pub fn mmio_enabled(&self) -> bool {
        self.hw_enabled() && !self.x2apic_mode()
    }

    fn ppr(&self) -> u32 {
        ppr(&self.isr, self.tpr)
    }

    /// A fixed interrupt arrives (from the IOAPIC, an IPI or an LVT): IRR, and TMR for level.
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 || !self.hw_enabled() {
            return; // illegal vectors set an ESR bit on hardware; nothing is delivered
        }
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, level);
    }

    /// The vector the APIC would present to the CPU now.
    pub fn pending(&self) -> Option<u8> {
        if !self.hw_enabled() || !self.sw_enabled() {
            return None;
        }
        presentable(&self.irr, &self.isr, self.tpr)
    }

    /// The CPU takes the pending vector: IRR to ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending()?;
        set_bit(&mut self.irr, v, false);
        set_bit(&mut self.isr, v, true);
        Some(v)
    }

    /// LINT0 passes the 8259's INTR: hardware-disabled APIC, or LINT0 unmasked in ExtINT mode.
    pub fn accepts_pic(&self) -> bool {
        let lint0 = self.lvt[3];
        !self.hw_enabled() || (lint0 & LVT_MASKED == 0 && lint0 & (7 << 8) == DM_EXTINT)
    }

    fn eoi(&mut self) -> Effect {
        let Some(v) = highest(&self.isr) else {
            return Effect::None;
        };
        set_bit(&mut self.isr, v, false);
        if bit(&self.tmr, v) && self.svr & SVR_SUPPRESS_EOI_BROADCAST == 0 {
            Effect::EoiBroadcast(v)
        } else {
            Effect::None
        }
    }

    fn divide(&self) -> u64 {
        let v = (self.divide_config & 3) | ((self.divide_config & 8) >> 1);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }

    fn timer_mode(&self) -> u32 {
        self.lvt[0] & (3 << 17)
    }

    fn timer_period_ns(&self) -> u64 {
        ticks_to_ns(self.timer_initial as u64 * self.divide(), APIC_BUS_HZ)
    }

    fn current_count(&self, now: u64) -> u32 {
        let Some(start) = self.timer_start_ns else {
            return 0;
        };
        if self.timer_initial == 0 {
            return 0;
        }
        let elapsed = ns_to_ticks(now.saturating_sub(start), APIC_BUS_HZ) / self.divide();
        let init = self.timer_initial as u64;
        let left = if self.timer_mode() == TIMER_PERIODIC {
            init - elapsed % init
        } else {
            init.saturating_sub(elapsed)
        };
        left as u32
    }

    /// When the timer fires next (virtual ns).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return (self.tsc_deadline != 0).then(|| ticks_to_ns(self.tsc_deadline, TSC_HZ));
        }
        let start = self.timer_start_ns?;
        Some(start + self.timer_period_ns())
    }

    /// Fires the timer if its deadline has come: the LVT timer vector, unless masked.
    pub fn update_timer(&mut self, now: u64) {
        let Some(due) = self.next_deadline() else {
            return;
        };
        if due > now {
            return;
        }
        match self.timer_mode() {
            TIMER_TSC_DEADLINE => self.tsc_deadline = 0,
            TIMER_PERIODIC => {
                // Missed periods coalesce into one interrupt (IRR holds one).
                let period = self.timer_period_ns().max(1);
                let start = self.timer_start_ns.unwrap_or(now);
                let periods = (now - start) / period;
                self.timer_start_ns = Some(start + periods * period);
            }
            _ => self.timer_start_ns = None,
        }
        let lvt = self.lvt[0];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8, false);
        }
    }

    /// A register read at `offset` (16-byte aligned) in the xAPIC page.
    pub fn read(&self, offset: u32, now: u64) -> u32 {
        match offset {
            ID => {
                if self.x2apic_mode() {
                    self.id
                } else {
                    self.id << 24
                }
            }
            VERSION => VERSION_VALUE,
            TPR => self.tpr,
            APR => 0,
            PPR => self.ppr(),
            LDR => self.ldr,
            DFR => self.dfr,
            SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - ISR) >> 4) as usize],
            0x180..=0x1f0 => self.tmr[((offset - TMR) >> 4) as usize],
            0x200..=0x270 => self.irr[((offset - IRR) >> 4) as usize],
            ESR => 0,
            // Delivery status (bit 12) is always idle: IPIs complete at once.
            ICR_LO => self.icr as u32 & !(1 << 12),
            ICR_HI => (self.icr >> 32) as u32,
            TIMER_INITIAL => self.timer_initial,
            TIMER_CURRENT => {
                if self.timer_mode() == TIMER_TSC_DEADLINE {
                    0
                } else {
                    self.current_count(now)
                }
            }
            TIMER_DIVIDE => self.divide_config,
            o => LVTS.iter().position(|&l| l == o).map_or(0, |i| self.lvt[i]),
        }
    }

    /// A register write at `offset` in the xAPIC page.
    pub fn write(&mut self, offset: u32, v: u32, now: u64) -> Effect {
        match offset {
            ID if !self.x2apic_mode() => self.id = v >> 24,
            TPR => self.tpr = v & 0xff,
            EOI => return self.eoi(),
            LDR if !self.x2apic_mode() => self.ldr = v & 0xff00_0000,
            DFR if !self.x2apic_mode() => self.dfr = v | 0x0fff_ffff,
            SVR => {
                self.svr = v & 0x11ff;
                if !self.sw_enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            ICR_LO => {
                self.icr = (self.icr & !0xffff_ffff) | v as u64;
                return Effect::Ipi(self.ipi());
            }
            ICR_HI if !self.x2apic_mode() => {
                self.icr = (self.icr & 0xffff_ffff) | ((v as u64 & 0xff00_0000) << 32)
            }
            TIMER_INITIAL => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.timer_initial = v;
                    self.timer_start_ns = (v != 0).then_some(now);
                }
            }
            TIMER_DIVIDE => {
                // Re-base the running timer so the count so far is kept.
                self.divide_config = v & 0xb;
            }
            SELF_IPI if self.x2apic_mode() => self.accept(v as u8, false),
            ESR => {}
            o => {
                if let Some(i) = LVTS.iter().position(|&l| l == o) {
                    let mut val = v & 0x000710ff | (v & (7 << 8));
                    if i == 0 {
                        let mode = v & (3 << 17);
                        let mode = if mode == TIMER_TSC_DEADLINE && !self.tsc_deadline_supported {
                            0
                        } else {
                            mode
                        };
                        val = (val & !(3 << 17)) | mode;
                        if mode != self.timer_mode() {
                            // A mode change stops the timer (as KVM does).
                            self.timer_start_ns = None;
                            self.tsc_deadline = 0;
                        }
                    }
                    if i == 3 || i == 4 {
                        val |= v & (1 << 15 | 1 << 13); // trigger mode, polarity
                    }
                    if !self.sw_enabled() {
                        val |= LVT_MASKED;
                    }
                    self.lvt[i] = val;
                }
            }
        }
        Effect::None
    }

    /// The IPI the ICR now describes (the delivery is immediate: the status bit never reads
    /// busy).
    fn ipi(&self) -> Ipi {
        let icr = self.icr;
        Ipi {
            vector: icr as u8,
            mode: ((icr >> 8) & 7) as u8,
            shorthand: ((icr >> 18) & 3) as u8,
            dest: if self.x2apic_mode() {
                (icr >> 32) as u32
            } else {
                (icr >> 56) as u32
            },
            logical: (icr >> 11) & 1 != 0,
            deassert: (icr >> 15) & 1 != 0 && (icr >> 14) & 1 == 0,
        }
    }

    /// Whether this APIC is a destination of `ipi`, sent by itself (`from_self`) or by another.
    pub fn is_destination(&self, ipi: &Ipi, from_self: bool) -> bool {
        match ipi.shorthand {
            1 => from_self,
            2 => true,
            3 => !from_self,
            _ => self.addressed(ipi.dest, ipi.logical),
        }
    }

    /// Whether a destination field names this APIC: physical (its ID or broadcast) or logical
    /// (flat model: one of its LDR bits).
    pub fn addressed(&self, dest: u32, logical: bool) -> bool {
        if self.x2apic_mode() {
            dest == self.id || dest == u32::MAX
        } else if !logical {
            dest == self.id || dest == 0xff
        } else {
            dest & (self.ldr >> 24) != 0
        }
    }

    /// The local APIC of an application processor with APIC ID `id`: not the BSP, and LINT0
    /// masked (KVM re-enables LINT0 only on the BSP).
    pub fn new_ap(id: u32) -> Lapic {
        let mut a = Lapic {
            apic_base: BASE | APIC_BASE_ENABLE,
            id,
            ..Lapic::default()
        };
        a.lvt[3] = LVT_MASKED;
        a
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// A WRMSR to IA32_APIC_BASE; `Err` is #GP (reserved bits, x2APIC not offered, an
    /// x2APIC-to-xAPIC switch without disabling first, a relocation mmurr does not model).
    pub fn set_apic_base(&mut self, v: u64) -> Result<(), Gp> {
        let allowed = APIC_BASE_BSP
            | APIC_BASE_ENABLE
            | BASE
            | if self.x2apic_supported {
                APIC_BASE_X2APIC
            } else {
                0
            };
        if v & !allowed != 0 && v & !0xffff_f000 & !allowed != 0 {
            return Err(Gp);
        }
        if v & 0xffff_f000 != BASE {
            return Err(Gp);
        }
        let x2 = v & APIC_BASE_X2APIC != 0;
        let en = v & APIC_BASE_ENABLE != 0;
        if x2 && !en || (self.x2apic_mode() && en && !x2) {
            return Err(Gp);
        }
        if !en {
            // Disabling resets the APIC's state (SDM 11.4.3).
            *self = Lapic {
                apic_base: v,
                x2apic_supported: self.x2apic_supported,
                tsc_deadline_supported: self.tsc_deadline_supported,
                ..Lapic::default()
            };
            return Ok(());
        }
        if x2 && !self.x2apic_mode() {
            // x2APIC ID and the logical ID derived from it (SDM 11.12.10.2).
            self.ldr = (self.id & 0xffff_fff0) << 12 | (1 << (self.id & 0xf));
        }
        self.apic_base = v;
        Ok(())
    }

    /// RDMSR of an x2APIC register (0x800..=0x8ff); `None` is #GP.
    pub fn x2apic_read(&self, msr: u32, now: u64) -> Option<u64> {
        if !self.x2apic_mode() {
            return None;
        }
        let offset = (msr - 0x800) << 4;
        match offset {
            ICR_LO => Some(self.icr & !(1 << 12)),
            DFR | ICR_HI | EOI | SELF_IPI => None,
            _ => Some(self.read(offset, now) as u64),
        }
    }

    /// WRMSR of an x2APIC register; `Err` is #GP.
    pub fn x2apic_write(&mut self, msr: u32, v: u64, now: u64) -> Result<Effect, Gp> {
        if !self.x2apic_mode() {
            return Err(Gp);
        }
        let offset = (msr - 0x800) << 4;
        match offset {
            ICR_LO => {
                self.icr = v;
                Ok(Effect::Ipi(self.ipi()))
            }
            ID | VERSION | LDR | PPR | DFR | ICR_HI | TIMER_CURRENT | 0x100..=0x270 => Err(Gp),
            _ => Ok(self.write(offset, v as u32, now)),
        }
    }

    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// IA32_TSC_DEADLINE: arms the timer in TSC-deadline mode (0 disarms); ignored otherwise.
    pub fn set_tsc_deadline(&mut self, tsc: u64) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline = tsc;
        }
    }

    /// The error LVT and CMCI are kept but never fire: mmurr models no APIC errors.
    pub fn lvt_error(&self) -> u32 {
        self.read(LVT_ERROR, 0)
    }

    pub fn lint0(&self) -> u32 {
        self.read(LVT_LINT0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Lapic {
        let mut a = Lapic::default();
        a.write(SVR, 0x1ff, 0);
        a
    }

    #[test]
    fn reset_state_is_kvms_bsp() {
        let a = Lapic::default();
        assert_eq!(a.read(VERSION, 0), 0x50014);
        assert_eq!(a.read(SVR, 0), 0xff);
        assert_eq!(a.read(DFR, 0), 0xffff_ffff);
        assert_eq!(a.read(LVT_TIMER, 0), 0x10000);
        assert_eq!(a.lint0(), 0x700);
        assert!(a.accepts_pic());
        assert_eq!(a.apic_base(), 0xfee0_0900);
    }

    #[test]
    fn priorities_isr_irr_and_eoi() {
        let mut a = enabled();
        a.accept(0x41, false);
        a.accept(0x31, true);
        assert_eq!(a.read(IRR + 0x20, 0), 1 << 1);
        assert_eq!(a.acknowledge(), Some(0x41));
        assert_eq!(a.read(ISR + 0x20, 0), 1 << 1);
        assert_eq!(a.read(PPR, 0), 0x40);
        // 0x31 is in a lower priority class than the one in service.
        assert_eq!(a.pending(), None);
        assert_eq!(a.write(EOI, 0, 0), Effect::None);
        assert_eq!(a.acknowledge(), Some(0x31));
        assert_eq!(a.read(TMR + 0x10, 0), 1 << 17);
        assert_eq!(a.write(EOI, 0, 0), Effect::EoiBroadcast(0x31));
        // TPR blocks classes at or below it.
        a.write(TPR, 0x50, 0);
        a.accept(0x55, false);
        assert_eq!(a.pending(), None);
        a.write(TPR, 0x40, 0);
        assert_eq!(a.pending(), Some(0x55));
    }

    #[test]
    fn software_disabled_apic_delivers_nothing_and_masks_lvts() {
        let mut a = Lapic::default();
        a.accept(0x40, false);
        assert_eq!(a.pending(), None);
        a.write(LVT_TIMER, 0x20, 0);
        assert_eq!(a.read(LVT_TIMER, 0), 0x10020);
        a.write(SVR, 0x1ff, 0);
        assert_eq!(a.pending(), Some(0x40));
    }

    #[test]
    fn one_shot_timer_counts_down_and_fires_once() {
        let mut a = enabled();
        a.write(TIMER_DIVIDE, 0x3, 0); // divide by 16
        a.write(LVT_TIMER, 0x40, 0);
        a.write(TIMER_INITIAL, 1000, 100);
        assert_eq!(a.read(TIMER_CURRENT, 100 + 16 * 250), 750);
        assert_eq!(a.next_deadline(), Some(100 + 16_000));
        a.update_timer(100 + 15_999);
        assert_eq!(a.pending(), None);
        a.update_timer(100 + 16_000);
        assert_eq!(a.pending(), Some(0x40));
        assert_eq!(a.read(TIMER_CURRENT, 200_000), 0);
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn periodic_timer_reloads() {
        let mut a = enabled();
        a.write(TIMER_DIVIDE, 0xb, 0); // divide by 1
        a.write(LVT_TIMER, 0x20040, 0);
        a.write(TIMER_INITIAL, 500, 0);
        assert_eq!(a.read(TIMER_CURRENT, 700), 300);
        a.update_timer(500);
        assert_eq!(a.acknowledge(), Some(0x40));
        a.write(EOI, 0, 0);
        assert_eq!(a.next_deadline(), Some(1000));
        a.update_timer(2600); // missed periods coalesce
        assert_eq!(a.acknowledge(), Some(0x40));
        assert_eq!(a.acknowledge(), None);
        assert_eq!(a.next_deadline(), Some(3000));
    }

    #[test]
    fn tsc_deadline_mode_only_when_offered() {
        let mut a = enabled();
        a.write(LVT_TIMER, 0x40040, 0);
        assert_eq!(a.read(LVT_TIMER, 0) & (3 << 17), 0);
        let mut a = enabled();
        a.tsc_deadline_supported = true;
        a.write(LVT_TIMER, 0x40040, 0);
        a.set_tsc_deadline(5000);
        assert_eq!(a.next_deadline(), Some(5000));
        a.update_timer(5000);
        assert_eq!(a.pending(), Some(0x40));
        assert_eq!(a.tsc_deadline(), 0);
    }

    #[test]
    fn icr_writes_describe_ipis_and_their_destinations() {
        let mut a = enabled();
        let ap = Lapic::new_ap(1);
        a.write(ICR_HI, 0x0100_0000, 0);
        let Effect::Ipi(ipi) = a.write(ICR_LO, 0x0000_4050, 0) else {
            panic!("no IPI")
        };
        assert_eq!((ipi.vector, ipi.mode, ipi.dest), (0x50, DM_FIXED, 1));
        assert!(!a.is_destination(&ipi, true) && ap.is_destination(&ipi, false));
        let Effect::Ipi(init) = a.write(ICR_LO, 0x000c_4500, 0) else {
            panic!("no IPI")
        };
        assert_eq!(init.mode, DM_INIT);
        assert!(!init.deassert);
        assert!(!a.is_destination(&init, true) && ap.is_destination(&init, false));
        let Effect::Ipi(deassert) = a.write(ICR_LO, 0x000c_8500, 0) else {
            panic!("no IPI")
        };
        assert!(deassert.deassert);
        let Effect::Ipi(selfish) = a.write(ICR_LO, 0x0004_0051, 0) else {
            panic!("no IPI")
        };
        assert!(a.is_destination(&selfish, true) && !ap.is_destination(&selfish, false));
        assert_eq!(a.read(ICR_LO, 0) & (1 << 12), 0);
        // APs are not the BSP and do not pass the 8259's INTR.
        assert_eq!(ap.apic_base() & APIC_BASE_BSP, 0);
        assert!(!ap.accepts_pic());
    }

    #[test]
    fn x2apic_msrs_need_cpuid_and_enable() {
        let mut a = enabled();
        assert!(a.set_apic_base(0xfee0_0d00).is_err());
        assert_eq!(a.x2apic_read(0x802, 0), None);
        a.x2apic_supported = true;
        a.set_apic_base(0xfee0_0d00).unwrap();
        assert_eq!(a.x2apic_read(0x802, 0), Some(0));
        assert_eq!(a.x2apic_read(0x80d, 0), Some(1)); // LDR: cluster 0, bit 0
        a.x2apic_write(0x83f, 0x70, 0).unwrap();
        assert_eq!(a.pending(), Some(0x70));
        assert!(a.x2apic_write(0x802, 5, 0).is_err());
        // Back to xAPIC only through disabled.
        assert!(a.set_apic_base(0xfee0_0900).is_err());
        a.set_apic_base(0xfee0_0100).unwrap();
        assert!(!a.hw_enabled());
        a.set_apic_base(0xfee0_0900).unwrap();
        assert!(a.mmio_enabled());
    }
}
