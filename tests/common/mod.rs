//! Running the built `mmurr` and `mmurr-emu` executables as a user does, for the CLI tests.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `mmurr ARGS` run in `dir`.
pub fn mmurr(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mmurr")
}

/// `mmurr ARGS` run in the test's working directory.
pub fn mmurr_here(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(args)
        .output()
        .expect("run mmurr")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `mmurr-emu` executable next to `mmurr` (cargo builds every workspace binary only when
/// asked: `cargo build -p mmurr-emu`).
pub fn emu_executable() -> PathBuf {
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    assert!(
        emu.exists(),
        "{} is missing: build it with `cargo build -p mmurr-emu`",
        emu.display()
    );
    emu
}
