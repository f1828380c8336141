//! Drawing: reads the [`App`] and never changes it. One module per panel.

mod help;
mod regs;
mod roles;
mod serial;
pub mod timeline;
mod walk;

use crate::app::{App, Mode, Panel};
use crate::events::clean;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use traces::PagingMode;

/// ` · vCPU N` after a panel's title on a trace of several vCPUs (the panels show one
/// vCPU's state: [`App::vcpu`]); nothing on one-vCPU traces.
pub fn vcpu_suffix(app: &App) -> String {
    if app.events.vcpu_count() > 1 {
        format!(" · vCPU {}", app.vcpu)
    } else {
        String::new()
    }
}

/// The colour of vCPU `v` in the timeline's vCPU column.
pub fn vcpu_color(v: u32) -> Color {
    const PALETTE: [Color; 6] = [
        Color::White,
        Color::LightCyan,
        Color::LightMagenta,
        Color::LightYellow,
        Color::LightGreen,
        Color::LightBlue,
    ];
    PALETTE[v as usize % PALETTE.len()]
}

/// Below this the panels cannot say anything useful: a notice replaces them.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 20;

/// The colour of a paging mode in the band and the timeline.
pub fn mode_color(m: PagingMode) -> Color {
    match m {
        PagingMode::Real => Color::DarkGray,
        PagingMode::Unpaged => Color::Blue,
        PagingMode::Bits32 => Color::Yellow,
        PagingMode::Pae => Color::Magenta,
        PagingMode::Level4 => Color::Green,
        PagingMode::Level5 => Color::Cyan,
    }
}

pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

pub fn alert() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

pub fn changed() -> Style {
    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
}

pub fn panel(title: impl Into<String>) -> Block<'static> {
    Block::bordered().title(Span::styled(format!(" {} ", title.into()), bold()))
}

/// `which`'s frame: highlighted (and marked) when it has the focus.
pub fn panel_of(app: &App, which: Panel, title: impl Into<String>) -> Block<'static> {
    if app.focus == which && which != Panel::Timeline {
        Block::bordered()
            .border_style(Style::new().fg(Color::Cyan))
            .title(Span::styled(
                format!(" ▶ {} · j/k scroll · z zoom · Esc back ", title.into()),
                bold().fg(Color::Cyan),
            ))
    } else {
        panel(title)
    }
}

/// How far `which` is scrolled (only the focused panel is).
pub fn scroll_of(app: &App, which: Panel) -> (u16, u16) {
    (if app.focus == which { app.scroll } else { 0 }, 0)
}

/// Where each panel goes on a screen of `area` (large enough: see [`MIN_WIDTH`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub title: Rect,
    pub band: Rect,
    pub timeline: Rect,
    pub roles: Rect,
    pub regs: Rect,
    pub walk: Rect,
    pub disasm: Rect,
    pub serial: Rect,
    pub status: Rect,
}

