//! KVM against the reference emulator: every built-in scenario this host's KVM runs is
//! recorded on kvm, then `mmurr verify --backend emu` re-executes it on Unicorn and must find
//! the two recordings equal instruction by instruction (registers, memory written, CR writes,
//! transitions, every policy's MMU decision). The emu run presents the KVM guest's CPUID.

mod common;

use common::{emu_executable, run, text};
use std::path::{Path, PathBuf};
use traces::Reader;

/// Records `scenario` on `backend` into `out`; the trace must exist afterwards.
fn record(mmurr: &Path, scenario: &str, backend: &str, out: &str, dir: &Path) {
    let rec = run(
        mmurr,
        &[
            "record",
            "--scenario",
            scenario,
            "--backend",
            backend,
            "-q",
            "-o",
            out,
        ],
        dir,
    );
    assert!(
        dir.join(out).exists(),
        "{scenario}: recording on {backend} failed: {}",
        text(&rec.stderr)
    );
}

/// The scenarios `mmurr scenarios` says this host's KVM runs.
fn kvm_scenarios(mmurr: &Path, dir: &Path) -> Vec<String> {
    let out = run(mmurr, &["scenarios"], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let mut names = Vec::new();
    let mut current = None;
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            current = line.split_whitespace().next().map(str::to_string);
        } else if line.contains("kvm here: yes") {
            names.extend(current.take());
        }
    }
    names
}

#[test]
fn every_scenario_kvm_runs_reproduces_on_emu_and_on_kvm() {
    // `mmurr verify --backend emu` runs it: missing, this test fails rather than skips.
    emu_executable();
    recorder::require_kvm!();
    let mmurr = PathBuf::from(env!("CARGO_BIN_EXE_mmurr"));
    let dir = tempfile::tempdir().unwrap();
    let scenarios = kvm_scenarios(&mmurr, dir.path());
    assert!(
        !scenarios.is_empty(),
        "`mmurr scenarios` lists none that KVM runs here although /dev/kvm is usable"
    );
    let mut failures = Vec::new();
    for s in &scenarios {
        let trace = format!("{s}.kvm.mmurr");
        record(&mmurr, s, "kvm", &trace, dir.path());
        for backend in ["emu", "kvm"] {
            let out = run(
                &mmurr,
                &["verify", &trace, "--backend", backend],
                dir.path(),
            );
            let stdout = text(&out.stdout);
            if out.status.code() != Some(0) || !stdout.contains("reproduced: all") {
                failures.push(format!(
                    "{s} on {backend}: exit {:?}\n{stdout}\n{}",
                    out.status.code(),
                    text(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_emu_rerun_presents_the_kvm_guests_cpuid() {
    let emu = emu_executable();
    recorder::require_kvm!();
    let mmurr = PathBuf::from(env!("CARGO_BIN_EXE_mmurr"));
    let dir = tempfile::tempdir().unwrap();
    let rec = run(
        &mmurr,
        &[
            "record",
            "--scenario",
            "long-mode-toggles",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "k.mmurr",
        ],
        dir.path(),
    );
    assert!(dir.path().join("k.mmurr").exists(), "{}", text(&rec.stderr));
    let out = run(
        &emu,
        &[
            "record",
            "--guest-from",
            "k.mmurr",
            "--output",
            "e.mmurr",
            "--quiet",
        ],
        dir.path(),
    );
    assert!(dir.path().join("e.mmurr").exists(), "{}", text(&out.stderr));
    let k = Reader::open(dir.path().join("k.mmurr")).unwrap();
    let e = Reader::open(dir.path().join("e.mmurr")).unwrap();
    let (k, e) = (k.header(), e.header());
    assert!(!k.guest.cpuid.is_empty());
    assert_eq!(e.guest.cpuid, k.guest.cpuid);
    assert_eq!(e.guest.maxphyaddr, k.guest.maxphyaddr);
    assert_eq!(e.scenario.as_deref(), Some("long-mode-toggles"));
    assert_eq!(e.guest.entry, k.guest.entry);
    assert_eq!(e.guest.ram_size, k.guest.ram_size);
}

/// `mmurr diff` of a kvm and an emu recording of the same scenario: the emu run presents
/// Unicorn's CPU, so the MMU model's role words differ from the first decision on; with
/// `--guest-only` the two recordings agree on everything the guest did, and the machine
/// differences are named first. (long-mode-entry, because it does not read CPUID: the
/// scenarios that do legitimately take other paths on another CPU.)
#[test]
fn guest_only_diff_of_kvm_and_emu_recordings_agrees() {
    emu_executable();
    recorder::require_kvm!();
    let mmurr = PathBuf::from(env!("CARGO_BIN_EXE_mmurr"));
    let dir = tempfile::tempdir().unwrap();
    for backend in ["kvm", "emu"] {
        record(
            &mmurr,
            "long-mode-entry",
            backend,
            &format!("{backend}.mmurr"),
            dir.path(),
        );
    }
    let full = run(&mmurr, &["diff", "kvm.mmurr", "emu.mmurr"], dir.path());
    let full_out = text(&full.stdout);
    let guest = run(
        &mmurr,
        &["diff", "--guest-only", "kvm.mmurr", "emu.mmurr"],
        dir.path(),
    );
    let stdout = text(&guest.stdout);
    assert_eq!(
        guest.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&guest.stderr)
    );
    assert!(stdout.contains("equal: "), "{stdout}");
    let machines = stdout
        .find("the machines differ")
        .expect("the machine differences are named");
    assert!(machines < stdout.find("equal: ").unwrap(), "{stdout}");
    assert!(stdout.contains("engine: kvm"), "{stdout}");
    if full.status.code() == Some(1) {
        // The model's inputs differ on this host: the full diff stops at a decision.
        assert!(full_out.contains("cpu_role"), "{full_out}");
        assert!(full_out.contains("--guest-only"), "{full_out}");
    } else {
        eprintln!("note: kvm's and emu's CPU models agree here; the full diff agrees too");
    }
}
