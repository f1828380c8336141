//! A bigger trace loads in the background: the browser answers keys at once, the event list
//! grows as batches arrive (through the filter set meanwhile), and the MMU model follows.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::time::{Duration, Instant};
use traces::{EventKind, Record};
use tui::app::App;

fn render(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(160, 48)).unwrap();
    t.draw(|f| tui::ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..48)
        .map(|y| (0..160).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn keys(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}

#[test]
fn events_arrive_in_batches_through_the_filter_while_the_ui_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.mmurr");
    let header = traces::synth::header("synth", 7);
    let mut w = traces::Writer::create(&path, &header).unwrap();
    let mut cr4_writes = 0;
    for r in traces::synth::Synth::new(7, 300_000, 10_000, 500) {
        if let Record::Event(e) = &r {
            cr4_writes += matches!(&e.kind, EventKind::CrWrite(c) if c.reg == traces::ControlReg::Cr4)
                as usize;
        }
        w.append(&r).unwrap();
    }
    w.finish().unwrap();

    let mut app = App::open(&path).unwrap();
    let s = render(&app);
    assert!(s.contains("step 0/300000"), "{s}");
    // Keys work before any event arrived: the filter is set, stepping moves.
    keys(&mut app, "fcr4");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    keys(&mut app, "ss");
    assert_eq!(app.step, 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sizes = vec![];
    while app.history.is_none() && app.history_error.is_none() {
        assert!(Instant::now() < deadline, "loading took too long");
        if app.poll_loader() {
            sizes.push(app.visible.len());
            render(&app);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(app.events_loaded);
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!(app.visible.len(), cr4_writes);
    assert!(app
        .visible
        .iter()
        .all(|&i| app.row_text(i).contains(" cr4 ")));
    let s = render(&app);
    assert!(
        s.contains(&format!("{cr4_writes} of {}", app.events.len())),
        "{s}"
    );
}
