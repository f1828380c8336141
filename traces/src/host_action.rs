//! What the VMM did to the vCPU (format 6): the ioctls of KVM's API that change what its MMU
//! sees, recorded as [`crate::EventKind::HostAction`] events at the step they came before.
//! Model-level scenarios write them (`mmurr scenarios --run NAME -o F`); the `history` crate
//! says what each means to the MMU model (`history::host_effect`).

use serde::{Deserialize, Serialize};

/// The control registers a host action loads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadedRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// The guest CPUID as KVM's MMU reads it (`guest_cpuid_has`, `cpuid_maxphyaddr`): the fields of
/// a KVM_SET_CPUID2 that change a role, a reserved-bit mask or a #GP check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuidModel {
    /// CPUID 0x80000008.EAX\[7:0\].
    pub maxphyaddr: u8,
    /// The vendor is AMD or Hygon.
    pub amd: bool,
    pub gbpages: bool,
    pub la57: bool,
    pub pku: bool,
    pub smep: bool,
    pub smap: bool,
    pub nx: bool,
    pub pcid: bool,
}

/// One host-side action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostAction {
    /// KVM_SET_SREGS: the VMM loads CR0, CR3, CR4 and EFER at once, with no legality checks
    /// (`__set_sregs_common`); PDPTEs are reloaded in PAE paging.
    SetSregs(LoadedRegs),
    /// KVM_SET_MSRS writing EFER (host-initiated, as migration does).
    SetMsrEfer { value: u64 },
    /// KVM_SET_CPUID2 with another CPU model.
    SetCpuid(CpuidModel),
    /// INIT (`kvm_vcpu_reset(init_event)`).
    Init,
    /// L1 ran VMRUN and entered L2 with nested NPT: `l2` are the vCPU's registers from then on;
    /// the step's registers stay L1's (vmcb01).
    NestedVmrun { l2: LoadedRegs },
    /// KVM_SET_NESTED_STATE with L2 running (`l2` as for `NestedVmrun`).
    SetNestedState { l2: LoadedRegs },
    /// L1 ran VMLAUNCH/VMRESUME and entered L2 with nested EPT, using the EPTP `eptp`.
    VmEntryEpt { eptp: u64 },
    /// L2 exited to L1 and the VM-exit loaded L1's registers `l1` from the VMCS host-state area
    /// (`nested_vmx_load_cr3`). `leaves_nested_ept`: L2's CR3 when L2 ran with nested EPT.
    VmExit {
        l1: LoadedRegs,
        leaves_nested_ept: Option<u64>,
    },
}

impl HostAction {
    /// Short name, as KVM's API spells the ioctl.
    pub fn name(&self) -> &'static str {
        match self {
            HostAction::SetSregs(_) => "KVM_SET_SREGS",
            HostAction::SetMsrEfer { .. } => "KVM_SET_MSRS",
            HostAction::SetCpuid(_) => "KVM_SET_CPUID2",
            HostAction::Init => "INIT",
            HostAction::NestedVmrun { .. } => "VMRUN",
            HostAction::SetNestedState { .. } => "KVM_SET_NESTED_STATE",
            HostAction::VmEntryEpt { .. } => "VMLAUNCH",
            HostAction::VmExit { .. } => "VM-exit",
        }
    }

    /// One line for humans: `KVM_SET_MSRS EFER <- 0x500`.
    pub fn describe(&self) -> String {
        let regs = |r: &LoadedRegs| {
            format!(
                "cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                r.cr0, r.cr3, r.cr4, r.efer
            )
        };
        match self {
            HostAction::SetSregs(r) => format!("KVM_SET_SREGS {}", regs(r)),
            HostAction::SetMsrEfer { value } => format!("KVM_SET_MSRS EFER <- {value:#x}"),
            HostAction::SetCpuid(c) => format!(
                "KVM_SET_CPUID2 maxphyaddr={} gbpages={} amd={} la57={} pku={} smep={} smap={} \
                 nx={} pcid={}",
                c.maxphyaddr, c.gbpages, c.amd, c.la57, c.pku, c.smep, c.smap, c.nx, c.pcid
            ),
            HostAction::Init => "INIT".into(),
            HostAction::NestedVmrun { l2 } => format!("VMRUN to L2 {}", regs(l2)),
            HostAction::SetNestedState { l2 } => {
                format!("KVM_SET_NESTED_STATE L2 {}", regs(l2))
            }
            HostAction::VmEntryEpt { eptp } => {
                format!("VMLAUNCH/VMRESUME to L2 with nested EPT, EPTP={eptp:#x}")
            }
            HostAction::VmExit {
                l1,
                leaves_nested_ept,
            } => format!(
                "VM-exit{} to L1 {}",
                leaves_nested_ept.map_or(String::new(), |c| format!(
                    " from L2 with nested EPT (CR3 {c:#x})"
                )),
                regs(l1)
            ),
        }
    }

    /// VMRUN, VMLAUNCH and the VM-exits they end with are the guest's own (L1's and L2's);
    /// the others need a VMM that performs them.
    pub fn is_vmm(&self) -> bool {
        !matches!(
            self,
            HostAction::NestedVmrun { .. }
                | HostAction::VmEntryEpt { .. }
                | HostAction::VmExit { .. }
        )
    }
}
