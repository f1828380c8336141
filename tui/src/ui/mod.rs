//! Drawing: reads the [`App`] and never changes it. One module per panel.

mod help;
mod regs;
mod roles;
mod serial;
pub mod timeline;
mod walk;

use crate::app::{App, Mode};
use crate::events::clean;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use traces::PagingMode;

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
    let [timeline, right] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
    let [roles, middle, bottom] = Layout::vertical([
        Constraint::Percentage(50),
        Constraint::Percentage(30),
        Constraint::Percentage(20),
    ])
    .areas(right);
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
    timeline::draw(frame, a.timeline, app);
    roles::draw(frame, a.roles, app);
    regs::draw(frame, a.regs, app);
    walk::draw(frame, a.walk, app);
    regs::draw_disasm(frame, a.disasm, app);
    serial::draw(frame, a.serial, app);
    frame.render_widget(Paragraph::new(status_line(app)), a.status);
    if app.mode == Mode::Help {
        help::draw(frame, area);
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

fn title_line(app: &App) -> Line<'static> {
    let mode = app.events.mode_at(app.step);
    let mut spans = vec![
        Span::styled(
            " mmurr replay ",
            Style::new().bg(Color::Blue).fg(Color::White),
        ),
        Span::raw(format!(" {} ", clean(&app.title))),
    ];
    if let Some(s) = &app.header.scenario {
        spans.push(Span::styled(format!("· {} ", clean(s)), dim()));
    }
    spans.push(Span::styled(
        format!("· {} ", app.header.backend.kind.name()),
        dim(),
    ));
    spans.push(Span::styled(
        format!("· step {}/{} ", app.step, app.total_steps),
        bold(),
    ));
    spans.push(Span::styled(
        format!("· {} ", mode.name()),
        Style::new().fg(mode_color(mode)),
    ));
    if let Some(h) = &app.history {
        if let Some(p) = h.analysis.policies.get(app.policy) {
            spans.push(Span::raw(format!("· policy {} ", p.name)));
        }
    }
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
        "j/k move  J/K transition  r/R reset  d finding  s/S step  g/G start/end  / search  f filter  p policy  P side by side  w walk  : goto  ? help  q quit",
        dim(),
    ))
}
