//! The browser on a real recording of the seed scenario (pae-toggle on the emu backend,
//! `traces/corpus/recorded/pae-toggle.emu.mmurr`).

mod common;

use common::{press, screen};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui::app::App;

const RECORDED: &str = "pae-toggle.emu.mmurr";

fn open() -> App {
    common::open_recorded(RECORDED)
}

#[test]
fn the_recorded_seed_bug_is_on_the_first_screen() {
    let mut app = open();
    assert!(app.complete && app.events_loaded && app.history.is_some());
    assert_eq!(app.header.scenario.as_deref(), Some("pae-toggle"));
    // No key pressed: the browser opens on the finding and says how to walk the others.
    let row = app.row_text(app.selected().unwrap());
    assert!(row.contains("cr4") && row.contains("+PAE"), "{row}");
    let s = screen(&app, 160, 48);
    for text in [
        "MMU roles · v5.1-rc3",
        "decision: skipped: role unchanged",
        "STALE CONTEXT",
        "root_level 3 (kept 2)",
        "why: CR4 +PAE triggered kvm_mmu_reset_context",
        "effect:",
        "w 0x400000 → GPA 0x10000 with",
        // The 13 decision rows folded into the write's row, the stale policy first.
        "⚠ STALE v5.1-rc3 +PAE  0x0 → 0x20  ▸ 12 reinit, 1",
        "32-bit → pae",
        "1 finding (stale context or #GP)",
        "d/D walk them",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
    // The guest's checks then write and read the marker: walk it.
    press(&mut app, "w");
    press(&mut app, "400000");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let s = screen(&app, 160, 48);
    assert!(s.contains("translations DIFFER"), "{s}");
}

/// At 80x24, 120x40 and 200x50, with no key pressed: the finding's row with its stale policy,
/// the policy the panels show, and the verdict; from 120 columns also the why and the effect.
/// CR0/CR3/CR4 stay in the registers panel at every size.
#[test]
fn the_finding_is_on_the_first_screen_at_every_size() {
    let app = open();
    for (w, h) in [(80, 24), (120, 40), (200, 50)] {
        let s = screen(&app, w, h);
        let mut want = vec![
            "step 34/59",
            "policy v5.1-rc3",
            "⚠ STALE v5.1-rc3 +PAE",
            "STALE CONTEXT",
            "cr0 0x80000011",
            "cr3 0x4800",
            "cr4 0x00000020",
        ];
        if w >= 120 {
            want.extend(["why: CR4 +PAE", "effect:"]);
        }
        for text in want {
            assert!(s.contains(text), "{w}x{h}: {text:?} missing:\n{s}");
        }
    }
}

/// Enter unfolds the CR write's 13 decision rows and folds them again; Tab focuses the roles
/// panel, j scrolls it, z zooms it over the whole body, Esc comes back; o cycles the policy
/// backwards.
#[test]
fn decisions_unfold_and_panels_focus_zoom_and_scroll() {
    let mut app = open();
    let folded = app.visible.len();
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(app.visible.len(), folded + 13);
    let s = screen(&app, 160, 48);
    assert!(s.contains("v5.1-rc3: skipped"), "{s}");
    assert!(
        s.contains("⚠ STALE v5.1-rc3 +PAE  0x0 → 0x20  ▾ 12 reinit"),
        "{s}"
    );
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(app.visible.len(), folded);

    app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    let before = screen(&app, 80, 24);
    assert!(before.contains("▶ MMU roles"), "{before}");
    press(&mut app, "jjj");
    assert_eq!(
        app.step, 34,
        "j scrolls the focused panel, not the timeline"
    );
    let scrolled = screen(&app, 80, 24);
    assert_ne!(before, scrolled);
    press(&mut app, "z");
    let zoomed = screen(&app, 80, 24);
    assert!(!zoomed.contains("timeline ·"), "{zoomed}");
    assert!(zoomed.contains("why: CR4 +PAE"), "{zoomed}");
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(screen(&app, 80, 24).contains("timeline ·"));
    let policy = app.policy;
    press(&mut app, "po");
    assert_eq!(app.policy, policy);
    press(&mut app, "o");
    assert_ne!(app.policy, policy);
}

/// `/0x400000` finds the finding about that address (its translations are part of what search
/// reads), and says which match of how many it is.
#[test]
fn search_finds_addresses_and_counts_matches() {
    let mut app = open();
    press(&mut app, "g/0x400000");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let row = app.row_text(app.selected().unwrap());
    assert!(
        row.contains("stale-context") && row.contains("0x400000"),
        "{row}"
    );
    let (msg, _) = app.message.clone().unwrap();
    assert!(msg.starts_with("match 1 of "), "{msg}");
}

#[test]
fn the_recorded_trace_ends_with_serial_output_and_every_policy_decided() {
    let mut app = open();
    press(&mut app, "G");
    assert_eq!(app.step, app.total_steps);
    let h = app.history.as_ref().unwrap();
    assert_eq!(h.analysis.policies.len(), mmu::policies().len());
    assert!(h
        .findings
        .iter()
        .any(|f| h.analysis.policies[f.policy].name == "v5.1-rc3"));
    press(&mut app, "f");
    press(&mut app, "transition");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let modes: Vec<String> = app.visible.iter().map(|&i| app.row_text(i)).collect();
    assert!(
        modes.iter().any(|m| m.contains("32-bit → pae")),
        "{modes:?}"
    );
    assert!(
        modes.iter().any(|m| m.contains("pae → 32-bit")),
        "{modes:?}"
    );
}

#[test]
#[ignore = "prints the recorded seed screen for a human to look at"]
fn show_recorded() {
    let mut app = open();
    println!("{}", screen(&app, 160, 48));
    press(&mut app, "d");
    println!("{}", screen(&app, 160, 48));
    println!("{}", screen(&app, 80, 24));
}
