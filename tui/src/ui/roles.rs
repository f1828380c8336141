//! The role panel: for the control-register write at the current event, the selected
//! policy's `cpu_role` and `root_role` field by field before and after (changed fields
//! highlighted), its decision, the context it kept and, when that context is stale, why and
//! what it mistranslates. `P` shows every policy's decision side by side instead.

use super::{alert, bold, changed, dim};
use crate::app::{App, Panel};
use crate::history::MmuHistory;
use history::to_trace::paging_mode as trace_mode;
use mmu::Outcome;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use replayer::flags::{bracketed, changed_flags, set_flags};
use replayer::views::accesses::access_letter;
use replayer::WriteDetail;

/// The decision as the panel names it.
pub fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Reinit => "re-init",
        Outcome::SkippedRoleUnchanged => "skipped: role unchanged",
        Outcome::NoTrigger => "no trigger",
        Outcome::Gp => "#GP",
        Outcome::InitOnly => "init without unload",
        Outcome::NewPgd => "new pgd (CR3 load)",
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    // The analysis' decisions and trackers at the current write (see `App::detail`).
    let current = match (app.current_write(), &app.detail) {
        (Some(w), Some((dw, d))) if w == *dw => Some((w, d)),
        _ => None,
    };
    let (title, lines) = match (&app.history, current) {
        (None, _) => {
            let text = match (&app.history_error, &app.progress) {
                (Some(e), _) => Line::styled(format!("no MMU model: {e}"), alert()),
                (None, Some(p)) => Line::styled(
                    format!(
                        "{} {}% ({} of {})",
                        p.stage.name(),
                        p.percent(),
                        p.done,
                        p.total
                    ),
                    dim(),
                ),
                (None, None) => Line::styled("loading the MMU model…", dim()),
            };
            ("MMU roles".to_string(), vec![text])
        }
        (Some(_), None) => (
            "MMU roles".to_string(),
            vec![Line::styled(
                "no control-register write at or before this step: the roles are as at entry",
                dim(),
            )],
        ),
        (Some(h), Some((w, d))) if app.side_by_side => (
            format!("MMU roles · all policies{}", super::vcpu_suffix(app)),
            side_by_side(h, w, d, app.policy),
        ),
        (Some(h), Some((w, d))) => {
            let name = h.analysis.policies.get(app.policy).map_or("?", |p| p.name);
            (
                format!(
                    "MMU roles · {name} ({}/{}) · {}{}",
                    app.policy + 1,
                    h.analysis.policies.len(),
                    h.analysis.flavour.name(),
                    super::vcpu_suffix(app)
                ),
                one_policy(h, w, d, app.policy, area.width.saturating_sub(2)),
            )
        }
    };
    frame.render_widget(
        Paragraph::new(lines)
            .block(super::panel_of(app, Panel::Roles, title))
            .wrap(Wrap { trim: false })
            .scroll(super::scroll_of(app, Panel::Roles)),
        area,
    );
}

fn write_line(h: &MmuHistory, w: usize, d: &WriteDetail, p: usize) -> Vec<Line<'static>> {
    let wa = &h.analysis.writes[w];
    let (what, values, mut change) = match wa.write() {
        Some(cw) => (
            format!("{} write ", cw.reg.name().to_uppercase()),
            format!("{:#x} → {:#x} ", cw.old, cw.new),
            changed_flags(cw.reg, cw.old, cw.new),
        ),
        // A host action (model-level scenarios): what the VMM did, in its own words.
        None => (wa.cause.describe(), " ".into(), "host action".into()),
    };
    if change.is_empty() {
        change = "no bit changed".into();
    }
    let modes = match (d.before.get(p), d.after.get(p)) {
        (Some(b), Some(a)) => format!(
            " · paging {} → {}",
            trace_mode(mmu::PagingMode::of_regs(b.regs())).name(),
            trace_mode(mmu::PagingMode::of_regs(a.regs())).name()
        ),
        _ => String::new(),
    };
    let vcpu = if h.analysis.initial_vcpus.len() > 1 {
        format!(" on vCPU {}", wa.vcpu)
    } else {
        String::new()
    };
    vec![Line::from(vec![
        Span::styled(what, bold()),
        Span::raw(values),
        Span::styled(format!("({change})"), changed()),
        Span::styled(
            format!(
                " at step {}, event #{}{vcpu}{modes}",
                wa.event.step, wa.event.id
            ),
            dim(),
        ),
    ])]
}

/// Width of one cell of the role-field grid.
const CELL: usize = 22;

