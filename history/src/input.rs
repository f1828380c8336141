//! What a recorded control-register write means to the MMU model.

use mmu::Input;
use traces::{ControlReg, CrWrite, WriteVia};

/// The tracker input a recorded write stands for: the old value and the value the write
/// *attempted* (`CrWrite::new`, which for a faulted write is not what the register holds —
/// KVM's checks judge the attempted value). EFER set by the VMM (KVM_SET_MSRS) goes through
/// KVM's host-initiated path. XCR0 is not an MMU input.
pub fn model_input(w: &CrWrite) -> Option<Input> {
    let (old, new) = (w.old, w.new);
    Some(match w.reg {
        ControlReg::Cr0 => Input::Cr0 { old, new },
        ControlReg::Cr3 => Input::Cr3 { old, new },
        ControlReg::Cr4 => Input::Cr4 { old, new },
        ControlReg::Efer if w.via == WriteVia::Host => Input::EferHost { old, new },
        ControlReg::Efer => Input::Efer { old, new },
        ControlReg::Xcr0 => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faulted_write_feeds_the_attempted_value() {
        let w = CrWrite {
            reg: ControlReg::Cr4,
            old: 0x20,
            new: 0x20 | 1 << 12,
            via: WriteVia::MovCr,
            faulted: true,
        };
        assert_eq!(
            model_input(&w),
            Some(Input::Cr4 {
                old: 0x20,
                new: 0x1020
            })
        );
        let host = CrWrite {
            reg: ControlReg::Efer,
            via: WriteVia::Host,
            ..w
        };
        assert!(matches!(model_input(&host), Some(Input::EferHost { .. })));
        let xcr0 = CrWrite {
            reg: ControlReg::Xcr0,
            ..w
        };
        assert_eq!(model_input(&xcr0), None);
    }
}
