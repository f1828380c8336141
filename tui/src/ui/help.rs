//! The `?` overlay: every key, from the same table the key handler uses.

use super::{bold, dim, panel};
use crate::keys::KEYMAP;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect) {
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
    frame.render_widget(Paragraph::new(lines).block(panel("keys")), rect);
}
