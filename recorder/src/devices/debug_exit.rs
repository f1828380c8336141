//! QEMU's isa-debug-exit at port 0xf4: the guest ends the run with a status; the process exits
//! with `(status << 1) | 1`, as QEMU does.

pub struct DebugExit;

impl DebugExit {
    pub const PORT: u16 = 0xf4;

    /// The status written: the low byte for byte writes, the whole value for wider ones.
    pub fn status(&self, data: u32, size: u8) -> u32 {
        if size == 1 {
            data & 0xff
        } else {
            data
        }
    }

    /// The process exit code QEMU would give, truncated to a byte as exit codes are.
    pub fn exit_code(status: u32) -> u8 {
        ((status << 1) | 1) as u8
    }
}
