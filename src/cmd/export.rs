//! `mmurr export`: a trace's events as JSON lines (one object per event), or as a Chrome
//! trace-event file that the Perfetto UI opens (steps shown as microseconds). Streams: memory
//! stays bounded by one chunk however long the trace is.

use crate::cli::{ExportArgs, ExportFormat};
use anyhow::Context;
use recorder::exit::Outcome;
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use traces::{
    ControlReg, Event, EventKind, Header, Integrity, MmuOutcome, PagingMode, Reader, Record, Regs,
    Step, Translation,
};

pub fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let (mut reader, integrity) = super::open_trace(&args.trace)?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let exported = match args.format {
        ExportFormat::Json => json_lines(&mut reader, &mut out),
        ExportFormat::Perfetto => perfetto(&mut reader, &integrity, &mut out),
    };
    out.flush().context("cannot write the export")?;
    if integrity.complete {
        exported?;
        return Ok(ExitCode::SUCCESS);
    }
    // A partial export must not pass for a whole one: the damage was reported first.
    match exported {
        Ok(()) => eprintln!(
            "mmurr: exported what could be read; {} bytes of the trace were lost",
            integrity.lost_bytes
        ),
        Err(e) => return Ok(super::stopped_at_damage(&e)),
    }
    Ok(Outcome::IncompleteTrace.into())
}

fn hex(v: impl std::fmt::LowerHex) -> Value {
    Value::String(format!("{v:#x}"))
}

fn policy_name(h: &Header, policy: u16) -> String {
    h.policies
        .get(policy as usize)
        .cloned()
        .unwrap_or_else(|| format!("policy #{policy} (not in the header)"))
}

fn translation(t: &Translation) -> Value {
    match t {
        Translation::Phys(pa) => json!({ "phys": hex(*pa) }),
        Translation::PageFault(code) => json!({ "page_fault": hex(*code) }),
        Translation::GeneralProtection => json!("general-protection"),
    }
}

