//! The `mmurr-emu` executable end to end: flags, exit codes, output.

use std::process::Command;

fn emu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmurr-emu"))
}

#[test]
fn multiboot_hello_prints_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let elf = guests::test_kernels::build_hello().expect("build the hello kernel");
    let kernel = dir.path().join("hello.elf");
    std::fs::write(&kernel, elf).unwrap();
    let serial = dir.path().join("serial.log");
    let out = dir.path().join("hello.mmurr");
    let o = emu()
        .args(["record", "--kernel"])
        .arg(&kernel)
        .args(["--append", "console=ttyS0", "--quiet", "--serial-log"])
        .arg(&serial)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(((guests::test_kernels::HELLO_EXIT_STATUS << 1) | 1) as i32),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&serial).unwrap(),
        guests::test_kernels::HELLO_OUTPUT
    );
    assert!(!stdout.contains("self-check failure"), "{stdout}");
    let r = traces::Reader::open(&out).unwrap();
    assert_eq!(r.header().backend.kind, traces::BackendKind::Emu);
    assert!(r.header().guest.origin.starts_with("multiboot "));
}

#[test]
fn raw_real_mode_image() {
    let dir = tempfile::tempdir().unwrap();
    // mov al, 0x21; out 0xf4, al  -> debug-exit status 0x21 -> exit code 0x43
    let img = dir.path().join("boot.bin");
    std::fs::write(&img, [0xb0, 0x21, 0xe6, 0xf4]).unwrap();
    let o = emu()
        .args(["record", "--quiet", "--memory", "2", "--image"])
        .arg(format!("{}@0x7c00", img.display()))
        .arg("-o")
        .arg(dir.path().join("raw.mmurr"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0x43),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn errors_say_mmurr_emu_and_exit_2() {
    let o = emu()
        .args(["record", "--scenario", "no-such-thing", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("mmurr-emu: error:"), "{err}");
    assert!(err.contains("pae-toggle"), "{err}");
}

#[test]
fn version_and_probe() {
    let o = emu().arg("--version").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("mmurr-emu "));
    let o = emu().args(["probe", "--json"]).output().unwrap();
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("\"pae\"") && s.contains("\"32-bit\""), "{s}");
}

#[test]
fn sigint_finishes_the_trace_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    // mov dx,0x3f8; mov al,'g'; out dx,al; mov al,'\n'; out dx,al; spin: inc cx; jmp spin
    // An endless loop that makes progress (so it is not stuck), after a line on the serial
    // port that says the step loop runs with the signal handler installed.
    let img = dir.path().join("loop.bin");
    std::fs::write(
        &img,
        [
            0xba, 0xf8, 0x03, 0xb0, b'g', 0xee, 0xb0, b'\n', 0xee, 0x41, 0xeb, 0xfd,
        ],
    )
    .unwrap();
    let out = dir.path().join("loop.mmurr");
    let mut child = emu()
        .args([
            "record",
            "--quiet",
            "--memory",
            "2",
            "--max-steps",
            "1000000000",
            "--image",
        ])
        .arg(format!("{}@0x7c00", img.display()))
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "g\n", "the guest's first line");
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = traces::Reader::open(&out).unwrap();
    assert!(r.is_complete());
    assert_eq!(
        r.end().map(|e| e.reason.clone()),
        Some(traces::EndReason::Interrupted)
    );
}
