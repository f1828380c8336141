//! The registers panel (general registers at the code's width, control registers decoded)
//! and the disassembly panel (the last instructions executed, RIP, what follows).

use super::{bold, dim};
use crate::app::{App, Panel};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let v = &app.view;
    let mut lines: Vec<Line> = Vec::new();
    // The control registers first (what this tool is about: they must survive a short
    // panel), then the general registers two to a line.
    for r in &v.control {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>6} ", r.name), bold()),
            Span::raw(format!("{} ", r.value)),
            Span::styled(r.detail.clone(), Style::new().fg(Color::Cyan)),
        ]));
    }
    for pair in v.general.chunks(2) {
        let spans: Vec<Span> = pair
            .iter()
            .flat_map(|r| {
                [
                    Span::styled(format!("{:>4} ", r.name), dim()),
                    Span::raw(format!("{:<18}", r.value)),
                ]
            })
            .collect();
        lines.push(Line::from(spans));
    }
    if v.step.is_none() {
        lines.push(Line::styled(
            v.error.clone().unwrap_or_else(|| "no state".into()),
            super::alert(),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(super::panel_of(
                app,
                Panel::Registers,
                format!("registers{}", super::vcpu_suffix(app)),
            ))
            .scroll(super::scroll_of(app, Panel::Registers)),
        area,
    );
}

pub fn draw_disasm(frame: &mut Frame, area: Rect, app: &App) {
    let v = &app.view;
    let bits = v.regs().map_or(0, insn::bitness);
    let lines: Vec<Line> = v
        .disasm
        .iter()
        .map(|l| {
            let (marker, style) = if l.current {
                (
                    "▶",
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                )
            } else {
                (" ", Style::new())
            };
            Line::from(vec![
                Span::styled(format!("{marker}{:>8x} ", l.rip), dim()),
                Span::styled(format!("{:<15} ", l.bytes), dim()),
                Span::styled(l.text.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(super::panel_of(
                app,
                Panel::Disassembly,
                format!("disassembly ({bits}-bit){}", super::vcpu_suffix(app)),
            ))
            .scroll(super::scroll_of(app, Panel::Disassembly)),
        area,
    );
}
