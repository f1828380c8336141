//! A platform test kernel with timer interrupts, recorded on emu through the CLI and
//! re-executed by `mmurr verify`: the interrupts come back at the same instructions.

use guests::test_kernels::{build_platform, PlatformTest, PLATFORM_PASS};
use std::path::Path;
use std::process::{Command, Output};
use traces::{EventKind, Reader, Record};

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
fn an_emu_recording_with_interrupts_verifies() {
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    assert!(
        emu.exists(),
        "{} is not built: `cargo build -p mmurr-emu` (cargo test --workspace builds it)",
        emu.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let elf = build_platform(PlatformTest::PitIoapic).expect("build the kernel (needs binutils)");
    std::fs::write(dir.path().join("k.elf"), elf).unwrap();
    let rec = mmurr(
        &[
            "record",
            "--kernel",
            "k.elf",
            "--backend",
            "emu",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(
        rec.status.code(),
        Some(((PLATFORM_PASS << 1) | 1) as i32),
        "{}",
        text(&rec.stderr)
    );
    let mut reader = Reader::open(dir.path().join("t.mmurr")).unwrap();
    let steps_with_interrupts: Vec<u64> = reader
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Event(e) if matches!(e.kind, EventKind::ExternalInterrupt(_)) => Some(e.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps_with_interrupts.len(), 3, "{steps_with_interrupts:?}");

    let out = mmurr(&["verify", "t.mmurr", "--backend", "emu"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("reproduced: all"), "{stdout}");
}
