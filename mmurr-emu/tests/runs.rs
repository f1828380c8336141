//! Recording in runs (`RecordOptions::runs`): a guest recorded with runs must give the trace
//! it gives without them, only coarser — the same end, the same number of instructions, the
//! same events (every CR write, transition, exception, I/O and MMU decision, at the same step
//! and RIP), the same registers and memory at every run boundary, and a clean self-check.

use mmurr_emu::EmuBackend;
use recorder::{Backend, RecordOptions};
use replayer::Timeline;
use std::path::{Path, PathBuf};
use traces::{Event, GuestSpec, Reader, Record, RunRecord};

struct Recording {
    path: PathBuf,
    summary: recorder::RecordSummary,
}

fn record(guest: &GuestSpec, runs: bool, dir: &Path, max_steps: u64) -> Recording {
    let path = dir.join(if runs { "runs.mmurr" } else { "steps.mmurr" });
    let mut opts = RecordOptions::new(&path);
    opts.max_steps = max_steps;
    opts.runs = runs;
    let mut backend = EmuBackend::new().expect("open unicorn");
    let summary = recorder::record(&mut backend, guest, &opts).expect("record");
    Recording { path, summary }
}

fn records(path: &Path) -> (Vec<Event>, Vec<RunRecord>, u64) {
    let mut reader = Reader::open(path).expect("open trace");
    let (mut events, mut runs, mut steps) = (Vec::new(), Vec::new(), 0);
    for r in reader.records() {
        match r.expect("record") {
            Record::Event(e) => events.push(e),
            Record::Run(r) => runs.push(r),
            Record::Step(_) => steps += 1,
            _ => {}
        }
    }
    (events, runs, steps)
}

/// Records `guest` both ways and compares; returns the runs and the step records of the trace
/// recorded with runs.
fn same_with_and_without_runs(name: &str, guest: &GuestSpec, max_steps: u64) -> (usize, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = record(guest, false, dir.path(), max_steps);
    let runs = record(guest, true, dir.path(), max_steps);
    for r in [&steps, &runs] {
        assert!(
            r.summary.end.self_check_failures.is_empty(),
            "{name}: {:?}",
            r.summary.end.self_check_failures
        );
    }
    assert_eq!(
        (&steps.summary.end.reason, steps.summary.steps),
        (&runs.summary.end.reason, runs.summary.steps),
        "{name}: {} / {}",
        steps.summary.end.message,
        runs.summary.end.message
    );
    let (step_events, no_runs, _) = records(&steps.path);
    assert!(no_runs.is_empty());
    let (run_events, run_records, step_records) = records(&runs.path);
    // A run of `rep` iterations says how many instructions it retired (`Retired`, for `mmurr
    // diff`): the record's shape, like the runs themselves. Ids follow the events.
    let guest_events = |events: Vec<Event>, runs: &[RunRecord]| -> Vec<_> {
        events
            .into_iter()
            .filter(|e| {
                !(matches!(e.kind, traces::EventKind::Retired { .. })
                    && runs.iter().any(|r| r.first == e.step))
            })
            .map(|e| (e.step, e.rip, e.kind))
            .collect()
    };
    assert_eq!(
        guest_events(step_events, &[]),
        guest_events(run_events, &run_records),
        "{name}: events differ"
    );
    // `mmurr diff` (and `verify`) aligns a run with the instructions it stands for.
    let report = replayer::diff(
        &mut Reader::open(&steps.path).expect("open"),
        &mut Reader::open(&runs.path).expect("open"),
    )
    .expect("diff");
    assert!(
        report.divergence.is_none(),
        "{name}: {:#?}",
        report.divergence
    );
    // Every instruction compared (`rep` iterations fold into one, on both sides).
    let whole = replayer::diff(
        &mut Reader::open(&steps.path).expect("open"),
        &mut Reader::open(&steps.path).expect("open"),
    )
    .expect("diff");
    assert_eq!(report.instructions, whole.instructions, "{name}");
    let mut a = Timeline::open(&steps.path).expect("timeline");
    let mut b = Timeline::open(&runs.path).expect("timeline");
    // At run boundaries only, as a reader without mmurr-emu (this package's own is found).
    b.without_reexecution();
    for run in &run_records {
        for s in [run.first - 1, run.step] {
            let x = a.seek(s).expect("seek").clone();
            let y = b.seek(s).expect("seek").clone();
            assert_eq!(x.regs, y.regs, "{name}: registers at step {s}");
            assert_eq!(
                x.memory.hash(),
                y.memory.hash(),
                "{name}: memory at step {s}"
            );
        }
    }
    let last = a.last_step();
    assert_eq!(
        a.seek(last).expect("seek").memory.hash(),
        b.seek(last).expect("seek").memory.hash()
    );
    if let Some(run) = run_records.iter().find(|r| r.count() > 1) {
        // Inside a run, without re-execution, the timeline says plainly that it cannot tell.
        match b.seek(run.first) {
            Err(replayer::TimelineError::InsideRun { first, last, .. }) => {
                assert_eq!((first, last), (run.first, run.step))
            }
            other => panic!("{name}: seek inside a run gave {:?}", other.map(|s| s.step)),
        }
    }
    (run_records.len(), step_records)
}

