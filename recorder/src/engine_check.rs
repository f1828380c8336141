//! Engine divergences: after a control-register event, the emu backend's own MMU (Unicorn's)
//! is compared with the reference walker (`mmu::walk`) on the addresses the guest touches
//! next, and a disagreement becomes an [`EventKind::EngineDivergence`]. A backend without
//! [`Backend::engine_translation`] (KVM) is never asked twice.

use crate::accesses::LinearAccess;
use crate::backend::Backend;
use crate::guest_view;
use traces::{EventKind, Regs};

/// Compares the engine's translations with the walker's for the fetch at `before`'s RIP and
/// the instruction's operand accesses (first byte of each), under `after`'s registers. Call
/// only for an instruction that retired without an exception and changed neither the paging
/// registers nor the CPL, so `after` translates as the instruction did and the accesses have
/// all happened. `None` when the backend cannot translate by itself.
pub fn compare(
    backend: &mut dyn Backend,
    cpu: &mmu::CpuModel,
    before: &Regs,
    after: &Regs,
    touched: &[LinearAccess],
) -> Option<Vec<EventKind>> {
    if after.cr0 & (1 << 31) == 0 {
        return Some(Vec::new());
    }
    let mut addrs = vec![(::insn::linear_ip(before), mmu::Access::Fetch)];
    addrs.extend(touched.iter().map(|a| (a.linear, a.access)));
    addrs.dedup();
    let cr = guest_view::control_regs(after);
    let mut out = Vec::new();
    for (gva, access) in addrs {
        let engine = backend.engine_translation(gva, access)?;
        let req = mmu::AccessRequest {
            access,
            cpl: guest_view::cpl(after),
            implicit_supervisor: false,
            rflags_ac: after.rflags & (1 << 18) != 0,
        };
        let walk = mmu::walk(&cr, cpu, &guest_view::BackendMemory(&*backend), gva, &req);
        let reference = walk.result.as_ref().ok().map(|t| t.gpa);
        if engine != reference {
            let reference = match &walk.result {
                Ok(t) => format!("{access:?} -> {:#x}", t.gpa),
                Err(f) => format!("{access:?} faults: {f:?}"),
            };
            out.push(EventKind::EngineDivergence {
                gva,
                engine: match engine {
                    Some(gpa) => format!("{access:?} -> {gpa:#x}"),
                    None => format!("{access:?} faults"),
                },
                reference,
            });
        }
    }
    Some(out)
}

/// Whether the step left the translation regime as it found it (paging registers and CPL).
pub fn same_regime(before: &Regs, after: &Regs) -> bool {
    (before.cr0, before.cr3, before.cr4, before.efer, before.pkru)
        == (after.cr0, after.cr3, after.cr4, after.efer, after.pkru)
        && guest_view::cpl(before) == guest_view::cpl(after)
        && (before.rflags ^ after.rflags) & (1 << 18) == 0
}
