//! The replay server on a trace of four vCPUs (`smp-bringup` recorded with `--cpus 4` on the
//! emu backend), driven by the real gdb: the vCPUs are threads, each with its own registers
//! and address space, and stepping in either direction moves the whole machine one
//! instruction in the recorded total order, the stop naming the vCPU that ran it. And the same
//! on a trace the kvm backend recorded (`--cpus 2`; the replayer needs no KVM, the recording
//! does).

mod common;

use common::{after, binary, expect, run_gdb, start_replay_server};
use std::path::Path;

fn smp_trace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/corpus/recorded/smp-bringup.emu.mmurr")
}

#[test]
fn vcpus_are_threads_and_stepping_moves_the_whole_machine() {
    let port = start_replay_server(&smp_trace());
    let out = run_gdb(
        port,
        "info threads
thread 3
p $pc
p/x $cs
thread 1
p $pc
monitor seek 200
maintenance flush register-cache
info threads
thread 3
p/x $cr3
p $cr0
thread 2
p/x $cr3
stepi
reverse-stepi
reverse-stepi
thread 1
p/x $cr3
p $cr0",
    );
    // Four vCPUs, four threads; at entry the BSP at 0x1000, the APs in their INIT state at
    // F000:FFF0 (linear 0xfffffff0), waiting for a startup IPI.
    for t in 1..=4 {
        expect(&out, &format!("Thread 1.{t} "));
    }
    expect(&out, "$1 = (void (*)()) 0xfffffff0");
    expect(&out, "$2 = 0xf000");
    expect(&out, "$3 = (void (*)()) 0x1000");
    // At step 200 each AP is on its own path with its own tables: AP 2 (thread 3) under
    // 32-bit paging through the seed tables, AP 1 (thread 2) in long mode on its own PML4.
    let at200 = after(&out, "at step 200");
    expect(at200, "$4 = 0x50800");
    expect(at200, "$5 = [ PE ET PG ]");
    expect(at200, "$6 = 0x40000");
    // stepi moves the machine one instruction: step 201 is AP 3's (thread 4), and the stop
    // says so; reverse-stepi goes back to step 200, AP 2's instruction (thread 3), and again
    // to step 199, the BSP's.
    let stepped = after(at200, "$6 = 0x40000");
    expect(stepped, "Thread 4 received signal SIGTRAP");
    expect(stepped, "[Switching to Thread 1.4]");
    let back = after(stepped, "[Switching to Thread 1.4]");
    let back = after(back, "[Switching to Thread 1.3]");
    expect(back, "[Switching to Thread 1.1]");
    // The BSP is still in unpaged protected mode, waiting for the APs.
    expect(back, "$7 = 0x0");
    expect(back, "$8 = [ PE ET ]");
}

#[test]
fn a_kvm_trace_of_two_vcpus_replays_with_a_thread_per_vcpu() {
    recorder::require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let rec = std::process::Command::new(binary("mmurr", "mmurr"))
        .args(["record", "--scenario", "smp-bringup", "--cpus", "2"])
        .args(["--backend", "kvm", "-q", "-o", "k.mmurr"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    // The guest's debug exit 0.
    assert_eq!(
        rec.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let port = start_replay_server(&dir.path().join("k.mmurr"));
    let out = run_gdb(
        port,
        "info threads
thread 2
p $pc
p/x $cs
monitor seek 120
maintenance flush register-cache
thread 2
p/x $cr3
p $cr0
thread 1
p/x $cr3
p $cr0",
    );
    for t in 1..=2 {
        expect(&out, &format!("Thread 1.{t} "));
    }
    // AP 1 at entry: the INIT state KVM gives a vCPU it creates, F000:FFF0.
    expect(&out, "$1 = (void (*)()) 0xfffffff0");
    expect(&out, "$2 = 0xf000");
    // At step 120 AP 1 runs in long mode on its own PML4, while the BSP, still unpaged,
    // waits for it.
    let at120 = after(&out, "at step 120");
    expect(at120, "$3 = 0x40000");
    expect(at120, "$4 = [ PE ET PG ]");
    expect(at120, "$5 = 0x0");
    expect(at120, "$6 = [ PE ET ]");
}
