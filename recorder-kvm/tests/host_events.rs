//! Host truth on a real host: every built-in scenario this host's KVM runs, recorded with the
//! host's own events, agrees on every root with the policy of the host's kernel release; and a
//! deliberately wrong (test-only) policy is caught. Needs /dev/kvm, root and tracefs: SKIP
//! lines elsewhere (`MMURR_REQUIRE_KVM=1` / `MMURR_REQUIRE_HOST_EVENTS=1` make them failures).
mod common;

use guests::CpuFeatures;
use recorder::test_support::skip_without_host_events;
use recorder::{record, HostEventsChoice, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use replayer::{check_host, HostCheck, Timeline};
use std::path::{Path, PathBuf};
use traces::{FindingKind, HostEventsStatus, Reader, Record};

/// Records scenario `name` with host events; `None` (after a SKIP line) when this host cannot
/// record them.
fn record_with_host_events(name: &str, dir: &Path) -> Option<PathBuf> {
    let s = guests::scenario(name, &CpuFeatures::default()).unwrap();
    let mut backend = KvmBackend::new(probe()).unwrap();
    let mut opts = RecordOptions::new(dir.join(format!("{name}.mmurr")));
    opts.scenario = Some(name.to_string());
    opts.max_steps = 200_000;
    opts.host_events = HostEventsChoice::On;
    record(&mut backend, &s.guest, &opts).unwrap();
    let reader = Reader::open(&opts.output).unwrap();
    let host = reader
        .header()
        .host
        .clone()
        .expect("a kvm trace has host facts");
    match host.events {
        HostEventsStatus::Recorded { tracepoints } => {
            assert!(tracepoints.iter().any(|t| t == "kvmmmu/kvm_mmu_get_page"));
            Some(opts.output)
        }
        HostEventsStatus::Unavailable(why) => {
            assert!(skip_without_host_events(Some(why)));
            None
        }
        HostEventsStatus::Off => panic!("host events were asked for"),
    }
}

fn check(path: &Path, policies: &[&'static mmu::Policy]) -> HostCheck {
    let mut t = Timeline::open(path).unwrap();
    check_host(&mut t, policies).unwrap()
}

/// A host whose TDP MMU builds roots without `kvm_mmu_get_page` reports none.
fn reports_roots() -> bool {
    !probe()
        .kvm_params
        .iter()
        .any(|(n, v)| n == "kvm.tdp_mmu" && v.starts_with('Y'))
        || probe().pvm
}

#[test]
fn every_scenario_agrees_with_the_host_releases_policy_on_every_root() {
    require_kvm!();
    let host = probe();
    let Some(current) = mmu::policy_for_release(&host.host_kernel) else {
        eprintln!(
            "SKIP: host kernel {} is older than every policy",
            host.host_kernel
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut roots = 0;
    for name in guests::scenario_names() {
        let s = guests::scenario(name, &CpuFeatures::default()).unwrap();
        if s.needs.iter().any(|&m| !host.can_run.runs(m)) {
            continue;
        }
        let Some(path) = record_with_host_events(name, dir.path()) else {
            return;
        };
        let c = check(&path, &[current]);
        let v = &c.verdicts[0];
        assert_eq!(
            v.agreed,
            c.roots.len(),
            "{name}: {} disagrees with this host: {:#?}",
            current.name,
            c.findings.first()
        );
        // Every step's host events are attributed to a recorded step.
        let mut reader = Reader::open(&path).unwrap();
        let last = reader.total_steps();
        for r in reader.records() {
            if let Record::Host(h) = r.unwrap() {
                assert!(
                    h.step >= 1 && h.step <= last,
                    "{name}: host record at step {}",
                    h.step
                );
                assert!(!h.events.is_empty());
            }
        }
        roots += c.roots.len();
    }
    if reports_roots() {
        assert!(roots > 0, "no scenario made the host load a root");
    }
}

#[test]
fn a_wrong_policy_is_caught_field_by_field() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let Some(path) = record_with_host_events("long-mode-toggles", dir.path()) else {
        return;
    };
    let current = mmu::policy_for_release(&probe().host_kernel).unwrap_or(&mmu::policies()[12]);
    // Test-only: the current policy without 362505deb8e2 (shadow roots' efer_nx forced to 1)
    // and with the pre-v5.17 sense of role bit 4 (TDP roots then say 8-byte gptes).
    let wrong: &'static mmu::Policy = Box::leak(Box::new(mmu::Policy {
        name: "test-wrong",
        roles: mmu::RoleRules {
            shadow_efer_nx_forced: false,
            ..current.roles
        },
        layout: mmu::policy("v5.16").unwrap().layout,
        ..*current
    }));
    let c = check(&path, &[current, wrong]);
    if c.roots.is_empty() {
        assert!(!reports_roots(), "the host loaded no root");
        eprintln!("SKIP: this host's TDP MMU reports no roots");
        return;
    }
    assert_eq!(c.agreeing(), vec![current.name]);
    let caught: Vec<_> = c
        .findings
        .iter()
        .filter(|f| f.policy == "test-wrong")
        .collect();
    assert!(!caught.is_empty());
    assert!(caught
        .iter()
        .all(|f| f.kind == FindingKind::HostDisagreement));
    let first = caught[0];
    assert!(
        first
            .attributes
            .iter()
            .any(
                |(field, model, host)| (field == "efer_nx" || field == "has_4_byte_gpte")
                    && model != host
            ),
        "{first:#?}"
    );
    assert!(
        first.detail.contains("test-wrong predicts root_role"),
        "{}",
        first.detail
    );
}
