//! gdb's memory accesses: by virtual address through the guest's page tables in the current
//! mode (the `mmu` reference walker), or guest-physical after `monitor phys`.
//!
//! Accesses are a debugger's: supervisor, RFLAGS.AC set (SMAP does not hide user pages),
//! writes allowed to read-only pages, no accessed/dirty updates. Each page is translated on
//! its own, so a read stops at the first unmapped page and returns what it got so far.

use crate::breakpoints::{WatchOrigin, Watchpoint};
use mmu::{Access, CpuModel, GuestMemory};
use replayer::views::page_walk::debugger_request;
use traces::Regs;

/// Translates `[addr, addr + len)` into guest-physical pieces, stopping at the first page that
/// does not translate. Real mode and unpaged protected mode are identity (linear = physical).
pub fn pieces(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    phys: bool,
    addr: u64,
    len: usize,
) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut done = 0usize;
    let cr = insn::control_regs(regs);
    while done < len {
        let lin = addr.wrapping_add(done as u64);
        let in_page = (4096 - (lin & 0xfff)) as usize;
        let n = in_page.min(len - done);
        let gpa = if phys {
            lin
        } else {
            match mmu::walk(&cr, cpu, mem, lin, &debugger_request(Access::Read)).result {
                Ok(t) => t.gpa,
                Err(_) => break,
            }
        };
        out.push((gpa, n));
        done += n;
    }
    out
}

/// Reads as much of `buf` as translates and lies in RAM; returns the byte count.
pub fn read(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    phys: bool,
    addr: u64,
    buf: &mut [u8],
) -> usize {
    let mut done = 0;
    for (gpa, n) in pieces(regs, cpu, mem, phys, addr, buf.len()) {
        // Byte-wise fallback at the end of RAM so a read straddling it returns the part inside.
        if mem.read(gpa, &mut buf[done..done + n]) {
            done += n;
            continue;
        }
        for i in 0..n {
            if !mem.read(gpa + i as u64, &mut buf[done..done + 1]) {
                return done;
            }
            done += 1;
        }
    }
    done
}

/// gdb's watchpoint on `[addr, addr + len)`, translated to guest-physical pieces as gdb's
/// memory accesses are; `None` when part of it does not translate.
pub fn watchpoint(
    regs: &Regs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    phys: bool,
    addr: u64,
    len: u64,
) -> Option<Watchpoint> {
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n > 0 && n <= 1 << 20)?;
    let pieces = pieces(regs, cpu, mem, phys, addr, len);
    let covered: usize = pieces.iter().map(|p| p.1).sum();
    (covered == len).then_some(Watchpoint {
        addr,
        len: len as u64,
        origin: WatchOrigin::Gdb,
        pieces,
    })
}
