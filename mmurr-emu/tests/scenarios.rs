//! Every built-in scenario recorded on Unicorn: the trace's CR-write and transition events must
//! equal the scenario's expected sequence exactly, and the recording must self-check.

use guests::{CpuFeatures, ExpectedEvent};
use mmurr_emu::EmuBackend;
use recorder::{Backend, RecordOptions};
use traces::{EndReason, EventKind, Reader, Record};

fn record_scenario(
    name: &str,
) -> (
    Vec<ExpectedEvent>,
    Vec<ExpectedEvent>,
    traces::EndRecord,
    u64,
) {
    let mut backend = EmuBackend::new().expect("open unicorn");
    let features = CpuFeatures::from_cpuid(&backend.cpuid());
    let scenario = guests::scenario(name, &features).expect("scenario");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.mmurr"));
    let mut opts = RecordOptions::new(&out);
    opts.scenario = Some(name.to_string());
    opts.max_steps = 100_000;
    let summary = recorder::record(&mut backend, &scenario.guest, &opts).expect("record");
    let mut reader = Reader::open(&out).expect("open trace");
    assert_eq!(reader.header().backend.kind, traces::BackendKind::Emu);
    let mut got = Vec::new();
    for r in reader.records() {
        if let Record::Event(e) = r.expect("record") {
            match e.kind {
                EventKind::CrWrite(w) => got.push(ExpectedEvent::Cr {
                    reg: w.reg,
                    new: w.new,
                }),
                EventKind::Transition { from, to } => {
                    got.push(ExpectedEvent::Transition { from, to })
                }
                _ => {}
            }
        }
    }
    (got, scenario.expected, summary.end, summary.steps)
}

fn check(name: &str) {
    let (got, expected, end, steps) = record_scenario(name);
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
    assert!(steps > 0);
    assert_eq!(
        got, expected,
        "{name}: CR/transition events differ from the scenario's expected sequence"
    );
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
    ];
    tested.sort();
    assert_eq!(names, tested, "a scenario was added: give it a test here");
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
