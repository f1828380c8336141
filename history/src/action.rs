//! What an action on the vCPU means to the MMU model: a guest's control-register write
//! ([`guest_write`], [`crate::model_input`]) or a host action ([`host_effect`]). The one owner
//! for the model-level scenarios' script runner (`guests::model`), the writer of their traces
//! and the trace-driven path ([`crate::Watch::on_host`], which `check`, the replayer's analysis,
//! the TUI and the replay gdb server run).

use mmu::{
    apply_write_with, load_pdptrs, ControlRegs, CpuModel, CrReg, GuestMemory, Input, WriteContext,
};
use traces::{ControlReg, CpuidModel, CrWrite, EventKind, HostAction, LoadedRegs, WriteVia};

/// An MMU input a trace records: the event a decision answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A control-register or EFER write (guest, or KVM_SET_MSRS recorded as `WriteVia::Host`).
    Write(CrWrite),
    /// A host action (format 6).
    Host(HostAction),
}

impl Cause {
    /// The cause an event is, if it is an MMU input (an XCR0 write is not).
    pub fn of(kind: &EventKind) -> Option<Cause> {
        match kind {
            EventKind::CrWrite(w) if crate::model_input(w).is_some() => {
                Some(Cause::Write(w.clone()))
            }
            EventKind::HostAction(a) => Some(Cause::Host(*a)),
            _ => None,
        }
    }

    /// The write, for a control-register write.
    pub fn write(&self) -> Option<&CrWrite> {
        match self {
            Cause::Write(w) => Some(w),
            Cause::Host(_) => None,
        }
    }

    /// The CPU answered it with #GP (a host action never faults).
    pub fn faulted(&self) -> bool {
        self.write().is_some_and(|w| w.faulted)
    }

    /// `CR4 write 0x0 -> 0x20 (+PAE)`, `KVM_SET_MSRS EFER <- 0x500`.
    pub fn describe(&self) -> String {
        match self {
            Cause::Write(w) => crate::to_trace::describe_write(w),
            Cause::Host(a) => a.describe(),
        }
    }

    /// What kind of cause it is, for grouping repeated findings: `CR4.PSE writes`,
    /// `host KVM_SET_SREGS actions`.
    pub fn kind(&self) -> String {
        match self {
            Cause::Write(w) => crate::to_trace::write_kind(w),
            Cause::Host(a) if a.is_vmm() => format!("host {} actions", a.name()),
            Cause::Host(a) => format!("guest {} actions", a.name()),
        }
    }
}

/// What the model is fed for one action, and what the architecture makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effect {
    pub input: Input,
    pub ctx: WriteContext,
    /// The vCPU's registers after it (for a nested entry, still L1's).
    pub after: ControlRegs,
    /// The CPU answers it with #GP.
    pub faulted: bool,
    /// The guest's CPU after it (another one after KVM_SET_CPUID2).
    pub cpu: CpuModel,
}

/// The `mmu` CPU model of a KVM_SET_CPUID2.
pub fn cpu_model(c: &CpuidModel) -> CpuModel {
    CpuModel {
        maxphyaddr: c.maxphyaddr,
        amd: c.amd,
        gbpages: c.gbpages,
        la57: c.la57,
        pku: c.pku,
        smep: c.smep,
        smap: c.smap,
        nx: c.nx,
        pcid: c.pcid,
    }
}

/// The fields of `c` a KVM_SET_CPUID2 carries for the MMU.
pub fn cpuid_model(c: &CpuModel) -> CpuidModel {
    CpuidModel {
        maxphyaddr: c.maxphyaddr,
        amd: c.amd,
        gbpages: c.gbpages,
        la57: c.la57,
        pku: c.pku,
        smep: c.smep,
        smap: c.smap,
        nx: c.nx,
        pcid: c.pcid,
    }
}

/// The registers a host action loads, as the model holds them (PDPTEs apart).
pub fn loaded(r: &LoadedRegs, like: &ControlRegs) -> ControlRegs {
    ControlRegs {
        cr0: r.cr0,
        cr3: r.cr3,
        cr4: r.cr4,
        efer: r.efer,
        ..*like
    }
}

