//! Incomplete and corrupt traces never pass for whole ones: real truncated and bit-flipped
//! copies of the committed seed trace (traces/corpus/recorded, whose full form has the seed
//! bug) and of the multi-chunk golden trace, through every command that reads a trace.

mod common;
use common::{mmurr_here as mmurr, text};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use traces::Reader;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/corpus/recorded/pae-toggle.emu.mmurr"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/corpus/pae-toggle.mmurr"
);
/// `mmurr check`'s code for "nothing found, but the trace could not be read whole".
const EXIT_INCOMPLETE: i32 = 18;

/// A copy of `src` with `edit` applied, in `dir`.
fn copy_with(dir: &Path, name: &str, src: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// (file offset, file length) of every chunk of a complete trace.
fn chunks(path: &str) -> Vec<(u64, u64)> {
    let r = Reader::open(path).unwrap();
    assert!(r.is_complete());
    r.chunks()
        .iter()
        .map(|c| (c.offset, c.header.file_len()))
        .collect()
}

#[test]
fn check_of_the_truncated_seed_trace_says_so_first_and_does_not_pass() {
    // The full trace has the seed bug (exit 1); cut at 3800 bytes its only chunk is gone.
    let dir = tempfile::tempdir().unwrap();
    let t = copy_with(dir.path(), "t.mmurr", SEED, |b| b.truncate(3800));
    let out = mmurr(&["check", t.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_INCOMPLETE),
        "{}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("mmurr: warning:") && first.contains("INCOMPLETE"),
        "the first thing said is what was lost: {err}"
    );
    assert!(err.contains("lost the last 696 bytes"), "{err}");
    assert!(err.contains("no end record"), "{err}");

    let out = mmurr(&["check", "--json", t.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_INCOMPLETE));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], false, "{v}");
    let i = &v["trace_integrity"];
    assert_eq!(i["recovery"]["lost_bytes"], 696, "{i}");
    assert_eq!(i["lost_bytes"], 696, "{i}");
    assert_eq!(i["has_end"], false, "{i}");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn check_never_exits_zero_on_any_cut_of_the_seed_trace() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(SEED).unwrap();
    // Every 97 bytes (through header, chunk and index), and one byte short of whole.
    let cuts = (64..full.len()).step_by(97).chain([full.len() - 1]);
    for cut in cuts {
        let t = copy_with(dir.path(), "cut.mmurr", SEED, |b| b.truncate(cut));
        let out = mmurr(&["check", t.to_str().unwrap()]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(1) | Some(2) | Some(EXIT_INCOMPLETE)),
            "cut at {cut}: exit {code:?}\n{}",
            text(&out.stderr)
        );
        if code == Some(1) {
            // Findings are only reported from the part that survived: the end chunk did.
            assert!(text(&out.stdout).contains("stale-context"), "cut {cut}");
        }
    }
}

#[test]
fn info_reports_the_corrupt_chunk_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (offset, len) = chunks(SEED)[0];
    // One bit in the middle of the chunk's compressed payload.
    let t = copy_with(dir.path(), "flip.mmurr", SEED, |b| {
        b[(offset + len / 2) as usize] ^= 0x10
    });
    let out = mmurr(&["info", t.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let status = stdout.lines().find(|l| l.starts_with("status")).unwrap();
    assert!(
        status.contains(&format!("CORRUPT: chunk 0 of 1 at offset {offset}"))
            && status.contains("checksum"),
        "{status}"
    );
    assert!(!status.contains("complete"), "{status}");
    assert!(
        text(&out.stderr).contains("CORRUPT"),
        "{}",
        text(&out.stderr)
    );

    let out = mmurr(&["info", "--json", t.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], false);
    let d = &v["trace_integrity"]["damaged"][0];
    assert_eq!(d["offset"], offset, "{d}");
    assert_eq!(d["bytes"], len, "{d}");
    assert_eq!(
        (d["first_step"].as_u64(), d["last_step"].as_u64()),
        (Some(0), Some(59))
    );
    assert_eq!(d["end_event"], 76, "{d}");
    assert!(d["error"].as_str().unwrap().contains("checksum"), "{d}");

    // The intact original verifies.
    let v: Value = serde_json::from_slice(&mmurr(&["info", "--json", SEED]).stdout).unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(
        v["trace_integrity"]["damaged"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn a_corrupt_middle_chunk_is_named_and_the_others_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = chunks(GOLDEN);
    assert!(chunks.len() >= 3, "the golden trace has several chunks");
    let (offset, len) = chunks[2];
    let t = copy_with(dir.path(), "mid.mmurr", GOLDEN, |b| {
        b[(offset + len - 1) as usize] ^= 0x01
    });
    let v: Value =
        serde_json::from_slice(&mmurr(&["info", "--json", t.to_str().unwrap()]).stdout).unwrap();
    let damaged = v["trace_integrity"]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0]["chunk"], 2);
    assert_eq!(damaged[0]["offset"], offset);

    // check reads up to the damage and says so; it does not pass.
    let out = mmurr(&["check", t.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_INCOMPLETE),
        "{}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .contains(&format!("CORRUPT: chunk 2 of {}", chunks.len())),
        "{err}"
    );
}

#[test]
fn export_diff_and_verify_say_first_and_do_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (offset, len) = chunks(SEED)[0];
    let flip = copy_with(dir.path(), "flip.mmurr", SEED, |b| {
        b[(offset + len / 2) as usize] ^= 0x10
    });
    let cut = copy_with(dir.path(), "cut.mmurr", SEED, |b| b.truncate(3800));
    let flip = flip.to_str().unwrap();
    let cut = cut.to_str().unwrap();
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    let mut runs = vec![
        vec!["export", flip],
        vec!["export", cut, "--format", "perfetto"],
        vec!["diff", SEED, flip],
        vec!["diff", cut, cut],
    ];
    if emu.exists() {
        runs.push(vec!["verify", flip, "--backend", "emu"]);
    } else {
        eprintln!("note: {} not built: verify not tried", emu.display());
    }
    for args in runs {
        let out = mmurr(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_INCOMPLETE), "{args:?}\n{err}");
        assert!(
            err.lines()
                .next()
                .is_some_and(|l| l.contains("CORRUPT") || l.contains("INCOMPLETE")),
            "{args:?}: the warning comes first:\n{err}"
        );
    }
    // The Perfetto export of what survived says in its metadata that it is partial.
    let out = mmurr(&["export", cut, "--format", "perfetto"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["otherData"]["complete"], false);
    assert_eq!(v["otherData"]["trace_integrity"]["has_end"], false);
}

#[test]
fn replay_and_gdb_say_first() {
    let dir = tempfile::tempdir().unwrap();
    let cut = copy_with(dir.path(), "cut.mmurr", SEED, |b| b.truncate(3800));
    // Without a terminal, replay refuses to draw, but only after the warning.
    let out = mmurr(&["replay", cut.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(err.lines().next().unwrap().contains("INCOMPLETE"), "{err}");
    assert_eq!(out.status.code(), Some(2));

    // The gdb server warns before it listens (the handshake: its "listening" line).
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(["gdb", cut.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines[0].contains("INCOMPLETE"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:#?}");
}
