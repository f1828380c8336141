//! The trace's events as the timeline lists them: every event in file order with the vCPU it
//! belongs to, the paging mode of that vCPU at each, each vCPU's paging-mode spans over the
//! whole trace (the coloured band), and the guest's serial output. Built from the chunks flagged as holding events only, so a trace of
//! millions of steps with few events loads in the time it takes to read those chunks.

use replayer::flags::changed_flags;
use std::io::{Read, Seek};
use traces::{
    chunk::FLAG_EVENTS, Event, EventId, EventKind, PagingMode, Reader, Record, Regs, Step,
};

/// COM1's data port and the Bochs/QEMU debug console: writes there are the guest's output.
pub const SERIAL_PORTS: [u16; 2] = [0x3f8, 0xe9];

/// How events are encoded in an [`EventIndex`]: bincode's standard configuration, as the
/// trace format's.
const CODEC: bincode::config::Configuration = bincode::config::standard();

/// The paging mode the registers select (the trace's own names, as `Transition` uses them).
pub use history::to_trace::mode_of as paging_mode;

/// Every event of a trace, with what the timeline needs to list, filter and colour them.
#[derive(Clone, Debug, Default)]
pub struct EventIndex {
    /// Every event in file order, bincode-encoded back to back ([`EventIndex::get`] decodes
    /// one): a decoded `Event` is 112 bytes plus its strings, an encoded MMU decision ~30,
    /// and a busy trace lists a million of them.
    bytes: Vec<u8>,
    /// Where each event's encoding ends in `bytes`.
    ends: Vec<usize>,
    /// The paging mode of the event's vCPU right after each event (parallel to the events).
    pub modes: Vec<PagingMode>,
    /// Per vCPU, `(first step, mode)`: its mode from that step on, ascending.
    pub spans: Vec<Vec<(Step, PagingMode)>>,
    /// The vCPU of each event (parallel to the events); empty for one-vCPU traces, whose
    /// events are all vCPU 0's.
    vcpus: Vec<u32>,
    /// Bytes the guest wrote to a serial port, with the step that wrote each.
    pub serial: Vec<(Step, u8)>,
    /// Chunks that could not be read (a damaged trace): listed, not fatal.
    pub errors: Vec<String>,
}

impl EventIndex {
    /// Starts an index for a one-vCPU trace whose entry registers are `entry`.
    pub fn new(entry: &Regs) -> EventIndex {
        EventIndex::with_vcpus(std::slice::from_ref(entry))
    }

    /// Starts an index for a trace whose vCPUs' entry registers are `entries` (the replayer's
    /// entry state: the APs' come from the trace's keyframe at step 0).
    pub fn with_vcpus(entries: &[Regs]) -> EventIndex {
        let spans = entries.iter().map(|r| vec![(0, paging_mode(r))]).collect();
        EventIndex {
            spans,
            ..Default::default()
        }
    }

    /// How many vCPUs the trace has.
    pub fn vcpu_count(&self) -> u32 {
        self.spans.len().max(1) as u32
    }

    /// Appends one event (in file order) of vCPU `vcpu` (from `traces::vcpu::attribute`).
    pub fn push(&mut self, e: Event, vcpu: u32) {
        if self.spans.len() > 1 {
            self.vcpus.push(vcpu);
        }
        let spans = match self.spans.get_mut(vcpu as usize) {
            Some(s) => s,
            // A vCPU the header does not count (a damaged trace): its own band from here.
            None => {
                self.spans
                    .resize(vcpu as usize + 1, vec![(0, PagingMode::Real)]);
                &mut self.spans[vcpu as usize]
            }
        };
        let mut mode = spans.last().map_or(PagingMode::Real, |s| s.1);
        if let EventKind::Transition { to, .. } = e.kind {
            mode = to;
            match spans.last_mut() {
                Some(last) if last.0 == e.step => last.1 = to,
                _ => spans.push((e.step, to)),
            }
        }
        if let EventKind::Io(io) = e.kind {
            if io.write && SERIAL_PORTS.contains(&io.port) {
                let bytes = io.data.to_le_bytes();
                let n = usize::from(io.size.clamp(1, 4));
                self.serial.extend(bytes[..n].iter().map(|b| (e.step, *b)));
            }
        }
        self.modes.push(mode);
        // Encoding into a Vec cannot fail: the event types are plain data.
        let _ = bincode::serde::encode_into_std_write(&e, &mut self.bytes, CODEC);
        self.ends.push(self.bytes.len());
    }

    /// Room for `n` more events (the trace's index counts them): the list then grows
    /// without a copy of itself while it loads.
    pub fn reserve(&mut self, n: usize) {
        self.ends.reserve_exact(n);
        self.modes.reserve_exact(n);
        if self.spans.len() > 1 {
            self.vcpus.reserve_exact(n);
        }
    }

