//! Every built-in scenario recorded on Unicorn: the trace's CR-write and transition events must
//! equal the scenario's expected sequence exactly, and the recording must self-check.

use guests::{CpuFeatures, ExpectedEvent};
use mmurr_emu::EmuBackend;
use recorder::{Backend, RecordOptions};
use traces::{EndReason, EventKind, Reader, Record};

struct Recorded {
    got: Vec<ExpectedEvent>,
    /// Trace event ids of `got`'s events.
    ids: Vec<u64>,
    /// (policy name, kind, cause event id) of every finding.
    findings: Vec<(String, traces::FindingKind, u64)>,
    scenario: guests::Scenario,
    end: traces::EndRecord,
    steps: u64,
    /// `mmurr check` of the trace under every policy (TDP).
    check: replayer::CheckReport,
}

fn record_scenario(name: &str) -> Recorded {
    let mut backend = EmuBackend::new().expect("open unicorn");
    let features = CpuFeatures::from_cpuid(&backend.cpuid());
    let scenario = guests::scenario(name, &features).expect("scenario");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.mmurr"));
    let mut opts = RecordOptions::new(&out);
    opts.scenario = Some(name.to_string());
    opts.max_steps = 100_000;
    let summary = recorder::record(&mut backend, &scenario.guest, &opts).expect("record");
    let check = {
        let mut timeline = replayer::Timeline::open(&out).expect("open timeline");
        replayer::check(&mut timeline, &[], mmu::Flavour::Tdp).expect("check")
    };
    let mut reader = Reader::open(&out).expect("open trace");
    assert_eq!(reader.header().backend.kind, traces::BackendKind::Emu);
    let policies = reader.header().policies.clone();
    let (mut got, mut ids, mut findings) = (Vec::new(), Vec::new(), Vec::new());
    for r in reader.records() {
        if let Record::Event(e) = r.expect("record") {
            match e.kind {
                EventKind::CrWrite(w) if w.faulted => {
                    got.push(ExpectedEvent::CrFaulted {
                        reg: w.reg,
                        attempted: w.new,
                    });
                    ids.push(e.id);
                }
                EventKind::CrWrite(w) => {
                    got.push(ExpectedEvent::Cr {
                        reg: w.reg,
                        new: w.new,
                    });
                    ids.push(e.id);
                }
                EventKind::Exception(x) => {
                    got.push(ExpectedEvent::Exception {
                        vector: x.vector,
                        error_code: x.error_code,
                        cr2: x.cr2,
                    });
                    ids.push(e.id);
                }
                EventKind::Transition { from, to } => {
                    got.push(ExpectedEvent::Transition { from, to });
                    ids.push(e.id);
                }
                EventKind::Finding(f) => {
                    let policy = policies.get(f.policy as usize).cloned().unwrap_or_default();
                    findings.push((policy, f.kind, f.cause));
                }
                _ => {}
            }
        }
    }
    Recorded {
        got,
        ids,
        findings,
        scenario,
        end: summary.end,
        steps: summary.steps,
        check,
    }
}

fn check(name: &str) {
    let r = record_scenario(name);
    let end = &r.end;
    assert_eq!(
        end.reason,
        EndReason::DebugExit { status: 0 },
        "{name}: {}",
        end.message
    );
    assert!(
        end.self_check_failures.is_empty(),
        "{name}: {:?}",
        end.self_check_failures
    );
    assert!(r.steps > 0);
    assert_eq!(
        r.got, r.scenario.expected,
        "{name}: CR/transition events differ from the scenario's expected sequence"
    );
    // The MMU-context findings the scenario exists to provoke (under TDP, the default).
    for f in &r.scenario.expected_findings {
        let cause = r.ids[f.at_event];
        assert!(
            r.findings
                .iter()
                .any(|(p, k, c)| p == f.policy && *k == f.kind && *c == cause),
            "{name}: expected finding {f:?} (event id {cause}) not reported; findings: {:?}",
            r.findings
        );
    }
    // Policies with no expected stale context report none.
    for (p, k, c) in &r.findings {
        if *k == traces::FindingKind::StaleContext {
            assert!(
                r.scenario
                    .expected_findings
                    .iter()
                    .any(|f| f.policy == p && f.kind == *k),
                "{name}: unexpected stale-context finding for {p} at event {c}"
            );
        }
    }
}

#[test]
fn every_scenario_has_a_test() {
    let mut names = guests::scenario_names();
    names.sort();
    let mut tested = vec![
        "pae-toggle",
        "long-mode-entry",
        "long-mode-toggles",
        "cr3-switch",
        "unpaged-cr4",
        "smap-pke-toggle",
        "accessed-dirty",
        "exceptions",
        "smp-bringup",
    ];
    tested.sort();
    assert_eq!(names, tested, "a scenario was added: give it a test here");
}

/// On one vCPU the BSP starts no AP (fw_cfg says 1): its own sequence; `tests/smp.rs` runs four.
#[test]
fn smp_bringup() {
    check("smp-bringup");
}

#[test]
fn accessed_dirty() {
    check("accessed-dirty");
}

#[test]
fn pae_toggle() {
    check("pae-toggle");
}

#[test]
fn long_mode_entry() {
    check("long-mode-entry");
}

#[test]
fn long_mode_toggles() {
    check("long-mode-toggles");
}

#[test]
fn cr3_switch() {
    check("cr3-switch");
}

#[test]
fn unpaged_cr4() {
    check("unpaged-cr4");
}

#[test]
fn smap_pke_toggle() {
    check("smap-pke-toggle");
}

/// Every #GP, #UD and #PF the `exceptions` guest takes is an event with its vector, error code
/// and CR2, as mmurr-emu delivered it; the faulting writes carry their attempted values (the
/// expected sequence says so), and `check` agrees with every #GP under all policies.
#[test]
fn exceptions() {
    check("exceptions");
    let r = record_scenario("exceptions");
    assert_eq!(r.check.policies.len(), mmu::policies().len());
    let bugs: Vec<_> = r
        .check
        .findings
        .iter()
        .filter(|f| f.kind != traces::FindingKind::NeedlessReset)
        .collect();
    assert!(bugs.is_empty(), "{bugs:#?}");
}
