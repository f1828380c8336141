//! Running the real gdb against an in-process server.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The gdb binary; tests that need it fail loudly when it is missing (CI installs it).
pub fn gdb_binary() -> PathBuf {
    let gdb = std::env::var_os("GDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| "gdb".into());
    match Command::new(&gdb).arg("--version").output() {
        Ok(o) if o.status.success() => gdb,
        _ => panic!(
            "gdb is required for these tests and was not found ({}); install it (apt-get install gdb)",
            gdb.display()
        ),
    }
}

/// Starts the replay server on an ephemeral loopback port in a thread; returns the port.
pub fn start_replay_server(trace: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let trace = trace.to_path_buf();
    std::thread::spawn(move || {
        mmurr_gdb::serve_trace(&trace, listener).unwrap();
    });
    port
}

/// Runs `gdb -batch -x script` with `target remote` prepended; returns stdout + stderr.
pub fn run_gdb(port: u16, script: &str) -> String {
    run_gdb_interrupting(port, script, None)
}

/// Like [`run_gdb`]; with `interrupt_when`, sends gdb a SIGINT (what Ctrl-C in its terminal
/// does), which gdb forwards to the target as a `\x03`, once `interrupt_when` holds for gdb's
/// log of the remote packets it sent and received so far (gdb flushes that log after every
/// packet, e.g. `w $vCont;c...` once it resumed the target): a handshake, not a guessed delay.
pub fn run_gdb_interrupting(
    port: u16,
    script: &str,
    interrupt_when: Option<&dyn Fn(&str) -> bool>,
) -> String {
    let gdb = gdb_binary();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "set pagination off").unwrap();
    writeln!(file, "set confirm off").unwrap();
    writeln!(file, "set width 0").unwrap();
    let remote_log = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "set remotelogfile {}", remote_log.path().display()).unwrap();
    writeln!(file, "target remote 127.0.0.1:{port}").unwrap();
    file.write_all(script.as_bytes()).unwrap();
    writeln!(file).unwrap();
    writeln!(file, "detach").unwrap();
    file.flush().unwrap();
    // One file for stdout and stderr so the transcript keeps gdb's order (monitor and
    // console output go to stderr in batch mode, the rest to stdout).
    // (One open file description, duplicated, so both streams share the write offset.)
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = log.reopen().unwrap();
    let err = out.try_clone().unwrap();
    let mut child = Command::new(gdb)
        .args(["-nx", "-batch", "-x"])
        .arg(file.path())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    if let Some(ready) = interrupt_when {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !ready(&String::from_utf8_lossy(
            &std::fs::read(remote_log.path()).unwrap_or_default(),
        )) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "gdb exited ({status}) before it was to be interrupted:\n{}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gdb never got to the point of being interrupted:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "could not signal gdb");
    }
    let status = child.wait().unwrap();
    assert!(status.code().is_some(), "gdb died from a signal");
    let text = std::fs::read_to_string(log.path()).unwrap();
    eprintln!("---- gdb transcript ----\n{text}\n------------------------");
    text
}

/// The recorded seed trace (pae-toggle on the emu backend).
pub fn seed_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/corpus/recorded/pae-toggle.emu.mmurr")
}

/// The line of `text` that starts with `prefix` (after trimming), for register listings.
pub fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// Asserts `needle` occurs in `text`, showing the transcript when it does not.
#[track_caller]
pub fn expect(text: &str, needle: &str) {
    assert!(
        text.contains(needle),
        "expected {needle:?} in gdb's output:\n{text}"
    );
}

/// `text` after the first occurrence of `marker` (to assert on order).
#[track_caller]
pub fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let i = text
        .find(marker)
        .unwrap_or_else(|| panic!("expected {marker:?} in gdb's output:\n{text}"));
    &text[i + marker.len()..]
}

/// Builds (once) and returns a workspace binary in this target directory.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "mmurr", "-p", "mmurr-emu"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .expect("cannot run cargo");
        assert!(status.success(), "building mmurr and mmurr-emu failed");
    });
    let _ = package;
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(name);
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}
