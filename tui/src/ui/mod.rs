//! Drawing: reads the [`App`] and never changes it. One module per panel.

mod help;
mod regs;
mod roles;
mod serial;
mod timeline;
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

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let [title, band, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title_line(app)), title);
    timeline::draw_band(frame, band, app);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
    timeline::draw(frame, left, app);
    let [role_area, middle, bottom] = Layout::vertical([
        Constraint::Percentage(50),
        Constraint::Percentage(30),
        Constraint::Percentage(20),
    ])
    .areas(right);
    roles::draw(frame, role_area, app);
    let [regs_area, walk_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(middle);
    regs::draw(frame, regs_area, app);
    walk::draw(frame, walk_area, app);
    let [disasm_area, serial_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    regs::draw_disasm(frame, disasm_area, app);
    serial::draw(frame, serial_area, app);
    frame.render_widget(Paragraph::new(status_line(app)), status);
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
