//! Real guests from Debian packages (scripts/corpus.sh fetches them into a cache outside the
//! repository): the linux-image-cloud-amd64 kernel with a busybox initramfs, and SeaBIOS.
//! Each is recorded as a user would, asserting what a user checks: the console output so far,
//! the CR/EFER writes and paging-mode transitions this guest makes, `check --policy v6.14`,
//! the self-check, and `verify`. Linux on emu boots to its initramfs, and on two vCPUs until
//! it brought up the second; the other recordings are bounded by --max-steps (README: how far
//! each gets).
//!
//! Without the corpus these tests print SKIP; with MMURR_REQUIRE_CORPUS=1 (scripts/test.sh
//! sets it after fetching) they fail instead.

mod common;

use common::{mmurr, text};
use recorder::require_kvm;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The corpus directory with `files` in it, or `None` after a SKIP line.
fn corpus(files: &[&str]) -> Option<PathBuf> {
    let dir = std::env::var_os("MMURR_CORPUS")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
            Some(cache.join("mmurr").join("corpus"))
        })?;
    let missing: Vec<&&str> = files.iter().filter(|f| !dir.join(f).is_file()).collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "the corpus has no {missing:?} in {} (run scripts/corpus.sh)",
        dir.display()
    );
    if std::env::var_os("MMURR_REQUIRE_CORPUS").is_some_and(|v| v == "1") {
        panic!("MMURR_REQUIRE_CORPUS=1 but {why}");
    }
    eprintln!("SKIP: {why}");
    None
}

const LINUX_APPEND: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr";

fn record_linux(c: &Path, dir: &Path, backend: &str, steps: u64, out: &str) -> Output {
    record_linux_on(c, dir, backend, 1, steps, out)
}

/// The corpus kernel on `cpus` vCPUs.
fn record_linux_on(
    c: &Path,
    dir: &Path,
    backend: &str,
    cpus: u32,
    steps: u64,
    out: &str,
) -> Output {
    let kernel = c.join("vmlinuz");
    let initrd = c.join("initramfs.cpio.gz");
    let (steps, cpus) = (steps.to_string(), cpus.to_string());
    mmurr(
        &[
            "record",
            "--backend",
            backend,
            "--cpus",
            &cpus,
            "-q",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--append",
            LINUX_APPEND,
            "--memory",
            "256",
            "--max-steps",
            &steps,
            "--serial-log",
            &format!("{out}.serial"),
            "-o",
            out,
        ],
        dir,
    )
}

