//! Decoding and formatting.

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use traces::Regs;

use mmu::bits::{CR0_PE, EFER_LMA};
/// CS access rights: L (64-bit code) and D/B (32-bit default operand size).
const CS_L: u32 = 1 << 13;
const CS_DB: u32 = 1 << 14;

/// The code size the CPU decodes in: 16, 32 or 64.
pub fn bitness(regs: &Regs) -> u32 {
    let cs = regs.seg[traces::regs::CS];
    if regs.cr0 & CR0_PE == 0 {
        16
    } else if regs.efer & EFER_LMA != 0 && cs.attrs & CS_L != 0 {
        64
    } else if cs.attrs & CS_DB != 0 {
        32
    } else {
        16
    }
}

/// Decodes one instruction; `None` for bytes that are not a valid instruction.
pub fn decode(bytes: &[u8], bitness: u32, rip: u64) -> Option<Instruction> {
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let insn = d.decode();
    (!insn.is_invalid()).then_some(insn)
}

/// Intel syntax, e.g. `mov cr4,rax`.
pub fn format(insn: &Instruction) -> String {
    let mut out = String::new();
    IntelFormatter::new().format(insn, &mut out);
    out
}

/// `"mov cr4,rax" (0f 22 e0)`, or the raw bytes when they do not decode.
pub fn describe(bytes: &[u8], bitness: u32, rip: u64) -> String {
    match decode(bytes, bitness, rip) {
        Some(insn) => {
            let len = insn.len().min(bytes.len());
            format!("\"{}\" ({})", format(&insn), hex(&bytes[..len]))
        }
        None if bytes.is_empty() => "(instruction bytes not readable)".into(),
        None => format!("(undecodable bytes {})", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitness_follows_cr0_efer_and_cs() {
        let mut r = Regs::default();
        assert_eq!(bitness(&r), 16);
        r.cr0 = 1;
        r.seg[traces::regs::CS].attrs = 0xc09b;
        assert_eq!(bitness(&r), 32);
        r.efer = 0x500;
        r.seg[traces::regs::CS].attrs = 0xa09b;
        assert_eq!(bitness(&r), 64);
    }

    #[test]
    fn describes_instructions_and_garbage() {
        assert_eq!(
            describe(&[0x0f, 0x22, 0xe0, 0x90], 64, 0x1000),
            "\"mov cr4,rax\" (0f 22 e0)"
        );
        assert_eq!(describe(&[0xcc], 64, 0), "\"int3\" (cc)");
        assert!(describe(&[0x0f, 0xff], 64, 0).starts_with("(undecodable"));
    }
}
