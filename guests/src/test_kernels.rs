//! Test kernels built from committed assembly sources with the system's GNU binutils, for this
//! crate's tests and other crates' (the recorder runs the multiboot kernel end to end).
//!
//! Building needs `as` and `ld` (Debian package `binutils`). Their absence is an error, never a
//! silent skip: a test that cannot build its kernel must fail loudly.

use std::path::Path;
use std::process::Command;

/// The multiboot kernel source: prints "hello from multiboot\n" on COM1, exits with 0x10.
pub const HELLO_S: &str = include_str!("../tests/kernels/hello.S");
/// Its linker script.
pub const HELLO_LD: &str = include_str!("../tests/kernels/hello.ld");
/// The debug-exit status the hello kernel writes on success.
pub const HELLO_EXIT_STATUS: u32 = 0x10;
/// What it prints on the serial port.
pub const HELLO_OUTPUT: &str = "hello from multiboot\n";

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).current_dir(dir).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` not found: install GNU binutils (e.g. `apt-get install binutils`) to build the test kernel")
        } else {
            format!("running `{program}`: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Assembles and links the hello kernel (`as --32`, `ld -m elf_i386`) in a fresh temporary
/// directory and returns the ELF file's bytes.
pub fn build_hello() -> Result<Vec<u8>, String> {
    build("hello", HELLO_S, &["--32"], "elf_i386")
}

/// The platform test kernels' source (see its header): one kernel per [`PlatformTest`].
pub const PLATFORM_S: &str = include_str!("../tests/kernels/platform.S");
/// The debug-exit status of a platform test kernel that passed; 0x20 + n is failed check n,
/// 0x3e an unexpected exception.
pub const PLATFORM_PASS: u32 = 0x10;
/// What the interrupt-driven serial kernel sends.
pub const PLATFORM_SERIAL_OUTPUT: &str = "interrupt-driven serial ok\n";

/// The platform test kernels (`TEST=n` in platform.S).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformTest {
    /// LAPIC timer, one-shot.
    LapicOneShot = 1,
    /// LAPIC timer, periodic.
    LapicPeriodic = 2,
    /// PIT channel 2 polled through port 0x61 (TSC calibration style).
    PitPoll = 3,
    /// PIT IRQ 0 through the 8259 PIC.
    PitPic = 4,
    /// PIT IRQ 0 through the I/O APIC.
    PitIoapic = 5,
    /// COM1 transmit driven by its interrupt.
    SerialIrq = 6,
}

impl PlatformTest {
    pub const ALL: [PlatformTest; 6] = [
        PlatformTest::LapicOneShot,
        PlatformTest::LapicPeriodic,
        PlatformTest::PitPoll,
        PlatformTest::PitPic,
        PlatformTest::PitIoapic,
        PlatformTest::SerialIrq,
    ];
}

/// Assembles and links one platform test kernel (`as --64 --defsym TEST=n`, `ld -m
/// elf_x86_64` with hello's linker script: everything at 1 MiB) and returns the ELF64 bytes.
pub fn build_platform(test: PlatformTest) -> Result<Vec<u8>, String> {
    let defsym = format!("TEST={}", test as u32);
    build(
        "platform",
        PLATFORM_S,
        &["--64", "--defsym", &defsym],
        "elf_x86_64",
    )
}

/// Assembles `source` with `as_args` and links it with hello's linker script for the `ld`
/// emulation `emulation`, in a fresh temporary directory; returns the ELF file's bytes.
fn build(stem: &str, source: &str, as_args: &[&str], emulation: &str) -> Result<Vec<u8>, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "mmurr-{stem}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (src, obj, elf) = (
        format!("{stem}.S"),
        format!("{stem}.o"),
        format!("{stem}.elf"),
    );
    let result = (|| {
        std::fs::write(dir.join(&src), source).map_err(|e| format!("writing {src}: {e}"))?;
        std::fs::write(dir.join("kernel.ld"), HELLO_LD)
            .map_err(|e| format!("writing kernel.ld: {e}"))?;
        let mut args = as_args.to_vec();
        args.extend(["-o", &obj, &src]);
        run(&dir, "as", &args)?;
        run(
            &dir,
            "ld",
            &[
                "-m",
                emulation,
                "-T",
                "kernel.ld",
                "--build-id=none",
                "-o",
                &elf,
                &obj,
            ],
        )?;
        std::fs::read(dir.join(&elf)).map_err(|e| format!("reading {elf}: {e}"))
    })();
    // Best effort: a leftover temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    result
}