/// The trace's CR/EFER writes and transitions, as `export` gives them.
fn mode_events(dir: &Path, trace: &str) -> Vec<Value> {
    let out = mmurr(&["export", trace], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            matches!(
                e["kind"].as_str(),
                Some("cr0" | "cr3" | "cr4" | "efer" | "transition")
            )
        })
        .collect()
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Index of the first event at or after `from` that `pred` accepts, or a panic naming `what`.
fn find(events: &[Value], from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events[from..]
        .iter()
        .position(pred)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no {what} after event {from}: {events:#?}"))
}

/// startup_32 of the compressed kernel (arch/x86/boot/compressed/head_64.S): CR4.PAE, a CR3
/// load, EFER.LME, then CR0.PG (with PE) into 4-level paging — in that order.
fn assert_linux_enters_long_mode(events: &[Value]) -> usize {
    let pae = find(events, 0, "CR4.PAE set", |e| {
        e["kind"] == "cr4" && hex(&e["new"]) & 0x20 != 0 && hex(&e["old"]) & 0x20 == 0
    });
    let cr3 = find(events, pae, "CR3 load", |e| e["kind"] == "cr3");
    let lme = find(events, cr3, "EFER.LME set", |e| {
        e["kind"] == "efer" && hex(&e["new"]) & 0x100 != 0
    });
    let pg = find(events, lme, "CR0.PG set", |e| {
        e["kind"] == "cr0" && hex(&e["new"]) & 0x8000_0001 == 0x8000_0001
    });
    assert_eq!(events[pg + 1]["kind"], "transition", "{events:#?}");
    assert_eq!(events[pg + 1]["from"], "unpaged");
    assert_eq!(events[pg + 1]["to"], "4-level");
    for e in events {
        assert!(!e["faulted"].as_bool().unwrap_or(false), "{e}");
    }
    pg + 1
}

fn info(dir: &Path, trace: &str) -> Value {
    let out = mmurr(&["info", "--json", trace], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_checks_and_self_checks(dir: &Path, trace: &str) {
    let check = mmurr(&["check", "--policy", "v6.14", trace], dir);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let i = info(dir, trace);
    assert_eq!(
        i["end"]["self_check_failures"],
        serde_json::json!([]),
        "{i}"
    );
}

fn assert_verifies(dir: &Path, trace: &str) {
    let v = mmurr(&["verify", "--backend", "emu", trace], dir);
    let out = text(&v.stdout) + &text(&v.stderr);
    assert!(v.status.success(), "{out}");
    assert!(out.contains("reproduced"), "{out}");
}

/// The Debian kernel on emu, through the boot protocol's 32-bit entry into long mode: the
/// first 40 000 steps hold every mode switch of the decompressor's start-up (on emu's CPU,
/// which offers LA57, it then goes through paging off into 5-level paging) and end inside the
/// `rep movsq` that moves the kernel, which `verify` must reproduce up to the same iteration.
#[test]
fn linux_enters_long_mode_on_emu_and_the_trace_verifies() {
    let Some(c) = corpus(&["vmlinuz", "initramfs.cpio.gz"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = record_linux(&c, dir.path(), "emu", 40_000, "linux.mmurr");
    // The step budget ends it: exit code 12.
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    let events = mode_events(dir.path(), "linux.mmurr");
    let long = assert_linux_enters_long_mode(&events);
    // Then into 5-level paging through the 32-bit trampoline (head_64.S,
    // trampoline_32bit_src): paging off, CR4.LA57 set, paging on.
    let off = find(&events, long, "paging turned off", |e| {
        e["kind"] == "transition" && e["to"] == "unpaged"
    });
    let la57 = find(&events, off, "CR4.LA57 set", |e| {
        e["kind"] == "cr4" && hex(&e["new"]) & (1 << 12) != 0
    });
    find(&events, la57, "5-level paging", |e| {
        e["kind"] == "transition" && e["to"] == "5-level"
    });
    assert_checks_and_self_checks(dir.path(), "linux.mmurr");
    assert_verifies(dir.path(), "linux.mmurr");
}

/// The whole boot on emu (recorded in runs, emu's default), once, with every assert on that
/// one trace: the decompressor's start-up into long mode (as above), then the kernel proper
/// (arch/x86/kernel/head_64.S and the memory-management start-up) toggling CR4.PGE to flush
/// global translations and loading CR3 as it switches page tables; the initramfs's `/init`
/// prints its marker on ttyS0 and runs `poweroff -f`, which without ACPI (no firmware) halts
/// with interrupts off: mmurr ends that as `halted`, exit 0.
#[test]
fn linux_boots_to_its_initramfs_on_emu() {
    let Some(c) = corpus(&["vmlinuz", "initramfs.cpio.gz"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = record_linux(&c, dir.path(), "emu", 4_000_000_000, "boot.mmurr");
    let serial = std::fs::read_to_string(dir.path().join("boot.mmurr.serial")).unwrap();
    let tail = &serial[serial.len().saturating_sub(3000)..];
    assert!(
        serial.contains("KASLR disabled: 'nokaslr' on cmdline."),
        "{tail}"
    );
    assert!(serial.contains("Run /init as init process"), "{tail}");
    assert!(serial.contains("MMURR-INITRAMFS-OK"), "{tail}");
    assert!(serial.contains("reboot: System halted"), "{tail}");
    assert_eq!(out.status.code(), Some(0), "{}\n{tail}", text(&out.stderr));
    let events = mode_events(dir.path(), "boot.mmurr");
    let long = assert_linux_enters_long_mode(&events);
    let pge = |e: &Value| e["kind"] == "cr4" && hex(&e["new"]) & 0x80 != 0;
    let pge_on = find(&events, long, "CR4.PGE set", |e| {
        pge(e) && hex(&e["old"]) & 0x80 == 0
    });
    let pge_off = find(&events, pge_on, "CR4.PGE cleared (a global flush)", |e| {
        e["kind"] == "cr4" && hex(&e["old"]) & 0x80 != 0 && hex(&e["new"]) & 0x80 == 0
    });
    find(&events, pge_off, "CR4.PGE set again", |e| {
        pge(e) && hex(&e["old"]) & 0x80 == 0
    });
    let cr3_loads = events[long..].iter().filter(|e| e["kind"] == "cr3").count();
    assert!(cr3_loads >= 100, "{cr3_loads} CR3 loads after long mode");
    assert_checks_and_self_checks(dir.path(), "boot.mmurr");
    let steps = info(dir.path(), "boot.mmurr")["steps"].as_u64().unwrap();
    assert_gdb_steps_back_inside_the_kernel(dir.path(), "boot.mmurr", steps / 2 + 12_345);
}

/// Steps of the two-vCPU boot by which the kernel has brought up CPU 1 and printed the count:
/// the step of that line's last byte in the recording measured for the README (CPU 1's
/// startup IPI came at step 256 380 001), plus 5 %. Recording on emu is deterministic.
const SMP_BROUGHT_UP_STEPS: u64 = SMP_BROUGHT_UP_MEASURED + SMP_BROUGHT_UP_MEASURED / 20;
const SMP_BROUGHT_UP_MEASURED: u64 = 268_756_403;

/// Two vCPUs on emu (in turns, the default runs): the kernel reads the MADT, the BSP starts
/// CPU 1 with INIT-SIPI-SIPI, and CPU 1 climbs from real mode through the real-mode trampoline
/// (arch/x86/realmode/rm/trampoline_64.S) into long mode on its own: CR0.PE, then CR4.PAE,
/// EFER.LME and CR0.PG, each an event of vCPU 1. `check` models each vCPU's MMU. The
/// recording stops after the kernel printed the count (the whole boot is the one-vCPU test's).
#[test]
fn linux_brings_up_two_cpus_on_emu() {
    let Some(c) = corpus(&["vmlinuz", "initramfs.cpio.gz"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = record_linux_on(&c, dir.path(), "emu", 2, SMP_BROUGHT_UP_STEPS, "smp.mmurr");
    let serial = std::fs::read_to_string(dir.path().join("smp.mmurr.serial")).unwrap();
    let tail = &serial[serial.len().saturating_sub(3000)..];
    assert_eq!(out.status.code(), Some(12), "{}\n{tail}", text(&out.stderr));
    assert!(
        serial.contains("ACPI: Using ACPI (MADT) for SMP configuration information"),
        "{tail}"
    );
    assert!(serial.contains("smpboot: Allowing 2 CPUs"), "{tail}");
    assert!(serial.contains("smp: Brought up 1 node, 2 CPUs"), "{tail}");

    let export = mmurr(&["export", "smp.mmurr"], dir.path());
    assert!(export.status.success(), "{}", text(&export.stderr));
    let events: Vec<Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let startup = find(&events, 0, "startup of vCPU 1", |e| {
        e["kind"] == "startup" && e["vcpu"] == 1
    });
    let ap: Vec<Value> = events[startup..]
        .iter()
        .filter(|e| {
            e["vcpu"] == 1
                && matches!(
                    e["kind"].as_str(),
                    Some("cr0" | "cr3" | "cr4" | "efer" | "transition")
                )
        })
        .cloned()
        .collect();
    let pe = find(&ap, 0, "vCPU 1 leaving real mode", |e| {
        e["kind"] == "transition" && e["from"] == "real" && e["to"] == "unpaged"
    });
    let pae = find(&ap, pe, "CR4.PAE on vCPU 1", |e| {
        e["kind"] == "cr4" && hex(&e["new"]) & 0x20 != 0
    });
    let lme = find(&ap, pae, "EFER.LME on vCPU 1", |e| {
        e["kind"] == "efer" && hex(&e["new"]) & 0x100 != 0
    });
    let pg = find(&ap, lme, "CR0.PG on vCPU 1", |e| {
        e["kind"] == "cr0" && hex(&e["new"]) & 0x8000_0001 == 0x8000_0001
    });
    // Into the BSP's paging mode (5-level: emu's CPU offers LA57, and the trampoline takes
    // the BSP's CR4).
    let long = find(&ap, pg, "vCPU 1 in long mode", |e| {
        e["kind"] == "transition" && matches!(e["to"].as_str(), Some("4-level" | "5-level"))
    });
    assert!(
        ap[..long]
            .iter()
            .all(|e| !e["faulted"].as_bool().unwrap_or(false)),
        "{ap:#?}"
    );

    assert_checks_and_self_checks(dir.path(), "smp.mmurr");
    let check = mmurr(
        &["check", "--policy", "v6.14", "--json", "smp.mmurr"],
        dir.path(),
    );
    let report: Value = serde_json::from_slice(&check.stdout).unwrap();
    let vcpus = report["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 2, "{report:#}");
    assert!(vcpus[1]["writes"].as_u64().unwrap() >= 4, "{report:#}");
}

/// `mmurr gdb` on a recording in runs: seek to `step` (deep in the kernel proper, inside a
/// run that only re-execution on mmurr-emu can rebuild), step back, step forward again: gdb
/// stays connected, the steps are the ones asked for, and forward after back is where it was.
fn assert_gdb_steps_back_inside_the_kernel(dir: &Path, trace: &str, step: u64) {
    let seek = format!("mmurr seek {step}");
    let out = mmurr(
        &[
            "gdb",
            trace,
            "--",
            "-batch",
            "-ex",
            &seek,
            "-ex",
            "p/x $pc",
            "-ex",
            "mmurr when",
            "-ex",
            "reverse-stepi",
            "-ex",
            "p/x $pc",
            "-ex",
            "mmurr when",
            "-ex",
            "stepi",
            "-ex",
            "p/x $pc",
        ],
        dir,
    );
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    let pc = |n: usize| -> u64 {
        let v = all
            .split(&format!("${n} = 0x"))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no ${n} in {all}"));
        u64::from_str_radix(v, 16).unwrap()
    };
    assert!(pc(1) >= 0xffff_ffff_8000_0000, "not in the kernel: {all}");
    assert!(all.contains(&format!("step {step} of ")), "{all}");
    assert!(all.contains(&format!("step {} of ", step - 1)), "{all}");
    assert_eq!(pc(3), pc(1), "{all}");
    assert_browser_stands_at(&dir.join(trace), step, pc(1));
}

/// The trace browser (`mmurr replay`), through ratatui's test backend: `:` to `step` (inside a
/// run), and the registers and disassembly panels show the instruction gdb showed there.
fn assert_browser_stands_at(trace: &Path, step: u64, pc: u64) {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{backend::TestBackend, Terminal};
    let key = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
    let mut app = tui::app::App::open(trace).unwrap();
    app.on_key(key(KeyCode::Char(':')));
    for c in step.to_string().chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    let (w, h) = (200, 60);
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| tui::ui::draw(f, &app)).unwrap();
    let buf = t.backend().buffer().clone();
    let screen: String = (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect();
    assert!(screen.contains(&format!("step {step}/")), "{screen}");
    assert!(screen.contains(&format!("rip {pc:#x}")), "{screen}");
    assert!(screen.contains(&format!("▶{pc:x}")), "{screen}");
}

/// The same kernel and boot parameters on kvm: this host runs protected mode and the switch
/// into long mode, so it records the same start-up (without LA57, which this host's CPUID
/// does not offer).
#[test]
fn linux_enters_long_mode_on_kvm() {
    require_kvm!();
    let Some(c) = corpus(&["vmlinuz", "initramfs.cpio.gz"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = record_linux(&c, dir.path(), "kvm", 30_000, "linux.mmurr");
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    assert_linux_enters_long_mode(&mode_events(dir.path(), "linux.mmurr"));
    assert_checks_and_self_checks(dir.path(), "linux.mmurr");
}

fn record_seabios(c: &Path, dir: &Path, backend: &str) -> Output {
    let rom = c.join("bios.bin");
    mmurr(
        &[
            "record",
            "--backend",
            backend,
            "-q",
            "--firmware",
            rom.to_str().unwrap(),
            // "No bootable device." comes at step 6 051 483 (virtual time: always there).
            "--max-steps",
            "6100000",
            "--serial-log",
            "bios.log",
            "-o",
            "bios.mmurr",
        ],
        dir,
    )
}

/// SeaBIOS from its reset vector: real mode into 32-bit protected mode and back (it calls
/// 16-bit code from its 32-bit POST), its banner and POST log on the debug port 0x402, fw_cfg
/// found, the PCI bus probed, the boot devices tried, and "No bootable device", as under QEMU.
#[test]
fn seabios_posts_on_emu_and_the_trace_verifies() {
    let Some(c) = corpus(&["bios.bin"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = record_seabios(&c, dir.path(), "emu");
    let log = std::fs::read_to_string(dir.path().join("bios.log")).unwrap_or_default();
    assert!(
        log.starts_with("SeaBIOS (version 1.16.2-debian-1.16.2-1)\n"),
        "{log:?}\n{}",
        text(&out.stderr)
    );
    assert!(log.contains("Found QEMU fw_cfg\n"), "{log:?}");
    let events = mode_events(dir.path(), "bios.mmurr");
    let pe = find(&events, 0, "CR0.PE set", |e| {
        e["kind"] == "cr0" && hex(&e["new"]) & 1 == 1 && hex(&e["old"]) & 1 == 0
    });
    assert_eq!(events[pe + 1]["from"], "real", "{events:#?}");
    assert_eq!(events[pe + 1]["to"], "unpaged", "{events:#?}");
    let back = find(&events, pe, "CR0.PE cleared", |e| {
        e["kind"] == "transition" && e["from"] == "unpaged" && e["to"] == "real"
    });
    find(&events, back, "CR0.PE set again", |e| {
        e["kind"] == "transition" && e["from"] == "real" && e["to"] == "unpaged"
    });
    assert!(log.contains("=== PCI bus & bridge init ===\n"), "{log:?}");
    assert!(log.contains("Booting from Hard Disk..."), "{log:?}");
    assert!(
        log.contains("No bootable device.  Retrying in 60 seconds."),
        "{log:?}"
    );
    assert_checks_and_self_checks(dir.path(), "bios.mmurr");
    assert_verifies(dir.path(), "bios.mmurr");
}

/// On kvm the ROM below 4 GiB is a read-only memory slot: SeaBIOS starts at its reset vector
/// and POSTs (the first 300 000 instructions: its banner, KVM detected, the PCI bus probed), the
/// trace checks and self-checks clean, and kvm re-executes it.
#[test]
fn seabios_posts_on_kvm_from_a_read_only_slot() {
    require_kvm!();
    let Some(c) = corpus(&["bios.bin"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rom = c.join("bios.bin");
    let out = mmurr(
        &[
            "record",
            "--backend",
            "kvm",
            "-q",
            "--firmware",
            rom.to_str().unwrap(),
            "--max-steps",
            "300000",
            "--serial-log",
            "bios.log",
            "-o",
            "bios.mmurr",
        ],
        dir.path(),
    );
    let log = std::fs::read_to_string(dir.path().join("bios.log")).unwrap_or_default();
    assert!(
        log.starts_with("SeaBIOS (version 1.16.2-debian-1.16.2-1)\n"),
        "{log:?}\n{}",
        text(&out.stderr)
    );
    for line in ["Running on KVM\n", "=== PCI bus & bridge init ===\n"] {
        assert!(log.contains(line), "{line:?} missing: {log:?}");
    }
    assert_checks_and_self_checks(dir.path(), "bios.mmurr");
    // Without KVM's paravirtual clock in its CPUID, nothing but recorded inputs changes the
    // guest: kvm re-executes it.
    let v = mmurr(&["verify", "--backend", "kvm", "bios.mmurr"], dir.path());
    let out = text(&v.stdout);
    assert!(v.status.success(), "{out}{}", text(&v.stderr));
    assert!(out.contains("reproduced: all"), "{out}");
}
