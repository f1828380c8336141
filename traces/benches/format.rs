//! Trace format throughput and seek latency on realistic synthetic step records.
//!
//! Builds a 10-million-step trace once per run (in a temp dir), prints its size per step,
//! then measures: records written per second, and the latency of a seek to a random step
//! (nearest keyframe, then step deltas up to the target, as the replayer does).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;
use traces::synth::{self, Rng};
use traces::*;

const STEPS: u64 = 10_000_000;
const KEYFRAME_INTERVAL: u64 = 10_000;
const EVENT_INTERVAL: u64 = 5_000;

/// Step records as a tracer produces them for ordinary code: RIP mostly advances by an
/// instruction length and sometimes branches back a little, one register moves by a small
/// amount (a counter, a pointer), flags change about half the time, and one instruction in
/// eight stores eight bytes near the stack pointer.
struct Realistic {
    rng: Rng,
    regs: Regs,
}

impl Realistic {
    fn new(seed: u64) -> Self {
        let mut regs = synth::header("bench", seed).guest.entry;
        regs.rip = 0x10_0000;
        regs.gpr[4] = 0x8000;
        Realistic {
            rng: Rng::new(seed),
            regs,
        }
    }

    fn step(&mut self, step: Step) -> StepRecord {
        let rng = &mut self.rng;
        let rip = self.regs.rip;
        let next = if rng.below(16) == 0 {
            rip.saturating_sub(rng.below(64))
        } else {
            rip + 1 + rng.below(7)
        };
        let mut regs = vec![(RegId::Rip, next)];
        if rng.below(4) != 0 {
            let g = [0usize, 1, 2, 3, 6, 7][rng.below(6) as usize];
            let v = self.regs.gpr[g].wrapping_add([1, 4, 8, 16][rng.below(4) as usize]);
            regs.push((RegId::Gpr(g as u8), v));
        }
        if rng.below(2) == 0 {
            regs.push((RegId::Rflags, 0x2 | (rng.below(4) << 6)));
        }
        let mem = if rng.below(8) == 0 {
            let sp = self.regs.gpr[4];
            vec![MemWrite {
                gpa: sp - 8 * rng.below(8),
                data: self.regs.gpr[rng.below(8) as usize].to_le_bytes().to_vec(),
            }]
        } else {
            Vec::new()
        };
        self.regs.apply_delta(&regs);
        StepRecord {
            step,
            rip,
            regs,
            mem,
        }
    }
}

fn event(id: u64, step: Step, kind: EventKind) -> Record {
    Record::Event(Event {
        id,
        step,
        rip: 0x10_0000,
        kind,
    })
}

fn build(path: &Path) -> Step {
    let header = synth::header("bench", 1);
    let start = Instant::now();
    let mut w = Writer::create(path, &header).expect("create");
    let mut gen = Realistic::new(1);
    let mut next_event = 0;
    w.append(&Record::Keyframe(Keyframe {
        step: 0,
        regs: gen.regs.clone(),
        pages: Vec::new(),
        carries_pages: true,
        memory_hash: 0,
    }))
    .expect("append");
    for step in 1..=STEPS {
        w.append(&Record::Step(gen.step(step))).expect("append");
        if step % EVENT_INTERVAL == 0 {
            let cause = next_event;
            let write = CrWrite {
                reg: ControlReg::Cr3,
                old: 0x1000,
                new: 0x2000,
                via: WriteVia::MovCr,
                faulted: false,
            };
            w.append(&event(cause, step, EventKind::CrWrite(write)))
                .expect("append");
            next_event += 1;
            for policy in 0..4 {
                let d = MmuDecision {
                    policy,
                    cause,
                    outcome: MmuOutcome::NewPgd,
                    trigger_bits: 0,
                    old_cpu_role: 0x1234,
                    new_cpu_role: 0x1234,
                    old_root_role: 0x301,
                    new_root_role: 0x301,
                    context_changes: Vec::new(),
                    root_cache: Some(RootCacheLookup {
                        hit: true,
                        slot: Some(0),
                        role: 0x301,
                    }),
                    tlb_flush: TlbFlush::Current,
                };
                w.append(&event(next_event, step, EventKind::Mmu(d)))
                    .expect("append");
                next_event += 1;
            }
        }
        if step % KEYFRAME_INTERVAL == 0 {
            let carries_pages = step % (4 * KEYFRAME_INTERVAL) == 0;
            let pages = if carries_pages {
                vec![Page {
                    gpa: 0x7000,
                    data: vec![0x5a; 4096],
                }]
            } else {
                Vec::new()
            };
            let k = Keyframe {
                step,
                regs: gen.regs.clone(),
                pages,
                carries_pages,
                memory_hash: step,
            };
            w.append(&Record::Keyframe(k)).expect("append");
        }
    }
    w.append(&Record::End(EndRecord {
        step: STEPS,
        reason: EndReason::StepBudget,
        message: String::new(),
        self_check_failures: Vec::new(),
    }))
    .expect("append");
    let (_, s) = w.finish().expect("finish");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "built {STEPS}-step trace: {} records, {} chunks, {:.1} MB on disk in {secs:.1} s \
         ({:.2} M records/s incl. generation); {:.2} bytes/step after compression \
         ({:.1} before, ratio {:.1}x)",
        s.records,
        s.chunks,
        s.file_bytes as f64 / 1e6,
        s.records as f64 / secs / 1e6,
        s.compressed_record_bytes as f64 / STEPS as f64,
        s.raw_record_bytes as f64 / STEPS as f64,
        s.raw_record_bytes as f64 / s.compressed_record_bytes as f64,
    );
    STEPS
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
    let mut gen = Realistic::new(9);
    let batch: Vec<Record> = (1..=100_000).map(|s| Record::Step(gen.step(s))).collect();
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
    let chunks = reader.chunks().len();
    let mut next = 0;
    g.bench_function("decode one chunk (uncached)", |b| {
        b.iter(|| {
            // Cycling through every chunk: the 8-chunk LRU never holds the next one.
            next = (next + 1) % chunks;
            black_box(reader.chunk_records(next).expect("chunk").len())
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
