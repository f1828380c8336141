//! The platform test kernels (guests/tests/kernels/platform.S) on emu: each runs to its own
//! verdict, delivers its interrupts as `ExternalInterrupt` events, and records the same trace
//! twice (virtual time).

use guests::test_kernels::{build_platform, PlatformTest, PLATFORM_PASS, PLATFORM_SERIAL_OUTPUT};
use mmurr_emu::EmuBackend;
use recorder::{record, RecordOptions, RecordSummary};
use traces::{EndReason, EventKind, Reader, Record};

fn record_kernel(test: PlatformTest, out: &std::path::Path) -> RecordSummary {
    let elf = build_platform(test).expect("build the platform kernel (needs GNU binutils)");
    let none: &[(&str, Vec<u8>)] = &[];
    let guest = guests::loader::load_multiboot(&elf, "platform.elf", "", none, 64 << 20).unwrap();
    let mut opts = RecordOptions::new(out);
    opts.max_steps = 2_000_000;
    let mut backend = EmuBackend::new().unwrap();
    record(&mut backend, &guest, &opts).unwrap()
}

/// The vectors of the trace's external interrupts, in order.
fn interrupts(path: &std::path::Path) -> Vec<u8> {
    let mut r = Reader::open(path).unwrap();
    r.records()
        .filter_map(|rec| match rec.unwrap() {
            Record::Event(e) => match e.kind {
                EventKind::ExternalInterrupt(i) => Some(i.vector),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn passes(test: PlatformTest) -> (RecordSummary, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.mmurr");
    let s = record_kernel(test, &path);
    assert_eq!(
        s.end.reason,
        EndReason::DebugExit {
            status: PLATFORM_PASS
        },
        "{test:?}: {}",
        s.end.message
    );
    assert!(
        s.end.self_check_failures.is_empty(),
        "{test:?}: {:?}",
        s.end.self_check_failures
    );
    assert!(s.unhandled.is_empty(), "{test:?}: {:?}", s.unhandled);
    (s, interrupts(&path))
}

#[test]
fn lapic_one_shot_timer_interrupts_once() {
    let (_, v) = passes(PlatformTest::LapicOneShot);
    assert_eq!(v, [0x40]);
}

#[test]
fn lapic_periodic_timer_ticks() {
    let (_, v) = passes(PlatformTest::LapicPeriodic);
    assert_eq!(v, [0x40; 5]);
}

#[test]
fn pit_channel2_polled_through_port_61() {
    let (_, v) = passes(PlatformTest::PitPoll);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn pit_irq0_through_the_pic() {
    let (_, v) = passes(PlatformTest::PitPic);
    assert_eq!(v, [0x20; 3]);
}

#[test]
fn pit_irq0_through_the_ioapic() {
    let (_, v) = passes(PlatformTest::PitIoapic);
    assert_eq!(v, [0x30; 3]);
}

#[test]
fn interrupt_driven_serial() {
    let (s, v) = passes(PlatformTest::SerialIrq);
    assert_eq!(
        String::from_utf8_lossy(&s.serial_output),
        PLATFORM_SERIAL_OUTPUT
    );
    // One interrupt per byte, and the last one that finds nothing more to send.
    assert_eq!(v, vec![0x34; PLATFORM_SERIAL_OUTPUT.len() + 1]);
}

/// Records without the header's wall-clock fields: every record of the trace.
fn records(path: &std::path::Path) -> Vec<Record> {
    let mut r = Reader::open(path).unwrap();
    r.records().map(|r| r.unwrap()).collect()
}

#[test]
fn the_same_guest_records_the_same_trace_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.mmurr"), dir.path().join("b.mmurr"));
    for test in [PlatformTest::LapicPeriodic, PlatformTest::PitPoll] {
        let sa = record_kernel(test, &a);
        let sb = record_kernel(test, &b);
        assert_eq!(sa.steps, sb.steps, "{test:?}");
        let (ra, rb) = (records(&a), records(&b));
        assert_eq!(ra.len(), rb.len(), "{test:?}");
        for (x, y) in ra.iter().zip(&rb) {
            assert_eq!(x, y, "{test:?}");
        }
    }
}
