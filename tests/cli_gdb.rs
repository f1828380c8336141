//! `mmurr gdb TRACE` starts the real gdb, connected, with mmurr's commands loaded.

mod common;

use common::{mmurr_here, text};

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/corpus/recorded/pae-toggle.emu.mmurr"
);

/// `mmurr seek` moves the replay and gdb shows the new state at once (gdb's register cache is
/// flushed by the command; a bare `monitor seek` would leave `$pc` stale); `mmurr when`,
/// `mmurr role` and `mmurr walk` answer from the replay; arguments after `--` reach gdb.
#[test]
fn mmurr_gdb_starts_gdb_connected_with_mmurrs_commands() {
    let out = mmurr_here(&[
        "gdb",
        SEED,
        "--",
        "-batch",
        "-ex",
        "p $pc",
        "-ex",
        "mmurr seek 40",
        "-ex",
        "p $pc",
        "-ex",
        "mmurr when",
        "-ex",
        "mmurr role v5.1-rc3",
        "-ex",
        "mmurr walk 0x400000 v5.1-rc3",
        "-ex",
        "help mmurr seek",
    ]);
    let stdout = text(&out.stdout);
    let all = format!("{stdout}\n{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("$1 = (void (*)()) 0x1000"), "{all}");
    assert!(all.contains("at step 40;"), "{all}");
    // The instruction after step 40, not the entry's 0x1000.
    let second = all.split("$2 = ").nth(1).unwrap_or_default();
    assert!(
        second.starts_with("(void (*)()) 0x14") && !second.starts_with("(void (*)()) 0x1000\n"),
        "{all}"
    );
    assert!(all.contains("step 40 of 59"), "{all}");
    assert!(all.contains("STALE"), "{all}");
    assert!(all.contains("0x11000"), "{all}");
    assert!(all.contains("Move the replay to step N"), "{all}");
}

/// Without gdb, `mmurr gdb` says how to get it or to serve only; a missing trace is an error
/// before anything listens.
#[test]
fn mmurr_gdb_without_gdb_or_trace_says_why() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(["gdb", SEED])
        .env("GDB", "/nonexistent/gdb")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--server-only"), "{err}");
    let out = mmurr_here(&["gdb", "nosuch.mmurr", "--server-only"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("listening"), "{err}");
}
