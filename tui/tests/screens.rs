//! The browser on ratatui's test backend: the seed scenario's trace rendered and driven by
//! keys, with assertions on the screen text.

mod common;

use common::screen;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use tui::app::{App, Mode};
use tui::keys::{Action, KEYMAP};

struct Fixture {
    _dir: tempfile::TempDir,
    app: App,
}

fn seed_app() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = common::seed_file(dir.path());
    let mut app = App::open(&path).unwrap();
    app.finish_loading();
    // The browser opens on the first finding (tests/recorded.rs); these tests walk from the
    // entry.
    app.on_key(key('g'));
    assert_eq!(app.step, 0);
    Fixture { _dir: dir, app }
}

fn big(app: &App) -> String {
    screen(app, 200, 60)
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(key(c));
    }
}

fn code(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn type_line(app: &mut App, text: &str) {
    press(app, text);
    code(app, KeyCode::Enter);
}

fn selected_text(app: &App) -> String {
    app.selected().map(|i| app.row_text(i)).unwrap_or_default()
}

#[test]
fn seed_trace_shows_the_stale_context_of_v5_1_rc3() {
    let mut f = seed_app();
    let app = &mut f.app;
    assert!(app.events_loaded && app.history.is_some());
    // `d` lands on the CR4.PAE write and selects the policy whose context went stale.
    press(app, "d");
    let row = selected_text(app);
    assert!(row.contains("cr4") && row.contains("+PAE"), "{row}");
    let s = big(app);
    assert!(s.contains("+PAE"), "{s}");
    assert!(s.contains("MMU roles · v5.1-rc3"), "{s}");
    assert!(s.contains("decision: skipped: role unchanged"), "{s}");
    assert!(s.contains("STALE CONTEXT"), "{s}");
    assert!(s.contains("root_level 3 (kept 2)"), "{s}");
    assert!(
        s.contains("why: CR4 +PAE triggered kvm_mmu_reset_context"),
        "{s}"
    );
    assert!(s.contains("paging 32-bit → pae"), "{s}");
    // The page-walk panel walks the marker and shows the two translations disagree.
    assert!(s.contains("page walk 0x400000"), "{s}");
    assert!(s.contains("translations DIFFER"), "{s}");
    assert!(s.contains("GPA 0x11000"), "{s}");
    assert!(s.contains("GPA 0x10000"), "{s}");
    assert!(s.contains("⚠ STALE v5.1-rc3"), "{s}");
}

#[test]
fn the_fix_re_initialises() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "d");
    // Cycle to v5.1, the fix.
    let v51 = app
        .history
        .as_ref()
        .unwrap()
        .analysis
        .policy_index("v5.1")
        .unwrap();
    while app.policy != v51 {
        press(app, "p");
    }
    let s = big(app);
    assert!(s.contains("MMU roles · v5.1 ("), "{s}");
    assert!(s.contains("decision: re-init"), "{s}");
    assert!(s.contains("ext.cr4_pae=0→1"), "{s}");
    assert!(!s.contains("STALE CONTEXT"), "{s}");
    assert!(s.contains("translations agree"), "{s}");
}

#[test]
fn side_by_side_lists_every_policy() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "dP");
    let s = big(app);
    assert!(s.contains("MMU roles · all policies"), "{s}");
    for p in mmu::policies() {
        // The selected policy's row is marked.
        assert!(
            s.contains(&format!(" {:<9} ", p.name)) || s.contains(&format!("▶{:<9} ", p.name)),
            "{} missing:\n{s}",
            p.name
        );
    }
    assert!(s.contains("STALE"), "{s}");
    press(app, "P");
    assert!(!big(app).contains("all policies"));
}

