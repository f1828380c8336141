//! Printing commands end quietly when their reader is gone (`mmurr info T | head`): no panic,
//! no error message, as Unix tools do.

use std::process::{Command, Stdio};

const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/corpus/long-mode.mmurr");

/// Runs mmurr with its standard output a pipe whose read end is closed before mmurr writes.
fn into_closed_pipe(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn printing_into_a_closed_pipe_is_quiet() {
    for args in [
        vec!["info", TRACE],
        vec!["info", TRACE, "--json"],
        vec!["export", TRACE],
        vec!["policies"],
        vec!["check", TRACE],
    ] {
        let stderr = into_closed_pipe(&args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}
