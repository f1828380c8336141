//! Port I/O permission: IOPL and the TSS I/O permission bitmap (SDM 19.5), which Unicorn
//! does not check.

use crate::ram::RamView;
use traces::Regs;

/// Reads guest-linear memory through the reference walker (no side effects on the guest's
/// accessed bits), as a CPL0 access.
fn read_linear_pure(ram: &[u8], cpu: &mmu::CpuModel, regs: &Regs, la: u64, buf: &mut [u8]) -> bool {
    let mem = RamView(ram);
    let cregs = recorder::guest_view::control_regs(regs);
    let req = mmu::AccessRequest::supervisor(mmu::Access::Read);
    for (i, b) in buf.iter_mut().enumerate() {
        let a = la.wrapping_add(i as u64);
        let gpa = if regs.cr0 & (1 << 31) != 0 {
            match mmu::walk(&cregs, cpu, &mem, a, &req).result {
                Ok(t) => t.gpa,
                Err(_) => return false,
            }
        } else {
            a & 0xffff_ffff
        };
        let mut one = [0u8];
        if !mmu::GuestMemory::read(&mem, gpa, &mut one) {
            return false;
        }
        *b = one[0];
    }
    true
}

/// Whether port I/O to `port..port+size` is allowed without #GP: always in real mode or
/// when CPL <= IOPL; otherwise by the TSS I/O permission bitmap (SDM 19.5.2). When it is
/// not, the instruction is executed and faults, instead of being reported as I/O.
pub(crate) fn io_permitted(ram: &[u8], cpu: &mmu::CpuModel, r: &Regs, port: u16, size: u8) -> bool {
    if r.cr0 & 1 == 0 {
        return true;
    }
    let cpl = (r.seg[2].attrs >> 5) & 3;
    let iopl = ((r.rflags >> 12) & 3) as u32;
    if r.rflags & (1 << 17) == 0 && cpl <= iopl {
        return true;
    }
    // Only a 32/64-bit TSS (type 9 or 11) has an I/O bitmap.
    if !matches!(r.tr.attrs & 0xf, 0x9 | 0xb) || r.tr.limit < 0x67 {
        return false;
    }
    let mut b = [0u8; 2];
    if !read_linear_pure(ram, cpu, r, r.tr.base + 0x66, &mut b) {
        return false;
    }
    let map = u16::from_le_bytes(b) as u64;
    let first = map + port as u64 / 8;
    let last = map + (port as u64 + size as u64 - 1) / 8;
    if last > r.tr.limit as u64 {
        return false;
    }
    let mut bits = [0u8; 2];
    let n = (last - first + 1) as usize;
    if !read_linear_pure(ram, cpu, r, r.tr.base + first, &mut bits[..n]) {
        return false;
    }
    let word = u16::from_le_bytes(bits) as u32;
    let mask = ((1u32 << size) - 1) << (port % 8);
    word & mask == 0
}
