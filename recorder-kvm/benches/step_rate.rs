//! Steps per second of `recorder::record` on a long-running long-mode loop guest, with exact
//! memory (KVM's dirty log read after every step and the dirty pages diffed against the
//! shadow), against a bare single-step loop (KVM_RUN + the sync-regs area, nothing else) on the
//! same guest. Prints the ratio at the end (the goal is ≥ 0.85).

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::Criterion;
use iced_x86::code_asm::*;
use std::time::{Duration, Instant};

const STEPS: u64 = 20_000;

/// `inc rcx; mov [0x8000], rcx; jmp top`: registers and memory change every iteration.
fn loop_guest() -> traces::GuestSpec {
    let code = common::asm64(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.inc(rcx).unwrap();
        a.mov(qword_ptr(0x8000), rcx).unwrap();
        a.jmp(top).unwrap();
    });
    let mut g = common::long_mode_guest(&code);
    g.ram_size = 16 << 20;
    g
}

/// `steps` single steps with nothing but KVM_RUN and a read of RIP from the sync-regs area.
fn bare_loop(steps: u64) -> Duration {
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe()).unwrap();
    recorder::Backend::load(&mut backend, &loop_guest()).unwrap();
    let start = Instant::now();
    let mut rip = 0;
    for _ in 0..steps {
        rip ^= backend.step_bare().unwrap();
    }
    std::hint::black_box(rip);
    start.elapsed()
}

fn record_loop(steps: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = recorder::RecordOptions::new(dir.path().join("bench.mmurr"));
    opts.max_steps = steps;
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe()).unwrap();
    let start = Instant::now();
    let s = recorder::record(&mut backend, &loop_guest(), &opts).unwrap();
    let t = start.elapsed();
    let reader = traces::Reader::open(&opts.output).unwrap();
    let memory = reader
        .header()
        .backend
        .kvm_facts
        .iter()
        .find(|(k, _)| k == "memory_writes")
        .map(|(_, v)| v.clone());
    assert!(
        memory.as_deref().is_some_and(|m| m.starts_with("exact")),
        "the recording must run with exact memory: {memory:?}"
    );
    assert_eq!(s.steps, steps, "{}", s.end.message);
    assert!(
        s.end.self_check_failures.is_empty(),
        "{:?}",
        s.end.self_check_failures
    );
    t
}

fn main() {
    if let Some(why) = common::kvm_unusable() {
        eprintln!("SKIP: /dev/kvm not usable: {why}");
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut g = c.benchmark_group("step_rate");
    g.throughput(criterion::Throughput::Elements(STEPS));
    g.bench_function("bare_single_step", |b| {
        b.iter_custom(|n| (0..n).map(|_| bare_loop(STEPS)).sum())
    });
    g.bench_function("recorder_record_exact_memory", |b| {
        b.iter_custom(|n| (0..n).map(|_| record_loop(STEPS)).sum())
    });
    g.finish();
    c.final_summary();

    // The same comparison in one place, best of five, as a ratio; the two alternate so that a
    // change in the machine's load affects both alike.
    let (mut bare, mut rec) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        bare = bare.min(bare_loop(100_000));
        rec = rec.min(record_loop(100_000));
    }
    let rate = |d: Duration| 100_000.0 / d.as_secs_f64();
    println!(
        "step rate: bare single-step {:.0} steps/s ({:.2} us/step), recorder::record with exact memory {:.0} steps/s ({:.2} us/step), ratio {:.3}",
        rate(bare),
        bare.as_secs_f64() * 1e6 / 100_000.0,
        rate(rec),
        rec.as_secs_f64() * 1e6 / 100_000.0,
        rate(rec) / rate(bare)
    );
}
