//! `mmurr verify`: re-executing a trace's embedded guest reproduces it; a trace whose
//! recording was altered does not, and verify names the first difference.

use std::path::Path;
use std::process::{Command, Output};
use traces::{Reader, Record, Writer};

fn mmurr(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mmurr")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_kvm_recording_reproduces_and_an_altered_one_does_not() {
    recorder::require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let rec = mmurr(
        &[
            "record",
            "--scenario",
            "long-mode-toggles",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    assert!(dir.path().join("t.mmurr").exists(), "{}", text(&rec.stderr));

    let out = mmurr(&["verify", "t.mmurr", "--backend", "kvm"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("reproduced: all"), "{stdout}");

    // Alter what the guest's 50th instruction left in RAX: re-execution must disagree there.
    let mut reader = Reader::open(dir.path().join("t.mmurr")).unwrap();
    let header = reader.header().clone();
    let mut w = Writer::create(dir.path().join("altered.mmurr"), &header).unwrap();
    for r in reader.records() {
        let mut r = r.unwrap();
        if let Record::Step(s) = &mut r {
            if s.step == 50 {
                s.regs.retain(|(id, _)| *id != traces::RegId::Gpr(0));
                s.regs.push((traces::RegId::Gpr(0), 0xdead_beef));
            }
        }
        w.append(&r).unwrap();
    }
    w.finish().unwrap();
    let out = mmurr(&["verify", "altered.mmurr", "--backend", "kvm"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("(step 50 in A, step 50 in B)"), "{stdout}");
    assert!(stdout.contains("rax: 0xdeadbeef vs"), "{stdout}");
}

#[test]
fn verify_refuses_what_is_not_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.mmurr"), b"not a trace at all").unwrap();
    let out = mmurr(&["verify", "x.mmurr"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read the trace x.mmurr"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_committed_seed_reproduction_verifies_on_the_emu_backend() {
    // The bug report a colleague receives: re-executed from its embedded guest on this machine.
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    assert!(
        emu.exists(),
        "{} is missing: build it with `cargo build -p mmurr-emu`",
        emu.display()
    );
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/corpus/recorded/pae-toggle.emu.mmurr"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = mmurr(&["verify", seed], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("reproduced: all"), "{stdout}");
    assert!(
        text(&out.stderr).contains("re-executing on the emu backend"),
        "{}",
        text(&out.stderr)
    );
}
