//! Model-level scenarios: scripts of guest writes and host-side actions (KVM_SET_SREGS,
//! KVM_SET_MSRS(EFER), KVM_SET_CPUID2, INIT, guest stores) fed straight to one
//! [`mmu::Tracker`] per policy, for the entries of KVM's history that need a host action or a
//! VM state no backend here can reach. The registers after each action come from the `mmu`
//! crate's architectural rules ([`mmu::apply_write_with`], [`ControlRegs::after_init`],
//! [`mmu::load_pdptrs`]); what each policy makes of it is the tracker's [`mmu::Decision`].
//!
//! A script declares the verdicts it exists to show ([`Expect`]); [`Script::check`] runs it
//! under every policy and compares.

pub mod from_scenario;
pub mod scripts;

use mmu::{
    apply_write_with, load_pdptrs, ControlRegs, CpuModel, CrReg, Decision, FlatMemory, Flavour,
    Input, Outcome, Policy, Tracker, WriteContext,
};
use std::collections::BTreeSet;

/// One step of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A guest instruction writes `value` (MOV to CR0/CR3/CR4, WRMSR to EFER).
    Write(CrReg, u64),
    /// The VMM loads the control registers (KVM_SET_SREGS): no legality checks, PDPTEs
    /// reloaded in PAE paging (`__set_sregs_common`).
    SetSregs {
        cr0: u64,
        cr3: u64,
        cr4: u64,
        efer: u64,
    },
    /// The VMM writes EFER (KVM_SET_MSRS, as migration does): host-initiated, LMA kept.
    SetMsrEfer(u64),
    /// The VMM gives the guest another CPUID (KVM_SET_CPUID2).
    SetCpuid(CpuModel),
    /// INIT (`kvm_vcpu_reset(init_event)`).
    Init,
    /// The guest stores `value` at `gpa` (no MMU input by itself).
    Store { gpa: u64, value: u64 },
    /// L1 enters L2 with nested NPT (VMRUN): `l2` are the vCPU's registers from then on; the
    /// script's registers stay L1's (vmcb01). For [`Flavour::ShadowNpt`] scripts.
    NestedVmrun { l2: ControlRegs },
    /// The VMM loads nested state with L2 running (KVM_SET_NESTED_STATE), as migration does.
    SetNestedState { l2: ControlRegs },
    /// L1 enters L2 with EPT (VMLAUNCH/VMRESUME) using the EPTP `eptp` ([`mmu::Eptp`]). For
    /// [`Flavour::ShadowEpt`] scripts, whose registers' `cr3` is the EPTP.
    VmEntryEpt { eptp: u64 },
    /// L2 exits to L1 and the VM-exit loads L1's registers `l1` from the VMCS host-state area
    /// (`nested_vmx_load_cr3`): a new CR3 through the root cache, then `kvm_init_mmu` without
    /// unloading roots. `leaves_nested_ept`: L2's CR3 when L2 ran with nested EPT.
    VmExit {
        l1: ControlRegs,
        leaves_nested_ept: Option<u64>,
    },
}

impl Action {
    /// Host-side actions need a VMM that performs them; guest writes and stores do not.
    pub fn is_host(&self) -> bool {
        !matches!(
            self,
            Action::Write(..)
                | Action::Store { .. }
                | Action::NestedVmrun { .. }
                | Action::VmEntryEpt { .. }
                | Action::VmExit { .. }
        )
    }

    pub fn describe(&self) -> String {
        match *self {
            Action::Write(reg, v) => format!("guest {reg:?} <- {v:#x}"),
            Action::SetSregs {
                cr0,
                cr3,
                cr4,
                efer,
            } => format!("KVM_SET_SREGS cr0={cr0:#x} cr3={cr3:#x} cr4={cr4:#x} efer={efer:#x}"),
            Action::SetMsrEfer(v) => format!("KVM_SET_MSRS EFER <- {v:#x}"),
            Action::SetCpuid(c) => format!(
                "KVM_SET_CPUID2 maxphyaddr={} gbpages={} amd={}",
                c.maxphyaddr, c.gbpages, c.amd
            ),
            Action::Init => "INIT".into(),
            Action::Store { gpa, value } => format!("guest store [{gpa:#x}] <- {value:#x}"),
            Action::NestedVmrun { l2 } => format!(
                "guest VMRUN to L2 cr0={:#x} cr4={:#x} efer={:#x}",
                l2.cr0, l2.cr4, l2.efer
            ),
            Action::SetNestedState { l2 } => format!(
                "KVM_SET_NESTED_STATE L2 cr0={:#x} cr4={:#x} efer={:#x}",
                l2.cr0, l2.cr4, l2.efer
            ),
            Action::VmEntryEpt { eptp } => {
                let e = mmu::Eptp(eptp);
                format!(
                    "guest VMLAUNCH/VMRESUME with EPTP={eptp:#x} ({} levels, A/D {})",
                    e.levels().map_or("invalid".to_string(), |l| l.to_string()),
                    if e.ad_enabled() { "on" } else { "off" }
                )
            }
            Action::VmExit {
                l1,
                leaves_nested_ept,
            } => format!(
                "VM-exit{} to L1 cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                leaves_nested_ept.map_or(String::new(), |c| format!(
                    " from L2 with nested EPT (CR3 {c:#x})"
                )),
                l1.cr0,
                l1.cr3,
                l1.cr4,
                l1.efer
            ),
        }
    }
}

