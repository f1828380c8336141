//! Timeline filters: `f` takes space-separated terms.
//!
//! - a kind: `cr0 cr3 cr4 efer xcr0 transition mmu finding io mmio exception divergence`
//!   (several kinds: any of them);
//! - a bit: `cr4.pae`, `cr0.pg`, `efer.lme`: writes that changed that bit, and the decisions
//!   and findings about those writes;
//! - a policy: `policy=v5.1-rc3` (or `p=`): decisions and findings of that policy only
//!   (other events pass);
//! - a vCPU: `vcpu=2` (or `cpu=`): that vCPU's events only (traces of several vCPUs; `v`
//!   cycles it);
//! - `-WORD`: hide events whose text contains WORD.

use crate::events::{summary, EventIndex};
use traces::{ControlReg, EventKind};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: Vec<String>,
    /// (register, bit number)
    pub bits: Vec<(ControlReg, u32, String)>,
    pub policy: Option<String>,
    pub vcpu: Option<u32>,
    pub exclude: Vec<String>,
}

const KINDS: [&str; 12] = [
    "cr0",
    "cr3",
    "cr4",
    "efer",
    "xcr0",
    "transition",
    "mmu",
    "finding",
    "io",
    "mmio",
    "exception",
    "divergence",
];

fn register(name: &str) -> Option<ControlReg> {
    Some(match name {
        "cr0" => ControlReg::Cr0,
        "cr3" => ControlReg::Cr3,
        "cr4" => ControlReg::Cr4,
        "efer" => ControlReg::Efer,
        "xcr0" => ControlReg::Xcr0,
        _ => return None,
    })
}

/// The bit number of a flag name, looked up the way `flags` decodes registers.
fn bit_of(reg: ControlReg, flag: &str) -> Option<u32> {
    (0..64u32).find(|&b| {
        replayer::flags::set_flags(reg, 1u64 << b)
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(flag))
    })
}

impl Filter {
    /// Parses a filter line; the error names the term that made no sense.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for term in text.split_whitespace() {
            let lower = term.to_ascii_lowercase();
            if let Some(word) = lower.strip_prefix('-') {
                f.exclude.push(word.to_string());
            } else if let Some(p) = lower
                .strip_prefix("policy=")
                .or_else(|| lower.strip_prefix("p="))
            {
                f.policy = Some(p.to_string());
            } else if let Some(v) = lower
                .strip_prefix("vcpu=")
                .or_else(|| lower.strip_prefix("cpu="))
            {
                let v = v
                    .parse()
                    .map_err(|_| format!("not a vCPU number in {term:?} (vcpu=0, vcpu=1, ...)"))?;
                f.vcpu = Some(v);
            } else if KINDS.contains(&lower.as_str()) {
                f.kinds.push(lower);
            } else if let Some((r, b)) = lower.split_once('.') {
                let reg = register(r).ok_or_else(|| format!("no register {r:?} in {term:?}"))?;
                let bit = bit_of(reg, b).ok_or_else(|| format!("{r} has no bit {b:?}"))?;
                f.bits.push((reg, bit, lower.clone()));
            } else {
                return Err(format!(
                    "unknown filter term {term:?} (kinds: {}; bits like cr4.pae; policy=NAME; vcpu=N; -WORD)",
                    KINDS.join(" ")
                ));
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self == &Filter::default()
    }

    /// Does event `i` of `index` pass?
    /// The filter names the `mmu` kind: the per-policy decision rows are shown unfolded.
    pub fn asks_for_decisions(&self) -> bool {
        self.kinds.iter().any(|k| k == "mmu")
    }

