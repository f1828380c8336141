//! The live server on the real backends, through the `mmurr` command line: `mmurr record
//! --gdb` on kvm (a long-mode scenario, which this host's PVM KVM runs) and on emu (the seed
//! scenario, whose 32-bit PAE paging KVM cannot run here), and `mmurr run --gdb`.
//! Tests needing /dev/kvm print `SKIP: ...` where it is not usable (they fail instead under
//! `MMURR_REQUIRE_KVM=1`).

mod common;

use common::binary;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// Starts `mmurr ARGS` with `--gdb 127.0.0.1:0`; returns the child and the port it printed.
/// Its stderr keeps being drained (and echoed) in a thread.
fn start_live(args: &[&str]) -> (Child, u16) {
    let mut child = Command::new(binary("mmurr", "mmurr"))
        .args(args)
        .args(["--gdb", "127.0.0.1:0", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[mmurr] {line}");
            if let Some(rest) = line.split("gdb server listening on 127.0.0.1:").nth(1) {
                let _ = tx.send(rest.trim().parse::<u16>().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("mmurr did not start its gdb server");
    (child, port)
}

fn finish(mut child: Child) -> i32 {
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("mmurr did not exit after gdb was done");
}

/// Records a scenario without gdb and returns (linear pc, CR4) at the first instruction that
/// runs with EFER.LMA set: an address the live run will reach in long mode.
fn first_long_mode_pc(backend: &str, scenario: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.mmurr");
    let status = Command::new(binary("mmurr", "mmurr"))
        .args([
            "record",
            "--scenario",
            scenario,
            "--backend",
            backend,
            "--quiet",
            "-o",
        ])
        .arg(&trace)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_some());
    let mut t = replayer::Timeline::open(&trace).unwrap();
    for s in 0..=t.last_step() {
        let r = &t.seek(s).unwrap().regs;
        if r.efer & (1 << 10) != 0 && insn::bitness(r) == 64 {
            return (insn::linear_ip(r), r.cr4);
        }
    }
    panic!("{scenario} never ran 64-bit code");
}

#[test]
fn record_gdb_on_kvm_long_mode() {
    recorder::require_kvm!();
    let (pc, cr4) = first_long_mode_pc("kvm", "long-mode-toggles");
    assert!(cr4 & 0x20 != 0);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("live.mmurr");
    let (child, port) = start_live(&[
        "record",
        "--scenario",
        "long-mode-toggles",
        "--backend",
        "kvm",
        "-o",
        trace.to_str().unwrap(),
    ]);
    let out = common::run_gdb(
        port,
        &format!(
            "p $cr0
stepi
p $pc
break *{pc:#x}
continue
p $pc
p $cr4
p $efer
x/i $pc
monitor mode
python
try:
    gdb.execute(\"set $rax = 1\")
except gdb.error as e:
    print(\"write refused:\", e)
end
delete
continue"
        ),
    );
    common::expect(&out, "$1 = [ ");
    common::expect(&out, &format!("Breakpoint 1, {pc:#018x} in ?? ()"));
    common::expect(&out, &format!("$3 = (void (*)()) {pc:#x}"));
    common::expect(&out, "PAE");
    common::expect(&out, "LMA");
    common::expect(&out, "paging mode 4-level, 64-bit code");
    // Recording: gdb may look but not change the guest.
    common::expect(&out, "write refused: Could not write register \"rax\"");
    common::expect(&out, "mmurr: the guest's run ended");
    common::expect(&out, "exited with code");
    finish(child);
    // The trace recorded under gdb is complete and replays.
    let t = replayer::Timeline::open(&trace).unwrap();
    assert!(t.last_step() > 0);
}

#[test]
fn run_gdb_on_emu_seed_scenario() {
    let (child, port) = start_live(&["run", "--scenario", "pae-toggle", "--backend", "emu"]);
    let out = common::run_gdb(
        port,
        "monitor break-on transition
continue
continue
continue
p $cr4
monitor role v5.1-rc3
monitor walk 0x400000 v5.1-rc3
monitor disas 2
stepi
hbreak *0x1000
set $rbx = 0x400000
p/x $rbx
monitor break-on clear
continue",
    );
    common::expect(&out, "transition 32-bit -> pae");
    common::expect(&out, "$1 = [ PAE ]");
    common::expect(&out, "STALE: the architecture requires");
    common::expect(&out, "translations DIFFER");
    common::expect(&out, "32-bit code:");
    common::expect(&out, "Hardware assisted breakpoint 1 at 0x1000");
    common::expect(&out, "$2 = 0x400000");
    common::expect(&out, "exited with code");
    finish(child);
}

/// `mmurr run --backend kvm --cpus 2`: the live server drives both vCPUs' round robin; it
/// breaks at AP 1's first CR3 load (0x40000, which only AP 1 writes) and runs to the end.
#[test]
fn run_gdb_on_kvm_two_vcpus() {
    recorder::require_kvm!();
    let (child, port) = start_live(&[
        "run",
        "--scenario",
        "smp-bringup",
        "--cpus",
        "2",
        "--backend",
        "kvm",
    ]);
    let out = common::run_gdb(
        port,
        "monitor break-on cr3
continue
p/x $cr3
monitor break-on clear
continue",
    );
    common::expect(&out, "$1 = 0x40000");
    common::expect(&out, "exited with code");
    assert_eq!(finish(child), 1, "the guest's debug exit 0");
}

/// `smp-bringup` live on four emu vCPUs: the vCPUs are gdb threads with their own registers;
/// `stepi` of AP 2's thread (waiting for its startup IPI) runs the machine in the recorder's
/// round-robin order until AP 2 has retired one instruction, its startup at the vector's page;
/// a breakpoint in the APs' 64-bit code stops on the thread of AP 1, the first to get there,
/// and the v5.1-rc3 divergence catchpoint on AP 2's thread at its CR4.PAE write, while AP 1
/// (long mode, its own PML4) and the BSP (unpaged) keep their own control registers and
/// memory reads go through the selected thread's page tables. `--single-step`: one
/// instruction each, the order this walk-through is written for (in turns of 10 000, AP 2
/// would take its whole seed path inside the `continue` to the breakpoint).
#[test]
fn live_gdb_on_emu_smp_vcpus_are_threads() {
    let (child, port) = start_live(&[
        "run",
        "--scenario",
        "smp-bringup",
        "--cpus",
        "4",
        "--backend",
        "emu",
        "--single-step",
    ]);
    let out = common::run_gdb(
        port,
        "info threads
thread 3
p $pc
stepi
p $pc
monitor when
hbreak *0x32000
continue
p $pc
monitor when
delete
monitor break-on divergence v5.1-rc3
continue
p $cr4
monitor role v5.1-rc3
x/xw 0x400000
thread 2
p/x $cr3
python
try:
    gdb.execute(\"x/xw 0x400000\")
except gdb.error as e:
    print(\"AP 1:\", e)
end
thread 1
p $cr0
monitor break-on clear
continue",
    );
    for t in 1..=4 {
        common::expect(&out, &format!("Thread 1.{t} "));
    }
    // AP 2 waits in its INIT state at F000:FFF0; its one instruction is the startup.
    common::expect(&out, "$1 = (void (*)()) 0xfffffff0");
    let stepped = common::after(&out, "$1 = ");
    common::expect(stepped, "$2 = (void (*)()) 0x30000");
    common::expect(stepped, "the last by vCPU 2 (thread 3)");
    let hit = common::after(stepped, "Hardware assisted breakpoint 1 at 0x32000");
    common::expect(hit, "[Switching to Thread 1.2]");
    common::expect(hit, "$3 = (void (*)()) 0x32000");
    common::expect(hit, "the last by vCPU 1 (thread 2)");
    let caught = common::after(hit, "continue stops at every divergence");
    common::expect(caught, "[Switching to Thread 1.3]");
    common::expect(caught, "$4 = [ PAE ]");
    common::expect(caught, "STALE");
    // Memory through each thread's own page tables: 0x400000 is AP 2's marker page (its PAE
    // tables); AP 1's identity map covers only the first 2 MiB.
    common::expect(caught, "0x400000:\t0x");
    common::expect(caught, "$5 = 0x40000");
    common::expect(caught, "AP 1: Cannot access memory at address 0x400000");
    common::expect(caught, "$6 = [ PE ET ]");
    common::expect(caught, "exited with code");
    finish(child);
}

/// A live write watchpoint on the PTE of the seed scenario's marker page: the CPU's page walk
/// sets its accessed and dirty bits when the guest first writes 0x400000, and the live server
/// stops right after that instruction (the recorder's exact memory of the step).
#[test]
fn run_gdb_on_emu_watchpoint_on_a_pte() {
    let (child, port) = start_live(&["run", "--scenario", "pae-toggle", "--backend", "emu"]);
    let out = common::run_gdb(
        port,
        "watch *(unsigned int *)0x6000
continue
p/x *(unsigned int *)0x6000
monitor when
delete
continue",
    );
    let hit = common::after(&out, "Hardware watchpoint 1: *(unsigned int *)0x6000");
    common::expect(hit, "Old value = 65539");
    common::expect(hit, "New value = 65635");
    common::expect(hit, "$1 = 0x10063");
    common::expect(hit, "live, 23 instructions executed");
    common::expect(hit, "exited with code");
    finish(child);
}

#[test]
fn run_gdb_on_kvm_ctrl_c_stops_a_spinning_guest() {
    recorder::require_kvm!();
    // A real-mode guest that spins forever: `jmp $`.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("spin.bin");
    std::fs::write(&image, [0xeb, 0xfe]).unwrap();
    let spec = format!("{}@0x7c00", image.display());
    let (child, port) = start_live(&["run", "--image", &spec, "--backend", "kvm"]);
    let out = common::run_gdb_interrupting(
        port,
        "continue
p $pc
monitor disas 1
kill",
        // Once gdb has sent the continue packet.
        Some(&|packets: &str| packets.contains("$vCont;c") || packets.contains("$c#")),
    );
    common::expect(&out, "Program received signal SIGINT");
    common::expect(&out, "$1 = (void (*)()) 0x7c00");
    common::expect(&out, "16-bit code:");
    common::expect(&out, "=> 0x7c00:  eb fe");
    finish(child);
}

/// The CR4 writes of a plain recording of `scenario` on `backend`.
fn cr4_writes(backend: &str, scenario: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.mmurr");
    let status = Command::new(binary("mmurr", "mmurr"))
        .args(["record", "--scenario", scenario, "--backend", backend])
        .args(["--quiet", "-o"])
        .arg(&trace)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_some());
    let mut r = traces::Reader::open(&trace).unwrap();
    r.records()
        .filter(|rec| {
            matches!(rec, Ok(traces::Record::Event(e))
                if matches!(&e.kind, traces::EventKind::CrWrite(w) if w.reg == traces::ControlReg::Cr4))
        })
        .count()
}

/// What gdb printed between the `echo <<<` and `echo >>>` markers of the script.
fn marked(out: &str) -> Vec<String> {
    out.split("<<<")
        .skip(1)
        .map(|s| s.split(">>>").next().unwrap_or("").trim().to_string())
        .collect()
}

/// A live session (`mmurr record --gdb`) and a replay of the trace it recorded stop at the
/// same CR4 writes and answer `monitor role`, `check` and `walk` there with the same text:
/// the live server answers from the recorder's own MMU model, not a model of its own.
fn live_and_replay_agree(backend: &str, scenario: &str, walk: u64) {
    let stops = cr4_writes(backend, scenario).min(4);
    assert!(stops > 0, "{scenario} writes CR4");
    let mut script = String::from("monitor break-on cr4\n");
    for _ in 0..stops {
        script += &format!(
            "continue\necho <<<\\n\nmonitor role\nmonitor role v5.1-rc3\nmonitor check\nmonitor walk {walk:#x}\necho >>>\\n\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("live.mmurr");
    let args = [
        "record",
        "--scenario",
        scenario,
        "--backend",
        backend,
        "-o",
        trace.to_str().unwrap(),
    ];
    let (child, port) = start_live(&args);
    let live = common::run_gdb(port, &format!("{script}monitor break-on clear\ncontinue"));
    finish(child);
    let port = common::start_replay_server(&trace);
    let replay = common::run_gdb(port, &script);
    let (live, replay) = (marked(&live), marked(&replay));
    assert_eq!(live.len(), stops, "live stops: {live:#?}");
    for (l, r) in live.iter().zip(&replay) {
        assert!(l.contains("at step "), "{l}");
        assert_eq!(l, r, "live and replay answer differently");
    }
    assert_eq!(live.len(), replay.len());
}

#[test]
fn live_and_replay_agree_on_kvm() {
    recorder::require_kvm!();
    live_and_replay_agree("kvm", "long-mode-toggles", 0x1000);
}

#[test]
fn live_and_replay_agree_on_emu() {
    live_and_replay_agree("emu", "pae-toggle", 0x400000);
}
