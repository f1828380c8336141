//! How fluid the browser is: opening a 10 M-step trace (header, index, entry state and the
//! first frame; events and the MMU model keep loading in the background), and one keypress
//! (update + render on ratatui's test backend at 160x48) on the seed trace and on the big one.
//! The big trace is synthetic (`traces::synth`): keyframes every 10 000 steps as the recorder
//! writes them, a control-register write with decisions every 10 000 steps.
//!
//! Memory (issue 15): a second 10 M-step trace with ~1 M events (a control-register write
//! every 57 steps; `Synth` emits ~5.7 events per write: the write, one decision per recorded
//! policy (4), a transition every 3rd, a finding every 7th, an I/O every 4th) is opened in a
//! fresh child process (this binary re-executed with `TUI_BENCH_MEMORY` set), so the RSS
//! figures are the browser's and not criterion's. `TUI_BENCH_MEMORY=only cargo bench -p tui
//! --bench browse` runs that measurement alone.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, Criterion};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tui::app::App;

const BIG_STEPS: u64 = 10_000_000;
/// A control-register write every this many steps gives ~1 M events over 10 M steps.
const DENSE_WRITE_EVERY: u64 = 57;

/// The 10 M-step trace, written once and kept next to the build.
fn big_trace() -> PathBuf {
    synth_trace("synth-10m.mmurr", 10_000)
}

/// The 10 M-step trace with ~1 M events, written once and kept next to the build.
fn dense_trace() -> PathBuf {
    synth_trace("synth-10m-1m-events.mmurr", DENSE_WRITE_EVERY)
}

fn synth_trace(name: &str, cr_write_every: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tui-bench");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("tui-bench"))
        .unwrap_or(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let started = Instant::now();
        let tmp = dir.join(format!("{name}.partial"));
        let header = traces::synth::header("synth", 1);
        let mut w = traces::Writer::create(&tmp, &header).unwrap();
        for r in traces::synth::Synth::new(1, BIG_STEPS, 10_000, cr_write_every) {
            w.append(&r).unwrap();
        }
        let (_, summary) = w.finish().unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eprintln!(
            "wrote {} ({} records, {} events, {} MiB) in {:.1?}",
            path.display(),
            summary.records,
            summary.events,
            summary.file_bytes >> 20,
            started.elapsed()
        );
    }
    path
}

fn terminal() -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(160, 48)).unwrap()
}