/// `code` at 1 MiB, entered there in long mode, with 64 MiB of RAM.
fn long_mode_code(code: &[u8]) -> GuestSpec {
    guests::loader::load_raw(
        code,
        0x10_0000,
        0x10_0000,
        guests::loader::EntryMode::Long,
        64 << 20,
    )
    .expect("guest")
}

/// `mov rsp, 0x9000; mov ecx, N; l: mov [rsp-8], rcx; dec ecx; jnz l; hlt` (the bench loop).
fn store_loop(iterations: u32) -> GuestSpec {
    let mut code = vec![0x48, 0xc7, 0xc4, 0x00, 0x90, 0x00, 0x00, 0xb9];
    code.extend_from_slice(&iterations.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x4c, 0x24, 0xf8, 0xff, 0xc9, 0x75, 0xf7, 0xf4]);
    long_mode_code(&code)
}

/// `rep stosq` of 3,000 quadwords, `rep movsb` of 20,000 bytes to an odd address across pages,
/// then a `rep stosb` of one byte and a `rep movsb` of none (those two are steps), `hlt`.
fn rep_strings() -> GuestSpec {
    let code = [
        &[0x48, 0xc7, 0xc4, 0x00, 0x90, 0x00, 0x00][..], // mov rsp, 0x9000
        &[0x48, 0xc7, 0xc7, 0x00, 0x00, 0x20, 0x00],     // mov rdi, 0x200000
        &[0x48, 0xc7, 0xc1, 0xb8, 0x0b, 0x00, 0x00],     // mov rcx, 3000
        &[0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], // mov rax, imm64
        &[0xf3, 0x48, 0xab],                             // rep stosq
        &[0x48, 0xc7, 0xc6, 0x00, 0x00, 0x20, 0x00],     // mov rsi, 0x200000
        &[0x48, 0xc7, 0xc7, 0x01, 0x00, 0x30, 0x00],     // mov rdi, 0x300001
        &[0x48, 0xc7, 0xc1, 0x20, 0x4e, 0x00, 0x00],     // mov rcx, 20000
        &[0xf3, 0xa4],                                   // rep movsb
        &[0x48, 0xc7, 0xc1, 0x01, 0x00, 0x00, 0x00],     // mov rcx, 1
        &[0xf3, 0xaa],                                   // rep stosb
        &[0x31, 0xc9],                                   // xor ecx, ecx
        &[0xf3, 0xa4],                                   // rep movsb
        &[0xf4],                                         // hlt
    ]
    .concat();
    long_mode_code(&code)
}

/// `rep movs`/`rep stos` iterations run inside runs (one step each in the trace, as stepped):
/// the same trace, cut at keyframes and the step budget in the middle of an instruction, and
/// every state inside rebuilt by re-execution.
#[test]
fn rep_string_iterations_run_in_runs() {
    let (runs, steps) = same_with_and_without_runs("rep strings", &rep_strings(), 1_000_000);
    assert!(runs >= 3, "{runs} runs");
    assert!(steps < 40, "{steps} step records");
    // Cut by the budget inside `rep movsb`.
    same_with_and_without_runs("rep strings, cut", &rep_strings(), 15_000);
    reverse_stepping_matches_in("rep strings", &rep_strings(), 1_000_000, 61, |_, last| {
        (2_900, 3_100.min(last))
    });
}

#[test]
fn a_loop_is_recorded_in_runs_with_the_same_result() {
    let (runs, steps) = same_with_and_without_runs("store loop", &store_loop(30_000), 1_000_000);
    assert!(runs >= 9, "{runs} runs");
    // The HLT, the first block (stepped until the loop's block is cached) and little else.
    assert!(steps < 100, "{steps} step records");
}

