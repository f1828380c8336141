//! `mmurr scenarios`: the built-in guests, what they need, whether this host's KVM can run
//! each (otherwise `--backend emu`), and the model-level scenarios; each with the entries of
//! KVM's MMU history it reproduces (`guests::catalogue`).

use crate::cli::ScenariosArgs;
use anyhow::{bail, Context};
use guests::catalogue;
use guests::model::{scripts, trace};
use guests::model::{Script, Shows};
use recorder::exit::Outcome;
use std::process::ExitCode;

fn showing(model: &'static str) -> Vec<(guests::model::Shows, Vec<&'static str>)> {
    catalogue::policies_showing(&catalogue::Repro::Model(model))
}

pub fn run(args: &ScenariosArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.run {
        return run_model(name, &args.policies, args.json, args.output.as_deref());
    }
    let host = recorder_kvm::probe();
    let rows: Vec<(guests::Scenario, Option<String>)> = guests::scenarios()
        .into_iter()
        .map(|s| {
            let why_not = s.needs.iter().find_map(|&m| host.cannot_run(m));
            (s, why_not)
        })
        .collect();
    // A guest of several vCPUs may need a mode only on some APs: how many vCPUs kvm runs here.
    let kvm_cpus = |s: &guests::Scenario| -> Option<u32> {
        (1..=s.aps.len() as u32 + 1)
            .rev()
            .find(|&n| s.needs_on(n).iter().all(|&m| host.cannot_run(m).is_none()))
            .filter(|_| !s.aps.is_empty())
    };
    let models: Vec<guests::model::Script> = scripts::ALL.iter().map(|(_, b)| b()).collect();
    // What this host's KVM gives its guests (a throw-away VM), for the scripts' CPU features.
    let kvm_cpu = host
        .usable
        .is_ok()
        .then(recorder_kvm::guest_cpu)
        .and_then(Result::ok);
    let as_guest: Vec<AsGuest> = models
        .iter()
        .map(|m| as_guest(m, &host, kvm_cpu.as_ref()))
        .collect();
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
                    "kvm_max_cpus": kvm_cpus(s),
                    "runs_on": if why_not.is_none() || kvm_cpus(s).is_some() { vec!["kvm", "emu", "model"] } else { vec!["emu", "model"] },
                    "expected_events": s.expected.len(),
                    "entries": catalogue::entries_of(s.name),
                })
            })
            .collect();
        list.extend(models.iter().zip(&as_guest).map(|(m, g)| {
            serde_json::json!({
                "name": m.name,
                "description": m.description,
                "kind": "model",
                "flavour": m.flavour.name(),
                "host_actions": m.has_host_actions(),
                "runs_on": g.runs_on(),
                "guest": g.not_recordable.is_none(),
                "guest_reason": g.not_recordable,
                "kvm_here": g.runs_on().contains(&"kvm"),
                "kvm_reason": g.kvm_no,
                "cpu_features": g.features,
                "writes_trace": format!("mmurr scenarios --run {} -o {}.mmurr", m.name, m.name),
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
        let kvm = match (why_not, kvm_cpus(s)) {
            (None, _) => "kvm here: yes; runs on: kvm, emu, model".to_string(),
            (Some(_), Some(n)) => format!(
                "kvm here: with --cpus {n} or fewer (more start an AP that needs what kvm here \
                 lacks: use --backend emu); runs on: kvm, emu, model"
            ),
            (Some(_), None) => "kvm here: no (use --backend emu); runs on: emu, model".into(),
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
        "\nmodel-level scenarios (scripts of guest writes and host actions; `--run NAME -o \
         F.mmurr` writes one as a trace for check, replay and gdb; those without an L2 also \
         run as guests, `record --scenario NAME`, the recorder performing their host actions):"
    );
    println!(
        "(flavours: {}; shadow-ept only here: its input is the EPTP L1 loads for L2)",
        mmu::Flavour::ALL.map(|f| f.name()).join(", ")
    );
    for (m, g) in models.iter().zip(&as_guest) {
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
        let guest = match (&g.not_recordable, &g.kvm_no) {
            (Some(why), _) => format!("not as a guest: {why}"),
            (None, None) => "as a guest on emu and kvm here".to_string(),
            (None, Some(why)) => format!("as a guest on emu (kvm here: no: {why})"),
        };
        let features = if g.features.is_empty() {
            String::new()
        } else {
            format!(
                " (its guest checks CPUID for {} and exits with status 2 without)",
                g.features.join(", ")
            )
        };
        println!(
            "{:width$}  runs on: model (trace: --run {} -o F); {guest}{features}; flavour {}; \
             {verdicts}{}",
            "",
            m.name,
            m.flavour.name(),
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

/// Where a model-level script runs as a guest (`record --scenario NAME`).
struct AsGuest {
    /// Why it does not run as a guest at all (it runs an L2).
    not_recordable: Option<String>,
    /// Why this host's KVM does not run it (a paging mode, a host action it refuses).
    kvm_no: Option<String>,
    /// The CPU features its guest checks for.
    features: Vec<&'static str>,
}

impl AsGuest {
    fn runs_on(&self) -> Vec<&'static str> {
        match (&self.not_recordable, &self.kvm_no) {
            (Some(_), _) => vec!["model"],
            (None, Some(_)) => vec!["emu", "model"],
            (None, None) => vec!["kvm", "emu", "model"],
        }
    }
}

fn as_guest(
    m: &Script,
    host: &recorder_kvm::HostReport,
    kvm_cpu: Option<&mmu::CpuModel>,
) -> AsGuest {
    let not_recordable = guests::model::guest::not_recordable(m);
    let actions: Vec<traces::HostAction> = m.actions.iter().filter_map(|a| a.host()).collect();
    let kvm_no = match guests::model::guest::scenario(m) {
        Ok(g) => g
            .needs
            .iter()
            .find_map(|&mode| host.cannot_run(mode))
            .or_else(|| super::record::kvm_refuses(host, &actions, Some(m), || kvm_cpu.copied())),
        Err(_) => None,
    };
    AsGuest {
        not_recordable,
        kvm_no,
        features: guests::model::guest::features(m),
    }
}

/// `mmurr scenarios --run NAME`: the model-level scenario under the policies, step by step.
fn run_model(
    name: &str,
    policy_names: &[String],
    json: bool,
    output: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let Some(script) = scripts::script_named(name) else {
        bail!("no model-level scenario `{name}` (see `mmurr scenarios`)");
    };
    let mut policies = Vec::new();
    for n in policy_names {
        match mmu::policy(n) {
            Some(p) => policies.push(p),
            None => bail!("unknown policy `{n}` (see `mmurr policies`)"),
        }
    }
    if policies.is_empty() {
        policies = mmu::policies().iter().collect();
    }
    if let Some(path) = output {
        let summary = trace::write(&script, &policies, std::env::args().collect(), path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "mmurr: wrote model-level scenario {} as a trace: {} ({} steps, {} events); open it \
             with `mmurr check`, `mmurr replay` or `mmurr gdb`",
            script.name,
            path.display(),
            script.actions.len(),
            summary.events,
        );
    }
    let seen = script.run(&policies);
    let findings: Vec<_> = seen.iter().filter(|o| o.shows.is_finding()).collect();
    let declared: Vec<_> = script
        .expected()
        .into_iter()
        .filter(|o| o.shows.is_finding() && policies.iter().any(|p| p.name == o.policy))
        .collect();
    let as_declared = script.check().is_ok();
    let decisions: Vec<_> = policies.iter().map(|p| (p, script.decisions(p))).collect();
    if json {
        let steps: Vec<serde_json::Value> = script
            .actions
            .iter()
            .enumerate()
            .map(|(at, a)| {
                let per_policy: Vec<serde_json::Value> = decisions
                    .iter()
                    .filter_map(|(p, ds)| {
                        let (_, d, _) = ds.iter().find(|(i, _, _)| *i == at)?;
                        Some(serde_json::json!({
                            "policy": p.name,
                            "outcome": d.outcome.name(),
                            "decision": d.describe(),
                        }))
                    })
                    .collect();
                serde_json::json!({
                    "step": at,
                    "action": a.describe(),
                    "host_action": a.is_host(),
                    "decisions": per_policy,
                })
            })
            .collect();
        let obs = |o: &guests::model::Observed| serde_json::json!({"policy": o.policy, "step": o.at, "kind": o.shows.name()});
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "name": script.name,
                "description": script.description,
                "flavour": script.flavour.name(),
                "entries": catalogue::entries_of(script.name),
                "steps": steps,
                "findings": findings.iter().map(|o| obs(o)).collect::<Vec<_>>(),
                "declared_findings": declared.iter().map(obs).collect::<Vec<_>>(),
                "as_declared": as_declared,
            }))?
        );
    } else {
        print_model(&script, &decisions);
        println!(
            "\nverdicts {} the scenario declares (entries {})",
            if as_declared {
                "are exactly the ones"
            } else {
                "DIFFER from the ones"
            },
            catalogue::entries_of(script.name).join(", ")
        );
    }
    let bug = findings
        .iter()
        .any(|o| matches!(o.shows, Shows::Stale | Shows::GpMismatch));
    // `check`'s codes, from their one owner.
    Ok(if bug { Outcome::Found } else { Outcome::Clean }.into())
}

type Decisions<'a> = [(&'a &'static mmu::Policy, Vec<(usize, mmu::Decision, bool)>)];

fn print_model(script: &Script, decisions: &Decisions) {
    println!(
        "{}: {} (model-level, flavour {})",
        script.name,
        script.description,
        script.flavour.name()
    );
    let width = decisions
        .iter()
        .map(|(p, _)| p.name.len())
        .max()
        .unwrap_or(0);
    for (at, a) in script.actions.iter().enumerate() {
        println!("step {at}: {}", a.describe());
        for (p, ds) in decisions {
            if let Some((_, d, _)) = ds.iter().find(|(i, _, _)| *i == at) {
                println!("  {:width$}  {}", p.name, d.describe());
            }
        }
    }
}
