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
