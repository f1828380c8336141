//! The replay goals of issue 13 on a real recording, the Linux boot of the corpus recorded on
//! emu in runs (`MMURR_BENCH_TRACE=boot.mmurr cargo bench -p replayer --bench real_trace`; the
//! README says how to record it). Without the variable the bench says so and measures nothing.
//!
//! - open: header, index and entry state (what `replay` and `gdb` do before the first frame);
//! - a seek to a random step, most of them inside a run (re-executed on mmurr-emu, which must be
//!   built: `cargo build --release -p mmurr-emu`, found through `$MMURR_EMU` or beside the
//!   bench's target directory);
//! - reverse-stepi from where a seek stood: one step back, from the same re-execution.

use criterion::{criterion_group, criterion_main, Criterion};
use replayer::{Reexecution, Timeline};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use traces::synth::Rng;

fn trace() -> Option<PathBuf> {
    let path = std::env::var_os("MMURR_BENCH_TRACE").map(PathBuf::from);
    if path.is_none() {
        eprintln!("real_trace: set MMURR_BENCH_TRACE to a recorded trace; nothing measured");
    }
    path
}

fn timeline(path: &PathBuf) -> Timeline {
    let mut t = Timeline::open(path).expect("open the trace");
    if let Some(emu) = std::env::var_os("MMURR_EMU") {
        t.set_reexecution(Reexecution::new(emu));
    }
    t
}

fn benches(c: &mut Criterion) {
    let Some(path) = trace() else { return };
    let mut g = c.benchmark_group("real trace");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("open", |b| b.iter(|| timeline(&path).last_step()));

    let mut t = timeline(&path);
    let last = t.last_step();
    let started = Instant::now();
    t.seek(last).expect("seek to the end");
    eprintln!(
        "first seek to the end (scans every keyframe once): {:?}",
        started.elapsed()
    );
    let mut rng = Rng::new(13);
    g.bench_function("seek to a random step (re-executing its run)", |b| {
        b.iter(|| t.seek(1 + rng.below(last)).expect("seek").step)
    });
    g.bench_function("reverse-stepi where a seek stood", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let step = 2 + rng.below(last - 1);
                t.seek(step).expect("seek");
                let started = Instant::now();
                t.seek(step - 1).expect("step back");
                total += started.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(real, benches);
criterion_main!(real);
