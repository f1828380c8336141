//! Seeking a 10-M-step trace: the replayer rebuilds registers and memory at a random step from
//! the nearest page-keyframe checkpoint plus step deltas (issue target: ≤ 5 ms), and steps back
//! one instruction (what gdb's reverse-stepi costs).

use criterion::{criterion_group, criterion_main, Criterion};
use replayer::Timeline;
use std::time::Duration;
use traces::synth::{self, Rng, Synth};
use traces::Writer;

const STEPS: u64 = 10_000_000;

fn build(path: &std::path::Path) {
    let mut w = Writer::create(path, &synth::header("bench", 7)).expect("create");
    for mut r in Synth::new(7, STEPS, 10_000, 50_000) {
        // As the recorder writes them: every keyframe carries the pages written since the
        // previous one (the synthetic guest's few writes are not tracked; timing is the point).
        if let traces::Record::Keyframe(k) = &mut r {
            k.carries_pages = true;
        }
        w.append(&r).expect("append");
    }
    w.finish().expect("finish");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("10m.mmurr");
    let t0 = std::time::Instant::now();
    build(&path);
    eprintln!(
        "built a {STEPS}-step trace in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let t0 = std::time::Instant::now();
    let mut timeline = Timeline::open(&path).expect("open");
    eprintln!("opened in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    timeline.seek(STEPS).expect("seek to the end");
    eprintln!(
        "first seek to the end (scans every keyframe once) in {:?}",
        t0.elapsed()
    );

    let mut g = c.benchmark_group("replayer");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    let mut rng = Rng::new(1);
    g.bench_function("seek to a random step of 10M", |b| {
        b.iter(|| {
            let step = rng.below(STEPS + 1);
            timeline.seek(step).expect("seek").step
        })
    });
    g.bench_function("reverse-stepi from a random step", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let step = 1 + rng.below(STEPS);
                timeline.seek(step).expect("seek");
                let t = std::time::Instant::now();
                timeline.step_by(-1).expect("step back");
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(seek, benches);
criterion_main!(seek);