/// Role fields in a grid: `name old→new` highlighted where they differ.
fn field_grid(
    label: &str,
    before: &[(&str, u64)],
    after: &[(&str, u64)],
    width: u16,
) -> Vec<Line<'static>> {
    let mut cells: Vec<Span<'static>> = Vec::new();
    for (name, old) in before {
        let new = after.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
        if *old == new {
            cells.push(Span::raw(format!("{name}={old}")));
        } else {
            cells.push(Span::styled(format!("{name}={old}→{new}"), changed()));
        }
    }
    for (name, new) in after {
        if !before.iter().any(|(n, _)| n == name) {
            cells.push(Span::styled(format!("{name}=0→{new}"), changed()));
        }
    }
    let mut lines = vec![Line::styled(label.to_string(), bold())];
    let columns = (usize::from(width.saturating_sub(2)) / CELL).max(1);
    for chunk in cells.chunks(columns) {
        let mut spans = vec![Span::raw("  ")];
        for c in chunk {
            let used = c.content.chars().count();
            spans.push(c.clone());
            spans.push(Span::raw(" ".repeat(CELL.saturating_sub(used).max(1))));
        }
        lines.push(Line::from(spans));
    }
    lines
}

/// What the host's own KVM had loaded right after the write (traces with host events): the
/// root it looked up at the start of the next step, built or reused. `mmurr check --host`
/// holds it against each policy's root_role for the host's flavour.
fn host_line(h: &MmuHistory, step: traces::Step) -> Option<Line<'static>> {
    let root = h.host.root_at(step + 1)?;
    Some(Line::from(vec![
        Span::styled("host KVM: ", bold()),
        Span::raw(format!(
            "root {:#x} ({}), {} at step {} · check --host compares",
            root.role,
            mmu::PageRole(root.role).describe(h.host_layout),
            if root.created() { "built" } else { "reused" },
            root.step
        )),
    ]))
}

fn one_policy(
    h: &MmuHistory,
    w: usize,
    detail: &WriteDetail,
    p: usize,
    width: u16,
) -> Vec<Line<'static>> {
    let wa = &h.analysis.writes[w];
    let (Some(d), Some(policy), Some(after)) = (
        detail.decisions.get(p),
        h.analysis.policies.get(p),
        detail.after.get(p),
    ) else {
        return vec![Line::styled("no decision for this policy", alert())];
    };
    let layout = policy.layout;
    let mut lines = write_line(h, w, detail, p);
    let verdict_style = if d.stale.is_some() { alert() } else { bold() };
    let mut decision = vec![
        Span::raw("decision: "),
        Span::styled(outcome_text(d.outcome), verdict_style),
    ];
    if let (true, Some(cw)) = (d.trigger_bits != 0, wa.write()) {
        decision.push(Span::styled(
            format!(
                " · reset triggered by {}",
                bracketed(&set_flags(cw.reg, d.trigger_bits))
            ),
            dim(),
        ));
    }
    if d.needless_reset {
        decision.push(Span::styled(
            " · needless: the rebuilt context is the old one",
            changed(),
        ));
    }
    if let Some(gp) = &d.gp {
        decision.push(Span::styled(format!(" · {gp}"), alert()));
    }
    lines.push(Line::from(decision));
    let ctx = after.context();
    lines.push(Line::from(vec![
        Span::styled("context kept: ", bold()),
        Span::raw(format!(
            "root_level {} · walker {} · shadow_root_level {}",
            ctx.root_level,
            ctx.walker.name(),
            ctx.shadow_root_level
        )),
    ]));
    if let Some(host) = host_line(h, wa.event.step) {
        lines.push(host);
    }
    match &d.stale {
        Some(stale) => {
            let required: Vec<String> = stale
                .attributes
                .iter()
                .map(|a| format!("{} {} (kept {})", a.attribute, a.correct, a.kept))
                .collect();
            lines.push(Line::from(vec![
                Span::styled("STALE CONTEXT: ", alert()),
                Span::raw(format!("the architecture requires {}", required.join(", "))),
            ]));
            lines.push(Line::from(vec![
                Span::styled("why: ", bold()),
                Span::raw(why_stale(h, w, detail, p)),
            ]));
            if let Some((looked, diffs)) = h.translations_at(w, p) {
                let text = match diffs.first() {
                    Some(m) => format!(
                        "{} of the {looked} addresses touched next translate differently: {} {:#x} → {} with the kept context, {} with the correct one",
                        diffs.len(),
                        access_letter(m.access),
                        m.gva,
                        m.kept,
                        m.correct
                    ),
                    // A model-level scenario's trace: no instruction ran after it.
                    None if looked == 0 => "no guest instruction ran after it to translate, but KVM's software walks (emulation, MMIO, gva_to_gpa) use this context".to_string(),
                    None => format!(
                        "none of the {looked} addresses touched next translate differently, but KVM's software walks (emulation, MMIO, gva_to_gpa) use this context"
                    ),
                };
                lines.push(Line::from(vec![
                    Span::styled("effect: ", bold()),
                    Span::raw(text),
                ]));
            }
        }
        None if !d.context_changes.is_empty() => lines.push(Line::styled(
            format!("context rebuilt: {}", d.context_changes.join(", ")),
            Style::new().fg(Color::Green),
        )),
        None => lines.push(Line::styled(
            "context matches the architecture",
            Style::new().fg(Color::Green),
        )),
    }
    lines.extend(field_grid(
        &format!(
            "cpu_role {:#x} → {:#x}",
            d.old_cpu_role.as_u64(),
            d.new_cpu_role.as_u64()
        ),
        &d.old_cpu_role.fields(layout),
        &d.new_cpu_role.fields(layout),
        width,
    ));
    lines.extend(field_grid(
        &format!(
            "root_role {:#x} → {:#x}",
            d.old_root_role.0, d.new_root_role.0
        ),
        &d.old_root_role.fields(layout),
        &d.new_root_role.fields(layout),
        width,
    ));
    lines.push(Line::styled(
        format!("{}: {}", policy.name, policy.summary),
        dim(),
    ));
    lines
}

