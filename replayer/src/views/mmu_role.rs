//! A policy's MMU state in text: `cpu_role` and `root_role` field by field (named as the
//! kernel names them, in that version's layout), and the context a software walk uses. What
//! the gdb server's `monitor role` prints.

use mmu::Tracker;

/// Fields of a role word, one `name = value` per line, indented.
fn field_lines(fields: &[(&'static str, u64)]) -> Vec<String> {
    fields
        .iter()
        .map(|(name, v)| format!("    {name:<22} {v}"))
        .collect()
}

/// The whole state of one policy's tracker.
pub fn describe(t: &Tracker) -> String {
    let policy = t.policy();
    let layout = policy.layout;
    let mut out = vec![format!(
        "policy {} ({} MMU, {} role layout)",
        policy.name,
        t.flavour().name(),
        layout.name
    )];
    let cpu_role = t.cpu_role();
    out.push(format!("  cpu_role = {:#018x}", cpu_role.as_u64()));
    out.extend(field_lines(&cpu_role.fields(layout)));
    let root_role = t.root_role();
    out.push(format!("  root_role = {:#010x}", root_role.0));
    out.extend(field_lines(&root_role.fields(layout)));
    out.push("  context (what KVM's software walker uses):".into());
    for (name, v) in t.context().attributes() {
        out.push(format!("    {name:<22} {v}"));
    }
    match t.stale() {
        Some(st) => {
            out.push("  STALE: the architecture requires".into());
            for d in &st.attributes {
                out.push(format!(
                    "    {:<22} kept {}, required {}",
                    d.attribute, d.kept, d.correct
                ));
            }
        }
        None => out.push("  context matches the architecture".into()),
    }
    out.join("\n")
}
