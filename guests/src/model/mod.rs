//! Model-level scenarios: scripts of guest writes and host-side actions (KVM_SET_SREGS,
//! KVM_SET_MSRS(EFER), KVM_SET_CPUID2, INIT, guest stores) fed straight to one
//! [`mmu::Tracker`] per policy, for the entries of KVM's history that need a host action or a
//! VM state no backend here can reach. What an action means to the model (the tracker input,
//! the registers and CPU after it) is the `history` crate's ([`history::guest_write`],
//! [`history::host_effect`]), fed through the same [`Watch`] the recorder and the replayer
//! run ([`Runner`]); what each policy makes of it is the tracker's [`mmu::Decision`]. A script
//! is written as a trace by [`trace`], whose host actions are `traces::HostAction` events.
//!
//! A script declares the verdicts it exists to show ([`Expect`]); [`Script::check`] runs it
//! under every policy and compares.

pub mod from_scenario;
pub mod guest;
pub mod scripts;

pub mod trace;

use history::{Cause, Watch, WriteOutcome};
use mmu::{
    ControlRegs, CpuModel, CrReg, Decision, FlatMemory, Flavour, Outcome, Policy, WriteContext,
};
use std::collections::BTreeSet;
use traces::{EventId, HostAction, LoadedRegs, Step};

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

    /// The action as a trace records it, for all but guest writes and stores.
    pub fn host(&self) -> Option<HostAction> {
        Some(match *self {
            Action::SetSregs {
                cr0,
                cr3,
                cr4,
                efer,
            } => HostAction::SetSregs(LoadedRegs {
                cr0,
                cr3,
                cr4,
                efer,
            }),
            Action::SetMsrEfer(value) => HostAction::SetMsrEfer { value },
            Action::SetCpuid(c) => HostAction::SetCpuid(history::cpuid_model(&c)),
            Action::Init => HostAction::Init,
            Action::NestedVmrun { l2 } => HostAction::NestedVmrun {
                l2: loaded_regs(&l2),
            },
            Action::SetNestedState { l2 } => HostAction::SetNestedState {
                l2: loaded_regs(&l2),
            },
            Action::VmEntryEpt { eptp } => HostAction::VmEntryEpt { eptp },
            Action::VmExit {
                l1,
                leaves_nested_ept,
            } => HostAction::VmExit {
                l1: loaded_regs(&l1),
                leaves_nested_ept,
            },
            Action::Write(..) | Action::Store { .. } => return None,
        })
    }

    pub fn describe(&self) -> String {
        match (*self, self.host()) {
            (Action::Write(reg, v), _) => format!("guest {reg:?} <- {v:#x}"),
            (Action::Store { gpa, value }, _) => format!("guest store [{gpa:#x}] <- {value:#x}"),
            (_, Some(h)) if h.is_vmm() => h.describe(),
            (_, Some(h)) => format!("guest {}", h.describe()),
            (_, None) => String::new(),
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

/// One action taken: what a trace records for it and what every policy made of it.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The event it is (a control-register write or a host action); `None` for a store.
    pub cause: Option<Cause>,
    /// Every policy's decision, and the findings complete now; `None` for a store.
    pub outcome: Option<WriteOutcome>,
    /// The CPU answered it with #GP.
    pub faulted: bool,
    /// The registers after it (for a nested entry, still L1's).
    pub after: ControlRegs,
}

/// A script applied one action at a time to a [`Watch`] of some policies: the one way both
/// [`Script::decisions`] and the writer of the script's trace ([`trace`]) take an action, and
/// the trace-driven path (`replayer::Analysis`) feeds the same [`Watch`] the same inputs.
pub struct Runner {
    watch: Watch,
    regs: ControlRegs,
    memory: FlatMemory,
}

impl Runner {
    pub fn new(script: &Script, policies: &[&'static Policy]) -> Runner {
        let regs = script.entry_regs();
        Runner {
            watch: Watch::new(policies, script.flavour, script.cpu, &regs),
            regs,
            memory: script.memory.clone(),
        }
    }

    /// The registers after the actions taken so far.
    pub fn regs(&self) -> &ControlRegs {
        &self.regs
    }

    /// The guest's memory after the actions taken so far.
    pub fn memory(&self) -> &FlatMemory {
        &self.memory
    }

    /// The guest's CPU after the actions taken so far.
    pub fn cpu(&self) -> CpuModel {
        *self.watch.cpu()
    }

    /// Takes `a` as event `id` of step `step` (both name it in the findings).
    pub fn take(&mut self, a: &Action, id: EventId, step: Step) -> Taken {
        let before = self.regs;
        let (cause, outcome, faulted) = match *a {
            Action::Store { gpa, value } => {
                self.memory.write_u64(gpa, value);
                (None, None, false)
            }
            Action::Write(reg, value) => {
                let cpu = self.cpu();
                // A script's guest writes run as compatibility-mode code: CS.L is not known.
                let ctx = WriteContext::default();
                let Some((w, after)) = history::guest_write(
                    history::trace_reg(reg),
                    value,
                    &before,
                    &cpu,
                    &self.memory,
                    &ctx,
                ) else {
                    return self.nothing();
                };
                let out = self
                    .watch
                    .on_write(id, step, 0, &w, &ctx, &after, &self.memory);
                self.regs = after;
                let faulted = w.faulted;
                (Some(Cause::Write(w)), out, faulted)
            }
            _ => {
                let Some(host) = a.host() else {
                    return self.nothing();
                };
                let (e, out) = self
                    .watch
                    .on_host(id, step, 0, &host, &before, &self.memory);
                self.regs = e.after;
                (Some(Cause::Host(host)), Some(out), e.faulted)
            }
        };
        Taken {
            cause,
            outcome,
            faulted,
            after: self.regs,
        }
    }

    fn nothing(&self) -> Taken {
        Taken {
            cause: None,
            outcome: None,
            faulted: false,
            after: self.regs,
        }
    }

    /// The findings still pending at the end.
    pub fn finish(&mut self) -> Vec<history::Found> {
        self.watch.settle_all()
    }
}

fn loaded_regs(r: &ControlRegs) -> LoadedRegs {
    LoadedRegs {
        cr0: r.cr0,
        cr3: r.cr3,
        cr4: r.cr4,
        efer: r.efer,
    }
}

impl Script {
    /// The entry registers with their PDPTEs.
    pub fn entry_regs(&self) -> ControlRegs {
        history::with_pdptrs(self.entry, &self.cpu, &self.memory)
    }

    /// Runs the script under `policy`: the decision of every step that is an MMU input.
    pub fn decisions(&self, policy: &'static Policy) -> Vec<(usize, Decision, bool)> {
        let mut runner = Runner::new(self, &[policy]);
        let mut out = Vec::new();
        for (at, a) in self.actions.iter().enumerate() {
            let t = runner.take(a, at as EventId, at as Step + 1);
            if let Some(d) = t.outcome.and_then(|o| o.decisions.into_iter().next()) {
                out.push((at, d, t.faulted));
            }
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
