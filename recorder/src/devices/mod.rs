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
pub use unhandled::{Unhandled, UnhandledAccess};

use std::io::Write;

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
}

/// The I/O bus of the machine: fixed devices at their fixed ports.
pub struct Devices {
    pub console: Console,
    serial: Serial,
    debug_exit: DebugExit,
    fw_cfg: FwCfg,
    pub unhandled: Unhandled,
}

impl Devices {
    pub fn new(console: Console, ram_size: u64) -> Devices {
        Devices {
            console,
            serial: Serial::default(),
            debug_exit: DebugExit,
            fw_cfg: FwCfg::new(ram_size),
            unhandled: Unhandled::default(),
        }
    }

    /// A port write of `size` bytes.
    pub fn io_out(&mut self, port: u16, size: u8, data: u32) -> IoEffect {
        let data = data & mask(size) as u32;
        if Serial::claims(port) {
            self.serial.write(port, data as u8, &mut self.console);
        } else if port == DebugCon::PORT {
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

    /// A port read of `size` bytes; absent devices read as all-ones.
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let value = if Serial::claims(port) {
            self.serial.read(port) as u32
        } else if port == DebugCon::PORT {
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

    /// MMIO outside RAM: nothing is mapped there; reads are all-ones.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        self.unhandled.record(UnhandledAccess::MmioRead(gpa));
        mask(size)
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
        assert_eq!(d.console.captured(), b"hi");
        assert_eq!(d.io_in(0x3fd, 1), 0x60);
        assert!(d.unhandled.summary().is_empty());
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
        assert_eq!(d.io_in(0x60, 1), 0xff);
        assert_eq!(d.io_in(0x60, 2), 0xffff);
        d.io_out(0x80, 1, 0);
        let summary = d.unhandled.summary();
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0], (UnhandledAccess::PortRead(0x60), 2));
        assert_eq!(d.mmio_read(0xfee0_0000, 4), 0xffff_ffff);
    }
}
