//! `mmurr record`, `mmurr scenarios` and `mmurr demo` as a user runs them.

mod common;
use common::{mmurr, text};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use recorder::require_kvm;
use recorder::test_support::kvm_unusable;

#[test]
fn scenarios_json_lists_every_scenario_with_its_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(&["scenarios", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    let names: Vec<&str> = list
        .iter()
        .filter(|s| s["kind"] == "guest")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, guests::scenario_names());
    assert_eq!(
        entries_of(list, "pae-toggle"),
        ["seed", "#10", "#11", "#23"]
    );
    // The model-level scenarios follow, each with the history entries it reproduces.
    let models: Vec<&serde_json::Value> = list.iter().filter(|s| s["kind"] == "model").collect();
    assert_eq!(models.len(), guests::model::scripts::ALL.len());
    for m in models {
        // Those that run no L2 are guests too, on emu at least.
        let runs_on = if m["guest"] == true {
            assert!(m["guest_reason"].is_null(), "{m}");
            m["runs_on"].as_array().unwrap().len() >= 2
        } else {
            assert!(m["guest_reason"].as_str().unwrap().contains("L2"), "{m}");
            m["runs_on"] == serde_json::json!(["model"])
        };
        assert!(runs_on, "{m}");
        assert!(!m["entries"].as_array().unwrap().is_empty(), "{m}");
        assert!(m["policies_showing"].is_object(), "{m}");
    }
    let pae = list.iter().find(|s| s["name"] == "pae-toggle").unwrap();
    assert!(pae["needs"].as_array().unwrap().iter().any(|m| m == "pae"));
    if !pae["kvm_here"].as_bool().unwrap() {
        assert_eq!(pae["backend_auto"], "emu");
        assert!(pae["kvm_reason"].as_str().unwrap().contains("paging"));
    }
}

fn entries_of<'a>(list: &'a [serde_json::Value], name: &str) -> Vec<&'a str> {
    list.iter().find(|s| s["name"] == name).unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect()
}

#[test]
fn record_a_scenario_exits_with_the_debug_exit_code() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(
        &[
            "record",
            "--scenario",
            "cr3-switch",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    // Status 0 through port 0xf4 is exit code (0 << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("debug-exit"), "{err}");
    let info = mmurr(&["info", "--json", "t.mmurr"], dir.path());
    assert!(info.status.success(), "{}", text(&info.stderr));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["scenario"], "cr3-switch", "{v}");
}

#[test]
fn a_raw_long_mode_image_prints_and_exits() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // mov dx,0x3f8; mov al,'h'; out dx,al; mov al,'i'; out dx,al; mov al,0x10; out 0xf4,al
    let code = [
        0x66, 0xba, 0xf8, 0x03, 0xb0, b'h', 0xee, 0xb0, b'i', 0xee, 0xb0, 0x10, 0xe6, 0xf4,
    ];
    std::fs::write(dir.path().join("hi.bin"), code).unwrap();
    let out = mmurr(
        &[
            "record",
            "--image",
            "hi.bin@0x100000",
            "--entry-mode",
            "long",
            "--memory",
            "8",
            "--backend",
            "auto",
            "-q",
            "-o",
            "hi.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some((0x10 << 1) | 1),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hi");
    assert!(
        text(&out.stderr).contains("backend kvm"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pae_on_a_pvm_host_says_what_to_do_and_keeps_the_trace() {
    require_kvm!();
    if !Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("SKIP: not a PVM host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(
        &[
            "record",
            "--scenario",
            "pae-toggle",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "p.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(4), "host-unsupported");
    let err = text(&out.stderr);
    assert!(
        err.contains("host-unsupported") && err.contains("--backend emu"),
        "{err}"
    );
    let info = mmurr(&["info", "p.mmurr"], dir.path());
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(text(&info.stdout).contains("host-unsupported"));
}

#[test]
fn bad_guest_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(
        &["record", "--scenario", "no-such", "-o", "x.mmurr"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no built-in scenario"),
        "{}",
        text(&out.stderr)
    );
    let out = mmurr(
        &["record", "--image", "missing.bin", "-o", "x.mmurr"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("FILE@ADDR"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_multiboot_hello_kernel_prints_and_exits_0x21() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let elf = guests::test_kernels::build_hello().expect("build the hello kernel (needs binutils)");
    std::fs::write(dir.path().join("hello.elf"), elf).unwrap();
    let out = mmurr(
        &[
            "record",
            "--kernel",
            "hello.elf",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "h.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some((0x10 << 1) | 1),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), guests::test_kernels::HELLO_OUTPUT);
}

#[test]
fn sigint_finishes_the_trace_and_exits_130() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // mov dx,0x3f8; mov al,'g'; out dx,al; mov al,'\n'; out dx,al; spin: inc rcx; jmp spin
    // The line on the serial port says the step loop runs, with the signal handler installed.
    let code = [
        0x66, 0xba, 0xf8, 0x03, 0xb0, b'g', 0xee, 0xb0, b'\n', 0xee, 0x48, 0xff, 0xc1, 0xeb, 0xfb,
    ];
    std::fs::write(dir.path().join("spin.bin"), code).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args([
            "record",
            "--image",
            "spin.bin@0x100000",
            "--entry-mode",
            "long",
            "--memory",
            "8",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "spin.mmurr",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "g\n", "the guest's first line");
    // SAFETY: kill(2) on our own child's pid with SIGINT has no memory-safety preconditions.
    let rc = unsafe { libc_kill(child.id() as i32, 2) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    let info = mmurr(&["info", "--json", "spin.mmurr"], dir.path());
    assert!(info.status.success(), "{}", text(&info.stderr));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["end"]["reason"], "interrupted", "{v}");
    assert_eq!(v["end"]["exit_code"], 130, "{v}");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn demo_shows_the_seed_bug_at_the_cr4_pae_write() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    let pvm = Path::new("/sys/module/kvm_pvm").exists() || kvm_unusable().is_some();
    if pvm && !emu.exists() {
        eprintln!(
            "SKIP: pae-toggle needs the emu backend here and {} is not built",
            emu.display()
        );
        return;
    }
    let out = mmurr(&["demo", "--no-tui", "-o", "demo.mmurr"], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("verdicts at the CR4.PAE write"), "{stdout}");
    let line = |policy: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(policy) && !l.contains("FINDING"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("v5.1-rc3").contains("skipped: role unchanged"),
        "{stdout}"
    );
    assert!(line("v5.1 ").contains("reinit"), "{stdout}");
    assert!(
        stdout.contains("v5.1-rc3       FINDING stale-context"),
        "{stdout}"
    );
}

#[test]
fn scenarios_text_names_each_model_scenarios_flavour() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(&["scenarios"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for (name, build) in guests::model::scripts::ALL {
        let script = build();
        let at = s
            .find(&format!("{name} "))
            .unwrap_or_else(|| panic!("{name}: {s}"));
        let line = s[at..].lines().nth(1).unwrap();
        assert!(
            line.contains(&format!("flavour {};", script.flavour.name())),
            "{name}: {line}"
        );
    }
    assert!(s.contains("shadow-ept, nested-walker"), "{s}");
}
