//! The exit-code table (README "Exit codes", `recorder::exit::Outcome`) on real runs: raw
//! images that halt, exit through port 0xf4 with status 0 and 1, triple-fault, use up
//! --max-steps, time out, and get stuck, recorded on both backends, and the end reason and
//! code `info --json` reports for each. 0 and odd codes only ever come from the guest.

mod common;
use common::{emu_executable, mmurr, text};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// A guest image, where it loads, and in which mode it starts.
struct Image {
    name: &'static str,
    code: &'static [u8],
    at: &'static str,
    mode: &'static str,
}

const HLT: Image = Image {
    name: "hlt",
    code: &[0xf4], // hlt (interrupts are disabled at entry)
    at: "0x7c00",
    mode: "real",
};
const EXIT0: Image = Image {
    name: "exit0",
    code: &[0xb0, 0x00, 0xe6, 0xf4], // mov al,0; out 0xf4,al
    at: "0x7c00",
    mode: "real",
};
const EXIT1: Image = Image {
    name: "exit1",
    code: &[0xb0, 0x01, 0xe6, 0xf4], // mov al,1; out 0xf4,al
    at: "0x7c00",
    mode: "real",
};
const UD2: Image = Image {
    name: "ud2",
    code: &[0x0f, 0x0b], // ud2 with no IDT: #UD, #GP, #DF, triple fault
    at: "0x100000",
    mode: "long",
};
const JMP_SELF: Image = Image {
    name: "jmp-self",
    code: &[0xeb, 0xfe], // jmp $
    at: "0x7c00",
    mode: "real",
};
const SPIN: Image = Image {
    name: "spin",
    code: &[0x40, 0xeb, 0xfd], // spin: inc ax; jmp spin (never stuck: AX changes)
    at: "0x7c00",
    mode: "real",
};

/// Records `image` on `backend`; returns the exit code, stderr and `info --json` of the trace.
fn record(dir: &Path, backend: &str, image: &Image, extra: &[&str]) -> (i32, String, Value) {
    let bin = format!("{}.bin", image.name);
    std::fs::write(dir.join(&bin), image.code).unwrap();
    let trace = format!("{}-{backend}.mmurr", image.name);
    let spec = format!("{bin}@{}", image.at);
    let mut args = vec![
        "record",
        "--image",
        &spec,
        "--entry-mode",
        image.mode,
        "--backend",
        backend,
        "-q",
        "-o",
        &trace,
    ];
    args.extend_from_slice(extra);
    let out = mmurr(&args, dir);
    let err = text(&out.stderr);
    let code = out.status.code().expect("exited, not killed");
    let info = mmurr(&["info", "--json", &trace], dir);
    assert!(info.status.success(), "{}", text(&info.stderr));
    (code, err, serde_json::from_slice(&info.stdout).unwrap())
}

/// Every row of the table that both backends can produce, on `backend`.
fn the_table_on(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: [(&Image, &[&str], i32, &str); 7] = [
        (&HLT, &[], 0, "halted"),
        (&EXIT0, &[], 1, "debug-exit"),
        (&EXIT1, &[], 3, "debug-exit"),
        (&UD2, &[], 8, "shutdown"),
        (&JMP_SELF, &[], 10, "stuck"),
        (&JMP_SELF, &["--max-steps", "1000"], 12, "step-budget"),
        (&SPIN, &["--timeout", "0.3"], 14, "timeout"),
    ];
    for (image, extra, want, reason) in rows {
        let (code, err, info) = record(d, backend, image, extra);
        assert_eq!(code, want, "{} {extra:?} on {backend}:\n{err}", image.name);
        assert_eq!(info["end"]["reason"], reason, "{}: {info}", image.name);
        assert_eq!(info["end"]["exit_code"], want, "{}: {info}", image.name);
    }
}

#[test]
fn every_end_has_its_own_code_on_emu() {
    emu_executable();
    the_table_on("emu");
}

#[test]
fn every_end_has_its_own_code_on_kvm() {
    recorder::require_kvm!();
    the_table_on("kvm");
}

#[test]
fn jmp_self_is_stuck_and_the_message_says_so_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec!["emu"];
    emu_executable();
    if !recorder::test_support::skip_without_kvm(recorder::test_support::kvm_unusable()) {
        backends.push("kvm");
    }
    for backend in backends {
        let (code, err, info) = record(dir.path(), backend, &JMP_SELF, &[]);
        assert_eq!(code, 10, "{err}");
        let message = info["end"]["message"].as_str().unwrap();
        assert!(
            message.contains("RIP 0x7c00")
                && message.contains("jmp $")
                && message.contains("classic hang")
                && message.contains("interrupts disabled"),
            "{backend}: {message}"
        );
        // Stopped by the detector, long before the default budget of 10 M steps. On emu, in
        // runs, up to 100 000 quiet instructions run first; then the watch steps 100 000.
        let steps = info["steps"].as_u64().unwrap();
        let most = if backend == "emu" { 200_010 } else { 100_010 };
        assert!((100_000..=most).contains(&steps), "{backend}: {steps}");
        assert!(err.contains("stuck"), "{err}");
    }
}

