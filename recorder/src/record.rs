//! `record`: load a guest on a backend, write the header, trace every step, finish the trace.

use crate::control::StepControl;
use crate::devices::{Console, DebugExit, Devices, OutputSink};
use crate::guest_view;
use crate::options::{RecordError, RecordOptions, RecordSummary, SerialSink};
use crate::progress::Progress;
use crate::tracer::Tracer;
use crate::Backend;
use traces::{EndReason, GuestSpec, Header, Record};

/// The policies to model: the named ones, or all.
pub fn resolve_policies(names: &[String]) -> Result<Vec<&'static mmu::Policy>, RecordError> {
    if names.is_empty() {
        return Ok(mmu::policies().iter().collect());
    }
    names
        .iter()
        .map(|n| mmu::policy(n).ok_or_else(|| RecordError::UnknownPolicy(n.clone())))
        .collect()
}

fn console(sink: &SerialSink) -> Result<Console, RecordError> {
    Ok(Console::new(match sink {
        SerialSink::Stdout => OutputSink::Stdout,
        SerialSink::Capture => OutputSink::Discard,
        SerialSink::File(path) => OutputSink::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| RecordError::SerialLog {
                    path: path.clone(),
                    source,
                })?,
        ),
    }))
}

/// Records `guest` on `backend` into `opts.output`. However the run ends (budget, timeout,
/// signal, guest exit, host limitation, engine failure), the trace is finished with an end
/// record and an index; only failures to start or to write the trace are errors.
pub fn record(
    backend: &mut dyn Backend,
    guest: &GuestSpec,
    opts: &RecordOptions,
) -> Result<RecordSummary, RecordError> {
    record_with(backend, guest, opts, None)
}

/// [`record`] with a debugger driving the stepping loop (`mmurr record --gdb`): `control` is
/// called before every instruction and told when the run has ended.
pub fn record_with(
    backend: &mut dyn Backend,
    guest: &GuestSpec,
    opts: &RecordOptions,
    mut control: Option<&mut (dyn StepControl + '_)>,
) -> Result<RecordSummary, RecordError> {
    let policies = resolve_policies(&opts.policies)?;
    let console = console(&opts.serial)?;
    backend.load(guest).map_err(RecordError::Load)?;
    let mut guest = guest.clone();
    if guest.cpuid.is_empty() {
        guest.cpuid = backend.cpuid();
    }
    let cpu = guest_view::cpu_model(&guest.cpuid);
    if guest.maxphyaddr == 0 {
        guest.maxphyaddr = cpu.maxphyaddr;
    }
    let host = backend.host().map(|h| h.start(opts.host_events));
    if let (Some(traces::HostEventsStatus::Unavailable(why)), crate::HostEventsChoice::On) =
        (host.as_ref().map(|h| &h.events), opts.host_events)
    {
        eprintln!("mmurr: warning: host events not recorded: {why}");
    }
    let header = Header {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        backend: backend.info(),
        guest: guest.clone(),
        policies: policies.iter().map(|p| p.name.to_string()).collect(),
        mmu_flavour: opts.flavour.name().to_string(),
        scenario: opts.scenario.clone(),
        command_line: opts.command_line.clone(),
        keyframe_interval: opts.keyframe_interval,
        host,
        vcpus: backend.vcpus(),
    };
    let trace_err = |source| RecordError::Trace {
        path: opts.output.clone(),
        source,
    };
    let mut writer = traces::Writer::create(&opts.output, &header).map_err(trace_err)?;

    // One MMU model per vCPU, from its own state at entry (an AP's INIT state).
    let mut watches = Vec::new();
    for v in 0..backend.vcpus().max(1) {
        let initial = if v == 0 {
            guest_view::control_regs(&guest.entry)
        } else {
            backend.select_vcpu(v).map_err(RecordError::Load)?;
            guest_view::control_regs(&backend.regs_full().map_err(RecordError::Load)?)
        };
        watches.push(history::Watch::new(&policies, opts.flavour, cpu, &initial));
    }
    backend.select_vcpu(0).map_err(RecordError::Load)?;
    let mut devices = Devices::new(console, guest.ram_size);
    devices.set_cpus(backend.vcpus());
    if let Some(inputs) = &opts.replay_inputs {
        devices.replay(inputs.clone());
    }
    let mut progress = Progress::new(opts.progress);
    let (end, steps, events, serial_output, unhandled, sink_error) = {
        let mut tracer = Tracer::new(backend, &mut writer, opts, devices, cpu, watches)
            .map_err(RecordError::Load)?;
        tracer.entry_keyframe();
        let stop = tracer.run(&mut progress, control.as_deref_mut());
        progress.finish();
        tracer.settle_findings();
        tracer.host_records();
        tracer.keyframe(true);
        let end = tracer.end_record(&stop);
        tracer.devices.console.flush();
        let unhandled = tracer
            .devices
            .unhandled
            .summary()
            .into_iter()
            .map(|(a, n)| (a.to_string(), n))
            .collect::<Vec<_>>();
        let serial = tracer.devices.console.captured().to_vec();
        let sink_error = tracer.sink_error.take();
        (
            end,
            tracer.step,
            tracer.next_event,
            serial,
            unhandled,
            sink_error,
        )
    };
    if let Some(e) = sink_error {
        return Err(trace_err(e));
    }
    writer
        .append(&Record::End(end.clone()))
        .map_err(trace_err)?;
    let (_, written) = writer.finish().map_err(trace_err)?;
    let exit_code = match end.reason {
        EndReason::DebugExit { status } => Some(DebugExit::exit_code(status)),
        _ => None,
    };
    if let Some(c) = control {
        c.finished(&end, exit_code);
    }
    Ok(RecordSummary {
        output: opts.output.clone(),
        steps,
        events,
        end,
        exit_code,
        serial_output,
        unhandled,
        elapsed: progress.elapsed(),
        file_bytes: written.file_bytes,
    })
}
