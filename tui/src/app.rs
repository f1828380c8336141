//! The browser's state and the updates that change it. Key handling only changes state here;
//! the `ui` modules draw from it without changing anything, so every screen can be rendered
//! on ratatui's test backend after any sequence of keys.

use crate::events::{summary, EventIndex};
use crate::filter::Filter;
use crate::history::MmuHistory;
use crate::keys::{self, Action};
use crate::load::{self, LoadMsg, Progress};
use crate::position::PositionView;
use crate::ui;
use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use mmu::{CpuModel, Flavour};
use ratatui::layout::Rect;
use replayer::Timeline;
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError};
use traces::{EndRecord, EventKind, FindingKind, Header, MmuOutcome, Step};

/// What a line of typed text is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    Search,
    Filter,
    Walk,
    Goto,
}

impl Prompt {
    pub fn label(self) -> &'static str {
        match self {
            Prompt::Search => "/",
            Prompt::Filter => "filter: ",
            Prompt::Walk => "walk address: ",
            Prompt::Goto => ":",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Prompt(Prompt, String),
    Help,
}

/// A panel that can have the focus (Tab), be zoomed to the whole body (z) and scrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    Timeline,
    Roles,
    Registers,
    Walk,
    Disassembly,
    Serial,
}

impl Panel {
    pub const ALL: [Panel; 6] = [
        Panel::Timeline,
        Panel::Roles,
        Panel::Registers,
        Panel::Walk,
        Panel::Disassembly,
        Panel::Serial,
    ];

    fn next(self, forward: bool) -> Panel {
        let i = Panel::ALL.iter().position(|p| *p == self).unwrap_or(0);
        let n = Panel::ALL.len();
        Panel::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }
}

/// Decoded chunks the browser's reader keeps (the trace library keeps 8): a busy trace's
/// chunk decodes to ~8 MB, so 8 cost 60 MB on the bench's 1 M-event trace. The price: a step
/// back (`S`) replays from a page keyframe across more chunks than any small cache holds, and
/// re-decodes them (bench: 1.5 → 7.7 ms on the 10 M-step trace, 3.6 → 17 ms on the busy one;
/// 4 chunks are no faster than 2).
const CACHE_CHUNKS: usize = 2;

/// Rows a page key moves (the timeline's height is the view's business).
pub const PAGE: usize = 20;
/// Rows one mouse-wheel notch moves.
pub const WHEEL: usize = 3;

pub struct App {
    /// The trace's file name, for the title.
    pub title: String,
    pub header: Header,
    pub total_steps: Step,
    pub complete: bool,
    pub end: Option<EndRecord>,
    pub cpu: CpuModel,
    pub flavour: Flavour,
    timeline: Timeline,
    loader: Option<Receiver<LoadMsg>>,
    pub progress: Option<Progress>,
    pub events: EventIndex,
    pub events_loaded: bool,
    pub history: Option<MmuHistory>,
    /// The steps in which the VMM acted on the vCPU (host actions) and no instruction ran,
    /// ascending: known once the history is.
    host_steps: Vec<Step>,
    pub history_error: Option<String>,
    /// Every policy's decision and trackers at [`App::current_write`] (that write's index
    /// with it), recomputed by the analysis when the write changes: the analysis keeps only
    /// checkpoints of them, so that memory stays bounded on big traces.
    pub detail: Option<(usize, replayer::WriteDetail)>,
    pub filter: Filter,
    pub filter_text: String,
    /// Indices into `events` that pass the filter.
    pub visible: Vec<usize>,
    /// Index into `visible` of the selected row.
    pub cursor: usize,
    /// CR writes whose per-policy decision rows are unfolded (folded into the write's row
    /// by default: 13 of every 14 rows were decisions).
    pub unfolded: std::collections::HashSet<traces::EventId>,
    /// The current position: instructions executed.
    pub step: Step,
    /// The vCPU the panels show (see [`App::panel_vcpu`]; 0 in one-vCPU traces).
    pub vcpu: u32,
    pub view: PositionView,
    /// Index into the analysis' policies.
    pub policy: usize,
    policy_chosen: bool,
    pub side_by_side: bool,
    pub walk_address: Option<u64>,
    /// The panel keys scroll (the timeline: keys move through events), whether it fills the
    /// screen, and how far it is scrolled.
    pub focus: Panel,
    pub zoomed: bool,
    pub scroll: u16,
    pub help_scroll: u16,
    pub mode: Mode,
    pub search: Option<String>,
    /// Status-line message and whether it reports a problem.
    pub message: Option<(String, bool)>,
    pub quit: bool,
    /// The terminal's size as last reported.
    screen: Rect,
    /// The user has moved (a key or a click): the browser no longer places the cursor itself.
    moved: bool,
}