fn draw(t: &mut Terminal<TestBackend>, app: &App) {
    t.draw(|f| tui::ui::draw(f, app)).unwrap();
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

/// Opens and waits for the background loader, reporting how long each stage took.
fn loaded(path: &Path) -> App {
    let started = Instant::now();
    let mut app = App::open(path).unwrap();
    let opened = started.elapsed();
    while !app.events_loaded {
        app.poll_loader();
        std::thread::sleep(Duration::from_millis(1));
    }
    let events = started.elapsed();
    app.finish_loading();
    eprintln!(
        "{}: open {opened:.1?}, events listed after {events:.1?} ({} events), MMU model after {:.1?}",
        path.display(),
        app.events.len(),
        started.elapsed()
    );
    app
}

fn keypress(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let seed = common::seed_file(dir.path());
    let mut app = loaded(&seed);
    let mut t = terminal();
    c.bench_function("keypress/seed/j (next event) + render", |b| {
        b.iter(|| {
            if app.cursor + 1 >= app.visible.len() {
                app.on_key(key('g'));
            }
            app.on_key(key('j'));
            draw(&mut t, &app);
        })
    });

    let big = big_trace();
    let mut app = loaded(&big);
    let mut t = terminal();
    // Start in the middle, away from the entry snapshot.
    app.on_key(key(':'));
    for ch in (BIG_STEPS / 2).to_string().chars() {
        app.on_key(key(ch));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    c.bench_function("keypress/10M/s (step) + render", |b| {
        b.iter(|| {
            app.on_key(key('s'));
            draw(&mut t, &app);
        })
    });
    c.bench_function("keypress/10M/S (step back) + render", |b| {
        b.iter(|| {
            app.on_key(key('S'));
            draw(&mut t, &app);
        })
    });
    c.bench_function("keypress/10M/j (next event, seek) + render", |b| {
        b.iter(|| {
            if app.cursor + 1 >= app.visible.len() {
                app.on_key(key('g'));
            }
            app.on_key(key('j'));
            draw(&mut t, &app);
        })
    });
    // Where a far move's time goes: the update (seek, panels) or the render.
    let (mut update, mut render) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..20 {
        let t0 = Instant::now();
        app.on_key(key('J'));
        let t1 = Instant::now();
        draw(&mut t, &app);
        update += t1 - t0;
        render += t1.elapsed();
    }
    eprintln!("20 x J on the 10M trace: update {update:.1?}, render {render:.1?}");
    c.bench_function("keypress/10M/J (next transition) + render", |b| {
        b.iter(|| {
            app.on_key(key('J'));
            if app.message.is_some() {
                app.on_key(key('g'));
            }
            draw(&mut t, &app);
        })
    });
}

fn open(c: &mut Criterion) {
    let big = big_trace();
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    group.bench_function("10M-step trace: index + entry state + first frame", |b| {
        b.iter(|| {
            let app = App::open(&big).unwrap();
            let mut t = terminal();
            draw(&mut t, &app);
            app
        })
    });
    group.finish();
}

/// The replayer alone, for comparison with `J`: a seek 30 000 steps forward.
fn seek(c: &mut Criterion) {
    let big = big_trace();
    let mut timeline = replayer::Timeline::open(&big).unwrap();
    let mut at = BIG_STEPS / 2;
    c.bench_function(
        "timeline/10M/seek 30000 steps forward (replayer only)",
        |b| {
            b.iter(|| {
                at += 30_000;
                if at > BIG_STEPS {
                    at = BIG_STEPS / 2;
                }
                timeline.seek(at).unwrap().step
            })
        },
    );
}

/// What a far move costs the panels: the seek, the 16 instructions before it one at a time
/// (for the page-walk default and the disassembly), and the state at the step.
fn position(c: &mut Criterion) {
    let big = big_trace();
    let mut timeline = replayer::Timeline::open(&big).unwrap();
    let cpu = mmu::CpuModel::default_x86_64();
    let mut at = BIG_STEPS / 2;
    let mut view = tui::position::PositionView::default();
    c.bench_function("position/10M/panels 30000 steps forward", |b| {
        b.iter(|| {
            at += 30_000;
            if at > BIG_STEPS {
                at = BIG_STEPS / 2;
            }
            view = tui::position::PositionView::compute(
                &mut timeline,
                &cpu,
                at,
                None,
                None,
                None,
                &[],
                &view,
            );
            view.step
        })
    });
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb >> 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The child: opens `path`, loads everything, renders, presses keys; prints RSS and latencies.
fn memory_child(path: &Path) {
    let (base, _) = rss();
    let started = Instant::now();
    let mut app = App::open(path).unwrap();
    let mut t = terminal();
    draw(&mut t, &app);
    let opened = started.elapsed();
    let (after_open, _) = rss();
    app.finish_loading();
    let loaded = started.elapsed();
    let (after_load, _) = rss();
    draw(&mut t, &app);
    let mut latencies = Vec::new();
    for c in ['j', 'd', 'J', 'G', 's', 'S'] {
        if c == 'G' {
            // Back to the middle for the moves after the end, as a reader would be.
            app.on_key(key('g'));
        }
        let mut times: Vec<Duration> = (0..9)
            .map(|_| {
                let t0 = Instant::now();
                app.on_key(key(c));
                draw(&mut t, &app);
                t0.elapsed()
            })
            .collect();
        times.sort();
        latencies.push(format!("{c} {:.1?}", times[times.len() / 2]));
    }
    let (after_keys, peak) = rss();
    eprintln!(
        "{}: {} events, {} CR writes modelled; open {opened:.1?}, everything loaded after {loaded:.1?}",
        path.display(),
        app.events.len(),
        app.history
            .as_ref()
            .map_or(0, |h| h.analysis.writes.len()),
    );
    eprintln!(
        "RSS (MiB): process start {base}, after open {after_open}, loaded {after_load}, \
         after keys {after_keys}, peak {peak}"
    );
    eprintln!("keypress + render (median of 9): {}", latencies.join(", "));
}

/// Runs [`memory_child`] in a fresh process so criterion's own memory is not counted.
fn memory(_: &mut Criterion) {
    let dense = dense_trace();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("TUI_BENCH_MEMORY", &dense)
        .status()
        .unwrap();
    assert!(status.success(), "the memory child failed: {status}");
}

criterion_group!(benches, memory, open, keypress, seek, position);

fn main() {
    // `TUI_BENCH_MEMORY=only` measures memory alone (no criterion runs); any other value is
    // the trace the child is to open.
    match std::env::var_os("TUI_BENCH_MEMORY") {
        Some(v) if v == "only" => return memory(&mut Criterion::default()),
        Some(path) => return memory_child(Path::new(&path)),
        None => {}
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
