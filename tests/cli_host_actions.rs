//! Model-level scripts run as guests (`mmurr record --scenario NAME`): the recorder performs
//! their host actions for real (kvm: KVM_SET_SREGS, KVM_SET_MSRS, KVM_SET_CPUID2, INIT by
//! MSI; emu: the same register and CPUID changes in the engine). On every backend that runs
//! a script here, its trace holds exactly the model trace's writes and host actions, `check`
//! gives exactly the verdicts the script declares, and `verify` reproduces it. Where a backend
//! cannot, the run says why: a CPU without a feature the script uses (the guest's own CPUID
//! check, exit status 2), or a host that refuses an action.

mod common;
use common::{declared_verdicts, mmurr, shown_verdicts, text};
use guests::catalogue;
use guests::model::{guest, scripts, Action, Script, Shows};
use std::collections::BTreeSet;
use std::path::Path;
use traces::{EndReason, EventKind, Reader, Record};

/// The MMU inputs of a trace, in order: control-register writes and host actions.
fn inputs(path: &Path) -> Vec<EventKind> {
    let mut r = Reader::open(path).unwrap();
    r.records()
        .filter_map(|rec| match rec.unwrap() {
            Record::Event(e) => match e.kind {
                k @ (EventKind::CrWrite(_) | EventKind::HostAction(_)) => Some(k),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The model trace's MMU inputs for `script`.
fn model_inputs(script: &Script) -> Vec<EventKind> {
    guests::model::trace::records(script, &[])
        .into_iter()
        .filter_map(|r| match r {
            Record::Event(e)
                if matches!(e.kind, EventKind::CrWrite(_) | EventKind::HostAction(_)) =>
            {
                Some(e.kind)
            }
            _ => None,
        })
        .collect()
}

/// The script's action index of each step of a recording that is an MMU input: the k-th
/// input of the trace (`check --decisions` lists them) is the k-th action that is not a store.
fn action_of(report: &serde_json::Value, script: &Script) -> impl Fn(u64) -> usize {
    let steps: Vec<u64> = report["decisions"]
        .as_array()
        .expect("decisions (--decisions)")
        .iter()
        .map(|d| d["step"].as_u64().unwrap())
        .collect();
    let actions: Vec<usize> = (0..script.actions.len())
        .filter(|&i| !matches!(script.actions[i], Action::Store { .. }))
        .collect();
    assert_eq!(steps.len(), actions.len(), "{}: {report:#}", script.name);
    move |step| actions[steps.iter().position(|&s| s == step).unwrap()]
}

/// `name`'s row of the README's table says it runs on `backend` here exactly when it did.
fn assert_table_says(name: &'static str, backend: &str, ran: &Ran) {
    let table = catalogue::backends(&catalogue::Repro::Model(name));
    let reproduced = matches!(ran, Ran::Reproduced);
    assert_eq!(table.contains(backend), reproduced, "{name}: {table}");
}

/// How a backend ran a script here.
#[derive(Debug)]
enum Ran {
    /// To its end: the verdicts and the inputs were compared.
    Reproduced,
    /// The guest's CPU lacks a feature the script uses.
    MissingFeature(Vec<&'static str>),
    /// The host refused an action or the guest's memory layout.
    Refused(String),
}

/// Records `script` on `backend` and holds the result to the script's declarations.
fn run(script: &Script, backend: &str, dir: &Path) -> Ran {
    let name = script.name;
    let file = format!("{backend}-{name}.mmurr");
    let out = mmurr(
        &[
            "record",
            "--scenario",
            name,
            "--backend",
            backend,
            "-q",
            "-o",
            &file,
        ],
        dir,
    );
    let stderr = text(&out.stderr);
    let path = dir.join(&file);
    if !path.exists() {
        assert!(stderr.contains("error"), "{name} on {backend}: {stderr}");
        return Ran::Refused(stderr);
    }
    let reader = Reader::open(&path).unwrap();
    let header = reader.header().clone();
    let end = reader.end().cloned().expect("an end record");
    assert_eq!(
        header.mmu_flavour,
        script.flavour.name(),
        "{name}: the script's flavour"
    );
    let cpu = recorder::guest_view::cpu_model(&header.guest.cpuid);
    let missing = guest::features_missing(script, &cpu);
    if !missing.is_empty() {
        assert_eq!(
            end.reason,
            EndReason::DebugExit { status: 2 },
            "{name} on {backend} without {missing:?}: {stderr}"
        );
        assert!(inputs(&path)
            .iter()
            .all(|k| !matches!(k, EventKind::HostAction(_))));
        return Ran::MissingFeature(missing);
    }
    if end.reason == EndReason::HostUnsupported {
        assert!(
            end.message.contains("this host's KVM refuses"),
            "{name}: {}",
            end.message
        );
        return Ran::Refused(end.message);
    }
    assert_eq!(
        end.reason,
        EndReason::DebugExit { status: 0 },
        "{name} on {backend}: {end:?}"
    );
    assert!(
        end.self_check_failures.is_empty(),
        "{name}: {:?}",
        end.self_check_failures
    );
    assert_eq!(
        inputs(&path),
        model_inputs(script),
        "{name} on {backend}: the inputs"
    );
    let check = mmurr(&["check", &file, "--json", "--decisions"], dir);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", text(&check.stderr)));
    assert_eq!(
        shown_verdicts(&report, script, &action_of(&report, script)),
        declared_verdicts(script),
        "{name} on {backend}: {report:#}"
    );
    let bugs = script
        .expected()
        .iter()
        .any(|o| o.shows != Shows::NeedlessReset && o.shows.is_finding());
    assert_eq!(
        check.status.code(),
        Some(i32::from(bugs)),
        "{name} on {backend}"
    );
    // The human report lists the host actions' decisions unasked.
    if script.actions.iter().any(Action::is_host) {
        let human = text(&mmurr(&["check", &file], dir).stdout);
        assert!(
            human.contains("Decisions, action by action"),
            "{name}: {human}"
        );
    }
    // Re-executed on the same backend, with the actions at their recorded steps.
    let verify = mmurr(&["verify", &file, "--backend", backend], dir);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{name} on {backend}: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    Ran::Reproduced
}

/// The model-level scripts that run as guests (no L2), by name.
fn script_guests() -> Vec<(&'static str, Script)> {
    scripts::ALL
        .iter()
        .map(|(name, build)| (*name, build()))
        .filter(|(_, s)| guest::recordable(s))
        .collect()
}

#[test]
fn every_script_without_an_l2_runs_on_emu_with_its_declared_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let mut reproduced = Vec::new();
    for (name, script) in script_guests() {
        let ran = run(&script, "emu", dir.path());
        assert_table_says(name, "emu", &ran);
        match ran {
            Ran::Reproduced => reproduced.push(name),
            // TCG implements no PCID (QEMU's TCG CPU models filter it out).
            Ran::MissingFeature(f) => assert_eq!((name, f), ("cr4-pge-pcide", vec!["PCID"])),
            Ran::Refused(why) => panic!("{name}: emu refused: {why}"),
        }
    }
    assert_eq!(reproduced.len(), 10, "{reproduced:?}");
}

#[test]
fn on_kvm_the_host_performs_the_actions_it_allows_and_names_the_ones_it_refuses() {
    if recorder::test_support::skip_without_kvm(recorder::test_support::kvm_unusable()) {
        return;
    }
    let host = recorder_kvm::probe();
    let dir = tempfile::tempdir().unwrap();
    // What `mmurr scenarios` says of each script on this host's KVM.
    let list: serde_json::Value =
        serde_json::from_slice(&mmurr(&["scenarios", "--json"], dir.path()).stdout).unwrap();
    let kvm_here = |name: &str| {
        let entry = list.as_array().unwrap().iter().find(|s| s["name"] == name);
        entry.and_then(|s| s["kvm_here"].as_bool()).unwrap()
    };
    let mut reproduced = Vec::new();
    for (name, script) in script_guests() {
        let scenario = guest::scenario(&script).unwrap();
        if let Some(why) = scenario.needs.iter().find_map(|&m| host.cannot_run(m)) {
            eprintln!("{name}: not on this host's KVM: {why}");
            let table = catalogue::backends(&catalogue::Repro::Model(name));
            assert!(!table.contains("kvm here"), "{name}: {table}");
            continue;
        }
        let ran = run(&script, "kvm", dir.path());
        assert_table_says(name, "kvm here", &ran);
        assert_eq!(
            kvm_here(name),
            matches!(ran, Ran::Reproduced),
            "{name}: `mmurr scenarios`"
        );
        match ran {
            Ran::Reproduced => reproduced.push(name),
            Ran::MissingFeature(f) => eprintln!("{name}: this host's KVM offers no {f:?}"),
            Ran::Refused(why) => {
                let cpuid = script
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::SetCpuid(_)));
                assert!(
                    cpuid && why.contains("KVM_SET_CPUID2") && why.contains("5.16"),
                    "{name}: {why}"
                );
            }
        }
    }
    // `auto` records a scenario whose host action this host refuses on emu, and says why.
    if host
        .refuses(&traces::HostAction::SetCpuid(Default::default()))
        .is_some()
    {
        let out = mmurr(
            &[
                "record",
                "--scenario",
                "cpuid-maxphyaddr",
                "-q",
                "-o",
                "auto.mmurr",
            ],
            dir.path(),
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("backend emu") && err.contains("KVM_SET_CPUID2"),
            "{err}"
        );
        assert_eq!(out.status.code(), Some(1), "{err}");
    }
    // ... and one whose guest needs a CPU feature this host's guests lack (its own CPUID
    // check would end the run with status 2 on kvm).
    if let Some(cpu) = recorder_kvm::guest_cpu().ok().filter(|c| !c.la57) {
        let out = mmurr(
            &[
                "record",
                "--scenario",
                "sregs-la57",
                "-q",
                "-o",
                "la57.mmurr",
            ],
            dir.path(),
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("backend emu") && err.contains("LA57"),
            "{cpu:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(1), "{err}");
    }
    // Guest writes, KVM_SET_SREGS out of long mode, KVM_SET_MSRS with paging on, INIT (then
    // the reset vector's ROM, a read-only memory slot).
    for name in [
        "cr0-wp-only",
        "cr4-unpaged",
        "msrs-efer-lme",
        "init-long-mode",
    ] {
        assert!(reproduced.contains(&name), "{name}: {reproduced:?}");
    }
}

/// `--host-action` performs an action on any guest: INIT at a step of a built-in scenario.
#[test]
fn a_host_action_from_the_command_line_is_performed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(
        &[
            "record",
            "--scenario",
            "long-mode-entry",
            "--backend",
            "emu",
            "--flavour",
            "shadow",
            "--host-action",
            "step=40:efer=0xd01",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    let stderr = text(&out.stderr);
    let acts: Vec<EventKind> = inputs(&dir.path().join("t.mmurr"))
        .into_iter()
        .filter(|k| matches!(k, EventKind::HostAction(_)))
        .collect();
    assert_eq!(
        acts,
        vec![EventKind::HostAction(traces::HostAction::SetMsrEfer {
            value: 0xd01
        })],
        "{stderr}"
    );
    let verify = mmurr(&["verify", "t.mmurr"], dir.path());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    let bad = mmurr(
        &[
            "record",
            "--scenario",
            "long-mode-entry",
            "--host-action",
            "step=4:reboot",
        ],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("unknown ACTION"),
        "{}",
        text(&bad.stderr)
    );
}

/// The committed trace of `init-long-mode` recorded on kvm, re-executed on emu, differs in
/// one place only: CR0 right after the INIT, where this host's KVM (PVM) leaves ET alone and
/// the architecture's INIT state (SDM vol. 3A table 10-1, which emu follows) has CD and NW
/// set too. Both performed the INIT at the same step and ran the same code after it.
#[test]
fn re_executing_kvms_init_on_emu_finds_only_the_cr0_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/corpus/recorded/init-long-mode.kvm.mmurr"
    );
    let out = mmurr(&["verify", "--backend", "emu", trace], dir.path());
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}{}", text(&out.stderr));
    let at = s.find("diverged at").expect(&s);
    let report = &s[at..];
    assert!(
        report.contains("(step 2 in A, step 2 in B), rip 0x180200"),
        "{s}"
    );
    assert!(report.contains("cr0: 0x10 vs 0x60000010"), "{s}");
    assert_eq!(
        report.lines().filter(|l| l.contains(" vs ")).count(),
        1,
        "{s}"
    );
}

/// INIT from the host to an AP in long mode (`--host-action step=N,vcpu=1:init`, as a VMM
/// unplugging a CPU does), on both backends: the recorder switches to vCPU 1 for it, the AP
/// then waits for a startup IPI while the BSP finishes, `check` shows the stale context on
/// vCPU 1 under exactly the policies `init-long-mode` declares (before 0aa1837533e5, #15),
/// and `verify` performs the INIT again on the same vCPU.
#[test]
fn an_init_from_the_host_leaves_the_aps_policies_stale_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    // kvm where it is usable (required under MMURR_REQUIRE_KVM=1, as everywhere).
    let kvm = !recorder::test_support::skip_without_kvm(recorder::test_support::kvm_unusable());
    let backends: &[&str] = if kvm { &["emu", "kvm"] } else { &["emu"] };
    let declared: BTreeSet<String> =
        guests::catalogue::policies_showing(&catalogue::Repro::Model("init-long-mode"))
            .into_iter()
            .flat_map(|(_, p)| p)
            .map(str::to_string)
            .collect();
    for backend in backends {
        let base = [
            "record",
            "--scenario",
            "smp-bringup",
            "--cpus",
            "2",
            "--backend",
            backend,
        ];
        // Once the BSP is in long mode, AP 1 has done its part and parked.
        let plain = format!("{backend}-plain.mmurr");
        let mut args = base.to_vec();
        args.extend(["-q", "-o", &plain]);
        mmurr(&args, dir.path());
        let bsp_long = events(&dir.path().join(&plain))
            .into_iter()
            .filter(|(v, _, k)| {
                *v == 0 && matches!(k, EventKind::Transition { to, .. } if *to == traces::PagingMode::Level4)
            })
            .map(|(_, step, _)| step)
            .next_back()
            .expect("the BSP enters long mode");
        let file = format!("{backend}-init.mmurr");
        let action = format!("step={bsp_long},vcpu=1:init");
        let mut args = base.to_vec();
        args.extend([
            "--flavour",
            "shadow",
            "--host-action",
            &action,
            "-q",
            "-o",
            &file,
        ]);
        let out = mmurr(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{backend}: {}",
            text(&out.stderr)
        );
        let init: Vec<(u32, u64)> = events(&dir.path().join(&file))
            .into_iter()
            .filter(|(_, _, k)| *k == EventKind::HostAction(traces::HostAction::Init))
            .map(|(v, s, _)| (v, s))
            .collect();
        assert_eq!(init, [(1, bsp_long + 1)], "{backend}");
        let check = mmurr(&["check", &file, "--json"], dir.path());
        let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        let stale: BTreeSet<String> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "stale-context")
            .inspect(|f| {
                assert_eq!(
                    (f["vcpu"].as_u64(), f["step"].as_u64()),
                    (Some(1), Some(bsp_long + 1))
                )
            })
            .map(|f| f["policy"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stale, declared, "{backend}: {report:#}");
        let verify = mmurr(&["verify", &file], dir.path());
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{backend}: {}",
            text(&verify.stdout)
        );
    }
}

/// Every event of a trace as (vCPU, step, kind).
fn events(path: &Path) -> Vec<(u32, u64, EventKind)> {
    let mut r = Reader::open(path).unwrap();
    let mut parked = traces::Parked::new(r.header().vcpu_count());
    let mut regs = traces::Regs::default();
    let mut out = Vec::new();
    for rec in r.records() {
        match rec.unwrap() {
            Record::Event(e) => out.push((parked.current(), e.step, e.kind)),
            rec @ (Record::Vcpu(_) | Record::Vcpus(_)) => {
                parked.observe(&rec, &mut regs).unwrap();
            }
            _ => {}
        }
    }
    out
}
