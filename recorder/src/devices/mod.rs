//! The guest's devices: what answers port I/O and MMIO outside RAM.

mod debug_exit;
mod debugcon;
mod fw_cfg;
mod serial;
mod unhandled;

pub use debug_exit::DebugExit;
pub use debugcon::DebugCon;
pub use fw_cfg::FwCfg;
pub use serial::Serial;
pub use unhandled::{mmio_device, port_device, Unhandled, UnhandledAccess, EMULATED};

use std::io::Write;
use std::sync::Arc;
use traces::inputs::{Input, RecordedInputs};

/// Where the guest's serial and debug-console bytes go.
pub enum OutputSink {
    Stdout,
    File(std::fs::File),
    /// Kept in memory only (tests, `demo`).
    Discard,
}

/// Console output: written to the sink as it comes and kept for the run summary.
pub struct Console {
    sink: OutputSink,
    captured: Vec<u8>,
}

/// The summary keeps at most this much console output.
const CAPTURE_LIMIT: usize = 1 << 20;

impl Console {
    pub fn new(sink: OutputSink) -> Console {
        Console {
            sink,
            captured: Vec::new(),
        }
    }

    pub fn put(&mut self, byte: u8) {
        if self.captured.len() < CAPTURE_LIMIT {
            self.captured.push(byte);
        }
        // Console output is best effort: a closed terminal must not stop the recording.
        let _ = match &mut self.sink {
            OutputSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&[byte])
                    .and_then(|_| if byte == b'\n' { out.flush() } else { Ok(()) })
            }
            OutputSink::File(f) => f.write_all(&[byte]),
            OutputSink::Discard => Ok(()),
        };
    }

    pub fn flush(&mut self) {
        let _ = match &mut self.sink {
            OutputSink::Stdout => std::io::stdout().flush(),
            OutputSink::File(f) => f.flush(),
            OutputSink::Discard => Ok(()),
        };
    }

    pub fn captured(&self) -> &[u8] {
        &self.captured
    }
}

/// What the VMM must do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEffect {
    None,
    /// The guest asked to end the run with this status (debug-exit device).
    Exit {
        status: u32,
    },
    /// The guest reset the machine (0xcf9, the keyboard controller, port 0x92): mmurr ends
    /// the run there, as at a triple fault.
    Reset(platform::ResetCause),
}

/// The I/O bus of the machine: fixed devices at their fixed ports.
pub struct Devices {
    pub console: Console,
    serial: Serial,
    debug_exit: DebugExit,
    fw_cfg: FwCfg,
    /// RTC, PCI host bridge and reset paths: the chipset ports that leave KVM for userspace.
    chipset: platform::Chipset,
    /// Guest time for the RTC (set by the tracer before each access).
    now_ns: u64,
    /// The serial port's interrupt line as last driven.
    serial_irq: bool,
    irq_changes: Vec<(u32, bool)>,
    pub unhandled: Unhandled,
    replay: Option<Replay>,
}

/// Input replay (`mmurr verify`): a recording's inputs, consumed in the order the guest took
/// them. The devices still run (their state follows the guest), but the guest reads what the
/// recording says it read.
struct Replay {
    inputs: Arc<RecordedInputs>,
    next: usize,
    /// The re-execution asked for an input the recording does not have there.
    diverged: Option<String>,
}

impl Replay {
    /// The next input if `wanted` accepts it; otherwise the replay has diverged (said once).
    fn take(
        &mut self,
        asked: impl FnOnce() -> String,
        wanted: impl Fn(&Input) -> bool,
    ) -> Option<&Input> {
        if self.diverged.is_some() {
            return None;
        }
        match self.inputs.inputs.get(self.next) {
            Some(i) if wanted(i) => {
                self.next += 1;
                self.inputs.inputs.get(self.next - 1)
            }
            other => {
                let recorded = other.map_or("none: the recording has no more inputs".into(), |i| {
                    i.describe()
                });
                self.diverged = Some(format!(
                    "the re-execution left the recording: it reached {}, but the recording's next \
                     input is {recorded}",
                    asked()
                ));
                None
            }
        }
    }
}

