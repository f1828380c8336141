//! Decoding the instruction at RIP before it runs.
//!
//! Why: the `Backend` contract wants an `in` reported *before* it executes (the VMM supplies
//! the value), HLT and string-instruction completion handled the way KVM single-step does,
//! and the PDPTE registers loaded at the architectural moments (a MOV to CR0/CR3/CR4), none
//! of which Unicorn's hooks tell us up front.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// What the step logic needs to know about one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `in`: port and size; the VMM answers before it executes.
    In {
        port: u16,
        size: u8,
    },
    /// `ins` (possibly `rep`): port from DX.
    Ins {
        port: u16,
        size: u8,
    },
    /// `out` / `outs` (for the I/O permission check).
    Out {
        port: u16,
        size: u8,
    },
    Hlt,
    /// MOV to CRn.
    MovCr(u8),
    /// MOV from CRn into the general register with this number.
    MovFromCr(u8, u8),
    Other,
}

#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    pub kind: Kind,
    pub len: usize,
    /// A `rep`/`repne` string instruction and its address size (16, 32 or 64) — the count
    /// register width.
    pub rep_addr_size: Option<u32>,
    pub instr: Instruction,
}

/// Decodes `bytes` (up to 15 bytes at RIP) with the given code bitness. `dx` resolves
/// `in al, dx`-style ports.
pub fn decode(bytes: &[u8], bitness: u32, rip: u64, dx: u16) -> Option<Decoded> {
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let instr = d.decode();
    if instr.is_invalid() {
        return None;
    }
    let reg_size = |r: Register| -> u8 { r.size() as u8 };
    let kind = match instr.mnemonic() {
        Mnemonic::In => {
            let port = if instr.op1_kind() == OpKind::Immediate8 {
                instr.immediate8() as u16
            } else {
                dx
            };
            Kind::In {
                port,
                size: reg_size(instr.op0_register()),
            }
        }
        Mnemonic::Insb => Kind::Ins { port: dx, size: 1 },
        Mnemonic::Insw => Kind::Ins { port: dx, size: 2 },
        Mnemonic::Insd => Kind::Ins { port: dx, size: 4 },
        Mnemonic::Out => {
            let port = if instr.op0_kind() == OpKind::Immediate8 {
                instr.immediate8() as u16
            } else {
                dx
            };
            Kind::Out {
                port,
                size: reg_size(instr.op1_register()),
            }
        }
        Mnemonic::Outsb => Kind::Out { port: dx, size: 1 },
        Mnemonic::Outsw => Kind::Out { port: dx, size: 2 },
        Mnemonic::Outsd => Kind::Out { port: dx, size: 4 },
        Mnemonic::Hlt => Kind::Hlt,
        Mnemonic::Mov if instr.op1_kind() == OpKind::Register && instr.op1_register().is_cr() => {
            Kind::MovFromCr(
                instr.op1_register().number() as u8,
                instr.op0_register().full_register().number() as u8,
            )
        }
        Mnemonic::Mov if instr.op0_kind() == OpKind::Register && instr.op0_register().is_cr() => {
            Kind::MovCr(instr.op0_register().number() as u8)
        }
        _ => Kind::Other,
    };
    let rep_addr_size = if instr.has_rep_prefix() || instr.has_repne_prefix() {
        string_addr_size(&instr)
    } else {
        None
    };
    Some(Decoded {
        kind,
        len: instr.len(),
        rep_addr_size,
        instr,
    })
}

/// The address size of a string instruction, from its implicit memory operands.
fn string_addr_size(instr: &Instruction) -> Option<u32> {
    (0..instr.op_count()).find_map(|i| match instr.op_kind(i) {
        OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI => Some(16),
        OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI => Some(32),
        OpKind::MemorySegRSI | OpKind::MemoryESRDI | OpKind::MemorySegRDI => Some(64),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_io_and_rep() {
        let d = decode(&[0xe4, 0x60], 16, 0, 0).unwrap();
        assert_eq!(
            d.kind,
            Kind::In {
                port: 0x60,
                size: 1
            }
        );
        let d = decode(&[0x66, 0xed], 16, 0, 0x3f8).unwrap();
        assert_eq!(
            d.kind,
            Kind::In {
                port: 0x3f8,
                size: 4
            }
        );
        let d = decode(&[0xf3, 0xa4], 32, 0, 0).unwrap();
        assert_eq!(d.rep_addr_size, Some(32));
        let d = decode(&[0x67, 0xf3, 0xa4], 32, 0, 0).unwrap();
        assert_eq!(d.rep_addr_size, Some(16));
        let d = decode(&[0x0f, 0x22, 0xd8], 32, 0, 0).unwrap();
        assert_eq!(d.kind, Kind::MovCr(3));
        assert_eq!(decode(&[0xf4], 64, 0, 0).unwrap().kind, Kind::Hlt);
    }
}
