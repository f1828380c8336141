//! Step rate of recording with several vCPUs (`--cpus N`, one instruction each round robin,
//! one Unicorn engine per vCPU): the same busy loop on every vCPU, N = 1, 2, 4
//! ([`guests::probes::smp_busy_loop`], which `recorder-kvm`'s `smp` bench runs on kvm); each
//! sample records `STEPS` instructions of the machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmurr_emu::{EmuBackend, SmpBackend};
use recorder::{record, Backend, RecordOptions, SerialSink};

const STEPS: u64 = 20_000;

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
    let guest = guests::probes::smp_busy_loop().unwrap();
    let s = record(backend, &guest, &opts).unwrap();
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