/// A long stretch that changes no memory but is no loop the guest is stuck in (a count down:
/// the registers never repeat) runs: the stuck watch's probes step only a small part of it.
#[test]
fn a_quiet_stretch_that_is_not_stuck_runs() {
    let n: u32 = 1_000_000;
    // mov ecx, n; l: dec ecx; jnz l; hlt
    let mut code = vec![0xb9];
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc, 0xf4]);
    let dir = tempfile::tempdir().expect("tempdir");
    let r = record(&long_mode_code(&code), true, dir.path(), u64::MAX);
    assert_eq!(
        r.summary.steps,
        1 + 2 * u64::from(n),
        "{}",
        r.summary.end.message
    );
    assert!(r.summary.end.self_check_failures.is_empty());
    let (_, _, steps) = records(&r.path);
    // Probes of 10 000 and 20 000 steps; stepped to the end after the first 100 000
    // instructions, it would be 1.9 M.
    assert!(steps < 2 * n as u64 / 40, "{steps} step records");
}

#[test]
fn runs_end_at_the_step_budget_and_keyframes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = record(&store_loop(30_000), true, dir.path(), 25_001);
    assert_eq!(r.summary.steps, 25_001);
    let (_, runs, _) = records(&r.path);
    assert!(runs
        .iter()
        .all(|r| r.first.div_ceil(10_000) == r.step.div_ceil(10_000)));
}

/// Every scenario: CR writes, paging transitions, exceptions (a run that faults is undone and
/// run again up to the faulting instruction), I/O.
#[test]
fn every_scenario_is_the_same_with_runs() {
    let features = guests::CpuFeatures::from_cpuid(&EmuBackend::new().expect("emu").cpuid());
    for name in guests::scenario_names() {
        let scenario = guests::scenario(name, &features).expect("scenario");
        let (runs, steps) = same_with_and_without_runs(name, &scenario.guest, 100_000);
        eprintln!("{name}: {runs} runs, {steps} step records");
    }
}

/// Timelines of the recording without runs and of the one with runs, the latter re-executing
/// runs on this package's `mmurr-emu`.
fn timelines(steps: &Recording, runs: &Recording) -> (Timeline, Timeline) {
    let a = Timeline::open(&steps.path).expect("timeline");
    let mut b = Timeline::open(&runs.path).expect("timeline");
    b.set_reexecution(replayer::Reexecution::new(env!("CARGO_BIN_EXE_mmurr-emu")));
    (a, b)
}

/// The registers (and, with `memory`, the memory) at step `s` of `a` equal `b`'s.
fn same_state(name: &str, a: &mut Timeline, b: &mut Timeline, s: u64, memory: bool) {
    let want = a.seek(s).expect("seek").clone();
    let got = b
        .seek(s)
        .unwrap_or_else(|e| panic!("{name}: step {s}: {e}"))
        .clone();
    assert_eq!(want.regs, got.regs, "{name}: registers at step {s}");
    if memory {
        assert_eq!(
            want.memory.hash(),
            got.memory.hash(),
            "{name}: memory at step {s}"
        );
    }
}

/// Reverse-stepi through runs: every step of a trace recorded in runs, visited from the last to
/// the first (re-executing runs on `mmurr-emu`), has the registers — and, at every 61st step
/// and at run boundaries, the memory — of the same step in the trace recorded without runs.
fn reverse_stepping_matches(name: &str, guest: &GuestSpec, max_steps: u64, every: u64) {
    reverse_stepping_matches_in(name, guest, max_steps, every, |_, last| (0, last));
}

/// [`reverse_stepping_matches`] over the steps `window` picks, given the trace's events and
/// last step.
fn reverse_stepping_matches_in(
    name: &str,
    guest: &GuestSpec,
    max_steps: u64,
    every: u64,
    window: impl Fn(&[Event], u64) -> (u64, u64),
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = record(guest, false, dir.path(), max_steps);
    let runs = record(guest, true, dir.path(), max_steps);
    let (events, run_records, _) = records(&runs.path);
    assert!(!run_records.is_empty(), "{name}: no runs");
    let (mut a, mut b) = timelines(&steps, &runs);
    let last = b.last_step();
    assert_eq!(last, a.last_step());
    let (first, mut s) = window(&events, last);
    loop {
        let boundary = run_records.iter().any(|r| r.step == s || r.first == s + 1);
        same_state(name, &mut a, &mut b, s, boundary || s.is_multiple_of(every));
        if s == first {
            break;
        }
        s -= 1;
    }
}

#[test]
fn reverse_stepping_through_runs_matches_the_recording_without_runs() {
    reverse_stepping_matches("store loop", &store_loop(4_000), 1_000_000, 61);
    let features = guests::CpuFeatures::from_cpuid(&EmuBackend::new().expect("emu").cpuid());
    for name in ["exceptions", "cr3-switch", "pae-toggle"] {
        let scenario = guests::scenario(name, &features).expect("scenario");
        reverse_stepping_matches(name, &scenario.guest, 100_000, 61);
    }
}

