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
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
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
