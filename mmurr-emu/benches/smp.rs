//! Step rate of recording with several vCPUs (`--cpus N`, one instruction each round robin,
//! one Unicorn engine per vCPU): the same busy loop on every vCPU, N = 1, 2, 4. The BSP starts
//! the APs with INIT-SIPI-SIPI (broadcast), then every vCPU increments a counter in memory
//! for ever; each sample records `STEPS` instructions of the machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iced_x86::code_asm::*;
use mmurr_emu::{EmuBackend, SmpBackend};
use recorder::{record, Backend, RecordOptions, SerialSink};

const STEPS: u64 = 20_000;
const GDT: u64 = 0x3000;
const BSP: u64 = 0x1000;
/// The APs' real-mode loop; the startup IPI's vector is its page.
const AP: u64 = 0x8000;

fn guest() -> traces::GuestSpec {
    let mut bsp = CodeAssembler::new(32).unwrap();
    // INIT, then two startup IPIs, to all excluding self.
    for icr in [
        0xc_4500u32,
        0xc_4600 | (AP >> 12) as u32,
        0xc_4600 | (AP >> 12) as u32,
    ] {
        bsp.mov(dword_ptr(0xfee0_0300u64), icr).unwrap();
    }
    let mut top = bsp.create_label();
    bsp.set_label(&mut top).unwrap();
    bsp.inc(ecx).unwrap();
    bsp.mov(dword_ptr(0x9000u64), ecx).unwrap();
    bsp.jmp(top).unwrap();
    let mut ap = CodeAssembler::new(16).unwrap();
    let mut top = ap.create_label();
    ap.set_label(&mut top).unwrap();
    ap.inc(cx).unwrap();
    ap.mov(word_ptr(0x9100u64), cx).unwrap();
    ap.jmp(top).unwrap();
    let mut img = guests::image::Image::new(2 << 20);
    img.add("bsp", BSP, bsp.assemble(BSP).unwrap()).unwrap();
    img.add("ap", AP, ap.assemble(0).unwrap()).unwrap();
    img.add("gdt", GDT, guests::gdt_blob(GDT)).unwrap();
    img.into_spec(
        guests::image::protected_entry(BSP as u32, GDT),
        "bench smp loop".into(),
        String::new(),
    )
}

fn recording(cpus: u32, dir: &std::path::Path) {
    let mut one;
    let mut smp;
    let backend: &mut dyn Backend = if cpus == 1 {
        one = EmuBackend::new().unwrap();
        &mut one
    } else {
        smp = SmpBackend::new(cpus).unwrap();
        &mut smp
    };
    let mut opts = RecordOptions::new(dir.join("smp.mmurr"));
    opts.max_steps = STEPS;
    opts.progress = false;
    opts.serial = SerialSink::Capture;
    // Several vCPUs are single-stepped; so is one here, for a like-for-like rate.
    opts.set_runs(false);
    let s = record(backend, &guest(), &opts).unwrap();
    assert_eq!(s.steps, STEPS, "{}", s.end.message);
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("smp_step_rate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(STEPS));
    for cpus in [1, 2, 4] {
        g.bench_function(format!("{cpus}_vcpus"), |b| {
            b.iter(|| recording(cpus, dir.path()))
        });
    }
    g.finish();
}

criterion_group!(smp, benches);
criterion_main!(smp);
