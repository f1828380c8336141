//! The done-means of several vCPUs on the command line: `mmurr record --scenario smp-bringup
//! --cpus 4 --backend emu` records four vCPUs, and `mmurr check` finds the seed bug's stale
//! context on AP 2 only, under v5.1-rc3 only; on kvm, 2 vCPUs give emu's per-vCPU events and
//! 4 end where AP 2 enters the 32-bit paging this host's KVM cannot run.

mod common;
use common::{emu_executable, mmurr, stale_contexts, text};

#[test]
fn smp_bringup_on_four_vcpus_has_the_seed_bug_on_ap_2_under_v5_1_rc3_only() {
    emu_executable();
    let dir = tempfile::tempdir().unwrap();
    let rec = mmurr(
        &[
            "record",
            "--scenario",
            "smp-bringup",
            "--cpus",
            "4",
            "--backend",
            "emu",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    assert!(dir.path().join("t.mmurr").exists(), "{}", text(&rec.stderr));
    let info = mmurr(&["info", "t.mmurr", "--json"], dir.path());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format_version"], traces::FORMAT_VERSION, "{info}");

    let out = mmurr(&["check", "t.mmurr", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stale = stale_contexts(&report, "vcpu");
    assert_eq!(stale, vec![("v5.1-rc3".to_string(), 2)], "{report:#}");
    let vcpus = report["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 4);
    for (v, s) in vcpus.iter().enumerate() {
        assert_eq!(s["writes"], 5, "vCPU {v}: {s}");
        assert_eq!(s["stale"], u64::from(v == 2), "vCPU {v}: {s}");
    }

    let human = mmurr(&["check", "t.mmurr", "--policy", "v5.1-rc3"], dir.path());
    assert!(
        text(&human.stdout).contains("[v5.1-rc3] stale-context at step")
            && text(&human.stdout).contains("on vCPU 2:"),
        "{}",
        text(&human.stdout)
    );

    // The events export names each event's vCPU.
    let export = mmurr(&["export", "t.mmurr", "--format", "json"], dir.path());
    let startups: Vec<u64> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "startup")
        .map(|e| e["vcpu"].as_u64().unwrap())
        .collect();
    assert_eq!(startups, vec![1, 2, 3]);

    // Perfetto: a process of tracks per vCPU; AP 2's paging-mode track has its PAE stretch.
    let out = mmurr(
        &["export", "t.mmurr", "--format", "perfetto", "-o", "p.json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("p.json")).unwrap()).unwrap();
    let events = p["traceEvents"].as_array().unwrap();
    let processes = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .count();
    assert_eq!(processes, 4);
    let slices = |pid: u64| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["ph"] == "X" && e["pid"] == pid)
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(slices(3), ["real", "unpaged", "32-bit", "pae", "32-bit"]);
    assert_eq!(slices(2), ["real", "unpaged", "4-level"]);

    // Re-executed on four vCPUs again, instruction by instruction in the same order.
    let verify = mmurr(&["verify", "t.mmurr"], dir.path());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("reproduced"),
        "{}",
        text(&verify.stdout)
    );
}

/// `(vCPU, kind, value)` of every startup, CR-write and transition event, from `mmurr export`.
fn per_vcpu_events(trace: &str, dir: &std::path::Path) -> Vec<(u64, String, String)> {
    let export = mmurr(&["export", trace, "--format", "json"], dir);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            ["startup", "cr0", "cr3", "cr4", "efer", "transition"]
                .contains(&e["kind"].as_str().unwrap_or(""))
        })
        .map(|e| {
            let value = ["new", "to", "vector"]
                .iter()
                .map(|k| &e[*k])
                .find(|v| !v.is_null())
                .map(|v| v.to_string())
                .unwrap_or_default();
            (
                e["vcpu"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
                value,
            )
        })
        .collect()
}

/// One vCPU's part of [`per_vcpu_events`].
fn of_vcpu(events: &[(u64, String, String)], v: u64) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.0 == v)
        .map(|e| (e.1.clone(), e.2.clone()))
        .collect()
}

#[test]
fn smp_bringup_on_two_vcpus_records_on_kvm_with_the_per_vcpu_events_of_emu() {
    recorder::require_kvm!();
    emu_executable();
    let dir = tempfile::tempdir().unwrap();
    let record = |backend: &str, out: &str| {
        mmurr(
            &[
                "record",
                "--scenario",
                "smp-bringup",
                "--cpus",
                "2",
                "--backend",
                backend,
                "-q",
                "-o",
                out,
            ],
            dir.path(),
        )
    };
    // Both end with the guest's debug exit 0: exit code (0 << 1) | 1, as QEMU's isa-debug-exit.
    let kvm = record("kvm", "k.mmurr");
    assert_eq!(kvm.status.code(), Some(1), "{}", text(&kvm.stderr));
    let emu = record("emu", "e.mmurr");
    assert_eq!(emu.status.code(), Some(1), "{}", text(&emu.stderr));
    let (k, e) = (
        per_vcpu_events("k.mmurr", dir.path()),
        per_vcpu_events("e.mmurr", dir.path()),
    );
    assert_eq!(
        of_vcpu(&k, 1).first(),
        Some(&("startup".into(), "48".into()))
    );
    for v in 0..2 {
        assert!(of_vcpu(&k, v).len() > 4, "vCPU {v}: {k:?}");
        assert_eq!(of_vcpu(&k, v), of_vcpu(&e, v), "vCPU {v}");
    }
    let info = mmurr(&["info", "k.mmurr", "--json"], dir.path());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format_version"], traces::FORMAT_VERSION, "{info}");
    let out = mmurr(&["check", "k.mmurr", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stale_contexts(&report, "vcpu").is_empty(), "{report:#}");
    let vcpus = report["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 2);
    for (v, s) in vcpus.iter().enumerate() {
        assert_eq!(s["writes"], 5, "vCPU {v}: {s}");
    }
    // Re-executed on kvm with two vCPUs, in the same order.
    let verify = mmurr(&["verify", "k.mmurr"], dir.path());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stderr).contains("re-executing on the kvm backend")
            && text(&verify.stdout).contains("reproduced"),
        "{}{}",
        text(&verify.stderr),
        text(&verify.stdout)
    );
    // `auto` takes kvm for 2 vCPUs: AP 2, the one in legacy paging, does not exist.
    let auto = mmurr(
        &[
            "record",
            "--scenario",
            "smp-bringup",
            "--cpus",
            "2",
            "-q",
            "-o",
            "a.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(auto.status.code(), Some(1), "{}", text(&auto.stderr));
    assert!(
        text(&auto.stderr).contains("mmurr: backend kvm:"),
        "{}",
        text(&auto.stderr)
    );
}

#[test]
fn smp_bringup_on_four_vcpus_on_kvm_ends_host_unsupported_at_ap_2_with_the_trace_kept() {
    recorder::require_kvm!();
    if !recorder_kvm::probe().pvm {
        eprintln!("SKIP: this host's KVM runs 32-bit paging (not a PVM host)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = |backend: &'static str| {
        [
            "record",
            "--scenario",
            "smp-bringup",
            "--cpus",
            "4",
            "--backend",
            backend,
            "-q",
            "-o",
            "t.mmurr",
        ]
    };
    let rec = mmurr(&args("kvm"), dir.path());
    // The exit code of one vCPU's host-unsupported end (recorder::exit::Outcome).
    assert_eq!(rec.status.code(), Some(4), "{}", text(&rec.stderr));
    assert!(
        text(&rec.stderr).contains("on vCPU 2 as the guest entered 32-bit paging")
            && text(&rec.stderr).contains("--backend emu"),
        "{}",
        text(&rec.stderr)
    );
    let info = mmurr(&["info", "t.mmurr", "--json"], dir.path());
    assert_eq!(info.status.code(), Some(0), "{}", text(&info.stderr));
    let events = per_vcpu_events("t.mmurr", dir.path());
    let startups: Vec<u64> = events
        .iter()
        .filter(|e| e.1 == "startup")
        .map(|e| e.0)
        .collect();
    assert_eq!(startups, vec![1, 2, 3]);
    let out = mmurr(&["check", "t.mmurr", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["vcpus"].as_array().unwrap().len(), 4, "{report:#}");
    // `auto` takes emu for 4: AP 2 needs 32-bit and PAE paging.
    let auto = mmurr(&args("auto"), dir.path());
    assert!(
        text(&auto.stderr).contains("mmurr: backend emu:"),
        "{}",
        text(&auto.stderr)
    );
    // And `mmurr scenarios` says so: kvm here with 2 vCPUs at most.
    let list = mmurr(&["scenarios", "--json"], dir.path());
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let smp = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "smp-bringup")
        .unwrap();
    assert_eq!(smp["kvm_max_cpus"], 2, "{smp}");
    assert_eq!(smp["runs_on"], serde_json::json!(["kvm", "emu", "model"]));
}
