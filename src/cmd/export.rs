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
        EventKind::HostAction(a) => json!({
            "action": a.name(), "text": a.describe(), "detail": a,
        }),
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
/// Host actions (model-level scenarios' traces and recordings the VMM acted on).
const TID_HOST: u64 = 4;
fn tid_reg(reg: ControlReg) -> u64 {
    10 + reg as u64
}
fn tid_policy(policy: u16) -> u64 {
    100 + policy as u64
}

/// The paging mode the entry registers put the guest in.
fn entry_mode(r: &Regs) -> PagingMode {
    history::to_trace::mode_of(r)
}

/// Writes Chrome trace events one at a time inside `{"traceEvents":[ ... ]}`. Each vCPU is a
/// process of its own (pid = vCPU + 1) with the same tracks, so that Perfetto shows a group of
/// tracks per vCPU; a one-vCPU trace is the one process it always was.
struct TraceEvents<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    /// The process of the events pushed now: the current vCPU's.
    pid: u64,
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
        let pid = self.pid;
        self.push(
            json!({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}),
        )?;
        self.push(json!({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": order}}))
    }

    fn instant(&mut self, tid: u64, step: Step, name: String, args: Line) -> anyhow::Result<()> {
        let pid = self.pid;
        self.push(json!({"ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": step, "name": name, "args": args}))
    }

    fn slice(&mut self, mode: PagingMode, start: Step, end: Step) -> anyhow::Result<()> {
        let pid = self.pid;
        self.push(json!({
            "ph": "X", "pid": pid, "tid": TID_MODE, "ts": start, "dur": end.saturating_sub(start).max(1),
            "name": mode.name(), "args": {"from_step": start, "to_step": end},
        }))
    }

    /// The process and tracks of one vCPU (`vcpu` of `vcpus`).
    fn process(&mut self, header: &traces::Header, vcpu: u32, vcpus: u32) -> anyhow::Result<()> {
        self.pid = u64::from(vcpu) + 1;
        let mut name = format!(
            "mmurr {}",
            header.scenario.as_deref().unwrap_or(&header.guest.origin)
        );
        if vcpus > 1 {
            name.push_str(&format!(" vCPU {vcpu}"));
        }
        let pid = self.pid;
        self.push(json!({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}}))?;
        if vcpus > 1 {
            self.push(json!({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": vcpu}}))?;
        }
        self.track_name(TID_MODE, "paging mode", 0)?;
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
            self.track_name(
                tid_reg(reg),
                &format!("{} writes", reg.name()),
                1 + i as u64,
            )?;
        }
        for (i, p) in header.policies.iter().enumerate() {
            self.track_name(tid_policy(i as u16), &format!("mmu: {p}"), 10 + i as u64)?;
        }
        self.track_name(TID_FINDINGS, "findings", 1000)?;
        self.track_name(TID_HOST, "host actions", 5)?;
        self.track_name(TID_IO, "port i/o", 1001)
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
    let mut ev = TraceEvents {
        out,
        first: true,
        pid: 1,
    };
    let vcpus = header.vcpu_count();
    for v in 0..vcpus {
        ev.process(&header, v, vcpus)?;
    }

    // Per vCPU: its paging mode and since when (the APs' from the keyframe at step 0).
    let mut modes = vec![(entry_mode(&header.guest.entry), 0 as Step); vcpus as usize];
    let mut cursor = traces::VcpuCursor::new();
    for record in reader.records() {
        let record = record?;
        let v = cursor.observe(&record);
        ev.pid = u64::from(v) + 1;
        let e = match record {
            Record::Event(e) => e,
            Record::Vcpus(k) if k.step == 0 => {
                for (m, r) in modes.iter_mut().zip(&k.regs) {
                    m.0 = entry_mode(r);
                }
                continue;
            }
            _ => continue,
        };
        let fields = event_fields(&header, &e);
        match &e.kind {
            EventKind::Transition { to, .. } => {
                let Some((mode, since)) = modes.get_mut(v as usize) else {
                    continue;
                };
                ev.slice(*mode, *since, e.step)?;
                *mode = *to;
                *since = e.step;
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
            EventKind::HostAction(a) => {
                ev.instant(TID_HOST, e.step, a.name().to_string(), fields)?;
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
    for (v, (mode, since)) in modes.into_iter().enumerate() {
        ev.pid = v as u64 + 1;
        ev.slice(mode, since, total.max(since))?;
    }
    ev.out.write_all(b"\n]}\n")?;
    Ok(())
}
