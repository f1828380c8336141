//! The key map: one table, read by the key handler and by the help overlay, so the help
//! lists exactly what the keys do. Conventions from tig, less and perf report.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Down,
    Up,
    PageDown,
    PageUp,
    NextTransition,
    PrevTransition,
    NextReset,
    PrevReset,
    NextFinding,
    PrevFinding,
    StepForward,
    StepBack,
    Start,
    End,
    Search,
    SearchNext,
    SearchPrev,
    Filter,
    CycleVcpu,
    CycleVcpuBack,
    CyclePolicy,
    SideBySide,
    Walk,
    Goto,
    Unfold,
    CyclePolicyBack,
    FocusNext,
    FocusPrev,
    Zoom,
    Back,
    Help,
    Quit,
}

/// (keys as the help shows them, what they do, the action).
pub const KEYMAP: &[(&str, &str, Action)] = &[
    ("j ↓", "next event", Action::Down),
    ("k ↑", "previous event", Action::Up),
    ("PgDn ^d", "page down", Action::PageDown),
    ("PgUp ^u", "page up", Action::PageUp),
    ("J ]", "next paging-mode transition", Action::NextTransition),
    (
        "K [",
        "previous paging-mode transition",
        Action::PrevTransition,
    ),
    (
        "r",
        "next MMU reset (re-init) of the policy",
        Action::NextReset,
    ),
    ("R", "previous MMU reset of the policy", Action::PrevReset),
    (
        "d",
        "next finding (stale context, needless reset, #GP)",
        Action::NextFinding,
    ),
    ("D", "previous finding", Action::PrevFinding),
    ("s", "step one instruction forward", Action::StepForward),
    ("S", "step one instruction back", Action::StepBack),
    ("g Home", "start of the trace", Action::Start),
    ("G End", "end of the trace", Action::End),
    ("/", "search event text", Action::Search),
    ("n", "next search match", Action::SearchNext),
    ("N", "previous search match", Action::SearchPrev),
    (
        "f",
        "filter: cr4 cr4.pae mmu policy=v5.1 vcpu=2 -io ...",
        Action::Filter,
    ),
    (
        "v",
        "vCPU filter: all → vCPU 0 → 1 → … (panels show that vCPU)",
        Action::CycleVcpu,
    ),
    ("V", "vCPU filter backwards", Action::CycleVcpuBack),
    (
        "p",
        "cycle the policy the role panel shows",
        Action::CyclePolicy,
    ),
    ("o", "cycle the policy backwards", Action::CyclePolicyBack),
    ("P", "all policies side by side", Action::SideBySide),
    (
        "Enter",
        "unfold / fold a CR write's per-policy decision rows",
        Action::Unfold,
    ),
    (
        "w",
        "walk an address (empty: last one touched)",
        Action::Walk,
    ),
    (
        "Tab S-Tab",
        "focus the next / previous panel (j k PgDn PgUp then scroll it)",
        Action::FocusNext,
    ),
    (
        "z",
        "zoom the focused panel to the whole screen",
        Action::Zoom,
    ),
    ("Esc", "back to the timeline, unzoomed", Action::Back),
    (":", "go to step N or event #N", Action::Goto),
    ("?", "this help", Action::Help),
    ("q ^c", "quit", Action::Quit),
];

/// The action of a key in normal mode.
pub fn action(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('d') if ctrl => Action::PageDown,
        KeyCode::Char('u') if ctrl => Action::PageUp,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::Char('J') | KeyCode::Char(']') => Action::NextTransition,
        KeyCode::Char('K') | KeyCode::Char('[') => Action::PrevTransition,
        KeyCode::Char('r') => Action::NextReset,
        KeyCode::Char('R') => Action::PrevReset,
        KeyCode::Char('d') => Action::NextFinding,
        KeyCode::Char('D') => Action::PrevFinding,
        KeyCode::Char('s') => Action::StepForward,
        KeyCode::Char('S') => Action::StepBack,
        KeyCode::Char('g') | KeyCode::Home => Action::Start,
        KeyCode::Char('G') | KeyCode::End => Action::End,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('n') => Action::SearchNext,
        KeyCode::Char('N') => Action::SearchPrev,
        KeyCode::Char('f') => Action::Filter,
        KeyCode::Char('v') => Action::CycleVcpu,
        KeyCode::Char('V') => Action::CycleVcpuBack,
        KeyCode::Char('p') => Action::CyclePolicy,
        KeyCode::Char('P') => Action::SideBySide,
        KeyCode::Char('o') => Action::CyclePolicyBack,
        KeyCode::Enter => Action::Unfold,
        KeyCode::Tab => Action::FocusNext,
        KeyCode::BackTab => Action::FocusPrev,
        KeyCode::Char('z') => Action::Zoom,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('w') => Action::Walk,
        KeyCode::Char(':') => Action::Goto,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}