#[test]
fn timeline_lists_writes_transitions_decisions_and_io() {
    let mut f = seed_app();
    // The per-policy decisions are folded into their write's row; `f mmu` lists them.
    let s = big(&f.app);
    assert!(s.contains("▸ 12 reinit, 1 skipped"), "{s}");
    assert!(!s.contains("v5.1: reinit"), "{s}");
    press(&mut f.app, "f");
    type_line(&mut f.app, "mmu cr0 cr3 cr4 transition io finding");
    let s = big(&f.app);
    for text in [
        "cr3",
        "cr0",
        "+PG",
        "unpaged → 32-bit",
        "32-bit → pae",
        "pae → 32-bit",
        "v5.1-rc3: skipped: role unchanged",
        "v5.1: reinit",
        "FIND",
        "out 0x3f8 = 0x4f 'O'",
        "out 0xe9 = 0x21 '!'",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
}

#[test]
fn j_k_and_arrows_move_and_seek() {
    let mut f = seed_app();
    let app = &mut f.app;
    assert_eq!(app.cursor, 0);
    press(app, "jj");
    assert_eq!(app.cursor, 2);
    let e = app.events.get(app.visible[2]).unwrap();
    assert_eq!(app.step, e.step);
    press(app, "k");
    assert_eq!(app.cursor, 1);
    code(app, KeyCode::Down);
    code(app, KeyCode::Down);
    assert_eq!(app.cursor, 3);
    code(app, KeyCode::Up);
    assert_eq!(app.cursor, 2);
    // Clamped at both ends.
    press(app, &"k".repeat(10));
    assert_eq!(app.cursor, 0);
    press(app, &"j".repeat(500));
    assert_eq!(app.cursor, app.visible.len() - 1);
}

#[test]
fn page_keys_and_mouse_wheel_scroll() {
    let mut f = seed_app();
    let app = &mut f.app;
    code(app, KeyCode::PageDown);
    assert_eq!(app.cursor, tui::app::PAGE.min(app.visible.len() - 1));
    code(app, KeyCode::PageUp);
    assert_eq!(app.cursor, 0);
    app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL));
    assert_eq!(app.cursor, tui::app::PAGE.min(app.visible.len() - 1));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert_eq!(app.cursor, 0);
    let wheel = |kind| MouseEvent {
        kind,
        column: 10,
        row: 10,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(wheel(MouseEventKind::ScrollDown));
    assert_eq!(app.cursor, tui::app::WHEEL);
    app.on_mouse(wheel(MouseEventKind::ScrollUp));
    assert_eq!(app.cursor, 0);
}

#[test]
fn a_click_selects_a_timeline_row() {
    let mut f = seed_app();
    let app = &mut f.app;
    app.resize(160, 48);
    let s = screen(app, 160, 48);
    // The row showing the CR4.PAE write: click it.
    let (y, line) = s
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("+PAE"))
        .unwrap();
    assert!(!line.contains('▶'));
    let click = |column, row| MouseEvent {
        kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(click(10, y as u16));
    assert!(
        selected_text(app).contains("+PAE"),
        "{}",
        selected_text(app)
    );
    assert_eq!(app.step, 9);
    let before = app.cursor;
    // Clicks on a border or another panel do nothing.
    app.on_mouse(click(0, y as u16));
    app.on_mouse(click(120, y as u16));
    app.on_mouse(click(10, 2));
    assert_eq!(app.cursor, before);
}

fn is_transition(app: &App) -> bool {
    selected_text(app).contains(" mode ")
}

#[test]
fn transitions_with_shift_j_k_and_brackets() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "J");
    assert!(is_transition(app), "{}", selected_text(app));
    assert!(selected_text(app).contains("unpaged → 32-bit"));
    press(app, "]");
    assert!(selected_text(app).contains("32-bit → pae"));
    press(app, "J");
    assert!(selected_text(app).contains("pae → 32-bit"));
    press(app, "J");
    assert!(app
        .message
        .as_ref()
        .unwrap()
        .0
        .contains("no next transition"));
    press(app, "K");
    assert!(selected_text(app).contains("32-bit → pae"));
    press(app, "[");
    assert!(selected_text(app).contains("unpaged → 32-bit"));
}

