//! `mmurr scenarios --run NAME` on every model-level scenario shows exactly the verdicts it
//! declares, under all policies and one policy at a time, with `check`'s exit status.

mod common;
use common::{mmurr, text};

fn findings(report: &serde_json::Value, key: &str) -> Vec<(String, u64, String)> {
    let mut v: Vec<_> = report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["policy"].as_str().unwrap().to_string(),
                f["step"].as_u64().unwrap(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_model_scenario_runs_with_exactly_its_declared_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in guests::model::scripts::ALL {
        let run = |policy: Option<&str>| {
            let mut args = vec!["scenarios", "--run", name, "--json"];
            if let Some(p) = policy {
                args.extend(["--policy", p]);
            }
            let out = mmurr(&args, dir.path());
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{name}: {e}: {}", text(&out.stderr)));
            (out.status.code(), report)
        };
        let (code, all) = run(None);
        assert_eq!(all["as_declared"], true, "{name}: {all:#}");
        let declared = findings(&all, "declared_findings");
        assert_eq!(findings(&all, "findings"), declared, "{name}");
        let bug = |f: &[(String, u64, String)]| {
            f.iter()
                .any(|(_, _, k)| k == "stale-context" || k == "gp-mismatch")
        };
        assert_eq!(code, Some(if bug(&declared) { 1 } else { 0 }), "{name}");
        assert_eq!(
            all["steps"].as_array().unwrap().len(),
            guests::model::scripts::script_named(name)
                .unwrap()
                .actions
                .len()
        );

        let mut policies: Vec<String> = declared.iter().map(|(p, _, _)| p.clone()).collect();
        policies.push("v6.14".into());
        policies.dedup();
        for p in &policies {
            let (code, one) = run(Some(p));
            let want: Vec<_> = declared.iter().filter(|f| &f.0 == p).cloned().collect();
            assert_eq!(findings(&one, "findings"), want, "{name} --policy {p}");
            assert_eq!(
                code,
                Some(if bug(&want) { 1 } else { 0 }),
                "{name} --policy {p}"
            );
        }
    }
}

#[test]
fn an_unknown_model_scenario_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(&["scenarios", "--run", "no-such"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no model-level scenario"));
}
