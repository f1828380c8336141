//! The browser on a model-level scenario's trace (`init-long-mode`, written by `mmurr
//! scenarios --run init-long-mode -o F`, committed as
//! `traces/corpus/recorded/init-long-mode.model.mmurr`): the host action is a timeline row
//! with its decisions folded in, and the roles panel shows the stale context it left.

mod common;

use common::{press, screen};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui::app::App;

fn open() -> App {
    common::open_recorded("init-long-mode.model.mmurr")
}

#[test]
fn a_host_action_is_a_row_with_its_decisions_and_the_roles_panel_explains_it() {
    let mut app = open();
    assert!(app.complete && app.events_loaded && app.history.is_some());
    // It opens on the finding: the INIT row, a stale policy selected.
    let row = app.row_text(app.selected().unwrap());
    assert!(row.contains("host") && row.contains("INIT"), "{row}");
    let s = screen(&app, 160, 48);
    for text in [
        "⚠ STALE v4.20",
        "INIT",
        "decision: no trigger",
        "STALE CONTEXT",
        "7 findings",
        "no instructions (model trace)",
        "model trace, no instruction: w enters an address",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
    // `P`: every policy side by side at the action; the fixed ones re-initialised.
    press(&mut app, "P");
    let s = screen(&app, 160, 48);
    assert!(s.contains("v5.14") && s.contains("v4.20"), "{s}");
    // `w` walks an address under the architecture and the kept 4-level context.
    press(&mut app, "P");
    press(&mut app, "w");
    press(&mut app, "1000");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let s = screen(&app, 160, 48);
    assert!(s.contains("translations DIFFER"), "{s}");
}
