//! `mmurr scenarios`: the built-in guests, what they need, whether this host's KVM can run
//! each (otherwise `--backend emu`), and the model-level scenarios; each with the entries of
//! KVM's MMU history it reproduces (`guests::catalogue`).

use crate::cli::JsonFlag;
use guests::catalogue;
use guests::model::scripts;
use std::process::ExitCode;

fn showing(model: &'static str) -> Vec<(guests::model::Shows, Vec<&'static str>)> {
    catalogue::policies_showing(&catalogue::Repro::Model(model))
}

pub fn run(args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let host = recorder_kvm::probe();
    let rows: Vec<(guests::Scenario, Option<String>)> = guests::scenarios()
        .into_iter()
        .map(|s| {
            let why_not = s.needs.iter().find_map(|&m| host.cannot_run(m));
            (s, why_not)
        })
        .collect();
    let models: Vec<guests::model::Script> = scripts::ALL.iter().map(|(_, b)| b()).collect();
    if args.json {
        let mut list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, why_not)| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "kind": "guest",
                    "needs": s.needs.iter().map(|m| m.name()).collect::<Vec<_>>(),
                    "kvm_here": why_not.is_none(),
                    "kvm_reason": why_not,
                    "backend_auto": if why_not.is_none() { "kvm" } else { "emu" },
                    "runs_on": if why_not.is_none() { vec!["kvm", "emu", "model"] } else { vec!["emu", "model"] },
                    "expected_events": s.expected.len(),
                    "entries": catalogue::entries_of(s.name),
                })
            })
            .collect();
        list.extend(models.iter().map(|m| {
            serde_json::json!({
                "name": m.name,
                "description": m.description,
                "kind": "model",
                "flavour": m.flavour.name(),
                "host_actions": m.has_host_actions(),
                "runs_on": ["model"],
                "steps": m.actions.iter().map(|a| a.describe()).collect::<Vec<_>>(),
                "policies_showing": showing(m.name)
                    .into_iter()
                    .map(|(k, p)| (k.name().to_string(), serde_json::json!(p)))
                    .collect::<serde_json::Map<_, _>>(),
                "entries": catalogue::entries_of(m.name),
            })
        }));
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows
        .iter()
        .map(|(s, _)| s.name.len())
        .chain(models.iter().map(|m| m.name.len()))
        .max()
        .unwrap_or(0);
    let entries = |name: &str| match catalogue::entries_of(name).join(", ") {
        e if e.is_empty() => String::new(),
        e => format!("; reproduces {e}"),
    };
    for (s, why_not) in &rows {
        let needs: Vec<&str> = s.needs.iter().map(|m| m.name()).collect();
        let kvm = if why_not.is_none() {
            "kvm here: yes; runs on: kvm, emu, model"
        } else {
            "kvm here: no (use --backend emu); runs on: emu, model"
        };
        println!("{:width$}  {}", s.name, s.description);
        println!(
            "{:width$}  needs: {}; {kvm}{}",
            "",
            needs.join(", "),
            entries(s.name)
        );
    }
    println!(
        "\nmodel-level scenarios (host actions and states no backend here reaches; model only):"
    );
    for m in &models {
        let verdicts = showing(m.name)
            .iter()
            .map(|(k, p)| format!("{}: {}", k.name(), catalogue::policy_ranges(p)))
            .collect::<Vec<_>>()
            .join("; ");
        let verdicts = if verdicts.is_empty() {
            "the same verdicts before and after the change".to_string()
        } else {
            verdicts
        };
        println!("{:width$}  {}", m.name, m.description);
        println!(
            "{:width$}  runs on: model only; {verdicts}{}",
            "",
            entries(m.name)
        );
    }
    match &host.usable {
        Ok(()) => println!(
            "\nthis host: {} runs {}",
            host.engine(),
            host.runs_summary()
        ),
        Err(why) => {
            println!("\nthis host: /dev/kvm is not usable ({why}); every scenario runs on emu")
        }
    }
    Ok(ExitCode::SUCCESS)
}
