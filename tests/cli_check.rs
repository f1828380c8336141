//! `mmurr check` on a real recording of the seed scenario (traces/corpus/recorded, made by
//! `mmurr-emu record --scenario pae-toggle`): v5.1-rc3 keeps a stale 2-level MMU context at the
//! CR4.PAE write; the fix (v5.1) and current upstream re-initialise.

use std::process::Command;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/corpus/recorded/pae-toggle.emu.mmurr"
);

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .arg("check")
        .arg(SEED)
        .args(args)
        .output()
        .expect("run mmurr");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn the_seed_bug_is_a_stale_context_at_the_cr4_pae_write() {
    let (code, out) = check(&["--json"]);
    assert_eq!(code, 1, "a stale context is a bug: exit 1\n{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let stale: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "stale-context")
        .collect();
    assert_eq!(
        stale.len(),
        1,
        "exactly one stale context, under v5.1-rc3: {findings:#?}"
    );
    let f = stale[0];
    assert_eq!(f["policy"], "v5.1-rc3");
    let detail = f["detail"].as_str().unwrap();
    assert!(detail.contains("CR4 write 0x0 -> 0x20 (+PAE)"), "{detail}");
    assert!(
        detail.contains("returned early because the compare key"),
        "{detail}"
    );
    let attrs = f["attributes"].as_array().unwrap();
    assert!(
        attrs
            .iter()
            .any(|a| a["name"] == "root_level" && a["kept"] == "2" && a["required"] == "3"),
        "{attrs:?}"
    );
    assert!(
        attrs
            .iter()
            .any(|a| a["name"] == "walker" && a["kept"] == "paging32"),
        "{attrs:?}"
    );
    // The guest's PAE tables and the same page read as a 32-bit directory disagree about
    // 0x400000: the kept context sends the access to another physical page.
    let t = f["translations"].as_array().unwrap();
    assert!(!t.is_empty());
    assert!(t.iter().all(|t| t["kept"] != t["correct"]));
    assert!(t.iter().any(|t| t["gva"] == "0x400000"), "{t:?}");
}

#[test]
fn the_fix_and_upstream_report_nothing() {
    let (code, out) = check(&["--policy", "v5.1", "--policy", "v6.14", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{out}");
    let policies = report["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    for p in policies {
        assert_eq!(p["skipped"], 0, "{p}");
        assert_eq!(p["stale_contexts"], 0, "{p}");
    }
}

#[test]
fn human_output_explains_the_finding() {
    let (code, out) = check(&["--policy", "v5.1-rc3"]);
    assert_eq!(code, 1);
    assert!(out.contains("[v5.1-rc3] stale-context at step"), "{out}");
    assert!(out.contains("kept: GPA"), "{out}");
}

#[test]
fn shadow_paging_was_not_affected_by_the_seed_bug() {
    let (code, out) = check(&["--policy", "v5.1-rc3", "--flavour", "shadow", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stale = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "stale-context")
        .count();
    assert_eq!(stale, 0, "{out}");
    assert_eq!(code, 0, "{out}");
}

/// The nested flavours a recording can be evaluated for: the nested walker takes each write as
/// L2's (sheet §4.7). Its role before v5.14 is the common role, which lost CR4.PAE with
/// 47c42e6b4192 as the TDP role did, so v5.1-rc3 keeps L2's 2-level walker too and v5.1's
/// ext.cr4_pae fixes it. Shadow EPT is refused with the reason, before the trace is read.
#[test]
fn nested_walker_is_evaluated_and_shadow_ept_refused() {
    let args = [
        "--policy",
        "v5.1-rc3",
        "--policy",
        "v5.1",
        "--flavour",
        "nested-walker",
        "--json",
    ];
    let (code, out) = check(&args);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["flavour"], "nested-walker", "{out}");
    let stale: Vec<u64> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["stale_contexts"].as_u64().unwrap())
        .collect();
    assert_eq!(stale, [1, 0], "{out}");
    assert_eq!(code, 1, "{out}");

    let out = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(["check", SEED, "--flavour", "shadow-ept"])
        .output()
        .expect("run mmurr");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no EPTP") && err.contains("model-level"),
        "{err}"
    );
}
