//! No trace content and no key sequence makes the browser panic: damaged and truncated
//! files, a trace without events, and random keys at random terminal sizes.

mod common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use proptest::prelude::*;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::Path;
use tui::app::App;

fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| tui::ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every key of the map, a few prompt inputs and editing keys.
fn exercise(app: &mut App) {
    let keys = "jkJK[]rRdDsSgG/nNfpPw:?qjj";
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        if matches!(app.mode, tui::app::Mode::Prompt(..)) {
            for c in "0x1000".chars() {
                app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
            }
            app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        }
        if app.mode == tui::app::Mode::Help {
            app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        }
        render(app, 120, 40);
    }
}

/// Opens `path` if the reader accepts it, and drives it; a refused file is an error value.
fn open_and_drive(path: &Path) -> Option<App> {
    let mut app = App::open(path).ok()?;
    app.finish_loading();
    exercise(&mut app);
    Some(app)
}

#[test]
fn a_truncated_trace_opens_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::seed_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.mmurr");
    // Into the last chunk: the index and the end record are lost (a trace that lost only its
    // index has every record and is complete).
    let last = *traces::Reader::open(&path)
        .unwrap()
        .chunks()
        .last()
        .unwrap();
    std::fs::write(&cut, &bytes[..last.offset as usize + 100]).unwrap();
    let mut app = App::open(&cut).expect("a trace without its index is still read");
    assert!(!app.complete);
    assert!(render(&app, 160, 48).contains("incomplete"));
    app.finish_loading();
    exercise(&mut app);
}

#[test]
fn every_cut_and_bit_flip_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::seed_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.mmurr");
    let mut opened = 0;
    for at in (0..bytes.len()).step_by(bytes.len() / 24 + 1) {
        std::fs::write(&bad, &bytes[..at]).unwrap();
        opened += open_and_drive(&bad).is_some() as u32;
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x5a;
        std::fs::write(&bad, &flipped).unwrap();
        opened += open_and_drive(&bad).is_some() as u32;
    }
    assert!(
        opened > 0,
        "some damaged variants are readable and were driven"
    );
}

#[test]
fn a_trace_without_events_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (header, records) = common::seed();
    let quiet: Vec<_> = records
        .into_iter()
        .filter(|r| !matches!(r, traces::Record::Event(_)))
        .collect();
    let path = dir.path().join("quiet.mmurr");
    common::write(&path, &header, &quiet);
    let mut app = App::open(&path).unwrap();
    app.finish_loading();
    let s = render(&app, 160, 48);
    assert!(s.contains("this trace has no events"), "{s}");
    assert!(s.contains("no control-register write"), "{s}");
    exercise(&mut app);
    // Stepping still works without events.
    app.on_key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
    assert_eq!(app.step, 1);
}

#[test]
fn a_file_that_is_not_a_trace_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"not a trace at all").unwrap();
    let err = App::open(&path).err().expect("refused");
    assert!(err.to_string().contains("cannot open"), "{err}");
    assert!(App::open(&dir.path().join("missing.mmurr")).is_err());
}

