//! Several vCPUs on one VM with the in-kernel irqchip: KVM's own LAPICs deliver INIT, startup
//! and fixed IPIs between the vCPUs; mmurr only chooses which vCPU takes each step. What a
//! vCPU can do is read from KVM_GET_MP_STATE, which also makes KVM accept pending INIT and
//! SIPI events (`kvm_apic_accept_events`, kernel commit 66450a21f996, v3.10): an AP that got
//! its startup IPI reads RUNNABLE with CS = vector << 8 and RIP = 0 before it ran.
//!
//! KVM_RUN must never be entered on a vCPU that waits (UNINITIALIZED, INIT_RECEIVED, or HALTED
//! with nothing to wake it): KVM would block the recording thread in `kvm_vcpu_block`.

use kvm_bindings::{
    kvm_msr_entry, CpuId, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;
use mmu::bits::RFLAGS_IF;
use traces::Regs;

/// What KVM_GET_MP_STATE says about a vCPU, for the interleaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpState {
    Runnable,
    /// Waits for INIT and a startup IPI (an AP as created) or for a startup IPI.
    WaitsForSipi,
    Halted,
    /// Any other state KVM reports (e.g. SIPI_RECEIVED, which KVM_GET_MP_STATE turns into
    /// RUNNABLE on every kernel that has the in-kernel LAPIC's event handling).
    Other(u32),
}

impl MpState {
    pub fn of(fd: &VcpuFd) -> Result<MpState, String> {
        let s = fd
            .get_mp_state()
            .map_err(|e| format!("KVM_GET_MP_STATE: {e}"))?
            .mp_state;
        Ok(match s {
            KVM_MP_STATE_RUNNABLE => MpState::Runnable,
            KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => MpState::WaitsForSipi,
            KVM_MP_STATE_HALTED => MpState::Halted,
            other => MpState::Other(other),
        })
    }
}

/// Per vCPU: whether it waited for a startup IPI when last looked at, and the vector of a
/// startup IPI that started it since, not yet reported as a step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartupWatch {
    waiting: bool,
    pub started: Option<u8>,
}

impl StartupWatch {
    /// Takes in the state just read; `regs` reads the vCPU's registers when it may have just
    /// been started. A vCPU that waited and now runs at `vector << 8 : 0` was started by a
    /// startup IPI (KVM's `kvm_vcpu_deliver_sipi_vector`).
    pub fn observe(&mut self, state: MpState, regs: impl FnOnce() -> Option<Regs>) {
        match state {
            MpState::WaitsForSipi => {
                self.waiting = true;
                self.started = None;
            }
            MpState::Runnable if self.waiting => {
                self.waiting = false;
                self.started = regs().and_then(|r| startup_vector(&r));
            }
            _ => {}
        }
    }
}

/// The startup IPI's vector when `r` is the state a startup IPI leaves: real mode,
/// CS = vector << 8 with base vector << 12, IP 0.
pub fn startup_vector(r: &Regs) -> Option<u8> {
    let cs = r.seg[traces::regs::CS];
    let vector = u8::try_from(cs.selector >> 8).ok()?;
    let expected = guests::image::startup_entry(vector);
    let ecs = expected.seg[traces::regs::CS];
    (r.rip == 0 && cs.selector == ecs.selector && cs.base == ecs.base).then_some(vector)
}

/// The CPUID of the vCPU with APIC ID `id`: the table every vCPU shares with its APIC IDs
/// ([`insn::with_apic_id`]).
pub fn cpuid_for_apic_id(table: &CpuId, id: u32) -> CpuId {
    let mut c = table.clone();
    for e in c.as_mut_slice() {
        [e.eax, e.ebx, e.ecx, e.edx] =
            insn::with_apic_id(e.function, [e.eax, e.ebx, e.ecx, e.edx], id);
    }
    c
}

/// LAPIC register offsets (SDM Vol. 3 Table 11-1).
const TPR: usize = 0x80;
const ISR: usize = 0x100;
const IRR: usize = 0x200;
const LVT_TIMER: usize = 0x320;
const LVT_LINT0: usize = 0x350;
const TMICT: usize = 0x380;
const LVT_MASKED: u32 = 1 << 16;
const TIMER_TSC_DEADLINE: u32 = 2 << 17;
const DELIVERY_EXTINT: u32 = 7 << 8;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

