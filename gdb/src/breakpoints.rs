//! Breakpoints and catchpoints.
//!
//! A breakpoint is a linear address: execution stops at the state whose linear pc equals it
//! (before the instruction there runs). gdb's software and hardware breakpoints are the same
//! thing here: in a replay they are a predicate on the recorded RIP, and the live server
//! single-steps anyway, so a RIP comparison is exact and needs neither `int3` (which this
//! host's KVM cannot emulate at CPL0) nor debug registers.
//!
//! A catchpoint (`monitor break-on KIND [POLICY]`) stops at MMU events: the state right after
//! the instruction that caused the event, so `reverse-stepi` from there steps back across it.
//!
//! A watchpoint is guest-physical memory whose writes stop execution: gdb's `watch` (a
//! virtual range, translated through the guest's page tables when gdb sets it, which it does
//! at every resume) or `monitor watch-phys` (page tables are physical). Going forward the stop
//! is the state after the writing instruction; going backward the state before it, so the
//! instruction about to run is the one that wrote.

use std::collections::BTreeSet;

/// What a catchpoint stops at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CatchKind {
    /// A paging-mode transition.
    Transition,
    /// A policy's `kvm_mmu_reset_context` (roots unloaded, re-init or not).
    Reset,
    Cr0,
    Cr3,
    Cr4,
    Efer,
    /// A policy's MMU context stops matching the architecture (or the trace records a finding
    /// or an engine divergence).
    Divergence,
}

impl CatchKind {
    pub const ALL: [CatchKind; 7] = [
        CatchKind::Transition,
        CatchKind::Reset,
        CatchKind::Cr0,
        CatchKind::Cr3,
        CatchKind::Cr4,
        CatchKind::Efer,
        CatchKind::Divergence,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CatchKind::Transition => "transition",
            CatchKind::Reset => "reset",
            CatchKind::Cr0 => "cr0",
            CatchKind::Cr3 => "cr3",
            CatchKind::Cr4 => "cr4",
            CatchKind::Efer => "efer",
            CatchKind::Divergence => "divergence",
        }
    }

    pub fn parse(s: &str) -> Option<CatchKind> {
        CatchKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }

    /// Kinds that depend on a policy's decisions (and so accept a POLICY argument).
    pub fn per_policy(self) -> bool {
        matches!(self, CatchKind::Reset | CatchKind::Divergence)
    }
}

/// One `break-on`: a kind, and for policy-dependent kinds an optional policy name (none = any
/// policy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Catchpoint {
    pub kind: CatchKind,
    pub policy: Option<String>,
}

impl Catchpoint {
    /// The catchpoint applies to policy `name` (it names none, or names this one).
    pub fn covers(&self, name: &str) -> bool {
        self.policy
            .as_deref()
            .is_none_or(|p| mmu::policy(p).is_some_and(|q| q.name == name))
    }
}

/// What the `break-on` catchpoints say about one control-register write (`cause`, its event
/// line), given every policy's decision (`names[i]` decided `decisions[i]`, its context
/// already stale before the write when `stale_before[i]`). One definition for both servers:
/// the live one asks as the write happens, the replay one ahead of time over the analysis.
pub fn write_notes(
    catches: &[Catchpoint],
    cause: &str,
    reg: Option<traces::ControlReg>,
    names: &[&'static str],
    decisions: &[mmu::Decision],
    stale_before: &[bool],
) -> Vec<String> {
    let mut notes = Vec::new();
    for c in catches {
        if !c.kind.per_policy() {
            if reg.is_some_and(|r| c.kind.name() == r.name()) {
                notes.push(cause.to_string());
            }
            continue;
        }
        for (p, d) in decisions.iter().enumerate() {
            let Some(&name) = names.get(p) else { continue };
            if !c.covers(name) {
                continue;
            }
            if c.kind == CatchKind::Reset && d.is_reset() {
                notes.push(format!("{name}: reset, {} -- {cause}", d.outcome.name()));
            }
            if c.kind == CatchKind::Divergence && !stale_before.get(p).copied().unwrap_or(false) {
                if let Some(st) = &d.stale {
                    let what: Vec<String> = st
                        .attributes
                        .iter()
                        .map(|a| format!("{} kept {} required {}", a.attribute, a.kept, a.correct))
                        .collect();
                    notes.push(format!(
                        "{name}: MMU context diverges from the architecture ({}) -- {cause}",
                        what.join(", ")
                    ));
                }
            }
        }
    }
    notes
}

impl std::fmt::Display for Catchpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.policy {
            Some(p) => write!(f, "{} {p}", self.kind.name()),
            None => write!(f, "{}", self.kind.name()),
        }
    }
}

/// Breakpoints and catchpoints of one session.
#[derive(Clone, Debug, Default)]
pub struct Breakpoints {
    addrs: BTreeSet<u64>,
    catches: Vec<Catchpoint>,
    watches: Vec<Watchpoint>,
}

/// Who set a watchpoint: gdb (a `Z2` packet, stop reported as a watchpoint hit at gdb's
/// address) or `monitor watch-phys` (gdb does not know it: stop reported as SIGTRAP with a
/// console line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOrigin {
    Gdb,
    Monitor,
}

/// Memory whose writes stop execution: the address and length it was set with and the
/// guest-physical pieces they cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchpoint {
    pub addr: u64,
    pub len: u64,
    pub origin: WatchOrigin,
    pub pieces: Vec<(u64, usize)>,
}

impl Watchpoint {
    /// Whether writing `len` bytes at guest-physical `gpa` touches it.
    pub fn written_by(&self, gpa: u64, len: usize) -> bool {
        self.pieces.iter().any(|&(start, n)| {
            gpa < start.saturating_add(n as u64) && start < gpa.saturating_add(len as u64)
        })
    }
}