/// Why a policy kept a stale context at write `w`, from its decision and role layout.
pub fn why_stale(h: &MmuHistory, w: usize, detail: &WriteDetail, p: usize) -> String {
    let wa = &h.analysis.writes[w];
    let Some(d) = detail.decisions.get(p) else {
        return String::new();
    };
    let (reg, change) = match wa.write() {
        Some(cw) => (
            cw.reg.name().to_uppercase(),
            changed_flags(cw.reg, cw.old, cw.new),
        ),
        // A host action: `{reg} {change}` reads `INIT (host action)`.
        None => (wa.cause.describe(), "(host action)".to_string()),
    };
    let name = h.analysis.policies.get(p).map_or("?", |x| x.name);
    let level = detail.after.get(p).map_or(0, |t| t.context().root_level);
    match d.outcome {
        Outcome::SkippedRoleUnchanged => format!(
            "{reg} {change} triggered kvm_mmu_reset_context, but no field of {name}'s role records that change: cpu_role stayed {:#x} (the compare key), so the recompute returned early and the old {level}-level context was kept",
            d.new_cpu_role.as_u64()
        ),
        Outcome::NoTrigger => format!(
            "{reg} {change} is not among {name}'s reset triggers, so no reset ran and the old {level}-level context was kept"
        ),
        Outcome::NewPgd => format!(
            "a CR3 load only switches roots (kvm_mmu_new_pgd); the {level}-level context from before was kept"
        ),
        o => format!(
            "after {} the context still differs from what the architecture requires",
            outcome_text(o)
        ),
    }
}

fn side_by_side(
    h: &MmuHistory,
    w: usize,
    detail: &WriteDetail,
    selected: usize,
) -> Vec<Line<'static>> {
    let wa = &h.analysis.writes[w];
    let mut lines = write_line(h, w, detail, selected);
    lines.push(Line::styled(
        format!(
            "{:<10} {:<24} {:<8} {:<30} {}",
            "policy", "decision", "role", "context kept", "verdict"
        ),
        bold(),
    ));
    for (p, (d, policy)) in detail
        .decisions
        .iter()
        .zip(&h.analysis.policies)
        .enumerate()
    {
        let ctx = detail.after.get(p).map(|t| *t.context());
        let role = if d.old_cpu_role == d.new_cpu_role {
            "same"
        } else {
            "changed"
        };
        let context = ctx.map_or(String::new(), |c| {
            format!("root_level {} {}", c.root_level, c.walker.name())
        });
        let (verdict, style) = if d.stale.is_some() {
            ("STALE".to_string(), alert())
        } else if d.needless_reset {
            ("needless reset".to_string(), changed())
        } else if (d.outcome == Outcome::Gp) != wa.cause.faulted() {
            ("#GP mismatch".to_string(), alert())
        } else {
            ("ok".to_string(), Style::new().fg(Color::Green))
        };
        let marker = if p == selected { "▶" } else { " " };
        lines.push(Line::from(vec![
            Span::raw(format!(
                "{marker}{:<9} {:<24} {:<8} {:<30} ",
                policy.name,
                outcome_text(d.outcome),
                role,
                context
            )),
            Span::styled(verdict, style),
        ]));
    }
    lines
}