/// Every instruction's registers and memory writes as [`Timeline::walk_steps`] sees them
/// (the searches of gdb's breakpoints and watchpoints), from step `from` to `to`.
fn walk(t: &mut Timeline, from: u64, to: u64) -> Vec<(u64, traces::Regs, Vec<traces::MemWrite>)> {
    let at = t.seek(from).expect("seek").clone();
    let mut seen = Vec::new();
    t.walk_steps(from, at.regs, at.parked, to, &mut |v| {
        seen.push((v.step, v.regs.clone(), v.mem.to_vec()));
        false
    })
    .expect("walk");
    seen
}

/// A walk through a trace recorded in runs sees, inside every run, the instructions and the
/// writes the recording without runs has, by re-executing the runs; a walk that starts or
/// ends inside a run too; and a visitor that stops the walk stops it at once.
#[test]
fn walks_through_runs_see_every_instruction_and_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let guest = store_loop(8_000);
    let steps = record(&guest, false, dir.path(), 1_000_000);
    let runs = record(&guest, true, dir.path(), 1_000_000);
    let (_, run_records, _) = records(&runs.path);
    assert!(run_records.len() >= 3, "{} runs", run_records.len());
    let (mut a, mut b) = timelines(&steps, &runs);
    let last = a.last_step();
    let whole = walk(&mut a, 0, last);
    assert_eq!(whole.len() as u64, last);
    assert_eq!(walk(&mut b, 0, last), whole, "the whole trace");
    let inside = run_records[1].first + 7;
    // Into the run after it: the registers after the first run must be right too.
    let (from, to) = (inside, run_records[2].first + 5);
    assert_eq!(
        walk(&mut b, from, to),
        walk(&mut a, from, to),
        "from inside a run to past its end"
    );
    let mut visited = 0;
    let at = b.seek(0).expect("seek").clone();
    b.walk_steps(0, at.regs, at.parked, last, &mut |v| {
        visited += 1;
        v.step == inside
    })
    .expect("walk");
    assert_eq!(visited, inside, "stopped where the visitor said");
}

/// What the store loop's state is after `s` instructions, worked out from its code: RIP, RCX
/// and the stored quadword (`None` before the first store).
fn store_loop_state(iterations: u32, s: u64) -> (u64, u64, Option<u64>) {
    const L: u64 = 0x10_0000 + 12;
    let n = u64::from(iterations);
    match s {
        0 => (0x10_0000, 0, None),
        1 => (0x10_0000 + 7, 0, None),
        2 => (L, n, None),
        _ => {
            let (i, phase) = ((s - 3) / 3, (s - 3) % 3);
            let stored = Some(n - i);
            match phase {
                0 => (L + 5, n - i, stored),
                1 => (L + 7, n - i - 1, stored),
                _ if n - i - 1 != 0 => (L, n - i - 1, stored),
                _ => (L + 9, 0, stored),
            }
        }
    }
}

fn check_store_loop(iterations: u32, state: &replayer::Snapshot) {
    let (rip, rcx, stored) = store_loop_state(iterations, state.step);
    assert_eq!(
        (state.regs.rip, state.regs.gpr[1] & 0xffff_ffff),
        (rip, rcx),
        "RIP and ECX at step {}",
        state.step
    );
    if let Some(v) = stored {
        let mut q = [0u8; 8];
        assert!(state.memory.read(0x8ff8, &mut q));
        assert_eq!(u64::from_le_bytes(q), v, "[rsp-8] at step {}", state.step);
    }
}

