//! `mmurr policies`: the modelled kernel versions.

use crate::cli::JsonFlag;
use std::process::ExitCode;

pub fn run(args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let policies = mmu::policies();
    if args.json {
        let list: Vec<serde_json::Value> = policies
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "summary": p.summary,
                    "commits": p.commits,
                    "layout": p.layout.name,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let width = policies.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in policies {
            println!("{:width$}  {}", p.name, p.summary);
            if !p.commits.is_empty() {
                println!("{:width$}  commits: {}", "", p.commits.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
