//! The guest and record flags have one definition (crate mmurr-flags): every flag `mmurr
//! record` accepts (except --backend, which picks the child) is one `mmurr-emu record`
//! understands, and `mmurr record --backend emu` hands each one to the child with its value.

mod common;

use common::{emu_executable, mmurr, text};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The long flags a `--help` text lists.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .filter(|r| !r.starts_with('-'))
                .map_or(l, |r| r.split_once(", ").map_or(l, |(_, rest)| rest));
            let flag = l.strip_prefix("--")?;
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn help_of(exe: &Path, dir: &Path) -> BTreeSet<String> {
    let out = Command::new(exe)
        .args(["record", "--help"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    long_flags(&text(&out.stdout))
}

#[test]
fn every_mmurr_record_flag_is_one_mmurr_emu_understands() {
    let dir = tempfile::tempdir().unwrap();
    let ours = help_of(Path::new(env!("CARGO_BIN_EXE_mmurr")), dir.path());
    let emu = help_of(&emu_executable(), dir.path());
    assert!(
        ours.contains("max-steps") && ours.contains("scenario"),
        "{ours:?}"
    );
    let missing: Vec<&String> = ours
        .iter()
        .filter(|f| *f != "backend" && !emu.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "`mmurr record --backend emu` accepts {missing:?}, which `mmurr-emu record` does not understand"
    );
}

/// Every flag of `mmurr record --help` that is not a choice of guest or of gdb session, given a
/// value other than its default, reaches the child: it records, and its own command line (the
/// trace header's) carries the flag with that value.
#[test]
fn record_backend_emu_passes_every_flag_to_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let ours = help_of(Path::new(env!("CARGO_BIN_EXE_mmurr")), dir.path());
    // Flags that choose the guest, or need a gdb client: exercised by their own tests.
    let elsewhere = [
        "kernel",
        "append",
        "initrd",
        "image",
        "entry",
        "entry-mode",
        "guest-from",
        "firmware",
        "gdb",
        "allow-remote",
        "help",
        "backend",
        // The host's KVM events: kvm only (tests/cli_host.rs); its opposite is given below.
        "host-events",
        // The replayer's re-execution of runs passes it (mmurr-emu/tests/runs.rs); it
        // conflicts with --single-step, given below.
        "single-step-from",
    ];
    let given: &[(&str, Option<&str>)] = &[
        ("scenario", Some("cr3-switch")),
        ("memory", Some("32")),
        ("policy", Some("v6.14")),
        ("flavour", Some("shadow")),
        ("output", Some("flags.mmurr")),
        ("max-steps", Some("100000")),
        ("timeout", Some("300")),
        ("serial-log", Some("serial.log")),
        ("quiet", None),
        ("no-host-events", None),
        ("single-step", None),
        // The APs of cr3-switch are never started: they wait for a startup IPI throughout.
        ("cpus", Some("2")),
        // EFER is 0 in real mode already: KVM_SET_MSRS writes it unchanged.
        ("host-action", Some("step=1:efer=0x0")),
    ];
    let untested: Vec<&String> = ours
        .iter()
        .filter(|f| !elsewhere.contains(&f.as_str()) && !given.iter().any(|(g, _)| g == f))
        .collect();
    assert!(
        untested.is_empty(),
        "`mmurr record` has flags {untested:?} this test does not pass to the emu child: add them"
    );
    let mut argv = vec!["record".to_string(), "--backend".into(), "emu".into()];
    for (flag, value) in given {
        argv.push(format!("--{flag}"));
        argv.extend(value.map(str::to_string));
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = mmurr(&argv, dir.path());
    // The scenario ends with debug-exit status 0: exit code (0 << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let info = mmurr(&["info", "--json", "flags.mmurr"], dir.path());
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let child: Vec<String> = info["command_line"]
        .as_array()
        .expect("command_line")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(child[0].ends_with("mmurr-emu"), "{child:?}");
    for (flag, value) in given {
        let at = child
            .iter()
            .position(|a| *a == format!("--{flag}"))
            .unwrap_or_else(|| panic!("--{flag} did not reach mmurr-emu: {child:?}"));
        if let Some(v) = value {
            let got = child.get(at + 1).map(String::as_str).unwrap_or("");
            // `300` may come back as `300.0`: the same number.
            let same = got == *v
                || matches!((got.parse::<f64>(), v.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
            assert!(same, "--{flag} {v} reached mmurr-emu as {got:?}: {child:?}");
        }
    }
    assert_eq!(info["policies"], serde_json::json!(["v6.14"]), "{info}");
    assert_eq!(info["mmu_flavour"], "shadow", "{info}");
    assert!(dir.path().join("serial.log").exists());
}