/// `r` with its PDPTE registers loaded from memory in PAE paging (zero when unreadable, as a
/// load that the architecture would refuse leaves nothing to cache).
pub fn with_pdptrs(mut r: ControlRegs, cpu: &CpuModel, mem: &dyn GuestMemory) -> ControlRegs {
    if r.is_pae_paging() {
        r.pdptrs = load_pdptrs(r.cr3, mem, cpu.phys_bits()).unwrap_or([0; 4]);
    }
    r
}

/// The model's name for a register a trace records (`None` for XCR0, no MMU input).
pub fn cr_reg(reg: ControlReg) -> Option<CrReg> {
    Some(match reg {
        ControlReg::Cr0 => CrReg::Cr0,
        ControlReg::Cr3 => CrReg::Cr3,
        ControlReg::Cr4 => CrReg::Cr4,
        ControlReg::Efer => CrReg::Efer,
        ControlReg::Xcr0 => return None,
    })
}

/// The trace's name for a register the model writes.
pub fn trace_reg(reg: CrReg) -> ControlReg {
    match reg {
        CrReg::Cr0 => ControlReg::Cr0,
        CrReg::Cr3 => ControlReg::Cr3,
        CrReg::Cr4 => ControlReg::Cr4,
        CrReg::Efer => ControlReg::Efer,
    }
}

/// A guest instruction (MOV to CR0/CR3/CR4, WRMSR to EFER) writes `value` to `reg` under
/// `before`: the write as a trace records it (`faulted` when the architecture answers #GP)
/// and the registers after it (unchanged when it faults). `None` for XCR0.
pub fn guest_write(
    reg: ControlReg,
    value: u64,
    before: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    ctx: &WriteContext,
) -> Option<(CrWrite, ControlRegs)> {
    let r = cr_reg(reg)?;
    let (after, faulted) = match apply_write_with(r, before, value, cpu, mem, ctx) {
        Ok(after) => (after, false),
        Err(_) => (*before, true),
    };
    let old = match r {
        CrReg::Cr0 => before.cr0,
        CrReg::Cr3 => before.cr3,
        CrReg::Cr4 => before.cr4,
        CrReg::Efer => before.efer,
    };
    let via = if reg == ControlReg::Efer {
        WriteVia::Wrmsr
    } else {
        WriteVia::MovCr
    };
    let write = CrWrite {
        reg,
        old,
        new: value,
        via,
        faulted,
    };
    Some((write, after))
}

