//! The browser on a recording of four vCPUs: `smp-bringup --cpus 4` on the emu backend
//! (`traces/corpus/recorded/smp-bringup.emu.mmurr`), where AP 2 takes the seed bug's path.
//! The timeline has a vCPU column, `vcpu=N` and `v` keep one vCPU's events, and the panels
//! show the selected event's vCPU (its registers from the replayer's per-vCPU state).

mod common;

use common::{open, press, screen};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use replayer::views::registers;
use replayer::Timeline;
use std::path::PathBuf;
use traces::{EventKind, FindingKind, Reader, Record};
use tui::app::App;

fn smp_trace() -> PathBuf {
    common::recorded("smp-bringup.emu.mmurr")
}

fn seed_trace() -> PathBuf {
    common::recorded("pae-toggle.emu.mmurr")
}

fn enter(app: &mut App) {
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
}

/// Every event of the trace with its vCPU, read straight from the records: the vCPU named
/// by the last `Vcpu` switch before it.
fn events_by_vcpu() -> Vec<(traces::Event, u32)> {
    let mut reader = Reader::open(smp_trace()).unwrap();
    let mut vcpu = 0;
    let mut out = Vec::new();
    for r in reader.records() {
        match r.unwrap() {
            Record::Vcpu(v) => vcpu = v.vcpu,
            Record::Event(e) => out.push((e, vcpu)),
            _ => {}
        }
    }
    out
}

/// The timeline's screen line of the selected row (marked ▶).
fn selected_line(s: &str) -> &str {
    s.lines()
        .find(|l| l.contains('▶'))
        .unwrap_or_else(|| panic!("no selected row:\n{s}"))
}

