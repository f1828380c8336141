//! The page-walk panel: one address walked level by level by the architecture and by the
//! selected policy's kept MMU context, and whether they agree.

use super::{alert, bold, dim};
use crate::app::{App, Panel};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(w) = &app.view.walk else {
        let why = if app.header.backend.kind == traces::BackendKind::Model {
            "model trace, no instruction: w enters an address"
        } else {
            "no address: the code here is not mapped (w enters one)"
        };
        frame.render_widget(
            Paragraph::new(Line::styled(why, dim())).block(super::panel_of(
                app,
                Panel::Walk,
                "page walk",
            )),
            area,
        );
        return;
    };
    // The verdict first: a short panel still shows whether the kept context agrees.
    let mut lines = vec![Line::styled(w.source.clone(), dim())];
    match w.agree {
        Some(true) => lines.push(Line::styled(
            "translations agree",
            Style::new().fg(Color::Green),
        )),
        Some(false) => lines.push(Line::from(vec![
            Span::styled("translations DIFFER: ", alert()),
            Span::raw(format!(
                "architecture {}, kept context {}",
                w.arch_result, w.kept_result
            )),
        ])),
        None => {}
    }
    lines.push(Line::styled(
        format!("architecture ({} paging):", w.mode),
        bold(),
    ));
    lines.extend(w.architecture.iter().map(|l| Line::raw(l.clone())));
    if let Some((policy, ctx, walk)) = &w.kept {
        lines.push(Line::styled(
            format!("{policy}'s kept context ({ctx}):"),
            bold(),
        ));
        lines.extend(walk.iter().map(|l| Line::raw(l.clone())));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(super::panel_of(
                app,
                Panel::Walk,
                format!("page walk {:#x}{}", w.gva, super::vcpu_suffix(app)),
            ))
            .wrap(Wrap { trim: false })
            .scroll(super::scroll_of(app, Panel::Walk)),
        area,
    );
}
