//! `mmurr policies`: the catalogue the model carries, human and JSON.

mod common;
use common::mmurr_here as mmurr;

#[test]
fn lists_the_thirteen_modelled_kernels_in_release_order() {
    let out = mmurr(&["policies", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "v4.20", "v5.0", "v5.1-rc3", "v5.1", "v5.7", "v5.9-rc", "v5.9", "v5.14", "v5.16",
            "v5.18", "v5.19", "v6.4", "v6.14"
        ]
    );
    let seed = &list[2];
    assert!(seed["commits"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "47c42e6b4192"));
}

#[test]
fn human_listing_names_the_seed_commit() {
    let out = mmurr(&["policies"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("v5.1-rc3") && l.contains("SEED BUG")),
        "{text}"
    );
    assert!(text.contains("47c42e6b4192"));
}

#[test]
fn check_rejects_unknown_policies_and_missing_files() {
    let out = mmurr(&["check", "/nonexistent.mmurr", "--policy", "v9.99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown policy `v9.99`"));
    let out = mmurr(&["check", "/nonexistent.mmurr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the trace /nonexistent.mmurr")
    );
}