#[test]
fn an_instruction_the_host_rewrites_into_a_loop_is_stuck_on_kvm() {
    recorder::require_kvm!();
    // vmmcall: this host's KVM rewrites it to vmcall, which never advances RIP here. Where
    // the host does advance past it, the guest halts instead: both are honest ends.
    let dir = tempfile::tempdir().unwrap();
    let image = Image {
        name: "vmmcall",
        code: &[0x0f, 0x01, 0xd9, 0xf4], // vmmcall; hlt
        at: "0x100000",
        mode: "long",
    };
    let (code, err, info) = record(dir.path(), "kvm", &image, &[]);
    if code == 0 {
        eprintln!("note: this host's KVM completes vmmcall; the guest halted: {err}");
        return;
    }
    assert_eq!(code, 10, "{err}");
    let message = info["end"]["message"].as_str().unwrap();
    assert!(
        message.contains("RIP 0x100000")
            && message.contains("vmcall")
            && message.contains("does not advance"),
        "{message}"
    );
}

#[test]
fn a_failed_self_check_is_never_a_pass_in_info() {
    // The seed trace (a debug-exit with status 0, exit 1) with a self-check failure added to
    // its end record: info reports exit code 16, not the guest's 1.
    let dir = tempfile::tempdir().unwrap();
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/corpus/recorded/pae-toggle.emu.mmurr"
    );
    let mut reader = traces::Reader::open(seed).unwrap();
    let mut w = traces::Writer::create(dir.path().join("sc.mmurr"), reader.header()).unwrap();
    for r in reader.records() {
        let mut r = r.unwrap();
        if let traces::Record::End(e) = &mut r {
            assert_eq!(e.reason, traces::EndReason::DebugExit { status: 0 });
            e.self_check_failures
                .push("step 59: 1 page(s) of guest memory changed without a recorded write".into());
        }
        w.append(&r).unwrap();
    }
    w.finish().unwrap();
    let info = mmurr(&["info", "--json", "sc.mmurr"], dir.path());
    let v: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["end"]["reason"], "debug-exit");
    assert_eq!(v["end"]["exit_code"], 16, "{v}");
    assert_eq!(v["end"]["outcome"], "self-check-failed", "{v}");
}

#[test]
fn usage_errors_and_unreadable_guests_are_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["record", "--image", "missing.bin@0x7c00", "-o", "x.mmurr"],
        vec!["record", "--no-such-flag"],
        vec!["check", "missing.mmurr"],
    ] {
        let out = mmurr(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `mmurr run --gdb` ends with the same codes: gdb continues the guest to its end.
#[test]
fn run_under_gdb_exits_with_the_table_codes() {
    emu_executable();
    let gdb = std::env::var("GDB").unwrap_or_else(|_| "gdb".into());
    assert!(
        Command::new(&gdb).arg("--version").output().is_ok(),
        "gdb is required (apt-get install gdb)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec!["emu"];
    if !recorder::test_support::skip_without_kvm(recorder::test_support::kvm_unusable()) {
        backends.push("kvm");
    }
    for backend in backends {
        for (image, extra, want) in [
            (&EXIT1, &[][..], 3),
            (&JMP_SELF, &["--max-steps", "500"][..], 12),
        ] {
            let bin = dir.path().join(format!("{}.bin", image.name));
            std::fs::write(&bin, image.code).unwrap();
            let spec = format!("{}@{}", bin.display(), image.at);
            let mut child = Command::new(env!("CARGO_BIN_EXE_mmurr"))
                .args(["run", "--image", &spec, "--backend", backend])
                .args(["--gdb", "127.0.0.1:0", "-q"])
                .args(extra)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Handshake: the server says where it listens before gdb connects.
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let port = loop {
                let mut line = String::new();
                assert!(
                    stderr.read_line(&mut line).unwrap() > 0,
                    "no listening line"
                );
                if let Some(rest) = line.split("gdb server listening on 127.0.0.1:").nth(1) {
                    break rest.trim().to_string();
                }
            };
            let drain = std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
                rest
            });
            let g = Command::new(&gdb)
                .args(["-nx", "-batch", "-ex", "set confirm off"])
                .args(["-ex", &format!("target remote 127.0.0.1:{port}")])
                .args(["-ex", "continue"])
                .output()
                .unwrap();
            let status = child.wait().unwrap();
            let rest = drain.join().unwrap();
            assert_eq!(
                status.code(),
                Some(want),
                "{} on {backend}: {rest}\ngdb: {}{}",
                image.name,
                text(&g.stdout),
                text(&g.stderr)
            );
        }
    }
}
