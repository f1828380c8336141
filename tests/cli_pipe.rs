//! Printing commands end quietly when their reader goes away (`mmurr export T | head`).

use std::io::Read;
use std::process::{Command, Stdio};
use traces::synth::{self, Synth};
use traces::Writer;

#[test]
fn export_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mmurr");
    let mut w = Writer::create(&path, &synth::header("pipe", 3)).unwrap();
    // A CR event (and its MMU decisions) every 5 steps: megabytes of JSON lines.
    for r in Synth::new(3, 100_000, 10_000, 5) {
        w.append(&r).unwrap();
    }
    w.finish().unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(["export", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here, as `head` would close it.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        first.starts_with(b"{\"id\":0"),
        "{}",
        String::from_utf8_lossy(&first)
    );
}
