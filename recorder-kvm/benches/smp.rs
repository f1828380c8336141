//! Step rate of recording with several vCPUs on kvm (`--backend kvm --cpus N`, one
//! instruction each round robin, one VM with the in-kernel irqchip): the busy loop of
//! `mmurr-emu`'s `smp` bench ([`guests::probes::smp_busy_loop`]) on every vCPU, N = 1, 2, 4;
//! each sample records `STEPS` instructions of the machine. Where /dev/kvm is not usable it
//! prints why and measures nothing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recorder::{record, RecordOptions, SerialSink};
use recorder_kvm::{probe, KvmBackend};

const STEPS: u64 = 20_000;

fn recording(cpus: u32, guest: &traces::GuestSpec, dir: &std::path::Path) {
    let mut backend = KvmBackend::with_vcpus(probe(), cpus).unwrap();
    let mut opts = RecordOptions::new(dir.join("smp.mmurr"));
    opts.max_steps = STEPS;
    opts.progress = false;
    opts.serial = SerialSink::Capture;
    opts.set_runs(false);
    let s = record(&mut backend, guest, &opts).unwrap();
    assert_eq!(s.steps, STEPS, "{}", s.end.message);
}

fn benches(c: &mut Criterion) {
    if let Err(why) = probe().usable {
        eprintln!("SKIP: /dev/kvm is not usable: {why}");
        return;
    }
    let guest = guests::probes::smp_busy_loop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("kvm_smp_step_rate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(STEPS));
    for cpus in [1, 2, 4] {
        g.bench_function(format!("{cpus}_vcpus"), |b| {
            b.iter(|| recording(cpus, &guest, dir.path()))
        });
    }
    g.finish();
}

criterion_group!(smp, benches);
criterion_main!(smp);
