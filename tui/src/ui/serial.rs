//! Guest serial output (writes to COM1 0x3f8 and the debug console 0xe9) up to the current
//! step: what the guest had printed by then.

use super::dim;
use crate::app::{App, Panel};
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The output as lines, control characters other than newline shown as `·`.
pub fn text_upto(app: &App) -> Vec<String> {
    let bytes: Vec<u8> = app
        .events
        .serial_upto(app.step)
        .iter()
        .map(|(_, b)| *b)
        .filter(|b| *b != b'\r')
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    text.split('\n')
        .map(|l| {
            l.chars()
                .map(|c| if c.is_control() { '·' } else { c })
                .collect()
        })
        .collect()
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let all = text_upto(app);
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = if all.len() == 1 && all[0].is_empty() {
        vec![Line::styled("(no output yet)", dim())]
    } else {
        all[all.len().saturating_sub(rows)..]
            .iter()
            .map(|l| Line::raw(l.clone()))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines)
            .block(super::panel_of(app, Panel::Serial, "serial"))
            .scroll(super::scroll_of(app, Panel::Serial)),
        area,
    );
}
