//! The multiboot hello kernel, end to end on kvm: serial output and the debug-exit code.
mod common;

use guests::test_kernels::{build_hello, HELLO_EXIT_STATUS, HELLO_OUTPUT};
use recorder::{record, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use traces::{EndReason, Reader};

#[test]
fn hello_kernel_prints_and_exits_with_its_status() {
    require_kvm!();
    let elf = build_hello().expect("build the hello kernel (needs GNU binutils)");
    let none: &[(&str, Vec<u8>)] = &[];
    let guest =
        guests::loader::load_multiboot(&elf, "hello.elf", "console=ttyS0", none, 64 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = RecordOptions::new(dir.path().join("hello.mmurr"));
    let mut backend = KvmBackend::new(probe()).unwrap();
    let s = record(&mut backend, &guest, &opts).unwrap();
    assert_eq!(
        s.end.reason,
        EndReason::DebugExit {
            status: HELLO_EXIT_STATUS
        },
        "{}",
        s.end.message
    );
    assert_eq!(s.exit_code, Some(((HELLO_EXIT_STATUS << 1) | 1) as u8));
    assert_eq!(String::from_utf8_lossy(&s.serial_output), HELLO_OUTPUT);
    assert!(
        s.end.self_check_failures.is_empty(),
        "{:?}",
        s.end.self_check_failures
    );
    let reader = Reader::open(&opts.output).unwrap();
    assert!(reader.is_complete());
    assert_eq!(reader.total_steps(), s.steps);
    assert!(reader.event_counts().kind("io") >= HELLO_OUTPUT.len() as u64);
}