/// What a nondeterministic instruction returned in the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedResults {
    pub gprs: Vec<(u8, u64)>,
    pub rflags_mask: u64,
    pub rflags: u64,
}

impl Devices {
    /// The machine has `cpus` vCPUs: fw_cfg says so (FW_CFG_NB_CPUS), as QEMU's `-smp` does.
    pub fn set_cpus(&mut self, cpus: u32) {
        self.fw_cfg.set_cpus(cpus);
    }

    pub fn new(console: Console, ram_size: u64) -> Devices {
        Devices {
            console,
            serial: Serial::default(),
            debug_exit: DebugExit,
            fw_cfg: FwCfg::new(ram_size),
            chipset: platform::Chipset::new(ram_size),
            now_ns: 0,
            serial_irq: false,
            irq_changes: Vec::new(),
            unhandled: Unhandled::default(),
            replay: None,
        }
    }

    /// Guest time now (virtual nanoseconds), the RTC's clock.
    pub fn set_time(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// Interrupt lines whose level the devices changed since the last call (gsi, level), in
    /// order, for [`crate::Backend::set_irq_line`].
    pub fn take_irq_changes(&mut self) -> Vec<(u32, bool)> {
        std::mem::take(&mut self.irq_changes)
    }

    fn serial_irq_update(&mut self) {
        let level = self.serial.irq();
        if level != self.serial_irq {
            self.serial_irq = level;
            self.irq_changes.push((serial::IRQ, level));
        }
    }

    /// From now on, reads return `inputs` in order (see [`Devices::replayed_results`]).
    pub fn replay(&mut self, inputs: Arc<RecordedInputs>) {
        self.replay = Some(Replay {
            inputs,
            next: 0,
            diverged: None,
        });
    }

    /// Replaying: the recorded results for the nondeterministic instruction `what` that just
    /// retired at `rip`. `None` when not replaying, or when the recording has no such input
    /// next ([`Devices::replay_divergence`] then says why).
    pub fn replayed_results(&mut self, rip: u64, what: &str) -> Option<ReplayedResults> {
        let replay = self.replay.as_mut()?;
        let asked = || format!("{what} at rip {rip:#x}");
        match replay.take(
            asked,
            |i| matches!(i, Input::Results { rip: r, .. } if *r == rip),
        )? {
            Input::Results {
                gprs,
                rflags_mask,
                rflags,
                ..
            } => Some(ReplayedResults {
                gprs: gprs.clone(),
                rflags_mask: *rflags_mask,
                rflags: *rflags,
            }),
            _ => None,
        }
    }

    /// Replaying and the re-execution asked for an input the recording does not have: what
    /// happened (once).
    pub fn replay_divergence(&mut self) -> Option<String> {
        self.replay.as_mut()?.diverged.take()
    }

    /// A port read's value: the recorded one when replaying.
    fn replayed_port_read(&mut self, port: u16, size: u8, live: u32) -> u32 {
        let Some(replay) = self.replay.as_mut() else {
            return live;
        };
        let asked = || format!("a {size}-byte read of port {port:#x}");
        let wanted = |i: &Input| matches!(i, Input::PortRead { port: p, size: n, .. } if *p == port && *n == size);
        match replay.take(asked, wanted) {
            Some(Input::PortRead { data, .. }) => *data,
            _ => live,
        }
    }

    fn replayed_mmio_read(&mut self, gpa: u64, size: u8, live: u64) -> u64 {
        let Some(replay) = self.replay.as_mut() else {
            return live;
        };
        let asked = || format!("a {size}-byte MMIO read at {gpa:#x}");
        let wanted = |i: &Input| matches!(i, Input::MmioRead { gpa: g, size: n, .. } if *g == gpa && *n == size);
        match replay.take(asked, wanted) {
            Some(Input::MmioRead { data, .. }) => *data,
            _ => live,
        }
    }

    /// A port write of `size` bytes.
    pub fn io_out(&mut self, port: u16, size: u8, data: u32) -> IoEffect {
        let data = data & mask(size) as u32;
        if Serial::claims(port) {
            self.serial.write(port, data as u8, &mut self.console);
            self.serial_irq_update();
        } else if platform::Chipset::claims(port, size) {
            self.chipset.io_write(port, size, data, self.now_ns);
            if let Some(cause) = self.chipset.take_reset() {
                self.unhandled.handled();
                return IoEffect::Reset(cause);
            }
        } else if DebugCon::claims(port) {
            DebugCon::write(data as u8, &mut self.console);
        } else if port == DebugExit::PORT {
            return IoEffect::Exit {
                status: self.debug_exit.status(data, size),
            };
        } else if FwCfg::claims(port) {
            self.fw_cfg.write(port, size, data);
        } else {
            self.unhandled.record(UnhandledAccess::PortWrite(port));
            return IoEffect::None;
        }
        self.unhandled.handled();
        IoEffect::None
    }

    /// A port read of `size` bytes; absent devices read as all-ones. Replaying, the value the
    /// recording read.
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let live = self.device_io_in(port, size);
        self.replayed_port_read(port, size, live)
    }