#[test]
fn resets_with_r_and_shift_r_follow_the_policy() {
    let mut f = seed_app();
    let app = &mut f.app;
    let h = app.history.as_ref().unwrap();
    let rc3 = h.analysis.policy_index("v5.1-rc3").unwrap();
    let v51 = h.analysis.policy_index("v5.1").unwrap();
    while app.policy != v51 {
        press(app, "p");
    }
    // v5.1 re-initialises on CR0.PG and on both CR4.PAE writes.
    press(app, "r");
    assert!(selected_text(app).contains("+PG"), "{}", selected_text(app));
    press(app, "r");
    assert!(
        selected_text(app).contains("+PAE"),
        "{}",
        selected_text(app)
    );
    press(app, "r");
    assert!(
        selected_text(app).contains("-PAE"),
        "{}",
        selected_text(app)
    );
    press(app, "R");
    assert!(selected_text(app).contains("+PAE"));
    press(app, "g");
    while app.policy != rc3 {
        press(app, "p");
    }
    // Its role ignores CR4.PAE under TDP, but kvm_mmu_reset_context still runs at both PAE
    // writes (roots unloaded, the recompute short-circuits): they are resets, as gdb's
    // `break-on reset` counts them (mmu::Decision::is_reset).
    press(app, "r");
    assert!(selected_text(app).contains("+PG"), "{}", selected_text(app));
    press(app, "r");
    assert!(
        selected_text(app).contains("+PAE"),
        "{}",
        selected_text(app)
    );
    press(app, "r");
    assert!(
        selected_text(app).contains("-PAE"),
        "{}",
        selected_text(app)
    );
    press(app, "r");
    assert!(
        selected_text(app).contains("-PAE"),
        "{}",
        selected_text(app)
    );
    assert!(app
        .message
        .as_ref()
        .unwrap()
        .0
        .contains("no next reset under v5.1-rc3"));
}

#[test]
fn findings_with_d_and_shift_d() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "d");
    let first = app.cursor;
    assert!(selected_text(app).contains("+PAE"));
    press(app, "d");
    assert!(app.cursor > first);
    assert!(
        selected_text(app).contains("FIND") || selected_text(app).contains("cr"),
        "{}",
        selected_text(app)
    );
    press(app, "D");
    assert_eq!(app.cursor, first);
}

#[test]
fn s_and_shift_s_step_one_instruction() {
    let mut f = seed_app();
    let app = &mut f.app;
    assert_eq!(app.step, 0);
    press(app, "sss");
    assert_eq!(app.step, 3);
    let s = big(app);
    assert!(s.contains("step 3/"), "{s}");
    // Step 4 is `mov cr0,eax`: it is about to execute.
    assert!(
        s.contains("▶      1009 0f 22 c0") || s.contains("mov cr0,eax"),
        "{s}"
    );
    press(app, "S");
    assert_eq!(app.step, 2);
    press(app, "SSSS");
    assert_eq!(app.step, 0);
    // The timeline cursor follows the position.
    press(app, "ssss");
    let e = app.events.get(app.selected().unwrap()).unwrap();
    assert!(e.step <= 4);
}

#[test]
fn g_and_shift_g_go_to_start_and_end() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "G");
    assert_eq!(app.step, app.total_steps);
    assert_eq!(app.cursor, app.visible.len() - 1);
    let s = big(app);
    assert!(s.contains("OK"), "serial output by the end:\n{s}");
    assert!(s.contains('!'));
    press(app, "g");
    assert_eq!((app.step, app.cursor), (0, 0));
    code(app, KeyCode::End);
    assert_eq!(app.step, app.total_steps);
    code(app, KeyCode::Home);
    assert_eq!(app.step, 0);
    assert!(big(app).contains("(no output yet)"));
}

