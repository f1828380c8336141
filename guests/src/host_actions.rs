//! Host actions at given points of a recording: what the VMM does to the vCPU between two of
//! its instructions (KVM_SET_SREGS, KVM_SET_MSRS(EFER), KVM_SET_CPUID2, INIT), and when. A
//! scenario lists them ([`crate::Scenario::host_actions`]), a user gives them with
//! `--host-action WHEN:ACTION`; the recorder performs each for real on its backend and records
//! it as a `HostAction` event (`traces::HostAction`), and `mmurr verify` re-applies the events
//! at their steps. This module owns the command-line spelling of both halves.

use mmu::CpuModel;
use traces::{CpuidModel, HostAction, LoadedRegs};

/// When a host action happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// After `n` steps (before step `n + 1`): `step=N`.
    Step(u64),
    /// The first time the vCPU is about to execute the instruction at linear address `rip`:
    /// `rip=ADDR`.
    Rip(u64),
}

/// The CPUID fields a KVM_SET_CPUID2 changes, the others kept from the guest's CPU at the time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidChange {
    pub maxphyaddr: Option<u8>,
    pub amd: Option<bool>,
    pub gbpages: Option<bool>,
    pub la57: Option<bool>,
    pub pku: Option<bool>,
    pub smep: Option<bool>,
    pub smap: Option<bool>,
    pub nx: Option<bool>,
    pub pcid: Option<bool>,
}

impl CpuidChange {
    /// Every field of `cpu` (a scenario's complete CPU).
    pub fn all_of(cpu: &CpuModel) -> CpuidChange {
        CpuidChange {
            maxphyaddr: Some(cpu.maxphyaddr),
            amd: Some(cpu.amd),
            gbpages: Some(cpu.gbpages),
            la57: Some(cpu.la57),
            pku: Some(cpu.pku),
            smep: Some(cpu.smep),
            smap: Some(cpu.smap),
            nx: Some(cpu.nx),
            pcid: Some(cpu.pcid),
        }
    }

    /// The CPU after the change, from `cpu` before it.
    pub fn applied_to(&self, cpu: &CpuModel) -> CpuidModel {
        let c = history::cpuid_model(cpu);
        CpuidModel {
            maxphyaddr: self.maxphyaddr.unwrap_or(c.maxphyaddr),
            amd: self.amd.unwrap_or(c.amd),
            gbpages: self.gbpages.unwrap_or(c.gbpages),
            la57: self.la57.unwrap_or(c.la57),
            pku: self.pku.unwrap_or(c.pku),
            smep: self.smep.unwrap_or(c.smep),
            smap: self.smap.unwrap_or(c.smap),
            nx: self.nx.unwrap_or(c.nx),
            pcid: self.pcid.unwrap_or(c.pcid),
        }
    }
}

/// What the VMM does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedAction {
    /// An action complete as given (KVM_SET_SREGS, KVM_SET_MSRS, INIT).
    Exact(HostAction),
    /// KVM_SET_CPUID2 changing some fields of the guest's CPU at the time.
    Cpuid(CpuidChange),
}

impl PlannedAction {
    /// The action as the trace records it, taken while the guest's CPU is `cpu`.
    pub fn resolve(&self, cpu: &CpuModel) -> HostAction {
        match self {
            PlannedAction::Exact(a) => *a,
            PlannedAction::Cpuid(c) => HostAction::SetCpuid(c.applied_to(cpu)),
        }
    }
}

/// One host action, when it happens, and on which vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostActionAt {
    pub at: Trigger,
    pub action: PlannedAction,
    /// The vCPU it acts on (`vcpu=N`): at a step the recorder switches to it; a RIP is that
    /// vCPU's. `None`: the vCPU about to run.
    pub vcpu: Option<u32>,
}

/// A `--host-action` that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--host-action {spec:?}: {why}; the form is WHEN:ACTION, WHEN = step=N | rip=ADDR, \
         optionally followed by ,vcpu=N; ACTION = init | efer=VALUE | sregs=CR0,CR3,CR4,EFER \
         | cpuid=FIELD:VALUE,... (fields maxphyaddr, amd, gbpages, la57, pku, smep, smap, nx, \
         pcid)"
)]
pub struct HostActionError {
    pub spec: String,
    pub why: String,
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => s.replace('_', "").parse().ok(),
    }
}

impl std::str::FromStr for HostActionAt {
    type Err = HostActionError;

    fn from_str(spec: &str) -> Result<HostActionAt, HostActionError> {
        let err = |why: String| HostActionError {
            spec: spec.to_string(),
            why,
        };
        let (when, what) = spec
            .split_once(':')
            .ok_or_else(|| err("no `:` between WHEN and ACTION".into()))?;
        let (when, vcpu) = match when.split_once(',') {
            Some((w, v)) => {
                let n = v
                    .strip_prefix("vcpu=")
                    .and_then(number)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| err(format!("{v:?} after WHEN is not vcpu=N")))?;
                (w, Some(n))
            }
            None => (when, None),
        };
        let at = match when.split_once('=') {
            Some(("step", n)) => {
                Trigger::Step(number(n).ok_or_else(|| err(format!("step {n:?} is not a number")))?)
            }
            Some(("rip", a)) => {
                Trigger::Rip(number(a).ok_or_else(|| err(format!("rip {a:?} is not a number")))?)
            }
            _ => return Err(err(format!("WHEN {when:?} is neither step=N nor rip=ADDR"))),
        };
        let (name, value) = what.split_once('=').unwrap_or((what, ""));
        let action = match name {
            "init" if value.is_empty() => PlannedAction::Exact(HostAction::Init),
            "efer" => PlannedAction::Exact(HostAction::SetMsrEfer {
                value: number(value)
                    .ok_or_else(|| err(format!("EFER value {value:?} is not a number")))?,
            }),
            "sregs" => {
                let v: Vec<u64> = value.split(',').filter_map(number).collect();
                let [cr0, cr3, cr4, efer] = v[..] else {
                    return Err(err(format!(
                        "sregs={value:?}: give four numbers, CR0,CR3,CR4,EFER"
                    )));
                };
                PlannedAction::Exact(HostAction::SetSregs(LoadedRegs {
                    cr0,
                    cr3,
                    cr4,
                    efer,
                }))
            }
            "cpuid" => PlannedAction::Cpuid(cpuid_change(value).map_err(err)?),
            _ => return Err(err(format!("unknown ACTION {what:?}"))),
        };
        Ok(HostActionAt { at, action, vcpu })
    }
}