#[test]
fn stepping_forward_reuses_work_and_matches_a_fresh_seek() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::seed_file(dir.path());
    let mut stepped = App::open(&path).unwrap();
    stepped.finish_loading();
    // It opened on the finding: start from the entry.
    stepped.on_key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE));
    assert_eq!(stepped.step, 0);
    let mut fresh = App::open(&path).unwrap();
    fresh.finish_loading();
    for step in 1..=stepped.total_steps {
        stepped.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
        fresh.on_key(KeyEvent::new(KeyCode::Char(':'), KeyModifiers::NONE));
        for c in step.to_string().chars() {
            fresh.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        fresh.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        // A jump in the other direction first, so `fresh` never takes the one-step path.
        assert_eq!(stepped.step, step);
        assert_eq!(
            render(&stepped, 160, 48),
            render(&fresh, 160, 48),
            "step {step}"
        );
        fresh.on_key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_keys_at_random_sizes_never_panic(
        keys in proptest::collection::vec(
            prop_oneof![
                proptest::char::range(' ', '~').prop_map(KeyCode::Char),
                Just(KeyCode::Enter),
                Just(KeyCode::Esc),
                Just(KeyCode::Backspace),
                Just(KeyCode::Up),
                Just(KeyCode::Down),
                Just(KeyCode::PageUp),
                Just(KeyCode::PageDown),
                Just(KeyCode::Home),
                Just(KeyCode::End),
            ],
            0..60,
        ),
        w in 1u16..220,
        h in 1u16..70,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = common::seed_file(dir.path());
        let mut app = App::open(&path).unwrap();
        app.finish_loading();
        for k in keys {
            if k == KeyCode::Char('q') {
                continue;
            }
            app.on_key(KeyEvent::new(k, KeyModifiers::NONE));
            render(&app, w, h);
        }
        prop_assert!(app.step <= app.total_steps);
        prop_assert!(app.visible.is_empty() || app.cursor < app.visible.len());
    }
}

#[test]
fn hostile_event_contents_are_shown_not_trusted() {
    use traces::*;
    let dir = tempfile::tempdir().unwrap();
    let (mut header, records) = common::seed();
    header.policies = vec!["evil\u{1b}]0;owned\u{7}".into()];
    header.scenario = Some("\u{1b}[31mred".into());
    header.mmu_flavour = "no such flavour".into();
    let mut out: Vec<Record> = records
        .into_iter()
        .filter(|r| !matches!(r, Record::Event(_) | Record::End(_)))
        .collect();
    let kinds = vec![
        EventKind::Mmu(MmuDecision {
            policy: 0,
            cause: 0,
            outcome: MmuOutcome::Reinit,
            trigger_bits: 0,
            old_cpu_role: 0,
            new_cpu_role: 0,
            old_root_role: 0,
            new_root_role: 0,
            context_changes: vec![],
            root_cache: None,
            tlb_flush: TlbFlush::None,
        }),
        EventKind::Mmu(MmuDecision {
            policy: 999,
            cause: 12_345,
            outcome: MmuOutcome::Gp,
            trigger_bits: u64::MAX,
            old_cpu_role: u64::MAX,
            new_cpu_role: 0,
            old_root_role: u32::MAX,
            new_root_role: 0,
            context_changes: vec!["x".repeat(500)],
            root_cache: None,
            tlb_flush: TlbFlush::Guest,
        }),
        EventKind::Finding(Finding {
            policy: 77,
            cause: 0,
            kind: FindingKind::GpMismatch,
            attributes: vec![],
            translations: vec![],
            detail: "\u{1b}[2J not a terminal escape".into(),
        }),
        EventKind::Transition {
            from: PagingMode::Real,
            to: PagingMode::Level5,
        },
        EventKind::CrWrite(CrWrite {
            reg: ControlReg::Xcr0,
            old: 0,
            new: u64::MAX,
            via: WriteVia::Xsetbv,
            faulted: true,
        }),
        EventKind::CrWrite(CrWrite {
            reg: ControlReg::Efer,
            old: u64::MAX,
            new: 0,
            via: WriteVia::Host,
            faulted: false,
        }),
        EventKind::Io(IoAccess {
            port: 0x3f8,
            write: true,
            size: 200,
            data: u32::MAX,
        }),
        EventKind::Io(IoAccess {
            port: 0xe9,
            write: true,
            size: 0,
            data: 0x1b,
        }),
        EventKind::Mmio(MmioAccess {
            gpa: u64::MAX,
            write: false,
            size: 8,
            data: 1,
        }),
        EventKind::Exception(ExceptionInfo {
            vector: 255,
            error_code: Some(u32::MAX),
            cr2: Some(u64::MAX),
        }),
        EventKind::EngineDivergence {
            gva: u64::MAX,
            engine: "e".into(),
            reference: "r".into(),
        },
    ];
    for (id, kind) in kinds.into_iter().enumerate() {
        let step = [0, 1, 3, u64::MAX / 2, 5, 7, 9, 11, 13, u64::MAX, 2][id];
        out.push(Record::Event(Event {
            id: id as u64,
            step,
            rip: u64::MAX,
            kind,
        }));
    }
    out.push(Record::End(EndRecord {
        step: 25,
        reason: EndReason::Error,
        message: "hostile".into(),
        self_check_failures: vec!["all of them".into()],
    }));
    let path = dir.path().join("hostile.mmurr");
    common::write(&path, &header, &out);
    let mut app = App::open(&path).unwrap();
    app.finish_loading();
    assert_eq!(app.events.len(), 11);
    let s = render(&app, 160, 48);
    assert!(s.contains("policy#999"), "{s}");
    assert!(
        !s.contains('\u{1b}'),
        "escape sequences from the trace reach the screen:\n{s}"
    );
    exercise(&mut app);
    for c in "gjjjjjjjjjjGdDrRJK".chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        render(&app, 160, 48);
        render(&app, 80, 20);
    }
    assert!(app.step <= app.total_steps);
}

#[test]
fn every_corpus_trace_opens_and_browses() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/corpus");
    let mut paths = vec![];
    for dir in [corpus.clone(), corpus.join("recorded")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "mmurr") {
                paths.push(p);
            }
        }
    }
    assert!(paths.len() >= 4, "{paths:?}");
    for p in paths {
        let app = open_and_drive(&p).unwrap_or_else(|| panic!("{} did not open", p.display()));
        let s = render(&app, 160, 48);
        assert!(s.contains("timeline"), "{}:\n{s}", p.display());
    }
}
