//! The done-means of several vCPUs on the command line: `mmurr record --scenario smp-bringup
//! --cpus 4 --backend emu` records four vCPUs, and `mmurr check` finds the seed bug's stale
//! context on AP 2 only, under v5.1-rc3 only; the kvm backend refuses several vCPUs.

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

#[test]
fn the_kvm_backend_refuses_several_vcpus_and_auto_takes_emu() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(
        &[
            "record",
            "--scenario",
            "smp-bringup",
            "--cpus",
            "2",
            "--backend",
            "kvm",
            "-q",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the kvm backend records one vCPU")
            && text(&out.stderr).contains("--backend emu"),
        "{}",
        text(&out.stderr)
    );
}
