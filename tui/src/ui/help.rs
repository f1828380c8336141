//! The `?` overlay: every key, from the same table the key handler uses.

use super::{bold, dim, panel};
use crate::keys::KEYMAP;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// The overlay, scrolled by `scroll` lines (j/k while it is open); the title says how to
/// close it, so a short terminal still shows that.
pub fn draw(frame: &mut Frame, area: Rect, scroll: u16) {
    let height = (KEYMAP.len() as u16 + 6).min(area.height);
    let width = 76.min(area.width);
    let [_, mid, _] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(height),
        Constraint::Fill(1),
    ])
    .areas(area);
    let [_, rect, _] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(width),
        Constraint::Fill(1),
    ])
    .areas(mid);
    let mut lines: Vec<Line> = KEYMAP
        .iter()
        .map(|(keys, what, _)| {
            Line::from(vec![
                Span::styled(format!("  {keys:<10}"), bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "  mouse: the wheel scrolls the timeline, a click selects a row; prompts: Enter, Esc, ^u",
        dim(),
    )));
    lines.push(Line::from(Span::styled("  press ? or Esc to close", dim())));
    frame.render_widget(Clear, rect);
    let max = (lines.len() as u16).saturating_sub(rect.height.saturating_sub(2));
    frame.render_widget(
        Paragraph::new(lines)
            .block(panel("keys · j/k scroll · ? or Esc closes"))
            .scroll((scroll.min(max), 0)),
        rect,
    );
}
