//! `mmurr replay` end to end in a real terminal: tmux runs it at 160x48, the test reads the
//! screen, drives it with keys, quits with `q` and checks the shell has its terminal back.
//! tmux is required: CI installs it, and the test fails loudly without it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn seed_trace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("traces/corpus/recorded/pae-toggle.emu.mmurr")
}

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("tmux is required for this test (CI installs it; apt-get install tmux): {e}")
        })
}

/// A detached tmux session, killed when the test ends however it ends.
struct Session(String);

impl Session {
    fn start() -> Session {
        let version = tmux(&["-V"]);
        assert!(version.status.success(), "tmux -V failed: {version:?}");
        // Unique per test: the tests of this file run in parallel in one process.
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let name = format!("mmurr-replay-test-{}-{n}", std::process::id());
        let out = tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "48",
            "-s",
            &name,
            "env",
            "PS1=$ ",
            "sh",
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        Session(name)
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        let out = tmux(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}: {out:?}");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &self.0]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`, or fails showing the screen.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait(text, |s| s.contains(text))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn replay_draws_in_tmux_and_restores_the_terminal_on_q() {
    let bin = env!("CARGO_BIN_EXE_mmurr");
    let trace = seed_trace();
    let tmux = Session::start();
    let command = format!(
        "clear; '{bin}' replay '{}'; echo replay-exit=$?",
        trace.display()
    );
    tmux.send(&[&command, "Enter"]);
    let s = tmux.wait_for("timeline ·");
    assert!(s.contains(" mmurr  step "), "{s}");
    assert!(s.contains("pae-toggle.emu.mmurr"), "{s}");
    // The MMU model loads in the background; then `d` goes to the seed bug.
    tmux.wait_for("policy v5.1-rc3");
    tmux.send(&["d"]);
    let s = tmux.wait_for("skipped: role unchanged");
    assert!(s.contains("+PAE"), "{s}");
    assert!(s.contains("STALE CONTEXT"), "{s}");
    tmux.send(&["?"]);
    tmux.wait_for("this help");
    tmux.send(&["Escape"]);
    tmux.wait("the help to close", |s| !s.contains("this help"));
    tmux.send(&["q"]);
    let s = tmux.wait_for("replay-exit=0");
    assert!(
        !s.contains("timeline ·"),
        "the alternate screen was left:\n{s}"
    );
    // Cooked mode is back: the shell reads a line and runs it.
    tmux.send(&["echo restored-ok", "Enter"]);
    tmux.wait("the shell to run a command", |s| {
        s.lines().any(|l| l.trim_end() == "restored-ok")
    });
}

/// A trace of four vCPUs (`smp-bringup --cpus 4`): it opens on AP 2's stale context with the
/// panels on vCPU 2, `v` filters the timeline to one vCPU after another, and `q` quits.
#[test]
fn replay_of_several_vcpus_shows_and_filters_them_in_tmux() {
    let bin = env!("CARGO_BIN_EXE_mmurr");
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("traces/corpus/recorded/smp-bringup.emu.mmurr");
    let tmux = Session::start();
    let command = format!(
        "clear; '{bin}' replay '{}'; echo replay-exit=$?",
        trace.display()
    );
    tmux.send(&[&command, "Enter"]);
    let s = tmux.wait_for("STALE CONTEXT");
    for text in ["vCPU 2/4", "registers · vCPU 2", "[2]", "⚠ STALE v5.1-rc3"] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
    tmux.send(&["v"]);
    let s = tmux.wait_for("filter: vcpu=0");
    assert!(s.contains("vCPU 0:"), "{s}");
    tmux.send(&["v"]);
    tmux.send(&["v"]);
    let s = tmux.wait_for("filter: vcpu=2");
    // Only vCPU 2's rows in the timeline (the left 40 %).
    let rows: Vec<String> = s.lines().map(|l| l.chars().take(64).collect()).collect();
    assert!(rows.iter().any(|r| r.contains("[2]")), "{s}");
    assert!(
        rows.iter()
            .all(|r| !r.contains("[0]") && !r.contains("[1]") && !r.contains("[3]")),
        "{s}"
    );
    tmux.send(&["q"]);
    tmux.wait_for("replay-exit=0");
}

#[test]
fn replay_without_a_terminal_says_so_and_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .arg("replay")
        .arg(seed_trace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn into the pipe");
}

#[test]
fn replay_of_a_missing_file_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_mmurr"))
        .args(["replay", "/nonexistent/trace.mmurr"])
        .output()
        .unwrap();
    // Without a terminal the terminal check answers first; either way exit 2, no panic.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