/// One exported event: its identity first, then the fields of its kind.
#[derive(serde::Serialize)]
struct Line {
    id: u64,
    /// The vCPU the event belongs to, in traces of several vCPUs (format 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    vcpu: Option<u32>,
    step: Step,
    rip: Value,
    kind: &'static str,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

/// The fields of one event, with policy names resolved and roles, addresses and register
/// values in hex.
fn event_fields(h: &Header, e: &Event) -> Line {
    let fields = match &e.kind {
        EventKind::CrWrite(w) => json!({
            "reg": w.reg.name(), "old": hex(w.old), "new": hex(w.new),
            "changed": hex(w.old ^ w.new), "via": format!("{:?}", w.via), "faulted": w.faulted,
        }),
        EventKind::Transition { from, to } => json!({ "from": from.name(), "to": to.name() }),
        EventKind::Mmu(d) => json!({
            "policy": policy_name(h, d.policy), "policy_index": d.policy, "cause": d.cause,
            "outcome": d.outcome.name(), "trigger_bits": hex(d.trigger_bits),
            "old_cpu_role": hex(d.old_cpu_role), "new_cpu_role": hex(d.new_cpu_role),
            "old_root_role": hex(d.old_root_role), "new_root_role": hex(d.new_root_role),
            "context_changes": d.context_changes,
            "root_cache": d.root_cache.map(|c| json!({ "hit": c.hit, "slot": c.slot, "role": hex(c.role) })),
            "tlb_flush": format!("{:?}", d.tlb_flush),
        }),
        EventKind::Finding(f) => json!({
            "policy": policy_name(h, f.policy), "policy_index": f.policy, "cause": f.cause,
            "finding": f.kind.name(),
            "attributes": f.attributes.iter().map(|(n, kept, req)| json!({ "name": n, "kept": kept, "required": req })).collect::<Vec<_>>(),
            "translations": f.translations.iter().map(|t| json!({
                "gva": hex(t.gva), "access": t.access.to_string(),
                "kept": translation(&t.kept), "correct": translation(&t.correct),
            })).collect::<Vec<_>>(),
            "detail": f.detail,
        }),
        EventKind::Io(io) => json!({
            "port": hex(io.port), "write": io.write, "size": io.size, "data": hex(io.data),
        }),
        EventKind::Mmio(m) => json!({
            "gpa": hex(m.gpa), "write": m.write, "size": m.size, "data": hex(m.data),
        }),
        EventKind::Exception(x) => json!({
            "vector": x.vector, "mnemonic": traces::ExceptionInfo::mnemonic(x.vector),
            "error_code": x.error_code.map(hex), "cr2": x.cr2.map(hex),
        }),
        EventKind::EngineDivergence {
            gva,
            engine,
            reference,
        } => json!({
            "gva": hex(*gva), "engine": engine, "reference": reference,
        }),
        EventKind::ExternalInterrupt(i) => json!({ "vector": i.vector, "nmi": i.nmi }),
        EventKind::Retired { count } => json!({ "count": count }),
        EventKind::Startup { vector } => json!({ "vector": vector }),
    };
    Line {
        id: e.id,
        vcpu: None,
        step: e.step,
        rip: hex(e.rip),
        kind: e.kind.name(),
        fields: match fields {
            Value::Object(f) => f,
            _ => Map::new(),
        },
    }
}

fn json_lines<R: io::Read + io::Seek>(
    reader: &mut Reader<R>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let header = reader.header().clone();
    let mut vcpu = traces::VcpuCursor::new();
    for record in reader.records() {
        let record = record?;
        let v = vcpu.observe(&record);
        if let Record::Event(e) = record {
            let mut line = event_fields(&header, &e);
            if header.vcpu_count() > 1 {
                line.vcpu = Some(v);
            }
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Track (thread) ids of the Perfetto export.
const TID_MODE: u64 = 1;
const TID_FINDINGS: u64 = 2;
const TID_IO: u64 = 3;
fn tid_reg(reg: ControlReg) -> u64 {
    10 + reg as u64
}
fn tid_policy(policy: u16) -> u64 {
    100 + policy as u64
}

/// The paging mode the entry registers put the guest in.
fn entry_mode(r: &Regs) -> PagingMode {
    let (pe, pg) = (r.cr0 & 1 != 0, r.cr0 & (1 << 31) != 0);
    let (pae, la57, lma) = (
        r.cr4 & (1 << 5) != 0,
        r.cr4 & (1 << 12) != 0,
        r.efer & (1 << 10) != 0,
    );
    match (pe, pg, pae, lma, la57) {
        (false, ..) => PagingMode::Real,
        (true, false, ..) => PagingMode::Unpaged,
        (true, true, false, ..) => PagingMode::Bits32,
        (true, true, true, false, _) => PagingMode::Pae,
        (true, true, true, true, false) => PagingMode::Level4,
        (true, true, true, true, true) => PagingMode::Level5,
    }
}

/// Writes Chrome trace events one at a time inside `{"traceEvents":[ ... ]}`.
struct TraceEvents<'a, W: Write> {
    out: &'a mut W,
    first: bool,
}

impl<W: Write> TraceEvents<'_, W> {
    fn push(&mut self, v: Value) -> anyhow::Result<()> {
        self.out
            .write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut *self.out, &v)?;
        Ok(())
    }

    fn track_name(&mut self, tid: u64, name: &str, order: u64) -> anyhow::Result<()> {
        self.push(
            json!({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": name}}),
        )?;
        self.push(json!({"ph": "M", "pid": 1, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": order}}))
    }

    fn instant(&mut self, tid: u64, step: Step, name: String, args: Line) -> anyhow::Result<()> {
        self.push(json!({"ph": "i", "s": "t", "pid": 1, "tid": tid, "ts": step, "name": name, "args": args}))
    }

    fn slice(&mut self, mode: PagingMode, start: Step, end: Step) -> anyhow::Result<()> {
        self.push(json!({
            "ph": "X", "pid": 1, "tid": TID_MODE, "ts": start, "dur": end.saturating_sub(start).max(1),
            "name": mode.name(), "args": {"from_step": start, "to_step": end},
        }))
    }
}

fn perfetto<R: io::Read + io::Seek>(
    reader: &mut Reader<R>,
    integrity: &Integrity,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let header = reader.header().clone();
    let total = reader.total_steps();
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"otherData\":")?;
    serde_json::to_writer(
        &mut *out,
        &json!({
            "tool": "mmurr", "time_unit": "1 us = 1 step", "backend": header.backend.kind.name(),
            "scenario": header.scenario, "origin": header.guest.origin, "steps": total,
            "complete": integrity.complete,
            "trace_integrity": super::integrity_json(integrity),
        }),
    )?;
    out.write_all(b",\"traceEvents\":[")?;
    let mut ev = TraceEvents { out, first: true };
    let process = format!(
        "mmurr {}",
        header.scenario.as_deref().unwrap_or(&header.guest.origin)
    );
    ev.push(json!({"ph": "M", "pid": 1, "name": "process_name", "args": {"name": process}}))?;
    ev.track_name(TID_MODE, "paging mode", 0)?;
    for (i, reg) in [
        ControlReg::Cr0,
        ControlReg::Cr3,
        ControlReg::Cr4,
        ControlReg::Efer,
        ControlReg::Xcr0,
    ]
    .into_iter()
    .enumerate()
    {
        ev.track_name(
            tid_reg(reg),
            &format!("{} writes", reg.name()),
            1 + i as u64,
        )?;
    }
    for (i, p) in header.policies.iter().enumerate() {
        ev.track_name(tid_policy(i as u16), &format!("mmu: {p}"), 10 + i as u64)?;
    }
    ev.track_name(TID_FINDINGS, "findings", 1000)?;
    ev.track_name(TID_IO, "port i/o", 1001)?;

    let mut mode = entry_mode(&header.guest.entry);
    let mut mode_since: Step = 0;
    for record in reader.records() {
        let Record::Event(e) = record? else { continue };
        let fields = event_fields(&header, &e);
        match &e.kind {
            EventKind::Transition { to, .. } => {
                ev.slice(mode, mode_since, e.step)?;
                mode = *to;
                mode_since = e.step;
            }
            EventKind::CrWrite(w) => {
                let name = format!("{} {:#x} -> {:#x}", w.reg.name(), w.old, w.new);
                ev.instant(tid_reg(w.reg), e.step, name, fields)?;
            }
            EventKind::Mmu(d) => {
                // Resets, and the short-circuits and #GPs that matter when hunting stale
                // contexts; "no trigger" and plain CR3 loads would drown them.
                if matches!(
                    d.outcome,
                    MmuOutcome::Reinit
                        | MmuOutcome::InitOnly
                        | MmuOutcome::SkippedRoleUnchanged
                        | MmuOutcome::Gp
                ) {
                    ev.instant(
                        tid_policy(d.policy),
                        e.step,
                        d.outcome.name().to_string(),
                        fields,
                    )?;
                }
            }
            EventKind::Finding(f) => {
                let name = format!("{}: {}", f.kind.name(), policy_name(&header, f.policy));
                ev.instant(TID_FINDINGS, e.step, name, fields)?;
            }
            EventKind::Io(io) => {
                let name = format!(
                    "{} port {:#x}",
                    if io.write { "out" } else { "in" },
                    io.port
                );
                ev.instant(TID_IO, e.step, name, fields)?;
            }
            _ => {}
        }
    }
    ev.slice(mode, mode_since, total.max(mode_since))?;
    ev.out.write_all(b"\n]}\n")?;
    Ok(())
}
