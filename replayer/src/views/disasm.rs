//! Disassembly around RIP: the instructions executed just before (their RIPs come from the
//! trace's step records), the one about to execute, and the next few decoded linearly. Bytes
//! are fetched through the guest's current page tables and decoded in the current mode's code
//! size, so a listing right after a mode switch shows what the CPU now sees at those addresses.

use mmu::{CpuModel, GuestMemory};
use traces::Regs;

/// One disassembled instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisasmLine {
    pub rip: u64,
    /// The instruction's bytes in hex, `0f 22 e0`.
    pub bytes: String,
    /// Intel syntax, or why there is no instruction here.
    pub text: String,
    /// The instruction at RIP (about to execute).
    pub current: bool,
}

fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

/// Decodes the instruction at `rip` with `regs`' segments and mode. Returns the line and the
/// instruction's length (0 when nothing could be read or decoded).
pub fn line_at(regs: &Regs, cpu: &CpuModel, mem: &dyn GuestMemory, rip: u64) -> (DisasmLine, u64) {
    let mut at = regs.clone();
    at.rip = rip;
    let bytes = insn::fetch(&at, cpu, mem);
    let current = rip == regs.rip;
    if bytes.is_empty() {
        let line = DisasmLine {
            rip,
            bytes: String::new(),
            text: "(not mapped)".into(),
            current,
        };
        return (line, 0);
    }
    match insn::decode(&bytes, insn::bitness(regs), rip) {
        Some(i) => {
            let len = i.len().min(bytes.len());
            let line = DisasmLine {
                rip,
                bytes: hex(&bytes[..len]),
                text: insn::format(&i),
                current,
            };
            (line, len as u64)
        }
        None => {
            let line = DisasmLine {
                rip,
                bytes: hex(&bytes[..1]),
                text: "(bad)".into(),
                current,
            };
            (line, 0)
        }
    }
}

/// `history` (RIPs of the instructions executed before this point, oldest first), then the
/// instruction at RIP and up to `ahead` instructions after it.
pub fn around(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    history: &[u64],
    ahead: usize,
) -> Vec<DisasmLine> {
    let mut out: Vec<DisasmLine> = history
        .iter()
        .map(|&rip| line_at(regs, cpu, mem, rip).0)
        .collect();
    let mut rip = regs.rip;
    for _ in 0..=ahead {
        let (line, len) = line_at(regs, cpu, mem, rip);
        out.push(line);
        if len == 0 {
            break;
        }
        rip = rip.wrapping_add(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu::FlatMemory;

    fn protected32() -> Regs {
        let mut r = Regs {
            cr0: 0x11,
            ..Regs::default()
        };
        r.seg[traces::regs::CS].attrs = 0xc09b;
        r
    }

    #[test]
    fn lists_history_current_and_ahead() {
        let mut mem = FlatMemory::new(0, 0x2000);
        // mov eax,0x20 ; mov cr4,eax ; hlt
        let code = [0xb8, 0x20, 0, 0, 0, 0x0f, 0x22, 0xe0, 0xf4];
        mem.bytes[0x1000..0x1000 + code.len()].copy_from_slice(&code);
        let mut regs = protected32();
        regs.rip = 0x1005;
        let lines = around(&regs, &CpuModel::default_x86_64(), &mem, &[0x1000], 1);
        assert_eq!(lines[0].text, "mov eax,20h");
        assert!(!lines[0].current);
        assert_eq!(lines[1].text, "mov cr4,eax");
        assert_eq!(lines[1].bytes, "0f 22 e0");
        assert!(lines[1].current);
        assert_eq!(lines[2].text, "hlt");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn unmapped_code_ends_the_listing() {
        let mem = FlatMemory::new(0, 0x1000);
        let mut regs = protected32();
        regs.rip = 0x5000;
        let lines = around(&regs, &CpuModel::default_x86_64(), &mem, &[], 4);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "(not mapped)");
    }
}