impl App {
    /// Opens `path`: reads the header and index (fast) and starts the background loader.
    pub fn open(path: &Path) -> anyhow::Result<App> {
        let timeline = Timeline::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let header = timeline.header().clone();
        let flavour = Flavour::parse(&header.mmu_flavour).unwrap_or(Flavour::Tdp);
        let loader = load::spawn(path.to_path_buf(), flavour);
        let mut timeline = timeline;
        let reader = timeline.reader();
        reader.set_cache_chunks(CACHE_CHUNKS);
        // Every chunk's checksum, so a damaged chunk is named here and not met later as
        // "no events".
        let integrity = reader.verify(traces::Depth::Checksums);
        let complete = integrity.complete;
        let end = reader.end().cloned();
        let total_steps = timeline.last_step();
        // Each vCPU's entry registers (the APs' from the keyframe at step 0), for its mode.
        let entry = timeline.entry();
        let entries: Vec<traces::Regs> = (0..header.vcpu_count())
            .map(|v| entry.regs_of(v).unwrap_or(&entry.regs).clone())
            .collect();
        let mut events = EventIndex::with_vcpus(&entries);
        // The index knows how many events are coming (at most a damaged trace's count).
        let expected = usize::try_from(timeline.reader().event_count()).unwrap_or(0);
        events.reserve(expected.min(1 << 28));
        let mut app = App {
            title: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            cpu: replayer::cpu_model(&header.guest),
            events,
            header,
            total_steps,
            complete,
            end,
            flavour,
            timeline,
            loader: Some(loader),
            progress: None,
            events_loaded: false,
            history: None,
            host_steps: Vec::new(),
            history_error: None,
            detail: None,
            filter: Filter::default(),
            filter_text: String::new(),
            visible: Vec::new(),
            cursor: 0,
            unfolded: Default::default(),
            step: 0,
            vcpu: 0,
            view: PositionView::default(),
            policy: 0,
            policy_chosen: false,
            side_by_side: false,
            walk_address: None,
            focus: Panel::Timeline,
            zoomed: false,
            scroll: 0,
            help_scroll: 0,
            mode: Mode::Normal,
            search: None,
            message: None,
            quit: false,
            screen: Rect::new(0, 0, 160, 48),
            moved: false,
        };
        if !app.complete {
            app.message = Some((
                format!(
                    "the trace is incomplete: {}",
                    integrity.problems().join("; ")
                ),
                true,
            ));
        }
        app.refresh();
        Ok(app)
    }

    /// Takes whatever the loader has sent so far; true when something changed.
    pub fn poll_loader(&mut self) -> bool {
        let mut changed = false;
        while let Some(rx) = self.loader.as_ref() {
            match rx.try_recv() {
                Ok(msg) => self.receive(msg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.loader_gone();
                }
            }
            changed = true;
        }
        if self.loader.is_some() && self.history.is_some() || self.history_error.is_some() {
            self.loader = None;
        }
        changed
    }

    /// Blocks until loading is over (tests, benchmarks, and `--no-tui` front ends).
    pub fn finish_loading(&mut self) {
        while let Some(rx) = self.loader.as_ref() {
            match rx.recv() {
                Ok(msg) => self.receive(msg),
                Err(_) => self.loader_gone(),
            }
            if self.history.is_some() || self.history_error.is_some() {
                self.loader = None;
            }
        }
    }

    /// The loader thread ended without a result (it panicked): say so, keep what arrived.
    fn loader_gone(&mut self) {
        self.loader = None;
        self.progress = None;
        if self.history.is_none() && self.history_error.is_none() {
            let e = "the background loader stopped unexpectedly".to_string();
            self.message = Some((e.clone(), true));
            self.history_error = Some(e);
        }
    }

    pub fn loading(&self) -> bool {
        self.loader.is_some()
    }