#[test]
fn the_seed_bug_opens_on_vcpu_2_with_its_column_and_panels() {
    let app = open(&smp_trace());
    assert!(app.complete && app.events_loaded && app.history.is_some());
    assert_eq!(app.events.vcpu_count(), 4);
    // No key pressed: the first stale context, v5.1-rc3's at AP 2's CR4.PAE write.
    let i = app.selected().unwrap();
    let e = app.events.get(i).unwrap();
    assert!(matches!(e.kind, EventKind::CrWrite(_)), "{e:?}");
    assert_eq!(app.events.vcpu(i), 2);
    assert_eq!(app.vcpu, 2);
    let s = screen(&app, 160, 48);
    let row = selected_line(&s);
    assert!(row.contains("[2]"), "{row}");
    assert!(row.contains("⚠ STALE v5.1-rc3 +PAE"), "{row}");
    for text in [
        "vCPU 2/4",
        "MMU roles · v5.1-rc3",
        "· vCPU 2",
        "on vCPU 2",
        "STALE CONTEXT",
        "registers · vCPU 2",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
    // On the smallest screen the row keeps its vCPU and the alarm, the title its vCPU.
    let s = screen(&app, 80, 24);
    let row = selected_line(&s);
    assert!(
        row.contains("[2]") && row.contains("⚠ STALE v5.1-rc3"),
        "{s}"
    );
    assert!(s.contains("vCPU 2/4"), "{s}");
    // The finding recorded in the trace (the recorder modelled v5.1-rc3) is vCPU 2's too.
    let finding = events_by_vcpu()
        .into_iter()
        .find(|(e, _)| {
            matches!(&e.kind, EventKind::Finding(f) if f.kind == FindingKind::StaleContext)
        })
        .expect("the trace records the stale context");
    assert_eq!(finding.1, 2);
    let row = app
        .visible
        .iter()
        .position(|&i| app.events.get(i).is_some_and(|e| e.id == finding.0.id))
        .unwrap();
    assert_eq!(app.events.vcpu(app.visible[row]), 2);
    assert!(app.row_text(app.visible[row]).contains("vcpu 2 FIND"));
}

#[test]
fn the_vcpu_column_names_each_events_vcpu() {
    let mut app = open(&smp_trace());
    let truth = events_by_vcpu();
    assert_eq!(app.events.len(), truth.len());
    for (i, (e, vcpu)) in truth.iter().enumerate() {
        assert_eq!(app.events.get(i).map(|x| x.id), Some(e.id));
        assert_eq!(app.events.vcpu(i), *vcpu, "event #{}", e.id);
    }
    // Every vCPU has events (the APs' startups at least), and each row shows its own.
    for v in 0..4 {
        assert!(truth.iter().any(|(_, x)| *x == v), "no event of vCPU {v}");
    }
    press(&mut app, "g");
    for _ in 0..60 {
        let s = screen(&app, 160, 48);
        let i = app.selected().unwrap();
        let row = selected_line(&s);
        let want = format!("[{}]", app.events.vcpu(i));
        assert!(row.contains(&want), "{want} missing from {row}");
        press(&mut app, "j");
    }
}

#[test]
fn a_vcpu_filter_keeps_only_that_vcpus_events() {
    let mut app = open(&smp_trace());
    let truth = events_by_vcpu();
    let of_2: Vec<u64> = truth
        .iter()
        .filter(|(_, v)| *v == 2)
        .map(|(e, _)| e.id)
        .collect();
    assert!(!of_2.is_empty() && of_2.len() < truth.len());
    press(&mut app, "f");
    press(&mut app, "vcpu=2");
    enter(&mut app);
    assert_eq!(app.filter.vcpu, Some(2));
    // Every row is vCPU 2's, and every event of vCPU 2 has one, but for the per-policy
    // decisions folded into their write's row.
    assert!(app.visible.iter().all(|&i| app.events.vcpu(i) == 2));
    let shown: Vec<u64> = app
        .visible
        .iter()
        .map(|&i| app.events.get(i).unwrap().id)
        .collect();
    for (e, _) in truth.iter().filter(|(_, v)| *v == 2) {
        match &e.kind {
            EventKind::Mmu(d) => assert!(shown.contains(&d.cause), "{e:?}"),
            _ => assert!(shown.contains(&e.id), "{e:?} has no row"),
        }
    }
    assert!(shown.iter().all(|id| of_2.contains(id)));

    // `v` cycles all → 0 → 1 → 2, keeping the other terms; on vCPU 2 the plain list (decisions
    // folded) has only vCPU 2's rows, and `vcpu=2` in the filter line says the same.
    press(&mut app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    enter(&mut app);
    assert!(app.filter.is_empty());
    let all = app.visible.len();
    press(&mut app, "vvv");
    assert_eq!(app.filter.vcpu, Some(2));
    assert_eq!(app.filter_text, "vcpu=2");
    assert!(app.visible.len() < all);
    assert!(app.visible.iter().all(|&i| app.events.vcpu(i) == 2));
    let folded_of_2 = app.visible.len();
    press(&mut app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    press(&mut app, "vcpu=2");
    enter(&mut app);
    assert_eq!(app.visible.len(), folded_of_2);
    let s = screen(&app, 160, 48);
    assert!(s.contains("filter: vcpu=2"), "{s}");
    // The timeline is the left 40 % of the screen.
    for line in s.lines().skip(3).take(40) {
        let row: String = line.chars().take(64).collect();
        for v in [0, 1, 3] {
            assert!(
                !row.contains(&format!("[{v}]")),
                "vCPU {v}'s row shown:\n{s}"
            );
        }
    }
    // Back to all with V, and a vCPU the trace lacks is refused.
    press(&mut app, "V");
    assert_eq!(app.filter.vcpu, Some(1));
    press(&mut app, "VV");
    assert_eq!(app.filter.vcpu, None);
    assert_eq!(app.visible.len(), all);
    press(&mut app, "f");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    press(&mut app, "vcpu=4");
    enter(&mut app);
    assert_eq!(app.filter.vcpu, None);
    assert!(app
        .message
        .as_ref()
        .is_some_and(|m| m.1 && m.0.contains("no vCPU 4")));
}

/// The registers panel at AP 2's CR4.PAE write shows AP 2's CR3 and CR4 (its seed tables,
/// PAE just set), not the BSP's; stepping on with `vcpu=2` keeps AP 2's registers, while
/// without a filter a step shows the vCPU that executed it.
#[test]
fn the_register_panel_shows_the_selected_events_vcpu() {
    let mut app = open(&smp_trace());
    let step = app.step;
    assert_eq!(app.vcpu, 2);
    let mut timeline = Timeline::open(smp_trace()).unwrap();
    let snap = timeline.seek(step).unwrap().clone();
    let (ap2, bsp) = (snap.regs_of(2).unwrap(), snap.regs_of(0).unwrap());
    assert_ne!((ap2.cr3, ap2.cr4), (bsp.cr3, bsp.cr4));
    assert_eq!(app.view.vcpu, 2);
    assert_eq!(app.view.control, registers::control(ap2));
    let line = |lines: &[registers::RegisterLine], name: &str| {
        let r = lines.iter().find(|r| r.name == name).unwrap();
        format!("{} {}", r.name, r.value)
    };
    let s = screen(&app, 160, 48);
    for reg in ["cr3", "cr4"] {
        let want = line(&registers::control(ap2), reg);
        assert!(s.contains(&want), "{want:?} missing:\n{s}");
        let bsp_line = line(&registers::control(bsp), reg);
        assert_ne!(want, bsp_line);
        assert!(!s.contains(&bsp_line), "the BSP's {bsp_line:?} shown:\n{s}");
    }
    assert!(ap2.cr4 & 0x20 != 0, "AP 2 has just set CR4.PAE");

    // With vcpu=2, a step forward (another vCPU's instruction) still shows AP 2.
    press(&mut app, "vvv");
    press(&mut app, "s");
    assert_eq!(app.step, step + 1);
    let next = timeline.seek(step + 1).unwrap().clone();
    assert_ne!(next.vcpu(), 2, "the round robin moves on to another vCPU");
    assert_eq!(app.vcpu, 2);
    assert_eq!(
        app.view.control,
        registers::control(next.regs_of(2).unwrap())
    );
    // Without a filter, the panels show the vCPU that executed the step.
    press(&mut app, "VVV");
    assert_eq!(app.filter.vcpu, None);
    press(&mut app, "s");
    let after = timeline.seek(step + 2).unwrap().clone();
    assert_eq!(app.vcpu, after.vcpu());
    assert_eq!(app.view.control, registers::control(&after.regs));
    let s = screen(&app, 160, 48);
    assert!(
        s.contains(&format!("registers · vCPU {}", after.vcpu())),
        "{s}"
    );
}

/// A one-vCPU trace looks as before: no vCPU column, title or filter.
#[test]
fn one_vcpu_traces_have_no_vcpu_column() {
    let mut app = open(&seed_trace());
    assert_eq!(app.events.vcpu_count(), 1);
    let s = screen(&app, 160, 48);
    assert!(!s.contains("vCPU"), "{s}");
    // The timeline (the left 40 %) has no vCPU column (the page walk has `PDE[0]`).
    for line in s.lines() {
        let row: String = line.chars().take(64).collect();
        assert!(!row.contains("[0]"), "{s}");
    }
    press(&mut app, "v");
    assert!(app.filter.is_empty());
    assert!(app
        .message
        .as_ref()
        .is_some_and(|m| m.0.contains("one vCPU")));
}
