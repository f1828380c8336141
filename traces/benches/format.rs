//! Trace format throughput and seek latency on realistic synthetic step records.
//!
//! Builds a 10-million-step trace once per run (in a temp dir), prints its size per step,
//! then measures: records written per second, and the latency of a seek to a random step
//! (nearest keyframe, then step deltas up to the target, as the replayer does).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;
use traces::synth::{self, Rng, Synth};
use traces::{Reader, Record, Regs, Step, Writer};

const STEPS: u64 = 10_000_000;
const KEYFRAME_INTERVAL: u64 = 10_000;
const EVENT_INTERVAL: u64 = 5_000;

fn build(path: &Path) -> Step {
    let header = synth::header("bench", 1);
    let start = Instant::now();
    let mut w = Writer::create(path, &header).expect("create");
    let mut steps = 0u64;
    for r in Synth::new(1, STEPS, KEYFRAME_INTERVAL, EVENT_INTERVAL) {
        steps += matches!(r, Record::Step(_)) as u64;
        w.append(&r).expect("append");
    }
    let (_, s) = w.finish().expect("finish");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "built {STEPS}-step trace: {} records, {} chunks, {:.1} MB on disk in {secs:.1} s \
         ({:.2} M records/s incl. generation); {:.2} bytes/step after compression \
         ({:.1} before), compression ratio {:.1}x",
        s.records,
        s.chunks,
        s.file_bytes as f64 / 1e6,
        s.records as f64 / secs / 1e6,
        s.compressed_record_bytes as f64 / steps as f64,
        s.raw_record_bytes as f64 / steps as f64,
        s.raw_record_bytes as f64 / s.compressed_record_bytes as f64,
    );
    steps
}

/// Register state at `target`: nearest keyframe, then every step delta after it.
fn seek<R: std::io::Read + std::io::Seek>(reader: &mut Reader<R>, target: Step) -> Regs {
    let kf = reader
        .keyframe_at_or_before(target)
        .expect("keyframe")
        .expect("a keyframe");
    let mut regs = kf.regs;
    let mut chunk = reader.chunk_for_step(kf.step).expect("chunk");
    loop {
        let records = reader.chunk_records(chunk).expect("chunk records");
        for r in records.iter() {
            if let Record::Step(s) = r {
                if s.step > kf.step && s.step <= target {
                    regs.apply_delta(&s.regs);
                }
            }
        }
        let done = reader.chunks()[chunk].header.last_step >= target;
        chunk += 1;
        if done || chunk >= reader.chunks().len() {
            return regs;
        }
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.mmurr");
    let steps = build(&path);

    // Writing: step records only, into a sink, so the figure is encode + compress.
    let mut rng = Rng::new(9);
    let batch: Vec<Record> = (1..=100_000)
        .map(|s| Record::Step(synth::step(&mut rng, s, 0x1000 + s * 3)))
        .collect();
    let header = synth::header("bench", 2);
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("100k step records", |b| {
        b.iter(|| {
            let mut w = Writer::new(std::io::sink(), &header).expect("writer");
            for r in &batch {
                w.append(r).expect("append");
            }
            black_box(w.finish().expect("finish").1)
        })
    });
    g.finish();

    let mut reader = Reader::open(&path).expect("open");
    assert_eq!(reader.total_steps(), steps);
    let mut g = c.benchmark_group("read");
    let mut rng = Rng::new(3);
    g.bench_function("seek to a random step of 10M", |b| {
        b.iter(|| {
            let target = 1 + rng.below(steps);
            black_box(seek(&mut reader, target))
        })
    });
    g.bench_function("open 10M-step trace", |b| {
        b.iter(|| black_box(Reader::open(&path).expect("open").chunks().len()))
    });
    g.finish();
}

criterion_group! {
    name = format;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(5));
    targets = benches
}
criterion_main!(format);
