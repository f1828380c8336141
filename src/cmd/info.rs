//! `mmurr info`: a trace's header and counts, for humans or (`--json`) for scripts. Reads the
//! header and the index (or rebuilds the index of an incomplete trace) and verifies every
//! chunk's checksum; decodes no records.

use crate::cli::InfoArgs;
use recorder::exit::Outcome;
use serde_json::{json, Value};
use std::process::ExitCode;
use traces::{EndReason, Integrity, MmuOutcome, Reader};

pub fn run(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let (reader, integrity) = super::open_trace(&args.trace)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&reader, &integrity, &args.trace))?
        );
    } else {
        print!("{}", summary_text(&reader, &integrity, &args.trace));
    }
    Ok(ExitCode::SUCCESS)
}

/// The kinds `info --json` always reports, by [`traces::EventKind::name`].
const EVENT_KEYS: [(&str, &str); 10] = [
    ("cr0", "cr0"),
    ("cr3", "cr3"),
    ("cr4", "cr4"),
    ("efer", "efer"),
    ("xcr0", "xcr0"),
    ("transitions", "transition"),
    ("io", "io"),
    ("mmio", "mmio"),
    ("exceptions", "exception"),
    ("engine_divergences", "engine-divergence"),
];

fn summary_json<R: std::io::Read + std::io::Seek>(
    r: &Reader<R>,
    integrity: &Integrity,
    path: &std::path::Path,
) -> Value {
    let h = r.header();
    let c = r.event_counts();
    let mut events = serde_json::Map::new();
    events.insert("total".into(), json!(c.total()));
    for (key, kind) in EVENT_KEYS {
        events.insert(key.into(), json!(c.kind(kind)));
    }
    events.insert("mmu_decisions".into(), json!(c.kind("mmu")));
    events.insert("resets".into(), json!(c.resets()));
    events.insert("findings".into(), json!(c.kind("finding")));
    json!({
        "file": path.display().to_string(),
        "file_bytes": r.file_len(),
        "format_version": r.format_version(),
        "complete": integrity.complete,
        "trace_integrity": super::integrity_json(integrity),
        "recovery": r.recovery().map(|rec| json!({
            "reason": rec.reason,
            "chunks_kept": rec.chunks,
            "valid_bytes": rec.valid_bytes,
            "lost_bytes": rec.lost_bytes,
            "stopped_at": rec.stopped_at,
        })),
        "tool_version": h.tool_version,
        "created_unix": h.created_unix,
        "command_line": h.command_line,
        "backend": h.backend.kind.name(),
        "engine": h.backend.engine,
        "host": {
            "kernel": h.backend.host_kernel,
            "cpu_vendor": h.backend.cpu_vendor,
            "cpu_model_name": h.backend.cpu_model_name,
            "cpu_family": h.backend.cpu_family,
            "cpu_model": h.backend.cpu_model,
            "cpu_stepping": h.backend.cpu_stepping,
            "kvm_facts": h.backend.kvm_facts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "scenario": h.scenario,
        "guest": {
            "origin": h.guest.origin,
            "cmdline": h.guest.cmdline,
            "ram_size": h.guest.ram_size,
            "regions": h.guest.regions.len(),
            "blobs": h.guest.blobs.iter().map(|b| json!({"name": b.name, "bytes": b.data.len()})).collect::<Vec<_>>(),
            "maxphyaddr": h.guest.maxphyaddr,
            "entry_rip": format!("{:#x}", h.guest.entry.rip),
        },
        "policies": h.policies,
        "mmu_flavour": h.mmu_flavour,
        "keyframe_interval": h.keyframe_interval,
        "steps": r.total_steps(),
        "records": r.record_count(),
        "chunks": r.chunks().len(),
        "events": events,
        "mmu_outcomes": c.mmu_outcomes,
        "findings": c.kind("finding"),
        "findings_by_kind": c.findings,
        "end": r.end().map(|e| json!({
            "reason": e.reason.name(),
            "status": match e.reason { EndReason::DebugExit { status } => Some(status), _ => None },
            "step": e.step,
            "message": e.message,
            "outcome": Outcome::of_recording(e).name(),
            "exit_code": Outcome::of_recording(e).code(),
            "self_check_failures": e.self_check_failures,
        })),
    })
}

fn summary_text<R: std::io::Read + std::io::Seek>(
    r: &Reader<R>,
    integrity: &Integrity,
    path: &std::path::Path,
) -> String {
    let h = r.header();
    let c = r.event_counts();
    let b = &h.backend;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11} {v}\n"));
    line(
        "trace",
        format!(
            "{} ({} bytes, format version {})",
            path.display(),
            r.file_len(),
            r.format_version()
        ),
    );
    line("status", integrity.status());
    line(
        "recorded",
        format!(
            "{} by mmurr {}: {}",
            utc(h.created_unix),
            h.tool_version,
            h.command_line.join(" ")
        ),
    );
    line("backend", format!("{} ({})", b.kind.name(), b.engine));
    if b.kind == traces::BackendKind::Model {
        // No machine ran it: the CPU is the script's, in the header's CPUID table.
        line(
            "host",
            format!(
                "none: the MMU model applied the script (guest CPU vendor {})",
                b.cpu_vendor
            ),
        );
    } else {
        line(
            "host",
            format!(
                "Linux {}, {} {} (family {} model {} stepping {})",
                b.host_kernel,
                b.cpu_vendor,
                b.cpu_model_name,
                b.cpu_family,
                b.cpu_model,
                b.cpu_stepping
            ),
        );
    }
    if !b.kvm_facts.is_empty() {
        let facts: Vec<String> = b
            .kvm_facts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line("kvm", facts.join(" "));
    }
    let blob_bytes: usize = h.guest.blobs.iter().map(|b| b.data.len()).sum();
    line(
        "guest",
        format!(
            "{}{}, entry rip {:#x}",
            h.guest.origin,
            if h.guest.cmdline.is_empty() {
                String::new()
            } else {
                format!(" `{}`", h.guest.cmdline)
            },
            h.guest.entry.rip
        ),
    );
    line(
        "scenario",
        h.scenario.clone().unwrap_or_else(|| "(none)".into()),
    );
    line(
        "memory",
        format!(
            "{} RAM, {} regions, {} blobs ({blob_bytes} bytes), MAXPHYADDR {}",
            mib(h.guest.ram_size),
            h.guest.regions.len(),
            h.guest.blobs.len(),
            h.guest.maxphyaddr
        ),
    );
    let policies: Vec<String> = h
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{i}] {p}"))
        .collect();
    line(
        "policies",
        format!("{} ({})", policies.join(", "), h.mmu_flavour),
    );
    line(
        "steps",
        format!(
            "{} ({} records in {} chunks, keyframe every {} steps)",
            r.total_steps(),
            r.record_count(),
            r.chunks().len(),
            h.keyframe_interval
        ),
    );
    let kinds: Vec<String> = c.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    line("events", format!("{} ({})", c.total(), kinds.join(", ")));
    line(
        "resets",
        format!(
            "{} ({} reinit, {} init without unload); {} skipped with the role unchanged",
            c.resets(),
            c.outcome(MmuOutcome::Reinit),
            c.outcome(MmuOutcome::InitOnly),
            c.outcome(MmuOutcome::SkippedRoleUnchanged)
        ),
    );
    let findings: Vec<String> = c.findings.iter().map(|(k, n)| format!("{k} {n}")).collect();
    line(
        "findings",
        if findings.is_empty() {
            "none".into()
        } else {
            findings.join(", ")
        },
    );
    line(
        "end",
        match r.end() {
            Some(e) => {
                let status = match e.reason {
                    EndReason::DebugExit { status } => format!(" (status {status})"),
                    _ => String::new(),
                };
                let outcome = Outcome::of_recording(e);
                let mut s = format!(
                    "{}{status} at step {}: {}\n{:<11} {} ({})",
                    e.reason.name(),
                    e.step,
                    e.message,
                    "exit code",
                    outcome.code(),
                    outcome.name()
                );
                for f in &e.self_check_failures {
                    s.push_str(&format!("\n            self-check failed: {f}"));
                }
                s
            }
            None => "(no end record: the recording did not finish)".into(),
        },
    );
    out
}

fn mib(bytes: u64) -> String {
    if bytes & ((1 << 20) - 1) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix seconds (days-to-civil, proleptic Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_764_000_000), "2025-11-24 16:00:00 UTC");
    }
}
