//! The browser on a real recording of the seed scenario (pae-toggle on the emu backend,
//! `traces/corpus/recorded/pae-toggle.emu.mmurr`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::PathBuf;
use tui::app::App;

fn recorded() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces/corpus/recorded/pae-toggle.emu.mmurr")
}

fn open() -> App {
    let mut app = App::open(&recorded()).unwrap();
    app.finish_loading();
    app
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| tui::ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}

#[test]
#[ignore = "prints the recorded seed screen for a human to look at"]
fn show_recorded() {
    let mut app = open();
    println!("{}", screen(&app, 160, 48));
    press(&mut app, "d");
    println!("{}", screen(&app, 160, 48));
}