    /// Gives back the room the encoded list grew into (it doubles as it grows), once every
    /// event is in.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.modes.shrink_to_fit();
        self.vcpus.shrink_to_fit();
    }

    /// The vCPU event `i` belongs to.
    pub fn vcpu(&self, i: usize) -> u32 {
        self.vcpus.get(i).copied().unwrap_or(0)
    }

    /// Event `i` (in file order).
    pub fn get(&self, i: usize) -> Option<Event> {
        let end = *self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        bincode::serde::decode_from_slice(&self.bytes[start..end], CODEC)
            .ok()
            .map(|(e, _)| e)
    }

    /// The first event index for which `before` is false, `before` being true for a prefix
    /// of the events (a binary search decoding only the events it probes).
    fn partition_point(&self, before: impl Fn(&Event) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(|e| before(&e)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Reads every event-holding chunk of `reader`, handing each chunk's events (in file
    /// order, each with its vCPU) to `chunk(events, done, total)` without keeping them: the loader moves them on
    /// to the UI rather than holding a second copy of a million events. The chunks that could
    /// not be read; `None` when `chunk` returns false (nobody wants the result any more).
    pub fn read<R: Read + Seek>(
        reader: &mut Reader<R>,
        mut chunk: impl FnMut(Vec<(Event, u32)>, usize, usize) -> bool,
    ) -> Option<Vec<String>> {
        let wanted: Vec<usize> = reader
            .chunks()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.header.flags & FLAG_EVENTS != 0 || c.header.event_count > 0)
            .map(|(i, _)| i)
            .collect();
        let total = wanted.len();
        let mut errors = Vec::new();
        for (done, c) in wanted.into_iter().enumerate() {
            let mut events = Vec::new();
            match reader.chunk_records(c) {
                Ok(records) => {
                    // Every chunk of a multi-vCPU trace starts with its vCPU switch.
                    for (vcpu, r) in traces::vcpu::attribute(&records) {
                        if let Record::Event(e) = r {
                            events.push((e.clone(), vcpu));
                        }
                    }
                }
                Err(e) => errors.push(format!("chunk {c}: {e}")),
            }
            if !chunk(events, done + 1, total) {
                return None;
            }
        }
        Some(errors)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Position of event `id` in the list.
    pub fn position_of(&self, id: EventId) -> Option<usize> {
        // Ids are dense and ascending in a sound trace; search rather than index so a
        // damaged one (a chunk missing) still answers.
        let i = self.partition_point(|e| e.id < id);
        self.get(i).filter(|e| e.id == id).map(|_| i)
    }

    /// The last event at or before `step`.
    pub fn last_at_or_before(&self, step: Step) -> Option<usize> {
        self.partition_point(|e| e.step <= step).checked_sub(1)
    }

    /// The paging mode of vCPU `vcpu` at `step`.
    pub fn mode_at(&self, vcpu: u32, step: Step) -> PagingMode {
        let Some(spans) = self.spans.get(vcpu as usize) else {
            return PagingMode::Real;
        };
        let i = spans.partition_point(|s| s.0 <= step);
        spans
            .get(i.saturating_sub(1))
            .map_or(PagingMode::Real, |s| s.1)
    }

    /// Serial output written up to and including `step`.
    pub fn serial_upto(&self, step: Step) -> &[(Step, u8)] {
        let n = self.serial.partition_point(|s| s.0 <= step);
        &self.serial[..n]
    }

    /// The control-register write an event is about: itself, or the cause of a decision or
    /// finding.
    pub fn cause_of(&self, i: usize) -> Option<usize> {
        let e = self.get(i)?;
        match &e.kind {
            EventKind::CrWrite(_) | EventKind::HostAction(_) => Some(i),
            EventKind::Mmu(d) => self.position_of(d.cause),
            EventKind::Finding(f) => self.position_of(f.cause),
            _ => None,
        }
    }
}

/// Text from a trace made safe to draw: a stranger's trace must not reach the terminal with
/// escape sequences, so control characters become `·`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .collect()
}