    fn receive(&mut self, msg: LoadMsg) {
        match msg {
            LoadMsg::Progress(p) => self.progress = Some(p),
            LoadMsg::EventBatch(events) => {
                let first = self.events.is_empty();
                let start = self.events.len();
                for (e, vcpu) in events {
                    self.events.push(e, vcpu);
                }
                for i in start..self.events.len() {
                    if self.shown(i) {
                        self.visible.push(i);
                    }
                }
                if first {
                    self.follow_step();
                }
            }
            LoadMsg::EventsDone(errors) => {
                if let Some(e) = errors.first() {
                    self.message = Some((format!("damaged trace: {e}"), true));
                }
                self.events.errors = errors;
                self.events.shrink_to_fit();
                self.events_loaded = true;
            }
            LoadMsg::Mmu(h) => {
                if !self.policy_chosen {
                    self.policy = h.default_policy();
                }
                self.host_steps = h
                    .analysis
                    .writes
                    .iter()
                    .filter(|w| matches!(w.cause, history::Cause::Host(a) if a.is_vmm()))
                    .map(|w| w.event.step)
                    .collect();
                self.host_steps.sort_unstable();
                self.history = Some(*h);
                self.progress = None;
                self.refresh();
                if !self.moved {
                    self.open_on_the_story();
                }
            }
            LoadMsg::Failed(e) => {
                self.progress = None;
                self.message = Some((e.clone(), true));
                self.history_error = Some(e);
            }
        }
    }