/// What a policy did at one step that a history entry is about. The first three are the
/// findings `mmurr check` reports; the last two are decisions a fix changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shows {
    /// The context kept differs from the one the architecture requires ([`Decision::stale`]).
    Stale,
    /// A reset rebuilt an identical context ([`Decision::needless_reset`]).
    NeedlessReset,
    /// The policy's #GP verdict differs from the architecture's.
    GpMismatch,
    /// No `kvm_mmu_reset_context` ([`Decision::is_reset`] false).
    NoReset,
    /// With changed PDPTEs under shadow paging, the current root was kept
    /// ([`Decision::current_root_freed`] false).
    RootKept,
}

impl Shows {
    /// Findings are compared at every step; the others only where a script declares them.
    pub fn is_finding(self) -> bool {
        matches!(
            self,
            Shows::Stale | Shows::NeedlessReset | Shows::GpMismatch
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            Shows::Stale => "stale-context",
            Shows::NeedlessReset => "needless-reset",
            Shows::GpMismatch => "gp-mismatch",
            Shows::NoReset => "no-reset",
            Shows::RootKept => "root-kept",
        }
    }
}

/// The policies that show `shows` at step `at` (an index into [`Script::actions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub at: usize,
    pub shows: Shows,
    pub policies: &'static [&'static str],
}

/// A model-level scenario.
#[derive(Clone, Debug)]
pub struct Script {
    pub name: &'static str,
    pub description: &'static str,
    pub flavour: Flavour,
    pub cpu: CpuModel,
    /// The registers at the start (PDPTEs are loaded from `memory` in PAE paging).
    pub entry: ControlRegs,
    pub memory: FlatMemory,
    pub actions: Vec<Action>,
    pub expects: Vec<Expect>,
}

/// One step's verdict for one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Observed {
    pub at: usize,
    pub shows: Shows,
    pub policy: &'static str,
}

/// The architecture's view of one action: the tracker input, the registers after it, and
/// whether the CPU answers it with #GP.
struct Effect {
    input: Input,
    after: ControlRegs,
    faulted: bool,
    cpu: CpuModel,
}

fn with_pdptrs(mut r: ControlRegs, cpu: &CpuModel, mem: &FlatMemory) -> ControlRegs {
    if r.is_pae_paging() {
        r.pdptrs = load_pdptrs(r.cr3, mem, cpu.phys_bits()).unwrap_or([0; 4]);
    }
    r
}

fn effect(a: &Action, before: &ControlRegs, cpu: &CpuModel, mem: &FlatMemory) -> Option<Effect> {
    let guest = WriteContext::default();
    let host = WriteContext {
        cs_l: None,
        host_initiated: true,
    };
    let write = |reg: CrReg, value: u64, ctx: &WriteContext| {
        let (after, faulted) = match apply_write_with(reg, before, value, cpu, mem, ctx) {
            Ok(r) => (r, false),
            Err(_) => (*before, true),
        };
        (after, faulted)
    };
    Some(match *a {
        Action::Write(reg, new) => {
            let (after, faulted) = write(reg, new, &guest);
            let input = match reg {
                CrReg::Cr0 => Input::Cr0 {
                    old: before.cr0,
                    new,
                },
                CrReg::Cr3 => Input::Cr3 {
                    old: before.cr3,
                    new,
                },
                CrReg::Cr4 => Input::Cr4 {
                    old: before.cr4,
                    new,
                },
                CrReg::Efer => Input::Efer {
                    old: before.efer,
                    new,
                },
            };
            Effect {
                input,
                after,
                faulted,
                cpu: *cpu,
            }
        }
        Action::SetMsrEfer(new) => {
            let (after, faulted) = write(CrReg::Efer, new, &host);
            Effect {
                input: Input::EferHost {
                    old: before.efer,
                    new,
                },
                after,
                faulted,
                cpu: *cpu,
            }
        }
        Action::SetSregs {
            cr0,
            cr3,
            cr4,
            efer,
        } => Effect {
            input: Input::SetSregs,
            after: with_pdptrs(
                ControlRegs {
                    cr0,
                    cr3,
                    cr4,
                    efer,
                    ..*before
                },
                cpu,
                mem,
            ),
            faulted: false,
            cpu: *cpu,
        },
        Action::SetCpuid(new) => Effect {
            input: Input::SetCpuid,
            after: *before,
            faulted: false,
            cpu: new,
        },
        Action::Init => Effect {
            input: Input::Init,
            after: before.after_init(),
            faulted: false,
            cpu: *cpu,
        },
        Action::NestedVmrun { l2 } | Action::SetNestedState { l2 } => Effect {
            input: Input::NestedNptInit {
                vcpu: with_pdptrs(l2, cpu, mem),
                set_nested_state: matches!(a, Action::SetNestedState { .. }),
            },
            after: *before,
            faulted: false,
            cpu: *cpu,
        },
        Action::VmEntryEpt { eptp } => Effect {
            input: Input::NestedEptInit { eptp },
            after: ControlRegs {
                cr3: eptp,
                ..*before
            },
            faulted: false,
            cpu: *cpu,
        },
        Action::VmExit {
            l1,
            leaves_nested_ept,
        } => Effect {
            input: Input::NestedLoadCr3 { leaves_nested_ept },
            after: with_pdptrs(l1, cpu, mem),
            faulted: false,
            cpu: *cpu,
        },
        Action::Store { .. } => return None,
    })
}

