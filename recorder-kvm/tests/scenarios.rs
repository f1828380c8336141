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

/// The events a scenario's expected sequence lists, as the trace has them.
fn expected_kind(kind: &EventKind) -> Option<ExpectedEvent> {
    Some(match kind {
        EventKind::CrWrite(w) if w.faulted => ExpectedEvent::CrFaulted {
            reg: w.reg,
            attempted: w.new,
        },
        EventKind::CrWrite(w) => ExpectedEvent::Cr {
            reg: w.reg,
            new: w.new,
        },
        EventKind::Transition { from, to } => ExpectedEvent::Transition {
            from: *from,
            to: *to,
        },
        EventKind::Exception(x) => ExpectedEvent::Exception {
            vector: x.vector,
            error_code: x.error_code,
            cr2: x.cr2,
        },
        _ => return None,
    })
}

fn observed_sequence(events: &[Event]) -> Vec<ExpectedEvent> {
    events
        .iter()
        .filter_map(|e| expected_kind(&e.kind))
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
            .filter(|e| expected_kind(&e.kind).is_some())
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

/// The `exceptions` guest on kvm: every #GP, #UD and #PF is an event with its vector, error
/// code and CR2 (inferred from the handler the step lands in and the frame on its stack), the
/// faulting CR0/CR4/EFER writes carry the attempted values, and `check` finds no #GP
/// disagreement and no stale context under any policy, with TDP or shadow paging.
#[test]
fn exceptions_are_events_and_check_agrees_with_every_fault() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let s = guests::scenario("exceptions", &CpuFeatures::default()).unwrap();
    let (summary, records, cpuid) = record_scenario(&s, dir.path());
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        summary.end.message
    );
    let expected = guests::scenario("exceptions", &CpuFeatures::from_cpuid(&cpuid)).unwrap();
    let events = events(&records);
    assert_eq!(observed_sequence(&events), expected.expected);
    let faulted: Vec<(traces::ControlReg, u64, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CrWrite(w) if w.faulted => Some((w.reg, w.old, w.new)),
            _ => None,
        })
        .collect();
    use traces::ControlReg::*;
    assert_eq!(
        faulted,
        [
            (Cr4, 0x20, 0x1020),
            (Cr4, 0x20, 0x8020),
            (Efer, 0xd00, 0xd02),
            (Cr0, 0x8001_0011, 0x1_0011)
        ]
    );
    // Each exception sits at the instruction that raised it, right after its faulted write.
    for (i, e) in events.iter().enumerate() {
        if let EventKind::CrWrite(w) = &e.kind {
            if w.faulted {
                let x = events[i + 1..]
                    .iter()
                    .find(|x| matches!(x.kind, EventKind::Exception(_)))
                    .unwrap();
                assert_eq!((x.step, x.rip), (e.step, e.rip));
            }
        }
    }
    let trace = dir.path().join("exceptions.mmurr");
    for flavour in [mmu::Flavour::Tdp, mmu::Flavour::Shadow] {
        let mut timeline = replayer::Timeline::open(&trace).unwrap();
        let report = replayer::check(&mut timeline, &[], flavour).unwrap();
        assert_eq!(report.policies.len(), mmu::policies().len());
        let bugs: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.kind != traces::FindingKind::NeedlessReset)
            .collect();
        assert!(bugs.is_empty(), "{flavour:?}: {bugs:#?}");
    }
}