    // ---- input ------------------------------------------------------------------------

    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        match self.mode.clone() {
            Mode::Help => match key.code {
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    self.help_scroll = 0;
                }
                KeyCode::Char('j') | KeyCode::Down => {
                    self.help_scroll = self.help_scroll.saturating_add(1)
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                _ => {}
            },
            Mode::Prompt(kind, mut text) => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    self.submit(kind, text.trim());
                }
                KeyCode::Backspace => {
                    if text.pop().is_none() {
                        self.mode = Mode::Normal;
                    } else {
                        self.mode = Mode::Prompt(kind, text);
                    }
                }
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.mode = Mode::Normal
                }
                // readline's kill-line: start the line over.
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.mode = Mode::Prompt(kind, String::new())
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.mode = Mode::Prompt(kind, text);
                }
                _ => {}
            },
            Mode::Normal => {
                if let Some(a) = keys::action(&key) {
                    self.message = None;
                    self.moved = true;
                    self.act(a);
                }
            }
        }
        // A move within one step changes the selected write without a refresh.
        self.sync_detail();
    }

    /// The terminal's size, for mouse clicks (the layout is a function of it).
    pub fn resize(&mut self, width: u16, height: u16) {
        self.screen = Rect::new(0, 0, width, height);
    }

    pub fn on_mouse(&mut self, m: MouseEvent) {
        if self.mode != Mode::Normal {
            return;
        }
        match m.kind {
            MouseEventKind::ScrollDown => self.move_cursor(WHEEL as i64),
            MouseEventKind::ScrollUp => self.move_cursor(-(WHEEL as i64)),
            MouseEventKind::Down(MouseButton::Left) => self.click(m.column, m.row),
            _ => return,
        }
        self.moved = true;
        self.sync_detail();
    }

    /// A click on a timeline row selects it.
    fn click(&mut self, column: u16, row: u16) {
        if !ui::fits(self.screen) {
            return;
        }
        let list = ui::areas(self.screen).timeline;
        let height = list.height.saturating_sub(2);
        let inside = column > list.x
            && column < list.right().saturating_sub(1)
            && row > list.y
            && row <= list.y + height;
        if !inside {
            return;
        }
        let start = ui::timeline::window_start(self.cursor, self.visible.len(), height.into());
        let target = start + usize::from(row - list.y - 1);
        if target < self.visible.len() {
            self.message = None;
            self.select(target);
        }
    }

    pub fn act(&mut self, a: Action) {
        match a {
            Action::Down | Action::Up | Action::PageDown | Action::PageUp
                if self.focus != Panel::Timeline =>
            {
                let by: i32 = match a {
                    Action::Down => 1,
                    Action::Up => -1,
                    Action::PageDown => PAGE as i32,
                    _ => -(PAGE as i32),
                };
                self.scroll = (i32::from(self.scroll) + by).clamp(0, i32::from(u16::MAX)) as u16;
            }
            Action::Down => self.move_cursor(1),
            Action::Up => self.move_cursor(-1),
            Action::PageDown => self.move_cursor(PAGE as i64),
            Action::PageUp => self.move_cursor(-(PAGE as i64)),
            Action::FocusNext | Action::FocusPrev => {
                self.focus = self.focus.next(a == Action::FocusNext);
                self.scroll = 0;
            }
            Action::Zoom => self.zoomed = !self.zoomed,
            Action::Back => {
                self.focus = Panel::Timeline;
                self.zoomed = false;
                self.scroll = 0;
            }
            Action::NextTransition => self.jump_transition(true),
            Action::PrevTransition => self.jump_transition(false),
            Action::NextReset => self.jump_reset(true),
            Action::PrevReset => self.jump_reset(false),
            Action::NextFinding => self.jump_finding(true),
            Action::PrevFinding => self.jump_finding(false),
            Action::StepForward => self.set_step(self.step.saturating_add(1), true),
            Action::StepBack => self.set_step(self.step.saturating_sub(1), true),
            Action::Start => {
                self.cursor = 0;
                self.set_step(0, false);
            }
            Action::End => {
                self.cursor = self.visible.len().saturating_sub(1);
                self.set_step(self.total_steps, false);
            }
            Action::Search => self.mode = Mode::Prompt(Prompt::Search, String::new()),
            Action::SearchNext => self.search_again(true),
            Action::SearchPrev => self.search_again(false),
            Action::Filter => self.mode = Mode::Prompt(Prompt::Filter, self.filter_text.clone()),
            Action::CycleVcpu => self.cycle_vcpu(true),
            Action::CycleVcpuBack => self.cycle_vcpu(false),
            Action::CyclePolicy => self.cycle_policy(true),
            Action::CyclePolicyBack => self.cycle_policy(false),
            Action::Unfold => self.toggle_fold(),
            Action::SideBySide => self.side_by_side = !self.side_by_side,
            Action::Walk => self.mode = Mode::Prompt(Prompt::Walk, String::new()),
            Action::Goto => self.mode = Mode::Prompt(Prompt::Goto, String::new()),
            Action::Help => self.mode = Mode::Help,
            Action::Quit => self.quit = true,
        }
    }

    fn submit(&mut self, kind: Prompt, text: &str) {
        match kind {
            Prompt::Search => {
                if text.is_empty() {
                    self.search = None;
                } else {
                    self.search = Some(text.to_string());
                    self.search_again(true);
                }
            }
            Prompt::Filter => self.set_filter(text),
            Prompt::Walk => {
                if text.is_empty() {
                    self.walk_address = None;
                    self.refresh();
                } else {
                    match parse_number(text, true) {
                        Some(a) => {
                            self.walk_address = Some(a);
                            self.refresh();
                        }
                        None => self.message = Some((format!("not an address: {text:?}"), true)),
                    }
                }
            }
            Prompt::Goto => self.goto(text),
        }
    }

    /// Applies a filter line (the `f` prompt's, or the one `v` rewrites).
    fn set_filter(&mut self, text: &str) {
        let f = match Filter::parse(text) {
            Ok(f) => f,
            Err(e) => {
                self.message = Some((e, true));
                return;
            }
        };
        let vcpus = self.events.vcpu_count();
        if let Some(v) = f.vcpu.filter(|&v| v >= vcpus) {
            let plural = if vcpus == 1 { "" } else { "s" };
            self.message = Some((
                format!(
                    "no vCPU {v}: this trace has {vcpus} vCPU{plural} (0 to {})",
                    vcpus - 1
                ),
                true,
            ));
            return;
        }
        self.filter = f;
        self.filter_text = text.to_string();
        self.apply_filter();
        self.follow_step();
        // The panels follow a vCPU filter.
        self.refresh();
        self.message = Some((
            format!(
                "{} of {} events shown",
                self.visible.len(),
                self.events.len()
            ),
            false,
        ));
    }

    /// `v` / `V`: the vCPU filter cycles all vCPUs → vCPU 0 → 1 → ... → all (backwards
    /// with `V`), rewriting the `vcpu=` term of the filter line and keeping its other terms.
    fn cycle_vcpu(&mut self, forward: bool) {
        let n = self.events.vcpu_count();
        if n <= 1 {
            self.message = Some(("this trace has one vCPU".into(), false));
            return;
        }
        // None (all) is position n of the cycle.
        let at = self.filter.vcpu.unwrap_or(n);
        let next = if forward {
            (at + 1) % (n + 1)
        } else {
            (at + n) % (n + 1)
        };
        let mut terms: Vec<String> = self
            .filter_text
            .split_whitespace()
            .filter(|t| {
                let t = t.to_ascii_lowercase();
                !t.starts_with("vcpu=") && !t.starts_with("cpu=")
            })
            .map(str::to_string)
            .collect();
        if next < n {
            terms.push(format!("vcpu={next}"));
        }
        self.set_filter(&terms.join(" "));
        let which = if next < n {
            format!("vCPU {next}")
        } else {
            "all vCPUs".to_string()
        };
        if let Some((m, false)) = &self.message {
            self.message = Some((format!("{which}: {m} (v/V: next/previous vCPU)"), false));
        }
    }

    // ---- navigation -------------------------------------------------------------------

    /// The selected event (index into `events`).
    pub fn selected(&self) -> Option<usize> {
        self.visible.get(self.cursor).copied()
    }

    fn move_cursor(&mut self, delta: i64) {
        if self.visible.is_empty() {
            if !self.events_loaded {
                self.message = Some(("events are still loading; s/S and : step".into(), false));
            }
            return;
        }
        let last = self.visible.len() - 1;
        let to = (self.cursor as i64 + delta).clamp(0, last as i64) as usize;
        self.select(to);
    }

    /// Selects visible row `row` and moves to its step.
    fn select(&mut self, row: usize) {
        self.cursor = row;
        if let Some(e) = self.selected().and_then(|i| self.events.get(i)) {
            let step = e.step;
            self.set_step(step, false);
        }
    }

    /// Moves to `step`; with `follow`, the cursor goes to the last row at or before it.
    fn set_step(&mut self, step: Step, follow: bool) {
        let step = step.min(self.total_steps);
        // A row of another vCPU at the same step changes the panels too.
        let other_vcpu = self.panel_vcpu().is_some_and(|v| v != self.vcpu);
        if step != self.step || self.view.step != Some(step) || other_vcpu {
            self.step = step;
            self.refresh();
        }
        if follow {
            self.follow_step();
        }
    }

    /// Puts the cursor on the last visible event at or before the current step.
    fn follow_step(&mut self) {
        let step = self.step;
        let n = self
            .visible
            .partition_point(|&i| self.events.get(i).is_some_and(|e| e.step <= step));
        self.cursor = n.saturating_sub(1);
    }

    fn apply_filter(&mut self) {
        self.visible = (0..self.events.len()).filter(|&i| self.shown(i)).collect();
        self.cursor = self.cursor.min(self.visible.len().saturating_sub(1));
    }

    /// Whether event `i` has a row: it passes the filter, and it is not a decision folded
    /// into its CR write's row.
    fn shown(&self, i: usize) -> bool {
        self.filter.matches(&self.events, i, &self.header.policies) && !self.folded(i)
    }

    /// A per-policy decision whose CR write is folded (unless the filter asks for them).
    pub fn folded(&self, i: usize) -> bool {
        let Some(e) = self.events.get(i) else {
            return false;
        };
        let EventKind::Mmu(_) = e.kind else {
            return false;
        };
        if self.filter.asks_for_decisions() {
            return false;
        }
        // A decision whose write is not in the trace has no row to fold into.
        let cause = self.events.cause_of(i).and_then(|c| self.events.get(c));
        cause.is_some_and(|c| {
            matches!(c.kind, EventKind::CrWrite(_) | EventKind::HostAction(_))
                && !self.unfolded.contains(&c.id)
        })
    }

    /// Enter: unfolds (or folds again) the decision rows of the selected CR write (or of the
    /// write a selected decision belongs to); the cursor stays on the write.
    fn toggle_fold(&mut self) {
        let Some(i) = self.selected() else { return };
        let Some(cause) = self.events.cause_of(i) else {
            self.message = Some((
                "Enter unfolds a CR write's decisions; this row has none".into(),
                false,
            ));
            return;
        };
        let Some(id) = self.events.get(cause).map(|e| e.id) else {
            return;
        };
        if !self.unfolded.remove(&id) {
            self.unfolded.insert(id);
        }
        self.apply_filter();
        if let Ok(row) = self.visible.binary_search(&cause) {
            self.cursor = row;
        }
    }

    /// Moves to the next (or previous) visible row satisfying `pred`.
    fn jump(
        &mut self,
        forward: bool,
        what: &str,
        pred: impl Fn(&App, &traces::Event, usize) -> bool,
    ) -> bool {
        let rows: Box<dyn Iterator<Item = usize>> = if forward {
            Box::new(self.cursor + 1..self.visible.len())
        } else {
            Box::new((0..self.cursor.min(self.visible.len())).rev())
        };
        for row in rows {
            let i = self.visible[row];
            if let Some(e) = self.events.get(i) {
                if pred(self, &e, i) {
                    self.select(row);
                    return true;
                }
            }
        }
        let dir = if forward { "next" } else { "previous" };
        let hint = if self.filter.is_empty() {
            ""
        } else {
            " among the filtered events"
        };
        self.message = Some((format!("no {dir} {what}{hint}"), false));
        false
    }

    fn jump_transition(&mut self, forward: bool) {
        self.jump(forward, "transition", |_, e, _| {
            matches!(e.kind, EventKind::Transition { .. })
        });
    }

    fn jump_reset(&mut self, forward: bool) {
        let what = match &self.history {
            Some(h) => format!("reset under {}", h.analysis.policies[self.policy].name),
            None => "reset (recorded decisions; the model is still loading)".to_string(),
        };
        self.jump(forward, &what, |app, e, _| match (&app.history, &e.kind) {
            (Some(h), EventKind::CrWrite(_) | EventKind::HostAction(_)) => h
                .write_of_event(e.id)
                .is_some_and(|w| h.is_reset(w, app.policy)),
            (None, EventKind::Mmu(d)) => {
                matches!(d.outcome, MmuOutcome::Reinit | MmuOutcome::InitOnly)
            }
            _ => false,
        });
    }

    fn jump_finding(&mut self, forward: bool) {
        let found = self.jump(forward, "finding", |app, e, _| match &e.kind {
            EventKind::Finding(_) => true,
            EventKind::CrWrite(_) | EventKind::HostAction(_) => {
                app.history.as_ref().is_some_and(|h| {
                    h.write_of_event(e.id)
                        .is_some_and(|w| h.findings_at(w).next().is_some())
                })
            }
            _ => false,
        });
        if found {
            self.select_finding_policy();
        }
    }

    /// Opens where the story is: on the first stale context or #GP disagreement (else the
    /// first finding) with its policy selected, and says how many findings there are and
    /// which key walks them.
    fn open_on_the_story(&mut self) {
        let Some(h) = &self.history else { return };
        let bugs = h
            .findings
            .iter()
            .filter(|f| f.kind != FindingKind::NeedlessReset)
            .count();
        let total = h.findings.len();
        if total == 0 {
            return;
        }
        let first = h
            .findings
            .iter()
            .find(|f| f.kind != FindingKind::NeedlessReset)
            .or_else(|| h.findings.first());
        let target = first.and_then(|f| {
            self.visible
                .iter()
                .position(|&i| self.events.get(i).is_some_and(|e| e.id == f.event))
        });
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let what = if bugs > 0 {
            format!(
                "{bugs} finding{} (stale context or #GP), {} needless reset{}",
                plural(bugs),
                total - bugs,
                plural(total - bugs)
            )
        } else {
            format!("{total} needless reset{}", plural(total))
        };
        if let Some(row) = target {
            self.select(row);
            self.select_finding_policy();
            self.refresh();
        }
        self.message = Some((
            format!("{what} — d/D walk them, P compares policies"),
            false,
        ));
    }

    /// After landing on a finding, show the policy it is about.
    fn select_finding_policy(&mut self) {
        let (Some(h), Some(i)) = (&self.history, self.selected()) else {
            return;
        };
        let Some(e) = self.events.get(i) else {
            return;
        };
        let policy = match &e.kind {
            EventKind::Finding(f) => {
                self.header
                    .policies
                    .get(usize::from(f.policy))
                    .and_then(|name| {
                        let short = name.split_whitespace().next().unwrap_or(name);
                        h.analysis.policy_index(short)
                    })
            }
            EventKind::CrWrite(_) | EventKind::HostAction(_) => {
                h.write_of_event(e.id).and_then(|w| {
                    let mut at = h.findings_at(w);
                    let first = at.next()?;
                    let stale = std::iter::once(first)
                        .chain(at)
                        .find(|f| f.kind == FindingKind::StaleContext);
                    Some(stale.unwrap_or(first).policy)
                })
            }
            _ => None,
        };
        if let Some(p) = policy {
            self.policy = p;
            self.policy_chosen = true;
        }
    }

    fn cycle_policy(&mut self, forward: bool) {
        match &self.history {
            Some(h) => {
                let n = h.analysis.policies.len().max(1);
                self.policy = if forward {
                    (self.policy + 1) % n
                } else {
                    (self.policy + n - 1) % n
                };
                self.policy_chosen = true;
                self.refresh();
            }
            None => {
                self.message = Some(("the MMU model is still loading".into(), false));
            }
        }
    }

    /// The text search matches against.
    /// The row's text and the event's full description (`replayer::views::event_line`: RIP,
    /// a finding's addresses and translations), so `/0x400000` finds the finding about it.
    pub fn row_text(&self, i: usize) -> String {
        match self.events.get(i) {
            Some(e) => {
                let policies = &self.header.policies;
                let (kind, text) = summary(&e, policies);
                let vcpu = if self.events.vcpu_count() > 1 {
                    format!(" vcpu {}", self.events.vcpu(i))
                } else {
                    String::new()
                };
                format!(
                    "#{} step {}{vcpu} {kind} {text} · {}",
                    e.id,
                    e.step,
                    replayer::views::event_line::line(&e, policies)
                )
            }
            None => String::new(),
        }
    }

    fn search_again(&mut self, forward: bool) {
        let Some(needle) = self.search.clone() else {
            self.message = Some(("no search yet: press / first".into(), false));
            return;
        };
        let needle = needle.to_ascii_lowercase();
        let matches: Vec<usize> = (0..self.visible.len())
            .filter(|&row| {
                self.row_text(self.visible[row])
                    .to_ascii_lowercase()
                    .contains(&needle)
            })
            .collect();
        let next = if forward {
            matches
                .iter()
                .find(|&&r| r > self.cursor)
                .or(matches.first())
        } else {
            matches
                .iter()
                .rev()
                .find(|&&r| r < self.cursor)
                .or(matches.last())
        };
        let Some(&row) = next else {
            self.message = Some((format!("not found: {needle}"), true));
            return;
        };
        self.select(row);
        let k = matches.partition_point(|&r| r < row) + 1;
        self.message = Some((
            format!(
                "match {k} of {} for {needle:?} (n/N: next/previous)",
                matches.len()
            ),
            false,
        ));
    }

    fn goto(&mut self, text: &str) {
        let event = text
            .strip_prefix('#')
            .or_else(|| text.strip_prefix('e'))
            .map(|t| t.trim());
        if let Some(t) = event {
            let Some(id) = parse_number(t, false) else {
                self.message = Some((format!("not an event number: {t:?}"), true));
                return;
            };
            match self.events.position_of(id) {
                Some(i) => match self.visible.binary_search(&i) {
                    Ok(row) => self.select(row),
                    Err(_) => {
                        let step = self.events.get(i).map_or(self.step, |e| e.step);
                        self.set_step(step, true);
                        self.message =
                            Some((format!("event #{id} is hidden by the filter"), false));
                    }
                },
                None => self.message = Some((format!("no event #{id}"), true)),
            }
            return;
        }
        match parse_number(text, false) {
            Some(s) if s <= self.total_steps => self.set_step(s, true),
            Some(s) => {
                self.message = Some((
                    format!("step {s} is past the end (last step {})", self.total_steps),
                    true,
                ))
            }
            None => self.message = Some((format!("not a step: {text:?} (event: #N)"), true)),
        }
    }

    /// Brings [`App::detail`] to the current write (the timeline is left elsewhere: callers
    /// seek it to the current step afterwards, as `refresh` does).
    fn sync_detail(&mut self) {
        let w = self.current_write();
        if self.detail.as_ref().map(|d| d.0) == w {
            return;
        }
        self.detail = None;
        let (Some(h), Some(w)) = (&self.history, w) else {
            return;
        };
        match h.analysis.detail(&mut self.timeline, w) {
            Ok(d) => self.detail = d.map(|d| (w, d)),
            Err(e) => self.message = Some((format!("MMU model at write {w}: {e}"), true)),
        }
    }

    /// The vCPU the panels show when the choice is the browser's: the selected event's when
    /// it is at the current step, else the one the filter keeps; `None`: the vCPU that
    /// executed the current step (the only one of most traces).
    pub fn panel_vcpu(&self) -> Option<u32> {
        if self.events.vcpu_count() <= 1 {
            return None;
        }
        let selected = self
            .selected()
            .filter(|&i| self.events.get(i).is_some_and(|e| e.step == self.step));
        selected.map(|i| self.events.vcpu(i)).or(self.filter.vcpu)
    }

    /// Recomputes the panels for the current position.
    fn refresh(&mut self) {
        self.vcpu = match self.panel_vcpu() {
            Some(v) => v,
            None if self.events.vcpu_count() <= 1 => 0,
            // The replayer's state says which vCPU executed the step.
            None => self.timeline.seek(self.step).map_or(0, |s| s.vcpu()),
        };
        let vcpu = self.vcpu;
        self.sync_detail();
        // The kept context at the current step: the trackers after this vCPU's last write at
        // or before it, which is the current write unless an earlier write of the same step
        // is selected (then recomputed here, a rare case).
        let kept = self.history.as_ref().and_then(|h| {
            let writes = &h.analysis.writes;
            let upto = writes.partition_point(|w| w.event.step <= self.step);
            let last = writes[..upto].iter().rposition(|w| w.vcpu == vcpu);
            let tracker = match (last, &self.detail) {
                (None, _) => h.analysis.initial_of(vcpu).get(self.policy).cloned(),
                (Some(l), Some((w, d))) if l == *w => d.after.get(self.policy).cloned(),
                (Some(l), _) => h
                    .analysis
                    .detail(&mut self.timeline, l)
                    .ok()
                    .flatten()
                    .and_then(|d| d.after.get(self.policy).cloned()),
            };
            tracker.map(|t| (t.policy().name, *t.context()))
        });
        let view = PositionView::compute(
            &mut self.timeline,
            &self.cpu,
            self.step,
            Some(vcpu),
            self.walk_address,
            kept,
            &self.host_steps,
            &self.view,
        );
        if let Some(e) = &view.error {
            self.message = Some((e.clone(), true));
        }
        self.view = view;
    }
}

