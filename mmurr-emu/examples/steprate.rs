//! Developer measurement: raw backend step rate (no recorder) on a tight long-mode loop.
use mmurr_emu::EmuBackend;
use recorder::{Backend, Exit};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // mov rsp, 0x9000; mov ecx, n; l: mov [rsp-8], rcx; dec ecx; jnz l; hlt
    let mut code = vec![0x48, 0xc7, 0xc4, 0x00, 0x90, 0x00, 0x00, 0xb9];
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x4c, 0x24, 0xf8, 0xff, 0xc9, 0x75, 0xf7, 0xf4]);
    let g = guests::loader::load_raw(
        &code,
        0x10_0000,
        0x10_0000,
        guests::loader::EntryMode::Long,
        64 << 20,
    )
    .unwrap();
    let mut b = EmuBackend::new().unwrap();
    b.load(&g).unwrap();
    let t = std::time::Instant::now();
    let mut steps = 0u64;
    loop {
        let r = b.step().unwrap();
        let _ = b.regs().unwrap();
        steps += 1;
        if r.exit == Exit::Halted {
            break;
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{steps} steps in {s:.2} s: {:.0} steps/s ({:.2} us/step)",
        steps as f64 / s,
        s * 1e6 / steps as f64
    );
}
