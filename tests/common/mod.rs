//! Running the built `mmurr` and `mmurr-emu` executables as a user does, for the CLI tests.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `PROGRAM ARGS` run in `dir`.
pub fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// `mmurr ARGS` run in `dir`.
pub fn mmurr(args: &[&str], dir: &Path) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_mmurr")), args, dir)
}

/// `mmurr ARGS` run in the test's working directory.
pub fn mmurr_here(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(args)
        .output()
        .expect("run mmurr")
}

/// `mmurr verify ARGS` in `dir` must exit 0 saying every instruction was reproduced; returns
/// its stderr (which says what re-executed it).
pub fn assert_reproduced(args: &[&str], dir: &Path) -> String {
    let out = mmurr(&[&["verify"], args].concat(), dir);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify {args:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("reproduced: all"),
        "verify {args:?}:\n{stdout}"
    );
    stderr
}

/// `(policy, report[field])` of every stale-context finding of a `check --json` report, in
/// report order (`field`: "event", "vcpu", ...).
pub fn stale_contexts(report: &serde_json::Value, field: &str) -> Vec<(String, u64)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "stale-context")
        .map(|f| {
            (
                f["policy"].as_str().unwrap().to_string(),
                f[field].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `mmurr-emu` executable next to `mmurr` (cargo builds it for these tests only when
/// asked: `cargo build -p mmurr-emu`; `cargo test --workspace` builds both).
pub fn emu_executable() -> PathBuf {
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr"))
        .with_file_name(format!("mmurr-emu{}", std::env::consts::EXE_SUFFIX));
    assert!(
        emu.exists(),
        "{} is missing: build it next to mmurr with `cargo build -p mmurr-emu` \
         (`cargo test --workspace` builds both)",
        emu.display()
    );
    emu
}

/// `(policy, action index, verdict)`: what a model-level script declares and `check` shows.
pub type Verdict = (String, usize, String);

/// The verdicts `script` declares.
pub fn declared_verdicts(script: &guests::model::Script) -> std::collections::BTreeSet<Verdict> {
    script
        .expected()
        .into_iter()
        .map(|o| (o.policy.to_string(), o.at, o.shows.name().to_string()))
        .collect()
}

/// What `check --json` shows of `script`'s verdicts: every finding, and the decisions
/// (`no-reset`, `root-kept`) at the actions the script declares them for. `action` maps a
/// step of the trace to the script's action index.
pub fn shown_verdicts(
    report: &serde_json::Value,
    script: &guests::model::Script,
    action: &dyn Fn(u64) -> usize,
) -> std::collections::BTreeSet<Verdict> {
    use guests::model::Shows;
    let declared: std::collections::BTreeSet<(usize, Shows)> = script
        .expects
        .iter()
        .filter(|e| !e.shows.is_finding())
        .map(|e| (e.at, e.shows))
        .collect();
    let at = |v: &serde_json::Value| action(v["step"].as_u64().unwrap());
    let mut out: std::collections::BTreeSet<Verdict> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["policy"].as_str().unwrap().to_string(),
                at(f),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for d in report["decisions"].as_array().into_iter().flatten() {
        for p in d["policies"].as_array().unwrap() {
            for (shows, on) in [
                (Shows::NoReset, p["reset"] == false),
                (Shows::RootKept, p["current_root_freed"] == false),
            ] {
                if on && declared.contains(&(at(d), shows)) {
                    let policy = p["policy"].as_str().unwrap().to_string();
                    out.insert((policy, at(d), shows.name().to_string()));
                }
            }
        }
    }
    out
}
