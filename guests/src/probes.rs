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

/// Where [`smp_busy_loop`]'s APs start: the startup IPI's vector is this page.
const SMP_AP: u64 = 0x8000;

/// A machine of any number of vCPUs, all busy: the BSP (unpaged protected mode) starts the
/// APs with INIT-SIPI-SIPI to all excluding self, then every vCPU increments a counter in
/// memory for ever (the BSP at 0x9000, the APs in real mode at 0x9100). For the step-rate
/// benches of several vCPUs on both backends.
pub fn smp_busy_loop() -> Result<GuestSpec, String> {
    const GDT: u64 = 0x3000;
    const BSP: u64 = 0x1000;
    let asm = |e: iced_x86::IcedError| e.to_string();
    let mut bsp = CodeAssembler::new(32).map_err(asm)?;
    for icr in [
        0xc_4500u32,
        0xc_4600 | (SMP_AP >> 12) as u32,
        0xc_4600 | (SMP_AP >> 12) as u32,
    ] {
        bsp.mov(dword_ptr(0xfee0_0300u64), icr).map_err(asm)?;
    }
    let mut top = bsp.create_label();
    bsp.set_label(&mut top).map_err(asm)?;
    bsp.inc(ecx).map_err(asm)?;
    bsp.mov(dword_ptr(0x9000u64), ecx).map_err(asm)?;
    bsp.jmp(top).map_err(asm)?;
    let mut ap = CodeAssembler::new(16).map_err(asm)?;
    let mut top = ap.create_label();
    ap.set_label(&mut top).map_err(asm)?;
    ap.inc(cx).map_err(asm)?;
    ap.mov(word_ptr(0x9100u64), cx).map_err(asm)?;
    ap.jmp(top).map_err(asm)?;
    let mut img = crate::image::Image::new(2 << 20);
    let add = |e: crate::BuildError| e.to_string();
    img.add("bsp", BSP, bsp.assemble(BSP).map_err(asm)?)
        .map_err(add)?;
    img.add("ap", SMP_AP, ap.assemble(0).map_err(asm)?)
        .map_err(add)?;
    img.add("gdt", GDT, crate::gdt_blob(GDT)).map_err(add)?;
    Ok(img.into_spec(
        crate::image::protected_entry(BSP as u32, GDT),
        "smp busy loop".into(),
        String::new(),
    ))
}
