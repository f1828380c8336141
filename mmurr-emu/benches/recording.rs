//! The emu backend's cost: recording a guest with mmurr-emu (every instruction single-stepped,
//! decoded, traced and fed to all 13 MMU policies; and in runs, `RecordOptions::runs`) against
//! Unicorn running the same guest code with no hooks at all, in the same run. Each sample
//! opens its engine afresh, as a recording does.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmurr_emu::EmuBackend;
use recorder::{record, RecordOptions, SerialSink};
use unicorn_engine::unicorn_const::{Arch, Mode, Prot};
use unicorn_engine::{RegisterX86, Unicorn};

/// The loop for the single-stepped recording (≈ 0.2 M instructions/s), and the longer one
/// for recording in runs, where opening the engine and hashing RAM would otherwise dominate.
const ITERATIONS: u32 = 100_000;
const LONG_ITERATIONS: u32 = 3_333_333;
const CODE: u64 = 0x10_0000;

/// mov rsp, imm32; mov ecx, imm32; then the loop body runs 3 instructions per iteration.
fn instructions(iterations: u32) -> u64 {
    2 + 3 * iterations as u64
}

/// `mov rsp, 0x9000; mov ecx, N; l: mov [rsp-8], rcx; dec ecx; jnz l; hlt`
fn code(iterations: u32) -> Vec<u8> {
    let mut code = vec![0x48, 0xc7, 0xc4, 0x00, 0x90, 0x00, 0x00, 0xb9];
    code.extend_from_slice(&iterations.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x4c, 0x24, 0xf8, 0xff, 0xc9, 0x75, 0xf7, 0xf4]);
    code
}

fn unicorn_without_hooks(code: &[u8]) {
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_64).expect("unicorn");
    uc.mem_map(0, 2 << 20, Prot::ALL).expect("map");
    uc.mem_write(CODE, code).expect("write");
    uc.reg_write(RegisterX86::RSP, 0x9000).expect("rsp");
    let hlt = CODE + code.len() as u64 - 1;
    uc.emu_start(CODE, hlt, 0, 0).expect("run");
    assert_eq!(uc.reg_read(RegisterX86::RIP).expect("rip"), hlt);
}

/// The hooks the runner (mmurr-emu's second engine, which runs the blocks of a run) needs,
/// with nothing done in them beyond what they must do: a block hook that looks the block up
/// in a map, a memory-write hook that marks a page dirty; no instruction count (the runner
/// counts by blocks). The upper bound on what recording in runs can reach.
fn unicorn_with_run_hooks(code: &[u8]) {
    use std::collections::HashMap;
    struct St {
        blocks: HashMap<(u64, u32), u32>,
        dirty: Vec<u64>,
    }
    let st = St {
        blocks: HashMap::new(),
        dirty: vec![0; 512],
    };
    let mut uc = Unicorn::new_with_data(Arch::X86, Mode::MODE_64, st).expect("unicorn");
    uc.mem_map(0, 2 << 20, Prot::ALL).expect("map");
    uc.mem_write(CODE, code).expect("write");
    uc.reg_write(RegisterX86::RSP, 0x9000).expect("rsp");
    uc.add_block_hook(1, 0, |uc, addr, size| {
        let st = uc.get_data_mut();
        *st.blocks.entry((addr, size)).or_insert(0) += 1;
    })
    .expect("block hook");
    uc.add_mem_hook(
        unicorn_engine::unicorn_const::HookType::MEM_WRITE,
        1,
        0,
        |uc, _ty, addr, _size, _v| {
            let page = (addr >> 12) as usize;
            if let Some(w) = uc.get_data_mut().dirty.get_mut(page / 64) {
                *w |= 1 << (page % 64);
            }
            true
        },
    )
    .expect("write hook");
    let hlt = CODE + code.len() as u64 - 1;
    uc.emu_start(CODE, hlt, 0, 0).expect("run");
    assert_eq!(uc.reg_read(RegisterX86::RIP).expect("rip"), hlt);
}

fn mmurr_emu_recording(iterations: u32, dir: &std::path::Path, runs: bool) {
    let code = &code(iterations);
    let guest =
        guests::loader::load_raw(code, CODE, CODE, guests::loader::EntryMode::Long, 64 << 20)
            .expect("guest");
    let mut opts = RecordOptions::new(dir.join("bench.mmurr"));
    opts.progress = false;
    opts.serial = SerialSink::Capture;
    opts.runs = runs;
    opts.max_steps = u64::MAX;
    if runs {
        // A keyframe hashes all of guest RAM (64 MiB here, ≈ 10 ms): with runs, seeks cost
        // records rather than instructions, so keyframes can be far apart.
        opts.keyframe_interval = 1_000_000;
    }
    let mut backend = EmuBackend::new().expect("emu backend");
    let summary = record(&mut backend, &guest, &opts).expect("record");
    // Every instruction of the loop; the final HLT ends the run.
    assert_eq!(
        summary.steps,
        instructions(iterations),
        "{}",
        summary.end.message
    );
    assert!(summary.end.self_check_failures.is_empty());
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("emu");
    g.sample_size(10);
    let code = code(ITERATIONS);
    g.throughput(Throughput::Elements(instructions(ITERATIONS)));
    g.bench_function("unicorn, no hooks", |b| {
        b.iter(|| unicorn_without_hooks(&code))
    });
    g.bench_function("mmurr-emu recording, 13 policies", |b| {
        b.iter(|| mmurr_emu_recording(ITERATIONS, dir.path(), false))
    });
    let long = self::code(LONG_ITERATIONS);
    g.throughput(Throughput::Elements(instructions(LONG_ITERATIONS)));
    g.bench_function("long loop: unicorn, no hooks", |b| {
        b.iter(|| unicorn_without_hooks(&long))
    });
    g.bench_function("long loop: unicorn, run hooks (block, write)", |b| {
        b.iter(|| unicorn_with_run_hooks(&long))
    });
    g.bench_function("long loop: mmurr-emu recording in runs, 13 policies", |b| {
        b.iter(|| mmurr_emu_recording(LONG_ITERATIONS, dir.path(), true))
    });
    g.finish();
}

criterion_group!(emu, benches);
criterion_main!(emu);