#[test]
fn search_with_slash_n_and_shift_n() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "/");
    assert!(matches!(app.mode, Mode::Prompt(..)));
    assert!(big(app).contains("/█"));
    type_line(app, "out 0x3f8");
    assert!(
        selected_text(app).contains("out 0x3f8 = 0x4f"),
        "{}",
        selected_text(app)
    );
    press(app, "n");
    assert!(selected_text(app).contains("0x4b"));
    press(app, "N");
    assert!(selected_text(app).contains("0x4f"));
    press(app, "/");
    type_line(app, "no such thing");
    assert!(app.message.as_ref().unwrap().1);
}

#[test]
fn filter_by_register_kind_bit_and_policy() {
    let mut f = seed_app();
    let app = &mut f.app;
    let all = app.visible.len();
    press(app, "f");
    type_line(app, "cr4");
    assert_eq!(app.visible.len(), 2);
    assert!(big(app).contains("filter: cr4"));
    press(app, "f");
    // The prompt starts with the current filter: edit it.
    assert_eq!(
        app.mode,
        Mode::Prompt(tui::app::Prompt::Filter, "cr4".into())
    );
    type_line(app, ".pae");
    // Both CR4 writes, their decisions and the finding.
    let texts: Vec<String> = app.visible.iter().map(|&i| app.row_text(i)).collect();
    assert!(
        texts
            .iter()
            .all(|t| !t.contains("cr3") && !t.contains("io")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("FIND")), "{texts:?}");
    press(app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_line(app, "mmu policy=v5.1");
    let texts: Vec<String> = app.visible.iter().map(|&i| app.row_text(i)).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(texts.iter().all(|t| t.contains("v5.1:")), "{texts:?}");
    press(app, "f");
    for _ in 0.."mmu policy=v5.1".len() {
        code(app, KeyCode::Backspace);
    }
    assert_eq!(
        app.mode,
        Mode::Prompt(tui::app::Prompt::Filter, String::new())
    );
    code(app, KeyCode::Backspace);
    assert_eq!(
        app.mode,
        Mode::Normal,
        "backspace on an empty prompt closes it"
    );
    press(app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_line(app, "-io");
    assert_eq!(app.visible.len(), all - 4);
    press(app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_line(app, "cr9.pae");
    assert!(app.message.as_ref().unwrap().1, "a bad filter is reported");
    assert_eq!(
        app.visible.len(),
        all - 4,
        "and leaves the filter as it was"
    );
}

#[test]
fn p_cycles_policies() {
    let mut f = seed_app();
    let app = &mut f.app;
    let n = app.history.as_ref().unwrap().analysis.policies.len();
    let start = app.policy;
    press(app, "p");
    assert_eq!(app.policy, (start + 1) % n);
    press(app, &"p".repeat(n - 1));
    assert_eq!(app.policy, start);
}

#[test]
fn w_walks_an_entered_address() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "d");
    press(app, "w");
    type_line(app, "0x1000");
    let s = big(app);
    assert!(s.contains("page walk 0x1000"), "{s}");
    assert!(s.contains("entered with w"), "{s}");
    assert!(s.contains("translations agree"), "{s}");
    press(app, "w");
    type_line(app, "zz");
    assert!(app.message.as_ref().unwrap().0.contains("not an address"));
    press(app, "w");
    code(app, KeyCode::Enter);
    assert!(big(app).contains("page walk 0x400000"));
}

#[test]
fn colon_goes_to_a_step_or_an_event() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, ":");
    type_line(app, "9");
    assert_eq!(app.step, 9);
    press(app, ":");
    type_line(app, "#0");
    assert_eq!(app.selected(), Some(0));
    press(app, ":");
    type_line(app, "#9999");
    assert!(app.message.as_ref().unwrap().0.contains("no event #9999"));
    press(app, ":");
    type_line(app, "99999");
    assert!(app.message.as_ref().unwrap().0.contains("past the end"));
    press(app, ":");
    press(app, "12");
    code(app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
    assert_ne!(app.step, 12, "Esc cancels");
}

