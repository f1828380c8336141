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
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "mmurr-hello-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = (|| {
        std::fs::write(dir.join("hello.S"), HELLO_S)
            .map_err(|e| format!("writing hello.S: {e}"))?;
        std::fs::write(dir.join("hello.ld"), HELLO_LD)
            .map_err(|e| format!("writing hello.ld: {e}"))?;
        run(&dir, "as", &["--32", "-o", "hello.o", "hello.S"])?;
        run(
            &dir,
            "ld",
            &[
                "-m",
                "elf_i386",
                "-T",
                "hello.ld",
                "--build-id=none",
                "-o",
                "hello.elf",
                "hello.o",
            ],
        )?;
        std::fs::read(dir.join("hello.elf")).map_err(|e| format!("reading hello.elf: {e}"))
    })();
    // Best effort: a leftover temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    result
}
