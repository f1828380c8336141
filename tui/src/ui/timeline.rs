//! The event list, with the paging mode as a coloured column, and the band above it: the
//! paging mode over the whole trace with the current position marked.

use super::{alert, dim, mode_color, panel, vcpu_color};
use crate::app::App;
use crate::events::summary;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use traces::{EventKind, FindingKind};

/// The first row drawn so that the cursor stays in view (kept a third from the top once the
/// list scrolls): a pure function of the state, so drawing needs no memory of its own.
pub fn window_start(cursor: usize, len: usize, height: usize) -> usize {
    if len <= height {
        return 0;
    }
    cursor.saturating_sub(height / 3).min(len - height)
}

/// The paging mode over the whole trace: one cell per slice of steps, coloured by mode, the
/// mode's letter at the start of each stretch (so the band reads without colour, e.g. under
/// NO_COLOR), ▼ at the position, and a legend of the modes the trace enters at the right.
pub fn draw_band(frame: &mut Frame, area: Rect, app: &App) {
    // Several vCPUs: the band is the mode of the vCPU the panels show.
    let label = if app.events.vcpu_count() > 1 {
        format!(" vCPU {} mode ", app.vcpu)
    } else {
        " mode ".to_string()
    };
    let label = label.as_str();
    let mut seen: Vec<traces::PagingMode> = Vec::new();
    for m in app
        .events
        .modes
        .iter()
        .copied()
        .chain([app.events.mode_at(app.vcpu, 0)])
    {
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    seen.sort_by_key(|m| mode_glyph(*m));
    let legend: String = seen
        .iter()
        .map(|m| format!(" {} {}", mode_glyph(*m), m.name()))
        .collect();
    let legend = if (area.width as usize) > label.len() + legend.chars().count() + 20 {
        legend
    } else {
        String::new()
    };
    let width = area
        .width
        .saturating_sub((label.len() + legend.chars().count()) as u16) as u64;
    let total = app.total_steps.max(1);
    let here = if width == 0 {
        0
    } else {
        (u128::from(app.step) * u128::from(width - 1) / u128::from(total)) as u64
    };
    let mut spans = vec![Span::styled(label, dim())];
    let mut run: Option<(Color, String)> = None;
    let mut last_mode = None;
    for x in 0..width {
        let step = (u128::from(x) * u128::from(total) / u128::from(width.max(1))) as u64;
        let mode = app.events.mode_at(app.vcpu, step);
        let colour = mode_color(mode);
        let starts = last_mode != Some(mode);
        last_mode = Some(mode);
        let ch = if x == here {
            '▼'
        } else if starts {
            mode_glyph(mode)
        } else {
            ' '
        };
        if x == here {
            if let Some((c, s)) = run.take() {
                spans.push(Span::styled(s, Style::new().bg(c).fg(Color::Black)));
            }
            spans.push(Span::styled(
                ch.to_string(),
                Style::new()
                    .bg(colour)
                    .fg(Color::White)
                    .add_modifier(Modifier::BOLD),
            ));
            continue;
        }
        match &mut run {
            Some((c, s)) if *c == colour => s.push(ch),
            _ => {
                if let Some((c, s)) = run.take() {
                    spans.push(Span::styled(s, Style::new().bg(c).fg(Color::Black)));
                }
                run = Some((colour, ch.to_string()));
            }
        }
    }
    if let Some((c, s)) = run {
        spans.push(Span::styled(s, Style::new().bg(c).fg(Color::Black)));
    }
    spans.push(Span::styled(legend, dim()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// What the MMU model made of a CR-write row, folded into it: the alarm before the write's
/// text (`⚠ STALE v5.1-rc3`, so it survives narrow terminals) and the decisions after it
/// (`▸ 12 reinit, 1 skipped (role unchanged)`; ▾ when unfolded). `None` for other rows or
/// before the model has loaded.
fn verdict(app: &App, e: &traces::Event) -> Option<(Option<String>, String)> {
    let h = app.history.as_ref()?;
    if !matches!(e.kind, EventKind::CrWrite(_) | EventKind::HostAction(_)) {
        return None;
    }
    let w = h.write_of_event(e.id)?;
    let stale = h.stale_policies(w);
    let other = h
        .findings_at(w)
        .filter(|f| f.kind != FindingKind::StaleContext)
        .count();
    let alarm = if !stale.is_empty() {
        Some(format!("⚠ STALE {}", stale.join(" ")))
    } else if other > 0 {
        Some(format!("⚠ {other} finding(s)"))
    } else {
        None
    };
    let fold = if app.unfolded.contains(&e.id) {
        "▾"
    } else {
        "▸"
    };
    Some((alarm, format!("{fold} {}", h.decision_counts(w))))
}

/// A paging mode in one character, for rows too narrow for its name (the colour says it too,
/// and the band's legend names them).
pub fn mode_glyph(m: traces::PagingMode) -> char {
    match m {
        traces::PagingMode::Real => 'R',
        traces::PagingMode::Unpaged => 'U',
        traces::PagingMode::Bits32 => '2',
        traces::PagingMode::Pae => 'P',
        traces::PagingMode::Level4 => '4',
        traces::PagingMode::Level5 => '5',
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let title = if app.events_loaded {
        format!(
            "timeline · {} of {} events",
            app.visible.len(),
            app.events.len()
        )
    } else {
        match &app.progress {
            Some(p) => format!("timeline · {} {}%", p.stage.name(), p.percent()),
            None => "timeline · loading events".to_string(),
        }
    };
    let height = area.height.saturating_sub(2) as usize;
    let start = window_start(app.cursor, app.visible.len(), height);
    let policies = &app.header.policies;
    // As wide as the trace's largest step needs, so narrow terminals keep the text.
    let step_width = app.total_steps.max(1).ilog10() as usize + 1;
    // Several vCPUs: a column of the vCPU each event belongs to, `[2]`.
    let vcpus = app.events.vcpu_count();
    let vcpu_width = (vcpus > 1).then(|| (vcpus - 1).max(1).ilog10() as usize + 1);
    let mut lines = Vec::with_capacity(height);
    for row in start..(start + height).min(app.visible.len()) {
        let i = app.visible[row];
        let Some(e) = app.events.get(i) else {
            continue;
        };
        let mode = app
            .events
            .modes
            .get(i)
            .copied()
            .unwrap_or(traces::PagingMode::Real);
        let (kind, text) = summary(&e, policies);
        let selected = row == app.cursor;
        let marker = if selected { "▶" } else { " " };
        let kind_style = match &e.kind {
            EventKind::Finding(_) | EventKind::EngineDivergence { .. } => alert(),
            EventKind::Transition { .. } => Style::new().fg(Color::Cyan),
            EventKind::Mmu(_) | EventKind::Io(_) | EventKind::Mmio(_) => dim(),
            _ => Style::new().fg(Color::White),
        };
        // Narrow panels get the mode as one character; the verdict goes before the text.
        let wide = area.width >= 70;
        let mode_cell = if wide {
            format!("{:<7}", mode.name())
        } else {
            mode_glyph(mode).to_string()
        };
        let mut spans = vec![
            Span::raw(marker),
            Span::styled(format!("{:>step_width$} ", e.step), dim()),
        ];
        if let Some(w) = vcpu_width {
            let v = app.events.vcpu(i);
            spans.push(Span::styled(
                format!("[{v:>w$}]"),
                Style::new().fg(vcpu_color(v)),
            ));
        }
        spans.extend([
            Span::styled(
                mode_cell,
                Style::new().bg(mode_color(mode)).fg(Color::Black),
            ),
            Span::styled(format!(" {kind:<5} "), kind_style),
        ]);
        match verdict(app, &e) {
            Some((alarm, counts)) => {
                if let Some(alarm) = alarm {
                    spans.push(Span::styled(format!("{alarm} "), alert()));
                }
                spans.push(Span::raw(text));
                spans.push(Span::styled(format!("  {counts}"), dim()));
            }
            None => spans.push(Span::raw(text)),
        }
        let mut line = Line::from(spans);
        if selected {
            line = line.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        let text = if !app.events_loaded {
            "reading the event index… (s/S step, : goes to a step meanwhile)"
        } else if app.events.is_empty() {
            "this trace has no events"
        } else {
            "no event passes the filter (f, then an empty line, clears it)"
        };
        lines.push(Line::styled(text, dim()));
    }
    frame.render_widget(Paragraph::new(lines).block(panel(title)), area);
}

#[cfg(test)]
mod tests {
    use super::window_start;

    #[test]
    fn the_cursor_stays_in_the_window() {
        assert_eq!(window_start(5, 10, 20), 0);
        assert_eq!(window_start(0, 100, 30), 0);
        assert_eq!(window_start(50, 100, 30), 40);
        assert_eq!(window_start(99, 100, 30), 70);
        for cursor in 0..100 {
            let s = window_start(cursor, 100, 30);
            assert!(s <= cursor && cursor < s + 30);
        }
    }
}
