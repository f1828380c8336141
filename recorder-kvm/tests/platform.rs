//! The platform test kernels (guests/tests/kernels/platform.S) on kvm, with KVM's in-kernel
//! irqchip and PIT: each runs to the same verdict as on emu (mmurr-emu/tests/platform.rs).
mod common;

use guests::test_kernels::{
    build_platform, external_interrupts, PlatformTest, PLATFORM_PASS, PLATFORM_SERIAL_OUTPUT,
};
use recorder::{record, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use traces::EndReason;

/// Records the kernel; its summary and the vectors of the trace's external interrupts.
fn run(test: PlatformTest) -> (recorder::RecordSummary, Vec<u8>) {
    let elf = build_platform(test).expect("build the platform kernel (needs GNU binutils)");
    let none: &[(&str, Vec<u8>)] = &[];
    let guest = guests::loader::load_multiboot(&elf, "platform.elf", "", none, 64 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // (the directory lives until the trace is read below)
    let mut opts = RecordOptions::new(dir.path().join("t.mmurr"));
    opts.max_steps = 2_000_000;
    let mut backend = KvmBackend::new(probe()).unwrap();
    let s = record(&mut backend, &guest, &opts).unwrap();
    let vectors = external_interrupts(&opts.output).unwrap();
    (s, vectors)
}

fn reaches_its_verdict(test: PlatformTest) {
    require_kvm!();
    let (s, vectors) = run(test);
    assert_eq!(
        s.end.reason,
        EndReason::DebugExit {
            status: PLATFORM_PASS
        },
        "{test:?}: {}",
        s.end.message
    );
    // What the emu backend delivers for the same kernel (mmurr-emu/tests/platform.rs). The
    // timer kernels' tick counts follow real time here, and the recorder does not recognise
    // every interrupt KVM delivers (one that wakes a HLT can come with the handler's first
    // instruction in the same step: recorder/src/exceptions.rs), so for those the trace shows
    // some of the ticks, each with its own vector.
    let some_of = |v: u8| !vectors.is_empty() && vectors.iter().all(|&x| x == v);
    match test {
        PlatformTest::LapicOneShot => assert_eq!(vectors, [0x40]),
        PlatformTest::PitPoll => assert!(vectors.is_empty(), "{vectors:?}"),
        PlatformTest::SerialIrq => {
            assert_eq!(
                String::from_utf8_lossy(&s.serial_output),
                PLATFORM_SERIAL_OUTPUT
            );
            assert_eq!(vectors, vec![0x34; PLATFORM_SERIAL_OUTPUT.len() + 1]);
        }
        PlatformTest::LapicPeriodic => assert!(some_of(0x40), "{vectors:?}"),
        PlatformTest::PitPic => assert!(some_of(0x20), "{vectors:?}"),
        PlatformTest::PitIoapic => assert!(some_of(0x30), "{vectors:?}"),
    }
}

#[test]
fn lapic_one_shot() {
    reaches_its_verdict(PlatformTest::LapicOneShot);
}

#[test]
fn lapic_periodic() {
    reaches_its_verdict(PlatformTest::LapicPeriodic);
}

#[test]
fn pit_polled_through_port_61() {
    reaches_its_verdict(PlatformTest::PitPoll);
}

#[test]
fn pit_irq0_through_the_pic() {
    reaches_its_verdict(PlatformTest::PitPic);
}

#[test]
fn pit_irq0_through_the_ioapic() {
    reaches_its_verdict(PlatformTest::PitIoapic);
}

#[test]
fn interrupt_driven_serial() {
    reaches_its_verdict(PlatformTest::SerialIrq);
}
