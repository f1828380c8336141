//! Steps per second of `recorder::record` on a long-running long-mode loop guest, with exact
//! memory (KVM's dirty log read after every step and the written pages diffed against the
//! shadow), against a bare single-step loop (KVM_RUN + the sync-regs area, nothing else) on the
//! same guest. Prints the ratio at the end (the goal is ≥ 0.85), by wall-clock time and by the
//! CPU time of the thread (which a loaded machine disturbs less). And the cost of recording the
//! host KVM's own events (`--host-events`, root and tracefs) side by side with the same
//! recording without them (the goal is ≤ 10 %).

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::Criterion;
use iced_x86::code_asm::*;
use recorder::HostEventsChoice;
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
/// Time on the CPU of the calling thread so far (`/proc/thread-self/schedstat`, first field, in
/// nanoseconds; KVM_RUN's guest time counts, as it runs on this thread).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Wall-clock and thread CPU time of `f`.
fn timed(f: impl FnOnce()) -> (Duration, Duration) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    f();
    (start.elapsed(), thread_cpu().saturating_sub(cpu))
}

fn bare_loop(steps: u64) -> (Duration, Duration) {
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe()).unwrap();
    recorder::Backend::load(&mut backend, &loop_guest()).unwrap();
    let mut rip = 0;
    let t = timed(|| {
        for _ in 0..steps {
            rip ^= backend.step_bare().unwrap();
        }
    });
    std::hint::black_box(rip);
    t
}

fn record_loop(steps: u64, host_events: HostEventsChoice) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = recorder::RecordOptions::new(dir.path().join("bench.mmurr"));
    opts.max_steps = steps;
    opts.host_events = host_events;
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe()).unwrap();
    let mut s = None;
    let t = timed(|| s = Some(recorder::record(&mut backend, &loop_guest(), &opts).unwrap()));
    let s = s.unwrap();
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
    let host = reader.header().host.as_ref().map(|h| &h.events);
    let recorded = matches!(host, Some(traces::HostEventsStatus::Recorded { .. }));
    assert_eq!(
        recorded,
        host_events == HostEventsChoice::On,
        "host events: {host:?}"
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
        b.iter_custom(|n| (0..n).map(|_| bare_loop(STEPS).0).sum())
    });
    g.bench_function("recorder_record_exact_memory", |b| {
        b.iter_custom(|n| (0..n).map(|_| record_loop(STEPS, Off).0).sum())
    });
    let host_events = host_events_available();
    if let Some(why) = &host_events {
        eprintln!("SKIP: recording with host events: {why}");
    } else {
        g.bench_function("recorder_record_host_events", |b| {
            b.iter_custom(|n| (0..n).map(|_| record_loop(STEPS, On).0).sum())
        });
    }
    g.finish();
    c.final_summary();

    // The same comparison in one place, best of five, as a ratio; the two alternate so that a
    // change in the machine's load affects both alike.
    let max = (Duration::MAX, Duration::MAX);
    let (mut bare, mut rec, mut host) = (max, max, max);
    let min = |a: (Duration, Duration), b: (Duration, Duration)| (a.0.min(b.0), a.1.min(b.1));
    for _ in 0..5 {
        bare = min(bare, bare_loop(100_000));
        rec = min(rec, record_loop(100_000, Off));
        if host_events.is_none() {
            host = min(host, record_loop(100_000, On));
        }
    }
    let rate = |d: Duration| 100_000.0 / d.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / 100_000.0;
    println!(
        "step rate: bare single-step {:.0} steps/s ({:.2} us/step), recorder::record with exact memory {:.0} steps/s ({:.2} us/step), ratio {:.3}",
        rate(bare.0),
        us(bare.0),
        rate(rec.0),
        us(rec.0),
        rate(rec.0) / rate(bare.0)
    );
    println!(
        "step rate by thread CPU time: bare single-step {:.2} us/step, recorder::record {:.2} us/step, ratio {:.3}",
        us(bare.1),
        us(rec.1),
        rate(rec.1) / rate(bare.1)
    );
    if host_events.is_none() {
        println!(
            "host events: recorder::record without {:.2} us/step, with {:.2} us/step: cost {:+.1} % by wall clock, {:+.1} % by thread CPU time",
            us(rec.0),
            us(host.0),
            (host.0.as_secs_f64() / rec.0.as_secs_f64() - 1.0) * 100.0,
            (host.1.as_secs_f64() / rec.1.as_secs_f64() - 1.0) * 100.0
        );
    }
}

use HostEventsChoice::{Off, On};

/// Why host events cannot be recorded here (not root, no tracefs), or `None`.
fn host_events_available() -> Option<String> {
    let mut backend = recorder_kvm::KvmBackend::new(recorder_kvm::probe()).ok()?;
    match recorder::Backend::host(&mut backend)?.start(On).events {
        traces::HostEventsStatus::Recorded { .. } => None,
        other => Some(format!("{other:?}")),
    }
}
