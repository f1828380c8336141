//! `smp-bringup` on the kvm backend with several vCPUs: KVM's in-kernel LAPICs carry the
//! INIT-SIPI-SIPI, mmurr steps the vCPUs round robin. On 2 vCPUs (BSP and AP 1, which climbs
//! real → protected → long mode) every vCPU's CR-write and transition events equal its
//! expected sequence exactly, as the emu backend's test asserts (`mmurr-emu/tests/smp.rs`); on
//! 4, AP 2 enters 32-bit paging, which this host's PVM KVM shuts down on: the recording ends as
//! host-unsupported, as one vCPU's does, with the trace kept up to there.

mod common;

use guests::{CpuFeatures, ExpectedEvent};
use recorder::{Backend, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use traces::{EndReason, EventKind, Reader, Record, VcpuCursor};

struct Recorded {
    /// Per vCPU: its CR and transition events.
    got: Vec<Vec<ExpectedEvent>>,
    startups: Vec<(u32, u8)>,
    /// Per vCPU: the steps it took (startups included).
    steps: Vec<u64>,
    scenario: guests::Scenario,
    end: traces::EndRecord,
    _dir: tempfile::TempDir,
}

fn record(cpus: u32) -> Recorded {
    let mut backend = KvmBackend::with_vcpus(probe(), cpus).expect("open /dev/kvm");
    assert_eq!(backend.vcpus(), cpus);
    let features = CpuFeatures::from_cpuid(&backend.cpuid());
    let scenario = guests::scenario("smp-bringup", &features).expect("scenario");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smp.mmurr");
    let mut opts = RecordOptions::new(&path);
    opts.scenario = Some("smp-bringup".into());
    opts.max_steps = 100_000;
    opts.keyframe_interval = 16;
    opts.self_check_every = 1;
    let summary = recorder::record(&mut backend, &scenario.guest, &opts).expect("record");
    let mut reader = Reader::open(&path).expect("open trace");
    assert_eq!(reader.header().vcpu_count(), cpus);
    let mut got = vec![Vec::new(); cpus as usize];
    let mut steps = vec![0; cpus as usize];
    let mut startups = Vec::new();
    let mut cursor = VcpuCursor::new();
    for r in reader.records() {
        let r = r.expect("record");
        let v = cursor.observe(&r);
        match r {
            Record::Step(_) => steps[v as usize] += 1,
            Record::Event(e) => match e.kind {
                EventKind::CrWrite(w) => got[v as usize].push(ExpectedEvent::Cr {
                    reg: w.reg,
                    new: w.new,
                }),
                EventKind::Transition { from, to } => {
                    got[v as usize].push(ExpectedEvent::Transition { from, to })
                }
                EventKind::Startup { vector } => startups.push((v, vector)),
                _ => {}
            },
            _ => {}
        }
    }
    Recorded {
        got,
        startups,
        steps,
        scenario,
        end: summary.end,
        _dir: dir,
    }
}

#[test]
fn two_vcpus_bring_up_ap_1_with_the_events_the_scenario_expects() {
    require_kvm!();
    let r = record(2);
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
    // One startup IPI started AP 1 (the second finds it running).
    assert_eq!(r.startups, vec![(1, 0x30)]);
    assert_eq!(r.got[0], r.scenario.expected, "BSP");
    assert_eq!(r.got[1], r.scenario.aps[0].expected, "AP 1");
    // Both took steps: the interleaving ran them one instruction each.
    assert!(r.steps.iter().all(|&n| n > 10), "{:?}", r.steps);
}

#[test]
fn four_vcpus_end_host_unsupported_where_ap_2_enters_32_bit_paging() {
    require_kvm!();
    if !probe().pvm {
        // A KVM that runs 32-bit paging brings up all four; the emu test covers that run.
        eprintln!("SKIP: this host's KVM runs 32-bit paging (not a PVM host)");
        return;
    }
    let r = record(4);
    assert_eq!(
        r.end.reason,
        EndReason::HostUnsupported,
        "{}",
        r.end.message
    );
    assert!(
        r.end.message.contains("on vCPU 2") && r.end.message.contains("32-bit paging"),
        "{}",
        r.end.message
    );
    // Every AP was started before AP 2 got that far, and what each did until then is the
    // start of its expected sequence (AP 2's up to the CR0 write that shut down).
    assert_eq!(r.startups, vec![(1, 0x30), (2, 0x30), (3, 0x30)]);
    let prefix = |got: &[ExpectedEvent], expected: &[ExpectedEvent], who: &str| {
        assert!(
            expected.starts_with(got),
            "{who}: {got:?} is not a prefix of {expected:?}"
        );
    };
    prefix(&r.got[0], &r.scenario.expected, "BSP");
    for (k, ap) in r.scenario.aps.iter().enumerate() {
        prefix(&r.got[k + 1], &ap.expected, &format!("AP {}", k + 1));
    }
    assert!(!r.got[2].is_empty(), "AP 2 ran to protected mode");
}