/// What host action `a`, taken with the vCPU's registers at `before` and CPU `cpu`, feeds the
/// model, and the registers and CPU after it.
pub fn host_effect(
    a: &HostAction,
    before: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
) -> Effect {
    let host = WriteContext {
        cs_l: None,
        host_initiated: true,
    };
    let effect = |input, after| Effect {
        input,
        ctx: host,
        after,
        faulted: false,
        cpu: *cpu,
    };
    match *a {
        HostAction::SetMsrEfer { value } => {
            // KVM_SET_MSRS skips the guest's checks but not the architectural ones
            // (reserved bits): a refused write leaves EFER as it was.
            let (after, faulted) =
                match apply_write_with(CrReg::Efer, before, value, cpu, mem, &host) {
                    Ok(r) => (r, false),
                    Err(_) => (*before, true),
                };
            Effect {
                faulted,
                ..effect(
                    Input::EferHost {
                        old: before.efer,
                        new: value,
                    },
                    after,
                )
            }
        }
        // `__set_sregs_common`: no legality checks, PDPTEs reloaded in PAE paging.
        HostAction::SetSregs(r) => {
            effect(Input::SetSregs, with_pdptrs(loaded(&r, before), cpu, mem))
        }
        HostAction::SetCpuid(c) => Effect {
            cpu: cpu_model(&c),
            ..effect(Input::SetCpuid, *before)
        },
        HostAction::Init => effect(Input::Init, before.after_init()),
        // L2's registers are the vCPU's own from then on: none of L1's state carries over.
        HostAction::NestedVmrun { l2 } | HostAction::SetNestedState { l2 } => effect(
            Input::NestedNptInit {
                vcpu: with_pdptrs(loaded(&l2, &ControlRegs::default()), cpu, mem),
                set_nested_state: matches!(a, HostAction::SetNestedState { .. }),
            },
            *before,
        ),
        // The shadow-EPT flavour reads the EPTP where the others read CR3 (the script's
        // registers are L1's, with the EPTP standing in CR3 while L2 runs).
        HostAction::VmEntryEpt { eptp } => effect(
            Input::NestedEptInit { eptp },
            ControlRegs {
                cr3: eptp,
                ..*before
            },
        ),
        // L1's registers from the VMCS host-state area; none of L2's carry over.
        HostAction::VmExit {
            l1,
            leaves_nested_ept,
        } => effect(
            Input::NestedLoadCr3 { leaves_nested_ept },
            with_pdptrs(loaded(&l1, &ControlRegs::default()), cpu, mem),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Watch;
    use mmu::bits::*;
    use mmu::{FlatMemory, Flavour};

    fn long_mode() -> ControlRegs {
        ControlRegs {
            cr0: CR0_PE | CR0_ET | CR0_PG,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        }
    }

    #[test]
    fn a_cpuid_update_changes_the_cpu_every_later_action_is_judged_by() {
        let mem = FlatMemory::new(0, 1 << 20);
        let cpu = CpuModel::default_x86_64();
        let mut w = Watch::new(
            &[mmu::policy("v6.14").unwrap()],
            Flavour::Tdp,
            cpu,
            &long_mode(),
        );
        let narrow = CpuidModel {
            maxphyaddr: 40,
            ..cpuid_model(&cpu)
        };
        let (e, out) = w.on_host(0, 1, 0, &HostAction::SetCpuid(narrow), &long_mode(), &mem);
        assert_eq!(e.input, Input::SetCpuid);
        assert_eq!(e.after, long_mode());
        assert_eq!(w.cpu().maxphyaddr, 40);
        assert_eq!(w.trackers()[0].cpu().maxphyaddr, 40);
        assert!(
            out.decisions[0].is_reset(),
            "v6.14 re-initialises on a CPUID update"
        );
        assert_eq!(cpu_model(&cpuid_model(&cpu)), cpu);
    }

    #[test]
    fn host_actions_load_registers_without_the_guests_checks() {
        let mem = FlatMemory::new(0, 1 << 20);
        let cpu = CpuModel::default_x86_64();
        // KVM_SET_MSRS may clear EFER.LME with paging on; LMA stays.
        let e = host_effect(
            &HostAction::SetMsrEfer { value: EFER_LMA },
            &long_mode(),
            &cpu,
            &mem,
        );
        assert!(!e.faulted);
        assert_eq!(
            e.input,
            Input::EferHost {
                old: EFER_LME | EFER_LMA,
                new: EFER_LMA
            }
        );
        assert!(e.ctx.host_initiated);
        // The guest's own WRMSR of the same value faults.
        let (w, after) = guest_write(
            ControlReg::Efer,
            EFER_LMA,
            &long_mode(),
            &cpu,
            &mem,
            &WriteContext::default(),
        )
        .unwrap();
        assert!(w.faulted && after == long_mode());
        assert_eq!(w.via, WriteVia::Wrmsr);
        // INIT: the architectural INIT state; XCR0 is no MMU input.
        let init = host_effect(&HostAction::Init, &long_mode(), &cpu, &mem);
        assert_eq!(init.after, long_mode().after_init());
        assert!(guest_write(
            ControlReg::Xcr0,
            1,
            &long_mode(),
            &cpu,
            &mem,
            &WriteContext::default()
        )
        .is_none());
        let xcr0 = EventKind::CrWrite(CrWrite {
            reg: ControlReg::Xcr0,
            old: 1,
            new: 3,
            via: WriteVia::Xsetbv,
            faulted: false,
        });
        assert_eq!(Cause::of(&xcr0), None);
        assert_eq!(
            Cause::of(&EventKind::HostAction(HostAction::Init)).map(|c| c.kind()),
            Some("host INIT actions".to_string())
        );
    }
}