    fn device_io_in(&mut self, port: u16, size: u8) -> u32 {
        let value = if Serial::claims(port) {
            let v = self.serial.read(port) as u32;
            self.serial_irq_update();
            v
        } else if platform::Chipset::claims(port, size) {
            self.chipset.io_read(port, size, self.now_ns)
        } else if DebugCon::claims(port) {
            DebugCon::READBACK as u32
        } else if FwCfg::claims(port) {
            self.fw_cfg.read(port, size)
        } else {
            self.unhandled.record(UnhandledAccess::PortRead(port));
            return mask(size) as u32;
        };
        self.unhandled.handled();
        value & mask(size) as u32
    }

    /// MMIO outside RAM: nothing is mapped there; reads are all-ones (replaying, the value
    /// the recording read).
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        self.unhandled.record(UnhandledAccess::MmioRead(gpa));
        self.replayed_mmio_read(gpa, size, mask(size))
    }

    pub fn mmio_write(&mut self, gpa: u64) {
        self.unhandled.record(UnhandledAccess::MmioWrite(gpa));
    }
}

/// All-ones of `size` bytes (1..=8).
pub fn mask(size: u8) -> u64 {
    match size {
        0 => 0,
        8.. => u64::MAX,
        n => (1u64 << (8 * n as u32)) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> Devices {
        Devices::new(Console::new(OutputSink::Discard), 64 << 20)
    }

    #[test]
    fn serial_and_debugcon_share_the_console() {
        let mut d = bus();
        d.io_out(0x3f8, 1, b'h' as u32);
        d.io_out(0xe9, 1, b'i' as u32);
        d.io_out(0x402, 1, b'!' as u32);
        assert_eq!(d.console.captured(), b"hi!");
        assert_eq!(d.io_in(0x3fd, 1), 0x60);
        assert_eq!(d.io_in(0x402, 1), 0xe9);
        assert!(d.unhandled.summary().is_empty());
    }

    #[test]
    fn chipset_ports_answer_and_resets_end_the_run() {
        let mut d = bus();
        d.io_out(0xcf8, 4, 0x8000_0000);
        assert_eq!(d.io_in(0xcfc, 4), 0x1237_8086);
        d.set_time(61_000_000_000);
        d.io_out(0x70, 1, 0x02);
        assert_eq!(d.io_in(0x71, 1), 0x01); // 00:01:01
        assert_eq!(
            d.io_out(0xcf9, 1, 0x06),
            IoEffect::Reset(platform::ResetCause::ResetControl { hard: true })
        );
        assert_eq!(
            d.io_out(0x64, 1, 0xfe),
            IoEffect::Reset(platform::ResetCause::KeyboardController)
        );
        assert!(d.unhandled.summary().is_empty());
    }

    #[test]
    fn the_serial_interrupt_line_follows_the_uart() {
        let mut d = bus();
        d.io_out(0x3f9, 1, 0x02);
        assert_eq!(d.take_irq_changes(), [(4, true)]);
        assert_eq!(d.io_in(0x3fa, 1), 0x02);
        assert_eq!(d.take_irq_changes(), [(4, false)]);
        d.io_out(0x3f8, 1, b'a' as u32);
        d.io_out(0x3f8, 1, b'b' as u32);
        assert_eq!(d.take_irq_changes(), [(4, true)]);
    }

    #[test]
    fn debug_exit_ends_with_the_status() {
        assert_eq!(bus().io_out(0xf4, 1, 0x10), IoEffect::Exit { status: 0x10 });
        assert_eq!(
            bus().io_out(0xf4, 1, 0x1ff),
            IoEffect::Exit { status: 0xff }
        );
    }

    #[test]
    fn absent_ports_read_all_ones_and_are_counted() {
        let mut d = bus();
        assert_eq!(d.io_in(0x2f8, 1), 0xff);
        assert_eq!(d.io_in(0x2f8, 2), 0xffff);
        d.io_out(0x80, 1, 0);
        let summary = d.unhandled.summary();
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0], (UnhandledAccess::PortRead(0x2f8), 2));
        assert_eq!(d.mmio_read(0xfee0_0000, 4), 0xffff_ffff);
    }

    #[test]
    fn replay_returns_the_recorded_reads_in_order_and_says_where_it_left_them() {
        let mut d = bus();
        d.replay(Arc::new(RecordedInputs {
            host_actions: Vec::new(),
            inputs: vec![
                Input::PortRead {
                    step: 3,
                    port: 0x3fd,
                    size: 1,
                    data: 0x21,
                },
                Input::Results {
                    step: 5,
                    rip: 0x1000,
                    mnemonic: "rdtsc".into(),
                    gprs: vec![(0, 0x1234), (2, 0x5)],
                    rflags_mask: 0,
                    rflags: 0,
                },
                Input::MmioRead {
                    step: 7,
                    gpa: 0xfee0_0030,
                    size: 4,
                    data: 0x50014,
                },
            ],
        }));
        // The serial device would say 0x60; the recording says 0x21.
        assert_eq!(d.io_in(0x3fd, 1), 0x21);
        let r = d.replayed_results(0x1000, "rdtsc").unwrap();
        assert_eq!(r.gprs, [(0, 0x1234), (2, 0x5)]);
        assert_eq!(d.mmio_read(0xfee0_0030, 4), 0x50014);
        assert_eq!(d.replay_divergence(), None);
        // Past the end: the live value, and the divergence named.
        assert_eq!(d.io_in(0x3fd, 1), 0x60);
        let why = d.replay_divergence().unwrap();
        assert!(why.contains("a 1-byte read of port 0x3fd"), "{why}");
        assert!(why.contains("the recording has no more inputs"), "{why}");
    }

    #[test]
    fn replay_refuses_an_input_of_another_kind_or_place() {
        let mut d = bus();
        d.replay(Arc::new(RecordedInputs {
            host_actions: Vec::new(),
            inputs: vec![Input::Results {
                step: 9,
                rip: 0x2000,
                mnemonic: "rdtsc".into(),
                gprs: vec![(0, 1)],
                rflags_mask: 0,
                rflags: 0,
            }],
        }));
        assert_eq!(d.replayed_results(0x2004, "rdtsc"), None);
        let why = d.replay_divergence().unwrap();
        assert_eq!(
            why,
            "the re-execution left the recording: it reached rdtsc at rip 0x2004, but the \
             recording's next input is rdtsc at rip 0x2000 (step 9)"
        );
    }
}