/// The screen layout: a pure function of the size, so key and mouse handling can find a
/// panel without asking the renderer.
pub fn areas(area: Rect) -> Areas {
    let [title, band, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    // Narrow terminals give the timeline a little more, so a finding's row keeps its flags.
    let share = if area.width < 120 { 46 } else { 40 };
    let [timeline, right] = Layout::horizontal([
        Constraint::Percentage(share),
        Constraint::Percentage(100 - share),
    ])
    .areas(body);
    // Short terminals give the roles panel (the verdict, why and effect) the room; the
    // disassembly and serial panels are then reached with Tab and z.
    let [roles, middle, bottom] = if area.height < 30 {
        Layout::vertical([
            Constraint::Percentage(62),
            Constraint::Percentage(38),
            Constraint::Length(0),
        ])
        .areas(right)
    } else {
        Layout::vertical([
            Constraint::Percentage(50),
            Constraint::Percentage(30),
            Constraint::Percentage(20),
        ])
        .areas(right)
    };
    let [regs, walk] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(middle);
    let [disasm, serial] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    Areas {
        title,
        band,
        timeline,
        roles,
        regs,
        walk,
        disasm,
        serial,
        status,
    }
}

/// Whether a screen of this size gets the panels (else the "too small" notice).
pub fn fits(area: Rect) -> bool {
    area.width >= MIN_WIDTH && area.height >= MIN_HEIGHT
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if !fits(area) {
        too_small(frame, area);
        return;
    }
    let a = areas(area);
    frame.render_widget(Paragraph::new(title_line(app)), a.title);
    timeline::draw_band(frame, a.band, app);
    if app.zoomed {
        let body = Rect {
            y: a.timeline.y,
            height: a.timeline.height,
            ..area
        };
        draw_panel(frame, app.focus, body, app);
    } else {
        for (which, rect) in [
            (Panel::Timeline, a.timeline),
            (Panel::Roles, a.roles),
            (Panel::Registers, a.regs),
            (Panel::Walk, a.walk),
            (Panel::Disassembly, a.disasm),
            (Panel::Serial, a.serial),
        ] {
            if rect.height > 0 && rect.width > 0 {
                draw_panel(frame, which, rect, app);
            }
        }
    }
    frame.render_widget(Paragraph::new(status_line(app)), a.status);
    if app.mode == Mode::Help {
        help::draw(frame, area, app.help_scroll);
    }
}

fn draw_panel(frame: &mut Frame, which: Panel, rect: Rect, app: &App) {
    match which {
        Panel::Timeline => timeline::draw(frame, rect, app),
        Panel::Roles => roles::draw(frame, rect, app),
        Panel::Registers => regs::draw(frame, rect, app),
        Panel::Walk => walk::draw(frame, rect, app),
        Panel::Disassembly => regs::draw_disasm(frame, rect, app),
        Panel::Serial => serial::draw(frame, rect, app),
    }
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from(Span::styled("terminal too small", alert())),
        Line::from(format!(
            "{}x{} here; mmurr replay needs at least {MIN_WIDTH}x{MIN_HEIGHT}.",
            area.width, area.height
        )),
        Line::from("Enlarge the window, or press q to quit."),
    ];
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

/// Position, mode and policy first: they must survive an 80-column terminal; the file,
/// scenario and backend after them.
fn title_line(app: &App) -> Line<'static> {
    let mode = app.events.mode_at(app.vcpu, app.step);
    let mut spans = vec![
        Span::styled(" mmurr ", Style::new().bg(Color::Blue).fg(Color::White)),
        Span::styled(format!(" step {}/{} ", app.step, app.total_steps), bold()),
    ];
    let vcpus = app.events.vcpu_count();
    if vcpus > 1 {
        spans.push(Span::styled(
            format!("· vCPU {}/{vcpus} ", app.vcpu),
            bold().fg(vcpu_color(app.vcpu)),
        ));
    }
    spans.push(Span::styled(
        format!("· {} ", mode.name()),
        Style::new().fg(mode_color(mode)),
    ));
    if let Some(h) = &app.history {
        if let Some(p) = h.analysis.policies.get(app.policy) {
            spans.push(Span::raw(format!("· policy {} ", p.name)));
        }
    }
    spans.push(Span::raw(format!("· {} ", clean(&app.title))));
    if let Some(s) = &app.header.scenario {
        spans.push(Span::styled(format!("· {} ", clean(s)), dim()));
    }
    spans.push(Span::styled(
        format!("· {} ", app.header.backend.kind.name()),
        dim(),
    ));
    if !app.filter_text.is_empty() {
        spans.push(Span::styled(
            format!("· filter: {} ", app.filter_text),
            changed(),
        ));
    }
    if let Some(p) = &app.progress {
        spans.push(Span::styled(
            format!("· {} {}% ", p.stage.name(), p.percent()),
            Style::new().fg(Color::Cyan),
        ));
    } else if app.loading() {
        spans.push(Span::styled("· loading… ", Style::new().fg(Color::Cyan)));
    }
    Line::from(spans)
}

fn status_line(app: &App) -> Line<'static> {
    if let Mode::Prompt(kind, text) = &app.mode {
        return Line::from(vec![
            Span::styled(kind.label(), bold()),
            Span::raw(text.clone()),
            Span::styled("█", dim()),
            Span::styled("   Enter: apply  Esc: cancel", dim()),
        ]);
    }
    if let Some((msg, is_error)) = &app.message {
        let style = if *is_error {
            alert()
        } else {
            Style::new().fg(Color::Cyan)
        };
        return Line::from(Span::styled(msg.clone(), style));
    }
    Line::from(Span::styled(
        if app.events.vcpu_count() > 1 {
            "j/k move  J/K transition  r/R reset  d finding  s/S step  v/V vCPU  / search  f filter  p policy  P side by side  w walk  : goto  ? help  q quit"
        } else {
            "j/k move  J/K transition  r/R reset  d finding  s/S step  g/G start/end  / search  f filter  p policy  P side by side  w walk  : goto  ? help  q quit"
        },
        dim(),
    ))
}
