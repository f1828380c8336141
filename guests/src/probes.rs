//! Tiny guests that each probe one behaviour of a backend, shared by the backends' tests so
//! that kvm and emu are held to the same guest and the same expectations.

use crate::loader::{load_raw, EntryMode};
use iced_x86::code_asm::*;
use traces::{GuestSpec, MemRegion, MmioAccess, RegionKind, Step};

/// Where [`mmio_read_modify_write`] reads and writes: outside RAM, in a declared MMIO region.
pub const MMIO_RMW_ADDRESS: u64 = 0xfed0_0010;

/// `and dword [0xfed00010], 0x12345678; mov al, 0; out 0xf4, al` in unpaged protected mode,
/// with an MMIO region around the address: one instruction that both reads and writes MMIO.
pub fn mmio_read_modify_write() -> Result<GuestSpec, String> {
    const AT: u64 = 0x1000;
    let asm = |e: IcedError| format!("assembling the MMIO probe: {e}");
    let mut a = CodeAssembler::new(32).map_err(asm)?;
    a.and(dword_ptr(MMIO_RMW_ADDRESS as u32), 0x1234_5678)
        .map_err(asm)?;
    a.mov(al, 0).map_err(asm)?;
    a.out(0xf4, al).map_err(asm)?;
    let code = a.assemble(AT).map_err(asm)?;
    let mut g =
        load_raw(&code, AT, AT, EntryMode::Protected, 2 << 20).map_err(|e| e.to_string())?;
    g.regions.push(MemRegion {
        gpa: MMIO_RMW_ADDRESS & !0xfff,
        size: 0x1000,
        kind: RegionKind::Mmio,
        name: "device".into(),
    });
    Ok(g)
}

/// The MMIO events a recording of [`mmio_read_modify_write`] must hold: the read (answered
/// with all ones, as for an absent device) and the write, both of step 1; and its step count.
pub fn mmio_read_modify_write_events() -> (Vec<(Step, MmioAccess)>, u64) {
    let read = MmioAccess {
        gpa: MMIO_RMW_ADDRESS,
        write: false,
        size: 4,
        data: 0xffff_ffff,
    };
    let write = MmioAccess {
        data: 0x1234_5678,
        write: true,
        ..read
    };
    (vec![(1, read), (1, write)], 3)
}