fn cpuid_change(value: &str) -> Result<CpuidChange, String> {
    let mut c = CpuidChange::default();
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let (name, v) = field
            .split_once(':')
            .ok_or_else(|| format!("cpuid field {field:?} has no `:VALUE`"))?;
        let n = number(v).ok_or_else(|| format!("cpuid {name}:{v:?} is not a number"))?;
        let flag = || match n {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(format!("cpuid {name}:{n} is a flag: 0 or 1")),
        };
        match name {
            "maxphyaddr" if (32..=52).contains(&n) => c.maxphyaddr = Some(n as u8),
            "maxphyaddr" => return Err(format!("maxphyaddr {n} is outside 32..=52")),
            "amd" => c.amd = flag()?,
            "gbpages" => c.gbpages = flag()?,
            "la57" => c.la57 = flag()?,
            "pku" => c.pku = flag()?,
            "smep" => c.smep = flag()?,
            "smap" => c.smap = flag()?,
            "nx" => c.nx = flag()?,
            "pcid" => c.pcid = flag()?,
            _ => return Err(format!("unknown cpuid field {name:?}")),
        }
    }
    if c == CpuidChange::default() {
        return Err("cpuid= names no field".into());
    }
    Ok(c)
}

impl std::fmt::Display for HostActionAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Trigger::Step(n) => write!(f, "step={n}")?,
            Trigger::Rip(a) => write!(f, "rip={a:#x}")?,
        }
        if let Some(v) = self.vcpu {
            write!(f, ",vcpu={v}")?;
        }
        f.write_str(":")?;
        match self.action {
            PlannedAction::Exact(HostAction::Init) => write!(f, "init"),
            PlannedAction::Exact(HostAction::SetMsrEfer { value }) => write!(f, "efer={value:#x}"),
            PlannedAction::Exact(HostAction::SetSregs(r)) => write!(
                f,
                "sregs={:#x},{:#x},{:#x},{:#x}",
                r.cr0, r.cr3, r.cr4, r.efer
            ),
            PlannedAction::Exact(HostAction::SetCpuid(c)) => {
                write_cpuid(f, &CpuidChange::all_of(&history::cpu_model(&c)))
            }
            PlannedAction::Cpuid(c) => write_cpuid(f, &c),
            // The guest's own (nested) actions have no VMM spelling.
            PlannedAction::Exact(a) => write!(f, "{}", a.name()),
        }
    }
}

fn write_cpuid(f: &mut std::fmt::Formatter<'_>, c: &CpuidChange) -> std::fmt::Result {
    let mut fields = Vec::new();
    if let Some(v) = c.maxphyaddr {
        fields.push(format!("maxphyaddr:{v}"));
    }
    for (name, v) in [
        ("amd", c.amd),
        ("gbpages", c.gbpages),
        ("la57", c.la57),
        ("pku", c.pku),
        ("smep", c.smep),
        ("smap", c.smap),
        ("nx", c.nx),
        ("pcid", c.pcid),
    ] {
        if let Some(v) = v {
            fields.push(format!("{name}:{}", u8::from(v)));
        }
    }
    write!(f, "cpuid={}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips_and_bad_ones_say_why() {
        for spec in [
            "step=12:init",
            "rip=0x180004:efer=0x500",
            "step=0:sregs=0x80000011,0x1000,0x20,0x500",
            "rip=0x10:cpuid=maxphyaddr:40,amd:1",
            "step=900,vcpu=1:init",
        ] {
            let a: HostActionAt = spec.parse().unwrap();
            assert_eq!(a.to_string(), spec);
        }
        let a: HostActionAt = "step=1_000:efer=1280".parse().unwrap();
        assert_eq!(a.at, Trigger::Step(1000));
        assert_eq!(
            a.action,
            PlannedAction::Exact(HostAction::SetMsrEfer { value: 0x500 })
        );
        for (bad, why) in [
            ("init", "no `:`"),
            ("when=3:init", "neither"),
            ("step=x:init", "not a number"),
            ("step=1:reboot", "unknown ACTION"),
            ("step=1:sregs=1,2,3", "four numbers"),
            ("step=1:cpuid=", "names no field"),
            ("step=1:cpuid=amd:2", "a flag"),
            ("step=1:cpuid=maxphyaddr:60", "outside"),
            ("step=1:cpuid=avx:1", "unknown cpuid field"),
            ("step=1,cpu=2:init", "not vcpu=N"),
        ] {
            let e = bad.parse::<HostActionAt>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_cpuid_change_keeps_the_fields_it_does_not_name() {
        let cpu = CpuModel::default_x86_64();
        let a: HostActionAt = "step=1:cpuid=maxphyaddr:40".parse().unwrap();
        let HostAction::SetCpuid(c) = a.action.resolve(&cpu) else {
            panic!("not a CPUID update");
        };
        assert_eq!(c.maxphyaddr, 40);
        assert_eq!(
            history::cpu_model(&c),
            CpuModel {
                maxphyaddr: 40,
                ..cpu
            }
        );
    }
}