impl std::fmt::Display for Watchpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pieces: Vec<String> = self
            .pieces
            .iter()
            .map(|(gpa, n)| format!("{gpa:#x}+{n}"))
            .collect();
        match self.origin {
            WatchOrigin::Gdb => write!(
                f,
                "{:#x} ({} bytes; physical {})",
                self.addr,
                self.len,
                pieces.join(", ")
            ),
            WatchOrigin::Monitor => write!(f, "physical {:#x} ({} bytes)", self.addr, self.len),
        }
    }
}

impl Breakpoints {
    pub fn add_addr(&mut self, addr: u64) -> bool {
        self.addrs.insert(addr);
        true
    }

    /// gdb removes what it inserted; removing an unknown address is not an error to gdb.
    pub fn remove_addr(&mut self, addr: u64) -> bool {
        self.addrs.remove(&addr);
        true
    }

    pub fn has_addr(&self, addr: u64) -> bool {
        self.addrs.contains(&addr)
    }

    pub fn any_addr(&self) -> bool {
        !self.addrs.is_empty()
    }

    pub fn add_watch(&mut self, w: Watchpoint) {
        if !self.watches.contains(&w) {
            self.watches.push(w);
        }
    }

    /// Removes the watchpoints set by `origin` at `addr` with `len` (every one of `origin`'s
    /// with `None`).
    pub fn remove_watch(&mut self, origin: WatchOrigin, at: Option<(u64, u64)>) {
        self.watches
            .retain(|w| w.origin != origin || at.is_some_and(|a| a != (w.addr, w.len)));
    }

    pub fn watches(&self) -> &[Watchpoint] {
        &self.watches
    }

    /// The first watchpoint one of `writes` touches.
    pub fn watch_hit(&self, writes: &[traces::MemWrite]) -> Option<&Watchpoint> {
        self.watches
            .iter()
            .find(|w| writes.iter().any(|m| w.written_by(m.gpa, m.data.len())))
    }

    pub fn add_catch(&mut self, c: Catchpoint) {
        if !self.catches.contains(&c) {
            self.catches.push(c);
        }
    }

    pub fn clear_catches(&mut self) {
        self.catches.clear();
    }

    pub fn catches(&self) -> &[Catchpoint] {
        &self.catches
    }
}

/// Where catchpoints stop in a replay: (step, what happened there), ascending by step; several
/// entries may share a step.
#[derive(Clone, Debug, Default)]
pub struct Sites(Vec<(u64, String)>);

impl Sites {
    pub fn new(mut sites: Vec<(u64, String)>) -> Sites {
        sites.sort_by_key(|s| s.0);
        Sites(sites)
    }

    /// The first site strictly after `step`.
    pub fn next_after(&self, step: u64) -> Option<u64> {
        let i = self.0.partition_point(|s| s.0 <= step);
        self.0.get(i).map(|s| s.0)
    }

    /// The last site strictly before `step`.
    pub fn prev_before(&self, step: u64) -> Option<u64> {
        let i = self.0.partition_point(|s| s.0 < step);
        i.checked_sub(1).map(|i| self.0[i].0)
    }

    /// Every description at `step`, one per line.
    pub fn at(&self, step: u64) -> Vec<&str> {
        let i = self.0.partition_point(|s| s.0 < step);
        self.0[i..]
            .iter()
            .take_while(|s| s.0 == step)
            .map(|s| s.1.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_search_both_ways() {
        let s = Sites::new(vec![(10, "b".into()), (5, "a".into()), (10, "c".into())]);
        assert_eq!(s.next_after(0), Some(5));
        assert_eq!(s.next_after(5), Some(10));
        assert_eq!(s.next_after(10), None);
        assert_eq!(s.prev_before(10), Some(5));
        assert_eq!(s.prev_before(5), None);
        assert_eq!(s.prev_before(11), Some(10));
        assert_eq!(s.at(10), vec!["b", "c"]);
    }

    #[test]
    fn watchpoints_are_hit_by_overlapping_writes_only() {
        let mut b = Breakpoints::default();
        let w = |origin, addr| Watchpoint {
            addr,
            len: 8,
            origin,
            pieces: vec![(0x2000, 8)],
        };
        b.add_watch(w(WatchOrigin::Gdb, 0xffff_8000_0000_2000));
        b.add_watch(w(WatchOrigin::Monitor, 0x2000));
        let write = |gpa, len| traces::MemWrite {
            gpa,
            data: vec![0; len],
        };
        assert!(
            b.watch_hit(&[write(0x1ff8, 8)]).is_none(),
            "ends just before"
        );
        assert!(
            b.watch_hit(&[write(0x2008, 1)]).is_none(),
            "starts just after"
        );
        let hit = b.watch_hit(&[write(0x1000, 4), write(0x1fff, 2)]).unwrap();
        assert_eq!(hit.origin, WatchOrigin::Gdb, "the first set is reported");
        b.remove_watch(WatchOrigin::Gdb, Some((0xffff_8000_0000_2000, 8)));
        assert_eq!(
            b.watch_hit(&[write(0x2007, 1)]).unwrap().origin,
            WatchOrigin::Monitor
        );
        b.remove_watch(WatchOrigin::Monitor, None);
        assert!(b.watches().is_empty());
    }

    #[test]
    fn kinds_parse_and_dedupe() {
        assert_eq!(CatchKind::parse("CR4"), Some(CatchKind::Cr4));
        assert_eq!(CatchKind::parse("nope"), None);
        let mut b = Breakpoints::default();
        let c = Catchpoint {
            kind: CatchKind::Transition,
            policy: None,
        };
        b.add_catch(c.clone());
        b.add_catch(c);
        assert_eq!(b.catches().len(), 1);
    }
}
