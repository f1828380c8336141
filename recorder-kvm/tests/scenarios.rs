//! Every built-in scenario this host's KVM can run, recorded on kvm: the trace's CrWrite and
//! Transition events must equal the scenario's expected sequence exactly, and the expected
//! findings must be there.
mod common;

use guests::{CpuFeatures, ExpectedEvent, Scenario};
use recorder::{record, RecordOptions, RecordSummary};
use recorder_kvm::{probe, KvmBackend};
use traces::{EndReason, Event, EventKind, Reader, Record};

fn record_scenario(
    s: &Scenario,
    dir: &std::path::Path,
) -> (RecordSummary, Vec<Record>, Vec<traces::CpuidEntry>) {
    let mut backend = KvmBackend::new(probe()).unwrap();
    let mut opts = RecordOptions::new(dir.join(format!("{}.mmurr", s.name)));
    opts.scenario = Some(s.name.to_string());
    opts.max_steps = 200_000;
    let summary = record(&mut backend, &s.guest, &opts).unwrap();
    let mut reader = Reader::open(&opts.output).unwrap();
    let cpuid = reader.header().guest.cpuid.clone();
    let records = reader.records().collect::<Result<Vec<_>, _>>().unwrap();
    (summary, records, cpuid)
}

fn events(records: &[Record]) -> Vec<Event> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn observed_sequence(events: &[Event]) -> Vec<ExpectedEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CrWrite(w) => Some(ExpectedEvent::Cr {
                reg: w.reg,
                new: w.new,
            }),
            EventKind::Transition { from, to } => Some(ExpectedEvent::Transition {
                from: *from,
                to: *to,
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn scenarios_produce_their_exact_event_sequences() {
    require_kvm!();
    let host = probe();
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for name in guests::scenario_names() {
        let s = guests::scenario(name, &CpuFeatures::default()).unwrap();
        if s.needs.iter().any(|&m| !host.can_run.runs(m)) {
            eprintln!("{name}: not run here ({})", host.runs_summary());
            continue;
        }
        let (summary, records, cpuid) = record_scenario(&s, dir.path());
        assert_eq!(
            summary.end.reason,
            EndReason::DebugExit { status: 0 },
            "{name}: {}",
            summary.end.message
        );
        assert!(
            summary.end.self_check_failures.is_empty(),
            "{name}: {:?}",
            summary.end.self_check_failures
        );
        // The expected sequence for the CPU the guest actually saw.
        let expected = guests::scenario(name, &CpuFeatures::from_cpuid(&cpuid)).unwrap();
        let events = events(&records);
        assert_eq!(observed_sequence(&events), expected.expected, "{name}");

        // Findings (TDP): each expected one names a policy and an index into the sequence.
        let seq_ids: Vec<u64> = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::CrWrite(_) | EventKind::Transition { .. }))
            .map(|e| e.id)
            .collect();
        let policies: Vec<String> = mmu::policies().iter().map(|p| p.name.to_string()).collect();
        for f in &expected.expected_findings {
            let policy = policies.iter().position(|p| p == f.policy).unwrap() as u16;
            let cause = seq_ids[f.at_event];
            assert!(
                events.iter().any(|e| matches!(&e.kind, EventKind::Finding(x) if x.policy == policy && x.kind == f.kind && x.cause == cause)),
                "{name}: missing {:?} for {} at event {}",
                f.kind,
                f.policy,
                f.at_event
            );
        }
        eprintln!(
            "{name}: {} steps, {} events, sequence ok",
            summary.steps, summary.events
        );
        ran += 1;
    }
    assert!(ran > 0, "no scenario runs on this host");
}

#[test]
fn pae_toggle_on_pvm_is_host_unsupported_with_a_readable_trace() {
    require_kvm!();
    let host = probe();
    if !host.pvm {
        eprintln!("SKIP: not a PVM host; pae-toggle runs here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = guests::scenario("pae-toggle", &CpuFeatures::default()).unwrap();
    let (summary, records, _) = record_scenario(&s, dir.path());
    assert_eq!(
        summary.end.reason,
        EndReason::HostUnsupported,
        "{}",
        summary.end.message
    );
    assert!(
        summary.end.message.contains("--backend emu"),
        "{}",
        summary.end.message
    );
    assert!(
        matches!(records.last(), Some(Record::End(e)) if e.reason == EndReason::HostUnsupported)
    );
    // What ran before the shutdown is in the trace: the sequence is a prefix of the expected one.
    let observed = observed_sequence(&events(&records));
    assert!(!observed.is_empty());
    assert_eq!(observed[..], s.expected[..observed.len()]);
    eprintln!("pae-toggle: {}", summary.end.message);
}
