//! `smp-bringup` on four vCPUs: the BSP starts the APs with INIT-SIPI-SIPI, every vCPU's
//! CR-write and transition events equal its expected sequence exactly, the seed bug's stale
//! context is on AP 2 only (v5.1-rc3), and the replayer rebuilds every vCPU's registers.

use guests::{CpuFeatures, ExpectedEvent};
use mmurr_emu::SmpBackend;
use recorder::{Backend, RecordOptions};
use traces::{EndReason, EventKind, Reader, Record, VcpuCursor};

const CPUS: u32 = 4;

struct Recorded {
    /// Per vCPU: its CR/transition events and their ids.
    got: Vec<Vec<(ExpectedEvent, u64)>>,
    /// (vCPU, policy, kind, cause event id) of every finding.
    findings: Vec<(u32, String, traces::FindingKind, u64)>,
    startups: Vec<(u32, u8)>,
    scenario: guests::Scenario,
    end: traces::EndRecord,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// How the vCPUs are interleaved.
#[derive(Clone, Copy, PartialEq)]
enum Interleaving {
    /// One instruction each, round robin (step by step).
    RoundRobin,
    /// Turns of `RecordOptions::vcpu_quantum` instructions, in runs.
    Turns,
    /// The same turns, every instruction a step of its own (`single_step_from` 0).
    TurnsStepped,
}

fn record(keyframe_interval: u64) -> Recorded {
    record_with(keyframe_interval, Interleaving::RoundRobin)
}

fn record_with(keyframe_interval: u64, how: Interleaving) -> Recorded {
    let mut backend = SmpBackend::new(CPUS).expect("open unicorn engines");
    let features = CpuFeatures::from_cpuid(&backend.cpuid());
    let scenario = guests::scenario("smp-bringup", &features).expect("scenario");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smp.mmurr");
    let mut opts = RecordOptions::new(&path);
    if how != Interleaving::RoundRobin {
        opts.set_runs(true);
    }
    if how == Interleaving::TurnsStepped {
        opts.single_step_from = Some(0);
    }
    opts.scenario = Some("smp-bringup".into());
    opts.max_steps = 100_000;
    opts.keyframe_interval = keyframe_interval;
    opts.self_check_every = 1;
    let summary = recorder::record(&mut backend, &scenario.guest, &opts).expect("record");
    let mut reader = Reader::open(&path).expect("open trace");
    assert_eq!(reader.header().vcpu_count(), CPUS);
    let policies = reader.header().policies.clone();
    let mut got = vec![Vec::new(); CPUS as usize];
    let (mut findings, mut startups) = (Vec::new(), Vec::new());
    let mut cursor = VcpuCursor::new();
    for r in reader.records() {
        let r = r.expect("record");
        let v = cursor.observe(&r);
        let Record::Event(e) = r else { continue };
        let ev = match e.kind {
            EventKind::CrWrite(w) => ExpectedEvent::Cr {
                reg: w.reg,
                new: w.new,
            },
            EventKind::Transition { from, to } => ExpectedEvent::Transition { from, to },
            EventKind::Finding(f) => {
                let p = policies.get(f.policy as usize).cloned().unwrap_or_default();
                findings.push((v, p, f.kind, f.cause));
                continue;
            }
            EventKind::Startup { vector } => {
                startups.push((v, vector));
                continue;
            }
            _ => continue,
        };
        got[v as usize].push((ev, e.id));
    }
    Recorded {
        got,
        findings,
        startups,
        scenario,
        end: summary.end,
        path,
        _dir: dir,
    }
}

#[test]
fn four_vcpus_bring_up_with_their_own_events_and_the_seed_bug_on_ap_2_only() {
    assert_bringup(&record(1));
}

/// In runs, each vCPU runs in turns of many instructions: the interleaving changes, every
/// vCPU's own events, the startups and the findings do not.
#[test]
fn in_turns_every_vcpu_has_the_same_events_and_the_seed_bug_stays_on_ap_2() {
    let r = record_with(1, Interleaving::Turns);
    assert_bringup(&r);
    let mut reader = Reader::open(&r.path).unwrap();
    let runs = reader
        .records()
        .filter(|rec| matches!(rec, Ok(Record::Run(_))))
        .count();
    assert!(runs > 0, "no runs recorded");
}

/// A run of an AP is rebuilt by re-executing it from the memory before it and that AP's
/// registers: at every step inside the APs' runs, every vCPU's registers and the memory equal
/// those of the same interleaving recorded one step at a time.
#[test]
fn the_replayer_rebuilds_the_inside_of_an_aps_run() {
    let runs = record_with(1_000_000, Interleaving::Turns);
    let stepped = record_with(1_000_000, Interleaving::TurnsStepped);
    let mut reader = Reader::open(&runs.path).unwrap();
    let mut cursor = VcpuCursor::new();
    let mut inside = Vec::new();
    for rec in reader.records() {
        let rec = rec.unwrap();
        let v = cursor.observe(&rec);
        if let Record::Run(run) = rec {
            if v != 0 && run.step > run.first {
                inside.push((v, run.first, run.step));
            }
        }
    }
    assert!(
        !inside.is_empty(),
        "no run of an AP longer than one instruction"
    );
    let emu = env!("CARGO_BIN_EXE_mmurr-emu");
    let mut t = replayer::Timeline::open(&runs.path).unwrap();
    t.set_reexecution(replayer::Reexecution::new(emu));
    let mut s = replayer::Timeline::open(&stepped.path).unwrap();
    s.without_reexecution();
    for &(v, first, last) in inside.iter().take(6) {
        for step in [first, (first + last) / 2, last - 1] {
            let got = t.seek(step).unwrap().clone();
            let want = s.seek(step).unwrap().clone();
            assert_eq!(got.vcpu(), v, "step {step}");
            assert_eq!(want.vcpu(), v, "step {step}");
            for k in 0..CPUS {
                assert_eq!(got.regs_of(k), want.regs_of(k), "step {step} vCPU {k}");
            }
            assert_eq!(
                got.memory.extents(),
                want.memory.extents(),
                "memory at step {step}"
            );
        }
    }
}

fn assert_bringup(r: &Recorded) {
    assert_eq!(
        r.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        r.end.message
    );
    assert!(
        r.end.self_check_failures.is_empty(),
        "{:?}",
        r.end.self_check_failures
    );
    // One startup IPI each for APs 1..3 (the second SIPI finds the AP running).
    assert_eq!(r.startups, vec![(1, 0x30), (2, 0x30), (3, 0x30)]);
    let events = |v: usize| r.got[v].iter().map(|(e, _)| *e).collect::<Vec<_>>();
    assert_eq!(events(0), r.scenario.expected, "BSP");
    assert_eq!(r.scenario.aps.len(), 3);
    for (k, ap) in r.scenario.aps.iter().enumerate() {
        assert_eq!(events(k + 1), ap.expected, "AP {}", k + 1);
    }
    // APs 1 and 3 reach 4-level paging, each with its own CR3; AP 2 ends in 32-bit paging.
    let cr3 = |v: usize| {
        r.got[v].iter().find_map(|(e, _)| match e {
            ExpectedEvent::Cr {
                reg: traces::ControlReg::Cr3,
                new,
            } => Some(*new),
            _ => None,
        })
    };
    assert_eq!(
        (cr3(0), cr3(1), cr3(2), cr3(3)),
        (Some(0x4000), Some(0x40000), Some(0x50800), Some(0x43000))
    );
    // Stale contexts: v5.1-rc3 at AP 2's CR4.PAE write, and nowhere else.
    let ap2 = &r.scenario.aps[1].expected_findings;
    assert_eq!(ap2.len(), 1);
    let cause = r.got[2][ap2[0].at_event].1;
    let stale: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.2 == traces::FindingKind::StaleContext)
        .collect();
    assert_eq!(
        stale,
        vec![&(
            2,
            "v5.1-rc3".to_string(),
            traces::FindingKind::StaleContext,
            cause
        )]
    );
}