/// The long run: `MMURR_LONG_RUN` instructions (default 50 M) of the store loop
/// recorded in runs; at 64 pseudo-random points (xorshift, fixed seed), highest first, the
/// state there (rebuilt by re-executing its run), reverse-stepi to the step before, and
/// stepi forward again: both states are what the loop's code says they are (RIP, ECX, the
/// stored quadword), and stepping back and forth gives the same registers and memory.
/// About 80 s in a debug build on a loaded 2-core machine (recording ≈ 25 s, then 64 runs of
/// up to 100 k instructions re-executed); `MMURR_LONG_RUN` shortens it.
#[test]
fn long_run_reverse_stepi_at_random_points() {
    let total: u64 = std::env::var("MMURR_LONG_RUN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000_000);
    let iterations = u32::try_from(total / 3).expect("iterations");
    let guest = store_loop(iterations);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long.mmurr");
    let mut opts = RecordOptions::new(&path);
    opts.max_steps = u64::MAX;
    opts.runs = true;
    opts.keyframe_interval = 100_000;
    let mut backend = EmuBackend::new().expect("open unicorn");
    let summary = recorder::record(&mut backend, &guest, &opts).expect("record");
    assert!(summary.steps >= total, "{}", summary.end.message);
    assert!(summary.end.self_check_failures.is_empty());
    let mut t = Timeline::open(&path).expect("timeline");
    t.set_reexecution(replayer::Reexecution::new(env!("CARGO_BIN_EXE_mmurr-emu")));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut points: Vec<u64> = (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % (summary.steps - 1)
        })
        .collect();
    points.sort_unstable_by(|p, q| q.cmp(p));
    for s in points {
        let at = t
            .seek(s)
            .unwrap_or_else(|e| panic!("step {s}: {e}"))
            .clone();
        check_store_loop(iterations, &at);
        let back = t
            .seek(s - 1)
            .unwrap_or_else(|e| panic!("step {}: {e}", s - 1))
            .clone();
        check_store_loop(iterations, &back);
        let again = t
            .seek(s)
            .unwrap_or_else(|e| panic!("step {s}: {e}"))
            .clone();
        assert_eq!(at.regs, again.regs, "registers at step {s}");
        assert_eq!(at.memory.hash(), again.memory.hash(), "memory at step {s}");
    }
}

/// The store loop's worked-out states agree with a recording (so the long test's oracle is
/// right).
#[test]
fn the_store_loop_oracle_matches_a_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = record(&store_loop(50), false, dir.path(), 1_000);
    let mut t = Timeline::open(&r.path).expect("timeline");
    for s in 0..t.last_step() {
        let state = t.seek(s).expect("seek").clone();
        check_store_loop(50, &state);
    }
}

fn platform_kernel(test: guests::test_kernels::PlatformTest) -> GuestSpec {
    let elf = guests::test_kernels::build_platform(test)
        .expect("build the platform kernel (needs GNU binutils)");
    let none: &[(&str, Vec<u8>)] = &[];
    guests::loader::load_multiboot(&elf, "platform.elf", "", none, 64 << 20).expect("guest")
}

/// The platform test kernels (LAPIC timer one-shot and periodic, PIT polled, PIT IRQ 0 through
/// the PIC and the IOAPIC, interrupt-driven serial) recorded in runs: every interrupt arrives
/// at the same step and RIP as step by step (the events compare equal, `ExternalInterrupt`
/// among them), each guest passes, and the runs stand for most of its instructions.
#[test]
fn interrupts_arrive_at_the_same_instruction_in_runs() {
    use guests::test_kernels::{PlatformTest, PLATFORM_PASS};
    // Not PitPoll: it takes no interrupt, and its 25,000 runs between `in`s would make the
    // state comparison at every run boundary slow.
    for test in PlatformTest::ALL
        .into_iter()
        .filter(|t| *t != PlatformTest::PitPoll)
    {
        let name = format!("{test:?}");
        let guest = platform_kernel(test);
        let dir = tempfile::tempdir().expect("tempdir");
        let r = record(&guest, true, dir.path(), 2_000_000);
        assert_eq!(
            r.summary.end.reason,
            traces::EndReason::DebugExit {
                status: PLATFORM_PASS
            },
            "{name}: {}",
            r.summary.end.message
        );
        let (runs, step_records) = same_with_and_without_runs(&name, &guest, 2_000_000);
        eprintln!("{name}: {runs} runs, {step_records} step records");
        assert!(runs > 0, "{name}: no runs");
    }
}

/// Reverse-stepi across interrupts: the LAPIC one-shot timer fires while the guest spins
/// (`cmp; jae; jmp` with IF set) inside a run, the PIT's IRQ 0 wakes HLTs through the PIC;
/// every step from 100 after the first interrupt back to 3,000 before it (into the run the
/// interrupt ended), visited backwards through re-executed runs, equals forward stepping
/// (registers everywhere, memory at run boundaries and every 61st step).
#[test]
fn reverse_stepping_across_interrupts_matches() {
    use guests::test_kernels::PlatformTest;
    for test in [PlatformTest::LapicOneShot, PlatformTest::PitPic] {
        let name = format!("{test:?}");
        let around_first_interrupt = |events: &[Event], last: u64| {
            let at = events
                .iter()
                .find(|e| matches!(e.kind, traces::EventKind::ExternalInterrupt(_)))
                .unwrap_or_else(|| panic!("{test:?}: no interrupt"))
                .step;
            (at.saturating_sub(3_000), (at + 100).min(last))
        };
        reverse_stepping_matches_in(
            &name,
            &platform_kernel(test),
            2_000_000,
            61,
            around_first_interrupt,
        );
    }
}