    pub fn matches(&self, index: &EventIndex, i: usize, policies: &[String]) -> bool {
        let Some(e) = index.get(i) else {
            return false;
        };
        if self.vcpu.is_some_and(|v| index.vcpu(i) != v) {
            return false;
        }
        if !self.kinds.is_empty() {
            let kind = match &e.kind {
                EventKind::EngineDivergence { .. } => "divergence",
                k => k.name(),
            };
            if !self.kinds.iter().any(|k| k == kind) {
                return false;
            }
        }
        if !self.bits.is_empty() {
            let write = index
                .cause_of(i)
                .and_then(|c| index.get(c))
                .and_then(|c| match c.kind {
                    EventKind::CrWrite(w) => Some(w),
                    _ => None,
                });
            let Some(w) = write else { return false };
            let hit = self
                .bits
                .iter()
                .any(|(reg, bit, _)| w.reg == *reg && (w.old ^ w.new) >> bit & 1 == 1);
            if !hit {
                return false;
            }
        }
        if let Some(p) = &self.policy {
            let of = match &e.kind {
                EventKind::Mmu(d) => Some(d.policy),
                EventKind::Finding(f) => Some(f.policy),
                _ => None,
            };
            if let Some(of) = of {
                let name = policies
                    .get(usize::from(of))
                    .map(|s| s.to_ascii_lowercase());
                if !name.is_some_and(|n| n == *p || n.starts_with(&format!("{p} "))) {
                    return false;
                }
            }
        }
        if !self.exclude.is_empty() {
            let (kind, text) = summary(&e, policies);
            let line = format!("{kind} {text}").to_ascii_lowercase();
            if self.exclude.iter().any(|x| line.contains(x.as_str())) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{CrWrite, Event, Regs, WriteVia};

    fn write(id: u64, reg: ControlReg, old: u64, new: u64) -> Event {
        Event {
            id,
            step: id,
            rip: 0,
            kind: EventKind::CrWrite(CrWrite {
                reg,
                old,
                new,
                via: WriteVia::MovCr,
                faulted: false,
            }),
        }
    }

    #[test]
    fn parses_kinds_bits_policies_and_exclusions() {
        let f = Filter::parse("cr4 CR0.PG policy=v5.1 -io vcpu=2").unwrap();
        assert_eq!(f.vcpu, Some(2));
        assert!(Filter::parse("vcpu=two").is_err());
        assert_eq!(f.kinds, ["cr4"]);
        assert_eq!(f.bits, [(ControlReg::Cr0, 31, "cr0.pg".to_string())]);
        assert_eq!(f.policy.as_deref(), Some("v5.1"));
        assert_eq!(f.exclude, ["io"]);
        assert_eq!(Filter::parse("efer.lme").unwrap().bits[0].1, 8);
        assert!(Filter::parse("cr4.nosuchbit").is_err());
        assert!(Filter::parse("banana").is_err());
        assert!(Filter::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn a_bit_filter_keeps_the_writes_that_changed_it() {
        let mut index = EventIndex::new(&Regs::default());
        index.push(write(0, ControlReg::Cr4, 0, 0x20), 0);
        index.push(write(1, ControlReg::Cr4, 0x20, 0xa0), 0);
        index.push(write(2, ControlReg::Cr0, 0, 0x20), 0);
        let f = Filter::parse("cr4.pae").unwrap();
        let kept: Vec<usize> = (0..3).filter(|&i| f.matches(&index, i, &[])).collect();
        assert_eq!(kept, [0]);
        let f = Filter::parse("cr4 cr0").unwrap();
        assert_eq!((0..3).filter(|&i| f.matches(&index, i, &[])).count(), 3);
        assert!(!f.matches(&index, 99, &[]));
    }

    #[test]
    fn a_vcpu_filter_keeps_that_vcpus_events() {
        let mut index =
            EventIndex::with_vcpus(&[Regs::default(), Regs::default(), Regs::default()]);
        for (id, vcpu) in [(0, 0), (1, 2), (2, 1), (3, 2)] {
            index.push(write(id, ControlReg::Cr4, 0, 0x20), vcpu);
        }
        let f = Filter::parse("vcpu=2").unwrap();
        let kept: Vec<usize> = (0..4).filter(|&i| f.matches(&index, i, &[])).collect();
        assert_eq!(kept, [1, 3]);
    }
}
