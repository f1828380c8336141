//! `mmurr check` on a fresh recording of every built-in scenario reports exactly the
//! stale contexts the scenario exists to provoke, at the write it names, and no others.
//! Scenarios KVM can run here are recorded on kvm, the rest on emu (`--backend auto`).

mod common;
use common::{emu_executable, mmurr, text};
use std::path::Path;

use traces::{EventKind, Reader, Record};

#[test]
fn every_scenario_gets_exactly_its_expected_stale_contexts() {
    emu_executable();
    for s in guests::scenarios() {
        let dir = tempfile::tempdir().unwrap();
        let rec = mmurr(
            &["record", "--scenario", s.name, "-q", "-o", "t.mmurr"],
            dir.path(),
        );
        let trace = dir.path().join("t.mmurr");
        assert!(
            trace.exists(),
            "{}: {}",
            s.name,
            String::from_utf8_lossy(&rec.stderr)
        );

        // The features the guest saw decide which of its checks ran: rebuild the expectations
        // from the CPUID the trace recorded.
        let mut reader = Reader::open(&trace).unwrap();
        let features = guests::CpuFeatures::from_cpuid(&reader.header().guest.cpuid);
        let s = guests::scenario(s.name, &features).unwrap();
        let cr_and_transitions: Vec<u64> = reader
            .records()
            .filter_map(|r| match r.unwrap() {
                Record::Event(e)
                    if matches!(e.kind, EventKind::CrWrite(_) | EventKind::Transition { .. }) =>
                {
                    Some(e.id)
                }
                _ => None,
            })
            .collect();
        let mut expected: Vec<(String, u64)> = s
            .expected_findings
            .iter()
            .filter(|f| f.kind == traces::FindingKind::StaleContext)
            .map(|f| (f.policy.to_string(), cr_and_transitions[f.at_event]))
            .collect();
        expected.sort();

        let out = mmurr(&["check", "t.mmurr", "--json"], dir.path());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{}: {e}: {}", s.name, String::from_utf8_lossy(&out.stderr))
        });
        let stale = stale_contexts(&report);
        assert_eq!(
            stale, expected,
            "{}: stale contexts found vs expected",
            s.name
        );
        assert_eq!(
            out.status.code(),
            Some(if expected.is_empty() { 0 } else { 1 }),
            "{}",
            s.name
        );
        same_findings_everywhere(s.name, dir.path(), &report);
        one_policy_at_a_time(s.name, dir.path(), &expected);
    }
}

/// The (policy, event) of every stale-context finding of a `check --json` report, sorted.
fn stale_contexts(report: &serde_json::Value) -> Vec<(String, u64)> {
    let mut stale = common::stale_contexts(report, "event");
    stale.sort();
    stale
}

/// `mmurr check --policy P` gives exactly P's share of the expected stale contexts: for each
/// policy that carries the scenario's bug, and for current upstream, which carries none.
fn one_policy_at_a_time(name: &str, dir: &Path, expected: &[(String, u64)]) {
    let mut policies: Vec<&str> = expected.iter().map(|(p, _)| p.as_str()).collect();
    policies.push("v6.14");
    policies.dedup();
    for p in policies {
        let out = mmurr(&["check", "t.mmurr", "--json", "--policy", p], dir);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name} --policy {p}: {e}: {}", text(&out.stderr)));
        let stale = stale_contexts(&report);
        let want: Vec<(String, u64)> = expected.iter().filter(|(q, _)| q == p).cloned().collect();
        assert_eq!(stale, want, "{name}: check --policy {p}");
        assert_eq!(
            out.status.code(),
            Some(if want.is_empty() { 0 } else { 1 }),
            "{name} --policy {p}"
        );
    }
}

/// One finding has one step and one set of numbers: what the recorder wrote into the trace
/// (and `export` prints) is what `check` computes again from the trace.
fn same_findings_everywhere(name: &str, dir: &Path, check: &serde_json::Value) {
    let key = |policy: &str, step: u64, event: u64, kind: &str, detail: &str, n: usize| {
        (
            policy.to_string(),
            step,
            event,
            kind.to_string(),
            detail.to_string(),
            n,
        )
    };
    let mut from_check: Vec<_> = check["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            key(
                f["policy"].as_str().unwrap(),
                f["step"].as_u64().unwrap(),
                f["event"].as_u64().unwrap(),
                f["kind"].as_str().unwrap(),
                f["detail"].as_str().unwrap(),
                f["translations"].as_array().unwrap().len(),
            )
        })
        .collect();
    let out = mmurr(&["export", "t.mmurr", "--format", "json"], dir);
    assert!(out.status.success(), "{name}: export failed");
    let mut from_export: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "finding")
        .map(|f| {
            key(
                f["policy"].as_str().unwrap(),
                f["step"].as_u64().unwrap(),
                f["cause"].as_u64().unwrap(),
                f["finding"].as_str().unwrap(),
                f["detail"].as_str().unwrap(),
                f["translations"].as_array().unwrap().len(),
            )
        })
        .collect();
    from_check.sort();
    from_export.sort();
    assert_eq!(
        from_export, from_check,
        "{name}: the recorded findings (export) and check's differ"
    );
}

/// Repeats of one story are told once: `unpaged-cr4` makes several policies reset needlessly
/// at the same CR4 writes; the human report groups them by policy set, kind of write and
/// steps, `--all` prints each, and the JSON's groups account for every finding.
#[test]
fn check_tells_repeated_findings_once_with_their_count() {
    emu_executable();
    let dir = tempfile::tempdir().unwrap();
    let rec = mmurr(
        &["record", "--scenario", "unpaged-cr4", "-q", "-o", "t.mmurr"],
        dir.path(),
    );
    assert!(dir.path().join("t.mmurr").exists(), "{}", text(&rec.stderr));

    let json = mmurr(&["check", "t.mmurr", "--json"], dir.path());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let groups = report["groups"].as_array().unwrap();
    assert!(findings.len() > groups.len(), "{groups:#?}");
    let accounted: u64 = groups
        .iter()
        .map(|g| g["count"].as_u64().unwrap() * g["policies"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(accounted, findings.len() as u64, "{groups:#?}");
    let pse = groups
        .iter()
        .find(|g| g["write_kind"] == "CR4.PSE writes" && g["kind"] == "needless-reset")
        .expect("needless resets at CR4.PSE writes");
    assert!(pse["count"].as_u64().unwrap() >= 2, "{pse}");
    assert!(pse["policies"].as_array().unwrap().len() >= 2, "{pse}");

    let human = text(&mmurr(&["check", "t.mmurr"], dir.path()).stdout);
    let headline = format!(
        "needless-reset ×{} at CR4.PSE writes: first at step {}",
        pse["count"], pse["first_step"]
    );
    assert!(human.contains(&headline), "{headline}\n{human}");
    assert!(
        human.contains(&format!(
            "{} findings told as {} stories",
            findings.len(),
            groups.len()
        )),
        "{human}"
    );
    let all = text(&mmurr(&["check", "t.mmurr", "--all"], dir.path()).stdout);
    let each = all.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(each, findings.len(), "{all}");
}