impl Script {
    /// The entry registers with their PDPTEs.
    pub fn entry_regs(&self) -> ControlRegs {
        with_pdptrs(self.entry, &self.cpu, &self.memory)
    }

    /// Runs the script under `policy`: the decision of every step that is an MMU input.
    pub fn decisions(&self, policy: &'static Policy) -> Vec<(usize, Decision, bool)> {
        let mut mem = self.memory.clone();
        let entry = self.entry_regs();
        let mut t = Tracker::new(policy, self.flavour, self.cpu, &entry);
        let mut out = Vec::new();
        for (at, a) in self.actions.iter().enumerate() {
            if let Action::Store { gpa, value } = *a {
                mem.write_u64(gpa, value);
                continue;
            }
            let before = *t.regs();
            let cpu = *t.cpu();
            let Some(e) = effect(a, &before, &cpu, &mem) else {
                continue;
            };
            let d = match e.input {
                Input::SetCpuid => t.set_cpuid(e.cpu, &e.after, &mem),
                input => t.apply(&input, &e.after, &mem),
            };
            out.push((at, d, e.faulted));
        }
        out
    }

    /// Every verdict of every policy in `policies`.
    pub fn run(&self, policies: &[&'static Policy]) -> BTreeSet<Observed> {
        let mut seen = BTreeSet::new();
        for &p in policies {
            for (at, d, faulted) in self.decisions(p) {
                let mut add = |shows| {
                    seen.insert(Observed {
                        at,
                        shows,
                        policy: p.name,
                    });
                };
                if d.stale.is_some() {
                    add(Shows::Stale);
                }
                if d.needless_reset {
                    add(Shows::NeedlessReset);
                }
                if (d.outcome == Outcome::Gp) != faulted {
                    add(Shows::GpMismatch);
                }
                if !d.is_reset() {
                    add(Shows::NoReset);
                }
                if !d.current_root_freed {
                    add(Shows::RootKept);
                }
            }
        }
        seen
    }

    /// The declared verdicts as observations.
    pub fn expected(&self) -> BTreeSet<Observed> {
        self.expects
            .iter()
            .flat_map(|e| {
                e.policies.iter().map(move |&p| Observed {
                    at: e.at,
                    shows: e.shows,
                    policy: mmu::policy(p).map_or(p, |p| p.name),
                })
            })
            .collect()
    }

    /// Runs every modelled policy and compares with the declaration: findings must match
    /// exactly at every step; decisions (no reset, root kept) at the steps declared for them.
    /// `Err` lists what differs.
    pub fn check(&self) -> Result<(), String> {
        let all: Vec<&'static Policy> = mmu::policies().iter().collect();
        let seen = self.run(&all);
        let declared_steps: BTreeSet<(usize, Shows)> = self
            .expects
            .iter()
            .filter(|e| !e.shows.is_finding())
            .map(|e| (e.at, e.shows))
            .collect();
        let relevant =
            |o: &&Observed| o.shows.is_finding() || declared_steps.contains(&(o.at, o.shows));
        let got: BTreeSet<Observed> = seen.iter().filter(relevant).copied().collect();
        let want = self.expected();
        if got == want {
            return Ok(());
        }
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        Err(format!(
            "{}: declared but not shown: {missing:?}; shown but not declared: {extra:?}",
            self.name
        ))
    }

    /// True when a step is a host-side action.
    pub fn has_host_actions(&self) -> bool {
        self.actions.iter().any(Action::is_host)
    }
}