#[test]
fn help_lists_every_key_and_closes() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "?");
    assert_eq!(app.mode, Mode::Help);
    let s = big(app);
    for (keys, what, _) in KEYMAP {
        assert!(s.contains(keys), "{keys} missing from help:\n{s}");
        assert!(s.contains(what), "{what} missing from help:\n{s}");
    }
    press(app, "j");
    assert_eq!(app.mode, Mode::Help, "keys other than close are ignored");
    code(app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn every_action_has_a_key() {
    use tui::keys::action;
    for (keys, _, a) in KEYMAP {
        let first = keys.split_whitespace().next().unwrap();
        let ev = match first {
            "↓" => KeyEvent::new(KeyCode::Down, KeyModifiers::NONE),
            "Enter" => KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE),
            "Tab" => KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE),
            "Esc" => KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE),
            "PgDn" => KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE),
            "PgUp" => KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE),
            k => key(k.chars().next().unwrap()),
        };
        assert_eq!(action(&ev), Some(*a), "{keys}");
    }
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut f = seed_app();
    press(&mut f.app, "q");
    assert!(f.app.quit);
    let mut f = seed_app();
    f.app
        .on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(f.app.quit);
    let mut f = seed_app();
    f.app.act(Action::Quit);
    assert!(f.app.quit);
}

#[test]
fn registers_and_disassembly_at_the_pae_write() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "d");
    let s = big(app);
    assert!(s.contains("[ PE ET PG ]"), "{s}");
    assert!(s.contains("[ PAE ]"), "{s}");
    assert!(s.contains("PDPT 0x4800"), "{s}");
    assert!(s.contains("-> page directory 0x7000"), "{s}");
    assert!(s.contains("disassembly (32-bit)"), "{s}");
    assert!(s.contains("mov cr4,eax"), "{s}");
    assert!(s.contains("or eax,20h"), "{s}");
}

#[test]
fn tiny_terminals_get_a_notice_and_resizes_reflow() {
    let mut f = seed_app();
    let app = &mut f.app;
    press(app, "d");
    for (w, h) in [(1, 1), (20, 5), (79, 40), (120, 19)] {
        let s = screen(app, w, h);
        assert!(s.contains("too") || w < 20, "{w}x{h}:\n{s}");
    }
    let s = screen(app, 40, 10);
    assert!(s.contains("terminal too small"), "{s}");
    for (w, h) in [(80, 20), (100, 30), (160, 48), (250, 80)] {
        let s = screen(app, w, h);
        assert!(s.contains(" mmurr  step "), "{w}x{h}:\n{s}");
        assert!(s.contains("timeline"), "{w}x{h}:\n{s}");
        assert!(s.contains("MMU roles"), "{w}x{h}:\n{s}");
    }
}

#[test]
fn the_mode_band_marks_the_position() {
    let mut f = seed_app();
    let app = &mut f.app;
    let s = big(app);
    let band = s.lines().nth(1).unwrap();
    assert!(band.starts_with(" mode ▼"), "{band}");
    // Each stretch starts with its mode's letter (readable without colour), and the legend
    // names the modes the trace enters.
    assert!(
        band.trim_end().ends_with("2 32-bit P pae U unpaged"),
        "{band}"
    );
    let letters: String = band[" mode ▼".len()..]
        .split("2 32-bit")
        .next()
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(letters, "2P2", "{band}");
    press(app, "G");
    let s = big(app);
    let band = s.lines().nth(1).unwrap();
    assert!(
        band.trim_end().ends_with("▼ 2 32-bit P pae U unpaged"),
        "{band}"
    );
}

#[test]
#[ignore = "prints the seed screen for a human to look at"]
fn show() {
    let mut f = seed_app();
    press(&mut f.app, "d");
    println!("{}", screen(&f.app, 160, 48));
    press(&mut f.app, "P");
    println!("{}", screen(&f.app, 160, 48));
}
