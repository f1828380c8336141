//! `mmurr scenarios`: the built-in guests, what they need, and whether this host's KVM can
//! run each (otherwise `--backend emu`).

use crate::cli::JsonFlag;
use std::process::ExitCode;

pub fn run(args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let host = recorder_kvm::probe();
    let rows: Vec<(guests::Scenario, Option<String>)> = guests::scenarios()
        .into_iter()
        .map(|s| {
            let why_not = s.needs.iter().find_map(|&m| host.cannot_run(m));
            (s, why_not)
        })
        .collect();
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, why_not)| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "needs": s.needs.iter().map(|m| m.name()).collect::<Vec<_>>(),
                    "kvm_here": why_not.is_none(),
                    "kvm_reason": why_not,
                    "backend_auto": if why_not.is_none() { "kvm" } else { "emu" },
                    "expected_events": s.expected.len(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows.iter().map(|(s, _)| s.name.len()).max().unwrap_or(0);
    for (s, why_not) in &rows {
        let needs: Vec<&str> = s.needs.iter().map(|m| m.name()).collect();
        let kvm = if why_not.is_none() {
            "kvm here: yes"
        } else {
            "kvm here: no (use --backend emu)"
        };
        println!("{:width$}  {}", s.name, s.description);
        println!("{:width$}  needs: {}; {kvm}", "", needs.join(", "));
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