/// The replayer follows the vCPU switches: at every step the registers of every vCPU equal
/// those the keyframes (every 64 steps) recorded, and each AP's state is its own.
#[test]
fn the_timeline_rebuilds_every_vcpus_registers() {
    let r = record(64);
    let mut reader = Reader::open(&r.path).unwrap();
    let keyframes: Vec<traces::VcpusKeyframe> = reader
        .records()
        .filter_map(|rec| match rec.unwrap() {
            Record::Vcpus(k) => Some(k),
            _ => None,
        })
        .collect();
    assert!(keyframes.len() > 3, "{}", keyframes.len());
    let mut t = replayer::Timeline::open(&r.path).unwrap();
    t.without_reexecution();
    // Forward, step by step (never from the keyframe itself), and by seeks backwards.
    for k in keyframes.iter().skip(1) {
        let at = t.seek(k.step - 1).unwrap().clone();
        let at = {
            let _ = at;
            t.seek(k.step).unwrap().clone()
        };
        assert_eq!(at.vcpu(), k.current, "step {}", k.step);
        for v in 0..CPUS {
            assert_eq!(
                at.regs_of(v),
                Some(&k.regs[v as usize]),
                "step {} vCPU {v}",
                k.step
            );
        }
    }
    for k in keyframes.iter().rev() {
        let at = t.seek(k.step).unwrap().clone();
        assert_eq!(at.vcpu(), k.current);
        assert_eq!(at.regs_of(3), Some(&k.regs[3]));
    }
}
