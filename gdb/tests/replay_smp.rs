//! The replay server on a trace of four vCPUs (`smp-bringup` recorded with `--cpus 4` on the
//! emu backend), driven by the real gdb: the vCPUs are threads, each with its own registers
//! and address space, and stepping in either direction moves the whole machine one
//! instruction in the recorded total order, the stop naming the vCPU that ran it.

mod common;

use common::{after, expect, run_gdb, start_replay_server};
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
