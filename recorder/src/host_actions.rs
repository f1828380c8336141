//! When the tracer performs a host action ([`guests::host_actions`]) and whether the backend
//! did what the model says it does.

use guests::host_actions::{HostActionAt, PlannedAction, Trigger};
use traces::inputs::RecordedInputs;
use traces::{HostAction, LoadedRegs, Regs};

/// The registers KVM_SET_SREGS with control registers `l` leaves, from `regs`: CR0, CR3, CR4
/// and EFER as given, the segments kept, except that a CS with L=1 becomes a 32-bit code
/// segment (same base and limit) when `l` is not long mode: KVM refuses CS.L without EFER.LMA
/// (`kvm_is_valid_sregs`), so a VMM that leaves long mode loads such a CS. Both backends
/// perform the action from this.
pub fn sregs_loaded(regs: &Regs, l: &LoadedRegs) -> Regs {
    let mut r = regs.clone();
    (r.cr0, r.cr3, r.cr4, r.efer) = (l.cr0, l.cr3, l.cr4, l.efer);
    let cs = &mut r.seg[traces::regs::CS];
    if l.efer & mmu::bits::EFER_LMA == 0 && cs.attrs == guests::image::AR_CODE64 {
        cs.attrs = guests::image::AR_CODE32;
    }
    r
}

/// Why no backend performs `action`, an L2's entry or exit (the guest's own, not the VMM's):
/// no guest here runs a hypervisor with an L2.
pub fn needs_an_l2(action: &HostAction) -> crate::BackendError {
    crate::BackendError::HostUnsupported(format!(
        "{} is an L2's entry or exit, which needs a guest hypervisor running an L2; no guest \
         here runs one (its scenarios are model-level)",
        action.name()
    ))
}

/// The index of the first action due before the next instruction: after `step` steps, with
/// vCPU `vcpu` about to run the instruction at linear address `rip`. A step's action is due
/// whichever vCPU runs next (the tracer switches to the one it names); a RIP is its vCPU's.
pub(crate) fn due(actions: &[HostActionAt], step: u64, vcpu: u32, rip: u64) -> Option<usize> {
    actions.iter().position(|a| match a.at {
        Trigger::Step(n) => step >= n,
        Trigger::Rip(r) => rip == r && a.vcpu.is_none_or(|v| v == vcpu),
    })
}

/// How many instructions a run may take before the next action: `None` for no limit, 0 when
/// the next instructions must be steps (an action waits for a RIP, which a run would pass).
pub(crate) fn run_limit(actions: &[HostActionAt], step: u64) -> Option<u64> {
    actions
        .iter()
        .map(|a| match a.at {
            Trigger::Step(n) => n.saturating_sub(step),
            Trigger::Rip(_) => 0,
        })
        .min()
}

/// The original trace's actions, each at the step it was performed before (re-execution).
pub(crate) fn replayed(inputs: &RecordedInputs) -> Vec<HostActionAt> {
    inputs
        .host_actions
        .iter()
        .map(|&(step, vcpu, action)| HostActionAt {
            at: Trigger::Step(step.saturating_sub(1)),
            action: PlannedAction::Exact(action),
            vcpu: Some(vcpu),
        })
        .collect()
}

/// CR0 bits the self-check leaves out: caching, which no MMU role reads, and which KVM's
/// `KVM_X86_QUIRK_CD_NW_CLEARED` (on by default) lets a vendor module clear at INIT where the
/// SDM's INIT state has them set (this host's PVM module does).
const CR0_CACHING: u64 = mmu::bits::CR0_CD | mmu::bits::CR0_NW;

/// A self-check failure when the backend's control registers after `action` (step `step`)
/// are not the model's (`effect`).
pub(crate) fn self_check(
    action: &HostAction,
    effect: &history::Effect,
    after: &Regs,
    step: u64,
) -> Option<String> {
    let got = [after.cr0 & !CR0_CACHING, after.cr3, after.cr4, after.efer];
    let want = [
        effect.after.cr0 & !CR0_CACHING,
        effect.after.cr3,
        effect.after.cr4,
        effect.after.efer,
    ];
    (got != want).then(|| {
        format!(
            "step {step}: after {} the backend holds CR0/CR3/CR4/EFER {:#x}/{:#x}/{:#x}/{:#x}, \
             the model {:#x}/{:#x}/{:#x}/{:#x}",
            action.describe(),
            got[0],
            got[1],
            got[2],
            got[3],
            want[0],
            want[1],
            want[2],
            want[3]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(spec: &str) -> HostActionAt {
        spec.parse().unwrap()
    }

    #[test]
    fn runs_stop_at_the_next_step_and_never_pass_a_rip_that_waits() {
        let list = [at("step=10:init"), at("step=4,vcpu=1:efer=0x500")];
        assert_eq!(due(&list, 3, 0, 0), None);
        assert_eq!(
            due(&list, 4, 0, 0),
            Some(1),
            "the tracer switches to vCPU 1"
        );
        assert_eq!(run_limit(&list, 1), Some(3));
        assert_eq!(run_limit(&[], 1), None);
        let rip = [at("rip=0x1000,vcpu=1:init")];
        assert_eq!(run_limit(&rip, 5), Some(0));
        assert_eq!(due(&rip, 5, 1, 0xfff), None);
        assert_eq!(due(&rip, 5, 0, 0x1000), None, "vCPU 0 at that RIP");
        assert_eq!(due(&rip, 5, 1, 0x1000), Some(0));
    }

    #[test]
    fn re_execution_performs_each_action_before_the_step_it_was() {
        let inputs = RecordedInputs {
            inputs: Vec::new(),
            host_actions: vec![(7, 1, HostAction::Init)],
        };
        assert_eq!(replayed(&inputs), vec![at("step=6,vcpu=1:init")]);
    }
}
