//! The four PAE PDPTE registers (SDM §4.4.1, sheet §7.3).

use super::fault::Gp;
use super::rsvd::pdpte_reserved;
use crate::regs::{read_u64, GuestMemory};

/// Guest-physical address of the PDPT: CR3\[31:5\]; CR3\[4:0\] and CR3\[63:32\] are ignored.
pub fn pdpt_address(cr3: u64) -> u64 {
    cr3 & 0xffff_ffe0
}

/// Load the PDPTE registers from the PDPT that CR3 points to, as MOV CR3 / MOV CR0 / MOV CR4
/// do when PAE paging is (or becomes) active. A present PDPTE with reserved bits, or a PDPT
/// outside guest RAM, raises #GP and leaves the registers unchanged (KVM `load_pdptrs`).
/// Reserved bits of not-present PDPTEs are not checked, as in KVM.
pub fn load_pdptrs(cr3: u64, mem: &dyn GuestMemory, maxphyaddr: u8) -> Result<[u64; 4], Gp> {
    let base = pdpt_address(cr3);
    let rsvd = pdpte_reserved(maxphyaddr);
    let mut out = [0u64; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let gpa = base + 8 * i as u64;
        let v = read_u64(mem, gpa).ok_or(Gp::PdpteUnreadable { gpa })?;
        if v & 1 != 0 && v & rsvd != 0 {
            return Err(Gp::PdpteReserved {
                index: i as u8,
                value: v,
            });
        }
        *slot = v;
    }
    Ok(out)
}
