//! `mmurr verify`: re-executing a trace's embedded guest reproduces it; a trace whose
//! recording was altered does not, and verify names the first difference.

mod common;
use common::{assert_reproduced, mmurr, text};
use guests::test_kernels::{external_interrupts, PlatformTest, PLATFORM_PASS};
use std::path::Path;

use traces::{Reader, Record, Writer};

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

    assert_reproduced(&["t.mmurr", "--backend", "kvm"], dir.path());

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
    let stderr = assert_reproduced(&[seed], dir.path());
    assert!(
        stderr.contains("re-executing on the emu backend"),
        "{stderr}"
    );
}

/// A long-mode guest whose path depends on what it reads from outside its machine state:
/// CPUID leaf 1 stored to memory, 64 calls of a function that starts `endbr64; push rbp` and
/// branches on the low bit of `rdtsc`, a read of absent port 0x61 after each, then debug-exit
/// status 0. Loaded at 0x10000 (tests/data would need a build step; the bytes are small).
///
/// ```text
///   mov rsp, 0x300000; mov eax, 1; cpuid; mov [0x201000], ebx; mov [0x201004], ecx
///   mov ecx, 64
/// 1: call f; in al, 0x61; dec ecx; jnz 1b; xor eax, eax; out 0xf4, al; hlt
/// f: endbr64; push rbp; mov rbp, rsp; rdtsc; shl rdx, 32; or rax, rdx
///   mov [rcx*8+0x200000], rax; test al, 1; jz 2f; inc qword [0x201008]
/// 2: pop rbp; ret
/// ```
const TSC_GUEST: [u8; 88] = [
    0x48, 0xc7, 0xc4, 0x00, 0x00, 0x30, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0x89, 0x1c,
    0x25, 0x00, 0x10, 0x20, 0x00, 0x89, 0x0c, 0x25, 0x04, 0x10, 0x20, 0x00, 0xb9, 0x40, 0x00, 0x00,
    0x00, 0xe8, 0x0b, 0x00, 0x00, 0x00, 0xe4, 0x61, 0xff, 0xc9, 0x75, 0xf5, 0x31, 0xc0, 0xe6, 0xf4,
    0xf4, 0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48,
    0x09, 0xd0, 0x48, 0x89, 0x04, 0xcd, 0x00, 0x00, 0x20, 0x00, 0xa8, 0x01, 0x74, 0x08, 0x48, 0xff,
    0x04, 0x25, 0x08, 0x10, 0x20, 0x00, 0x5d, 0xc3,
];

/// [`TSC_GUEST`] recorded on kvm into `k.mmurr` in a new directory.
fn record_tsc_guest() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tsc.bin"), TSC_GUEST).unwrap();
    let rec = mmurr(
        &[
            "record",
            "--image",
            "tsc.bin@0x10000",
            "--entry-mode",
            "long",
            "--backend",
            "kvm",
            "-q",
            "-o",
            "k.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(rec.status.code(), Some(1), "{}", text(&rec.stderr)); // debug-exit status 0
    dir
}

#[test]
fn a_guest_reading_the_tsc_reproduces_on_kvm_and_on_emu() {
    recorder::require_kvm!();
    let dir = record_tsc_guest();
    let mut reader = Reader::open(dir.path().join("k.mmurr")).unwrap();
    let mut rdtsc_steps = 0;
    let mut double_steps = 0;
    let mut steps = 0;
    for r in reader.records() {
        match r.unwrap() {
            Record::Step(s) if s.rip == 0x10039 => rdtsc_steps += 1,
            Record::Step(_) => {}
            Record::Event(e) => {
                if let traces::EventKind::Retired { count } = e.kind {
                    assert_eq!((e.rip, count), (0x10031, 2), "endbr64 and push");
                    double_steps += 1;
                }
            }
            _ => {}
        }
        steps += 1;
    }
    assert_eq!(rdtsc_steps, 64);
    eprintln!(
        "note: {double_steps} of 64 `endbr64` steps on this host retired `push` too \
         ({steps} records)"
    );

    for backend in ["kvm", "emu"] {
        assert_reproduced(&["k.mmurr", "--backend", backend], dir.path());
    }
}

/// The inputs really are fed back: in a trace whose first recorded `rdtsc` result was changed
/// (and everything after it left as recorded), the re-execution gets the changed value, so
/// the `rdtsc` step agrees and the first difference is the instruction that combines it.
#[test]
fn verify_follows_the_recorded_tsc_values() {
    recorder::require_kvm!();
    let dir = record_tsc_guest();
    // Flip the low bit of RAX after the first rdtsc only.
    let mut reader = Reader::open(dir.path().join("k.mmurr")).unwrap();
    let header = reader.header().clone();
    let mut w = Writer::create(dir.path().join("flipped.mmurr"), &header).unwrap();
    let mut flipped = None;
    for r in reader.records() {
        let mut r = r.unwrap();
        if let Record::Step(s) = &mut r {
            if s.rip == 0x10039 && flipped.is_none() {
                for (id, v) in &mut s.regs {
                    if *id == traces::RegId::Gpr(0) {
                        *v ^= 1;
                        flipped = Some(s.step);
                    }
                }
            }
        }
        w.append(&r).unwrap();
    }
    w.finish().unwrap();
    let step = flipped.expect("the first rdtsc wrote RAX");
    let out = mmurr(&["verify", "flipped.mmurr", "--backend", "emu"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    // The rdtsc step agrees (the re-execution got the flipped value, not its own TSC), and
    // so does `shl rdx, 32`; `or rax, rdx` is the first instruction whose recorded result
    // (computed from the unflipped value) differs from the re-execution's.
    assert!(
        stdout.contains(&format!("(step {} in A", step + 2)),
        "the first difference must be at `or rax, rdx`, two steps after the rdtsc: {stdout}"
    );
    assert!(stdout.contains("rax: "), "{stdout}");
}

#[test]
fn verify_says_when_this_host_cannot_run_the_guest() {
    recorder::require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // The seed reproduction uses 32-bit PAE paging, which a PVM KVM host refuses.
    let listing = text(&mmurr(&["scenarios"], dir.path()).stdout);
    let pae_on_kvm = listing
        .lines()
        .skip_while(|l| !l.starts_with("pae-toggle"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .any(|l| l.contains("kvm here: yes"));
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/corpus/recorded/pae-toggle.emu.mmurr"
    );
    let out = mmurr(&["verify", seed, "--backend", "kvm"], dir.path());
    let stdout = text(&out.stdout);
    if pae_on_kvm {
        eprintln!("note: this host's KVM runs 32-bit PAE paging; checking it reproduces instead");
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        return;
    }
    // Exit 4: host-unsupported in the exit-code table (recorder::exit::Outcome).
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("cannot run here"), "{stdout}");
    assert!(!stdout.contains("diverged"), "{stdout}");
}

/// A platform test kernel with timer interrupts, recorded on emu and re-executed: the
/// interrupts come back at the same instructions.
#[test]
fn an_emu_recording_with_interrupts_verifies() {
    let emu = Path::new(env!("CARGO_BIN_EXE_mmurr")).with_file_name("mmurr-emu");
    assert!(
        emu.exists(),
        "{} is not built: `cargo build -p mmurr-emu` (cargo test --workspace builds it)",
        emu.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let elf = guests::test_kernels::build_platform(PlatformTest::PitIoapic)
        .expect("build the kernel (needs binutils)");
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
    let vectors = external_interrupts(&dir.path().join("t.mmurr")).unwrap();
    assert_eq!(vectors, [0x30; 3]);

    assert_reproduced(&["t.mmurr", "--backend", "emu"], dir.path());
}