/// Decimal, or hex with `0x` (addresses: hex without `0x` too).
pub fn parse_number(text: &str, hex_default: bool) -> Option<u64> {
    let t = text.trim().replace('_', "");
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if hex_default {
        u64::from_str_radix(&t, 16).ok()
    } else {
        t.parse().ok()
    }
}

impl App {
    /// The control-register write the role panel describes: the selected event's (a write,
    /// or the write a decision or finding is about) when it is at the current step, else the
    /// last write of the shown vCPU at or before the current step. An index into the
    /// analysis' writes.
    pub fn current_write(&self) -> Option<usize> {
        let h = self.history.as_ref()?;
        let selected = self
            .selected()
            .filter(|&i| self.events.get(i).is_some_and(|e| e.step == self.step))
            .and_then(|i| self.events.cause_of(i))
            .and_then(|c| self.events.get(c))
            .and_then(|e| h.write_of_event(e.id));
        selected.or_else(|| {
            let writes = &h.analysis.writes;
            let upto = writes.partition_point(|w| w.event.step <= self.step);
            writes[..upto].iter().rposition(|w| w.vcpu == self.vcpu)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_and_addresses() {
        assert_eq!(parse_number("1_000", false), Some(1000));
        assert_eq!(parse_number("0x10", false), Some(16));
        assert_eq!(parse_number("10", true), Some(16));
        assert_eq!(parse_number("0X400000", true), Some(0x40_0000));
        assert_eq!(parse_number("zz", true), None);
        assert_eq!(parse_number("", false), None);
    }
}