/// The timeline's text for an event: kind column and what happened.
pub fn summary(e: &Event, policies: &[String]) -> (String, String) {
    let policy = |i: u16| {
        policies
            .get(usize::from(i))
            .map(|p| clean(p))
            .unwrap_or_else(|| format!("policy#{i}"))
    };
    match &e.kind {
        EventKind::CrWrite(w) => {
            let changed = changed_flags(w.reg, w.old, w.new);
            let changed = if changed.is_empty() {
                "(no change)".to_string()
            } else {
                changed
            };
            let fault = if w.faulted { " #GP" } else { "" };
            // What changed first: narrow timelines cut the values, not the flags.
            (
                w.reg.name().to_string(),
                format!("{changed}{fault}  {:#x} → {:#x}", w.old, w.new),
            )
        }
        EventKind::Transition { from, to } => {
            ("mode".into(), format!("{} → {}", from.name(), to.name()))
        }
        EventKind::Mmu(d) => (
            "mmu".into(),
            format!("{}: {}", policy(d.policy), d.outcome.name()),
        ),
        EventKind::Finding(f) => (
            "FIND".into(),
            format!("{}: {}", policy(f.policy), f.kind.name()),
        ),
        EventKind::Io(io) => {
            let dir = if io.write { "out" } else { "in" };
            let ch = if io.write && SERIAL_PORTS.contains(&io.port) {
                printable(io.data as u8)
            } else {
                String::new()
            };
            (
                "io".into(),
                format!("{dir} {:#x} = {:#x}{ch}", io.port, io.data),
            )
        }
        EventKind::Mmio(m) => (
            "mmio".into(),
            format!(
                "{} {:#x} = {:#x}",
                if m.write { "write" } else { "read" },
                m.gpa,
                m.data
            ),
        ),
        EventKind::Exception(x) => {
            let mut s = match traces::ExceptionInfo::mnemonic(x.vector) {
                Some(m) => format!("{m} ({})", x.vector),
                None => format!("vector {}", x.vector),
            };
            if let Some(ec) = x.error_code {
                s += &format!(" err {ec:#x}");
            }
            if let Some(cr2) = x.cr2 {
                s += &format!(" cr2 {cr2:#x}");
            }
            ("exc".into(), s)
        }
        EventKind::EngineDivergence { gva, .. } => {
            ("DIVG".into(), format!("engine vs reference at {gva:#x}"))
        }
        EventKind::ExternalInterrupt(i) if i.nmi => ("irq".into(), "NMI".into()),
        EventKind::ExternalInterrupt(i) => ("irq".into(), format!("vector {}", i.vector)),
        EventKind::Retired { count } => ("step".into(), format!("{count} instructions")),
        EventKind::Startup { vector } => ("sipi".into(), format!("vector {vector:#04x}")),
        EventKind::HostAction(a) => ("host".into(), a.describe()),
    }
}

/// ` 'A'` for a printable byte, ` '\n'` for the usual controls.
fn printable(b: u8) -> String {
    match b {
        b'\n' => " '\\n'".into(),
        b'\r' => " '\\r'".into(),
        0x20..=0x7e => format!(" '{}'", b as char),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::IoAccess;

    fn event(id: u64, step: Step, kind: EventKind) -> Event {
        Event {
            id,
            step,
            rip: 0,
            kind,
        }
    }

    #[test]
    fn modes_spans_and_serial_follow_the_events() {
        let entry = Regs {
            cr0: 1,
            ..Default::default()
        };
        let mut index = EventIndex::new(&entry);
        assert_eq!(index.mode_at(0, 0), PagingMode::Unpaged);
        let t = |from, to| EventKind::Transition { from, to };
        index.push(event(0, 10, t(PagingMode::Unpaged, PagingMode::Bits32)), 0);
        let out = |data, port| {
            EventKind::Io(IoAccess {
                port,
                write: true,
                size: 1,
                data,
            })
        };
        index.push(event(1, 12, out(u32::from(b'h'), 0x3f8)), 0);
        index.push(event(2, 13, out(u32::from(b'x'), 0x80)), 0);
        index.push(event(3, 14, out(u32::from(b'i'), 0xe9)), 0);
        index.push(event(4, 20, t(PagingMode::Bits32, PagingMode::Pae)), 0);
        assert_eq!(index.mode_at(0, 9), PagingMode::Unpaged);
        assert_eq!(index.mode_at(0, 10), PagingMode::Bits32);
        assert_eq!(index.mode_at(0, u64::MAX), PagingMode::Pae);
        assert_eq!(index.modes[1], PagingMode::Bits32);
        assert_eq!(index.serial_upto(13), &[(12, b'h')]);
        assert_eq!(index.serial_upto(100).len(), 2);
        assert_eq!(index.last_at_or_before(13), Some(2));
        assert_eq!(index.last_at_or_before(5), None);
        assert_eq!(index.position_of(3), Some(3));
        assert_eq!(index.position_of(9), None);
    }

    /// Each vCPU has its own paging mode: an AP's transition changes neither the BSP's band
    /// nor the mode shown on the BSP's rows.
    #[test]
    fn each_vcpu_has_its_own_mode_and_events_their_vcpu() {
        let bsp = Regs {
            cr0: 0x8000_0011,
            ..Default::default()
        };
        let mut index = EventIndex::with_vcpus(&[bsp.clone(), Regs::default()]);
        assert_eq!(index.vcpu_count(), 2);
        let t = |from, to| EventKind::Transition { from, to };
        index.push(event(0, 5, t(PagingMode::Real, PagingMode::Unpaged)), 1);
        index.push(event(1, 6, EventKind::Retired { count: 1 }), 0);
        assert_eq!(index.mode_at(0, 10), PagingMode::Bits32);
        assert_eq!(index.mode_at(1, 4), PagingMode::Real);
        assert_eq!(index.mode_at(1, 5), PagingMode::Unpaged);
        assert_eq!((index.vcpu(0), index.vcpu(1)), (1, 0));
        assert_eq!(index.modes, [PagingMode::Unpaged, PagingMode::Bits32]);
        assert_eq!(EventIndex::new(&bsp).vcpu(7), 0);
    }

    #[test]
    fn clean_removes_control_characters() {
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a·[2Jb·");
    }
}