fn lapic_reg(regs: &[std::os::raw::c_char], offset: usize) -> u32 {
    let b = |i: usize| regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// A 256-bit LAPIC register (ISR, IRR) at `offset`, as eight 32-bit words (one per 16 bytes).
fn vector_bits(regs: &[std::os::raw::c_char], offset: usize) -> [u32; 8] {
    std::array::from_fn(|i| lapic_reg(regs, offset + 0x10 * i))
}

/// Whether KVM_RUN on a halted vCPU returns promptly: an NMI is pending, or with RFLAGS.IF set
/// its LAPIC holds an interrupt above its processor priority, its armed LAPIC timer will raise
/// one (KVM then waits only until it fires), or the PIC has a request for a vCPU taking ExtINT.
/// `pic_pending`: the 8259s have an unmasked request.
pub fn halted_wakes(fd: &VcpuFd, regs: &Regs, pic_pending: bool) -> bool {
    if fd.get_vcpu_events().is_ok_and(|e| e.nmi.pending != 0) {
        return true;
    }
    if regs.rflags & RFLAGS_IF == 0 {
        return false;
    }
    let Ok(lapic) = fd.get_lapic() else {
        return false;
    };
    let r = &lapic.regs[..];
    let (irr, isr) = (vector_bits(r, IRR), vector_bits(r, ISR));
    if platform::lapic::presentable(&irr, &isr, lapic_reg(r, TPR)).is_some() {
        return true;
    }
    let lint0 = lapic_reg(r, LVT_LINT0);
    if pic_pending && lint0 & LVT_MASKED == 0 && lint0 & (7 << 8) == DELIVERY_EXTINT {
        return true;
    }
    let timer = lapic_reg(r, LVT_TIMER);
    if timer & LVT_MASKED != 0 {
        return false;
    }
    if timer & (3 << 17) == TIMER_TSC_DEADLINE {
        let mut msrs = match Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_TSC_DEADLINE,
            ..Default::default()
        }]) {
            Ok(m) => m,
            Err(_) => return false,
        };
        return fd.get_msrs(&mut msrs).is_ok_and(|n| n == 1) && msrs.as_slice()[0].data != 0;
    }
    lapic_reg(r, TMICT) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_state_gives_its_vector_and_others_none() {
        let r = guests::image::startup_entry(0x30);
        assert_eq!(startup_vector(&r), Some(0x30));
        let mut moved = r.clone();
        moved.rip = 1;
        assert_eq!(startup_vector(&moved), None);
        // The reset state (CS f000 with base ffff0000, IP fff0) is no startup.
        assert_eq!(startup_vector(&guests::image::init_entry()), None);
    }

    #[test]
    fn the_startup_watch_reports_a_start_only_after_a_wait() {
        let mut w = StartupWatch::default();
        let start = || Some(guests::image::startup_entry(0x30));
        w.observe(MpState::Runnable, start);
        assert_eq!(w.started, None, "the BSP runs from the start");
        w.observe(MpState::WaitsForSipi, || None);
        w.observe(MpState::Runnable, start);
        assert_eq!(w.started, Some(0x30));
        w.started = None;
        w.observe(MpState::Runnable, start);
        assert_eq!(w.started, None, "reported once");
    }

    #[test]
    fn a_lapic_pages_vector_bitmap_and_its_priority() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        assert_eq!(vector_bits(&regs, IRR), [0; 8]);
        regs[IRR + 0x10 * 2] = 0x01; // vector 64
        regs[IRR + 0x10] = 0x80u8 as std::os::raw::c_char; // vector 39
        let irr = vector_bits(&regs, IRR);
        assert_eq!(irr[1..3], [1 << 7, 1]);
        assert_eq!(platform::lapic::presentable(&irr, &[0; 8], 0), Some(64));
        // TPR class 4 masks vector 64 (class 4) but not a class-5 one.
        assert_eq!(platform::lapic::presentable(&irr, &[0; 8], 0x40), None);
    }
}
