//! Model-level scenarios written as traces (`mmurr scenarios --run NAME -o F`): `mmurr check`
//! on each gives exactly the verdicts the script declares, per policy, and the other commands
//! open the trace or say why they cannot use it.

mod common;
use common::{declared_verdicts, mmurr, shown_verdicts, text};
use guests::model::scripts;

#[test]
fn check_on_every_model_scenarios_trace_gives_exactly_its_declared_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, build) in scripts::ALL {
        let script = build();
        let file = format!("{name}.mmurr");
        let wrote = mmurr(&["scenarios", "--run", name, "-o", &file], dir.path());
        assert!(
            text(&wrote.stderr).contains(&format!("wrote model-level scenario {name} as a trace")),
            "{name}: {}",
            text(&wrote.stderr)
        );
        let out = mmurr(&["check", &file, "--json"], dir.path());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", text(&out.stderr)));
        assert_eq!(report["flavour"], script.flavour.name(), "{name}");
        // Step `n` of a model trace is action `n - 1`.
        assert_eq!(
            shown_verdicts(&report, &script, &|step| step as usize - 1),
            declared_verdicts(&script),
            "{name}: {report:#}"
        );
        // The same exit status as the script run, from the same findings.
        assert_eq!(out.status.code(), wrote.status.code(), "{name}");
        // One entry of decisions per action that is an MMU input, each for all 13 policies.
        let inputs = script
            .actions
            .iter()
            .filter(|a| !matches!(a, guests::model::Action::Store { .. }))
            .count();
        let decisions = report["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), inputs, "{name}");
        assert!(decisions
            .iter()
            .all(|a| a["policies"].as_array().unwrap().len() == mmu::policies().len()));
    }
}

/// The decisions `check` prints for a model trace name the host action and the policies that
/// did not reset: `msrs-efer-lme` declares no reset before v5.18.
#[test]
fn check_prints_a_model_traces_decisions_by_action() {
    let dir = tempfile::tempdir().unwrap();
    mmurr(
        &["scenarios", "--run", "msrs-efer-lme", "-o", "m.mmurr"],
        dir.path(),
    );
    let out = mmurr(&["check", "m.mmurr"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for needle in [
        "Decisions, action by action",
        "step 1 (event 0): KVM_SET_MSRS EFER <- 0x400",
        "no trigger, no reset: v4.20, v5.0, v5.1-rc3, v5.1, v5.7, v5.9-rc, v5.9, v5.14, v5.16",
    ] {
        assert!(s.contains(needle), "{needle:?} missing:\n{s}");
    }
}

/// `info`, `export` open a model trace; `verify` says there is nothing to re-execute;
/// `record --scenario` on a model-level name that runs an L2 points to `scenarios --run -o`;
/// the list says how to write one, and which run as guests.
#[test]
fn the_other_commands_open_a_model_trace_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let wrote = mmurr(
        &[
            "scenarios",
            "--run",
            "nested-npt-set-state",
            "-o",
            "n.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(wrote.status.code(), Some(1), "{}", text(&wrote.stderr));

    let info = mmurr(&["info", "n.mmurr", "--json"], dir.path());
    assert_eq!(info.status.code(), Some(0), "{}", text(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["backend"], "model");
    assert_eq!(info["format_version"], 6, "{info:#}");

    let export = mmurr(&["export", "n.mmurr"], dir.path());
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    let lines: Vec<serde_json::Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "host-action")
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["KVM_SET_NESTED_STATE", "VMRUN"]);
    let perfetto = mmurr(
        &["export", "n.mmurr", "--format", "perfetto", "-o", "n.json"],
        dir.path(),
    );
    assert_eq!(
        perfetto.status.code(),
        Some(0),
        "{}",
        text(&perfetto.stderr)
    );
    let chrome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("n.json")).unwrap()).unwrap();
    let instants: Vec<&str> = chrome["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "i" && e["tid"] == 4)
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(instants, ["KVM_SET_NESTED_STATE", "VMRUN"]);

    let verify = mmurr(&["verify", "n.mmurr"], dir.path());
    assert_eq!(verify.status.code(), Some(2));
    assert!(
        text(&verify.stderr).contains("nothing to re-execute"),
        "{}",
        text(&verify.stderr)
    );

    let record = mmurr(&["record", "--scenario", "nested-npt-smep"], dir.path());
    assert_eq!(record.status.code(), Some(2));
    let err = text(&record.stderr);
    assert!(
        err.contains("runs an L2") && err.contains("mmurr scenarios --run nested-npt-smep -o"),
        "{err}"
    );

    let list = text(&mmurr(&["scenarios"], dir.path()).stdout);
    assert!(
        list.contains("runs on: model (trace: --run init-long-mode -o F); as a guest on emu"),
        "{list}"
    );
    assert!(
        list.contains("runs on: model (trace: --run nested-npt-smep -o F); not as a guest"),
        "{list}"
    );
}
