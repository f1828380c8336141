//! Architectural delivery of exceptions and software interrupts.
//!
//! Why: stock Unicorn hands every exception and `int n` to the interrupt hook and never
//! delivers it through the guest's IVT/IDT. mmurr-emu delivers it the way the CPU does:
//! real mode through the IVT; protected mode through 16/32-bit interrupt and trap gates, with
//! a stack switch from the TSS on a privilege change; long mode through 64-bit gates with IST,
//! stack alignment and SS:RSP always pushed. Error codes are QEMU's (read from its CPU state).
//!
//! Deviations (documented, reported as a clear error where they matter): task gates and
//! virtual-8086 mode are not supported; any fault while delivering (IDT limit, not-present
//! gate, bad code segment, unwritable stack) is reported as #DF, and a fault while delivering
//! #DF as a triple fault (shutdown), rather than distinguishing benign/contributory classes
//! and the exact nested vector.

use crate::engine::HookState;
use traces::{Regs, Segment};
use unicorn_engine::Unicorn;

/// One delivered exception or interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// RIP of the faulting (or, for `int n`, the next) instruction.
    pub from_rip: u64,
}

pub enum Outcome {
    /// The registers after delivery (boxed: a `Regs` is large).
    Delivered(Box<Regs>, Delivered),
    Shutdown,
    Unsupported(String),
}

/// Vectors that push an error code.
pub fn has_error_code(v: u32) -> bool {
    matches!(v, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Guest-linear memory for the delivery's own accesses (IVT/IDT, GDT/LDT, TSS, the new
/// stack), translated by the reference walker as the CPU does for them: descriptor tables and
/// the TSS as implicit supervisor accesses whatever the CPL, the stack at the handler's CPL.
/// The walk sets accessed/dirty bits like the CPU; every byte written is recorded as the
/// step's written ranges.
pub struct Mem<'a, 'b> {
    pub uc: &'a mut Unicorn<'b, HookState>,
    pub regs: mmu::ControlRegs,
    pub cpu: mmu::CpuModel,
    /// CPL for stack accesses (the handler's), set by the delivery code.
    pub stack_cpl: u8,
}

/// Physical memory through Unicorn, writes recorded.
struct Phys<'a, 'b>(&'a mut Unicorn<'b, HookState>);

impl mmu::GuestMemory for Phys<'_, '_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let st = self.0.get_data();
        st.ram
            .iter()
            .any(|&(b, s)| gpa >= b && gpa + buf.len() as u64 <= b + s)
            && self.0.mem_read(gpa, buf).is_ok()
    }
}

impl mmu::GuestMemoryMut for Phys<'_, '_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let ok = {
            let st = self.0.get_data();
            st.ram
                .iter()
                .any(|&(b, s)| gpa >= b && gpa + data.len() as u64 <= b + s)
        };
        if !ok || self.0.mem_write(gpa, data).is_err() {
            return false;
        }
        self.0.get_data_mut().writes.push((gpa, data.len() as u64));
        true
    }
}

impl Mem<'_, '_> {
    fn translate(
        &mut self,
        la: u64,
        len: usize,
        access: mmu::Access,
        cpl: u8,
        implicit: bool,
    ) -> Option<Vec<(u64, usize)>> {
        let req = mmu::AccessRequest {
            access,
            cpl,
            implicit_supervisor: implicit,
            rflags_ac: false,
        };
        let mut parts = Vec::new();
        let mut done = 0usize;
        while done < len {
            let a = la.wrapping_add(done as u64);
            let chunk = ((0x1000 - (a & 0xfff)) as usize).min(len - done);
            let w = mmu::walk_mut(&self.regs, &self.cpu, &mut Phys(self.uc), a, &req);
            parts.push((w.result.ok()?.gpa, chunk));
            done += chunk;
        }
        Some(parts)
    }

    /// A descriptor-table or TSS read (implicit supervisor access).
    pub fn read(&mut self, la: u64, buf: &mut [u8]) -> bool {
        let Some(parts) = self.translate(la, buf.len(), mmu::Access::Read, 0, true) else {
            return false;
        };
        let mut off = 0;
        for (pa, n) in parts {
            if !mmu::GuestMemory::read(&Phys(self.uc), pa, &mut buf[off..off + n]) {
                return false;
            }
            off += n;
        }
        true
    }

    /// A push onto the handler's stack.
    pub fn write(&mut self, la: u64, data: &[u8]) -> bool {
        let cpl = self.stack_cpl;
        let Some(parts) = self.translate(la, data.len(), mmu::Access::Write, cpl, false) else {
            return false;
        };
        let mut off = 0;
        for (pa, n) in parts {
            if !mmu::GuestMemoryMut::write(&mut Phys(self.uc), pa, &data[off..off + n]) {
                return false;
            }
            off += n;
        }
        true
    }

    fn read_u64(&mut self, la: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(la, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn read_u32(&mut self, la: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(la, &mut b).then(|| u32::from_le_bytes(b))
    }

    fn read_u16(&mut self, la: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(la, &mut b).then(|| u16::from_le_bytes(b))
    }
}

enum Fail {
    /// A fault during delivery (becomes #DF, or shutdown while delivering #DF).
    Fault,
    Unsupported(String),
}

const IF: u64 = 1 << 9;
const TF: u64 = 1 << 8;
const NT: u64 = 1 << 14;
const RF: u64 = 1 << 16;
const VM: u64 = 1 << 17;
const AC: u64 = 1 << 18;

/// Delivers `vector`; on a fault during delivery, #DF; on a fault delivering #DF, shutdown.
pub fn deliver(
    mem: &mut Mem,
    regs: &Regs,
    vector: u8,
    error_code: Option<u32>,
    software: bool,
) -> Outcome {
    let (mut v, mut e, mut soft) = (vector, error_code, software);
    loop {
        match deliver_once(mem, regs, v, e, soft) {
            Ok(r) => {
                return Outcome::Delivered(
                    Box::new(r),
                    Delivered {
                        vector: v,
                        error_code: e,
                        from_rip: regs.rip,
                    },
                )
            }
            Err(Fail::Unsupported(m)) => return Outcome::Unsupported(m),
            Err(Fail::Fault) if v == 8 => return Outcome::Shutdown,
            Err(Fail::Fault) => {
                v = 8;
                e = Some(0);
                soft = false;
            }
        }
    }
}

fn cpl(r: &Regs) -> u8 {
    ((r.seg[traces::regs::SS].attrs >> 5) & 3) as u8
}

fn deliver_once(
    mem: &mut Mem,
    r: &Regs,
    v: u8,
    err: Option<u32>,
    software: bool,
) -> Result<Regs, Fail> {
    if r.rflags & VM != 0 {
        return Err(Fail::Unsupported("virtual-8086 mode".into()));
    }
    if r.cr0 & 1 == 0 {
        return real_mode(mem, r, v);
    }
    // The RFLAGS image pushed for a fault has RF set, so that the faulting instruction, run
    // again after `iret`, does not hit its instruction breakpoint a second time (SDM Vol. 3A
    // 2.3 "RF", 6.15); the handler itself runs with RF clear.
    let mut saved = r.clone();
    if !software && is_fault(v) {
        saved.rflags |= RF;
    }
    if r.efer & (1 << 10) != 0 {
        long_mode(mem, &saved, v, err, software)
    } else {
        protected_mode(mem, &saved, v, err, software)
    }
}

/// Vectors of the fault class (SDM Vol. 3A Table 6-1); #DB (1) counts as the trap the engine
/// raises it as, #DF and #MC are aborts.
fn is_fault(v: u8) -> bool {
    matches!(v, 0 | 5 | 6 | 7 | 10..=14 | 16 | 17 | 19 | 20 | 21)
}

fn real_mode(mem: &mut Mem, r: &Regs, v: u8) -> Result<Regs, Fail> {
    let off = v as u64 * 4;
    if off + 3 > r.idtr.limit as u64 {
        return Err(Fail::Fault);
    }
    let ip = mem.read_u16(r.idtr.base + off).ok_or(Fail::Fault)?;
    let cs = mem.read_u16(r.idtr.base + off + 2).ok_or(Fail::Fault)?;
    let mut n = r.clone();
    let ss = r.seg[traces::regs::SS];
    let mut sp = r.gpr[4] as u16;
    mem.stack_cpl = 0;
    for val in [r.rflags as u16, r.seg[1].selector, r.rip as u16] {
        sp = sp.wrapping_sub(2);
        if !mem.write(
            ss.base.wrapping_add(sp as u64) & 0xffff_ffff,
            &val.to_le_bytes(),
        ) {
            return Err(Fail::Fault);
        }
    }
    n.gpr[4] = (r.gpr[4] & !0xffff) | sp as u64;
    n.rflags &= !(IF | TF | AC);
    n.seg[1].selector = cs;
    n.seg[1].base = (cs as u64) << 4;
    n.rip = ip as u64;
    Ok(n)
}

/// Reads the code-segment descriptor for `sel` from the GDT or LDT.
fn descriptor(mem: &mut Mem, r: &Regs, sel: u16) -> Result<u64, Fail> {
    if sel & 0xfffc == 0 {
        return Err(Fail::Fault);
    }
    let (base, limit) = if sel & 4 != 0 {
        (r.ldtr.base, r.ldtr.limit as u64)
    } else {
        (r.gdtr.base, r.gdtr.limit as u64)
    };
    let idx = (sel & !7) as u64;
    if idx + 7 > limit {
        return Err(Fail::Fault);
    }
    mem.read_u64(base + idx).ok_or(Fail::Fault)
}

fn seg_from_descriptor(sel: u16, d: u64) -> Segment {
    let (base, limit, flags) = crate::regs::decode_descriptor(d);
    // The CPU sets the accessed bit when it loads a descriptor.
    Segment {
        selector: sel,
        base,
        limit,
        attrs: crate::regs::attrs_from_flags(flags | (1 << 8)),
    }
}

struct Gate {
    offset: u64,
    selector: u16,
    kind: u8,
    dpl: u8,
    ist: u8,
}

fn check_code(d: u64) -> Result<(u8, bool), Fail> {
    let e2 = (d >> 32) as u32;
    let present = e2 & (1 << 15) != 0;
    let code = e2 & (1 << 12) != 0 && e2 & (1 << 11) != 0;
    if !present || !code {
        return Err(Fail::Fault);
    }
    let dpl = ((e2 >> 13) & 3) as u8;
    let conforming = e2 & (1 << 10) != 0;
    Ok((dpl, conforming))
}

fn protected_mode(
    mem: &mut Mem,
    r: &Regs,
    v: u8,
    err: Option<u32>,
    software: bool,
) -> Result<Regs, Fail> {
    let off = v as u64 * 8;
    if off + 7 > r.idtr.limit as u64 {
        return Err(Fail::Fault);
    }
    let g = mem.read_u64(r.idtr.base + off).ok_or(Fail::Fault)?;
    let gate = Gate {
        offset: (g & 0xffff) | ((g >> 48) << 16),
        selector: (g >> 16) as u16,
        kind: ((g >> 40) & 0x1f) as u8,
        dpl: ((g >> 45) & 3) as u8,
        ist: 0,
    };
    if g & (1 << 47) == 0 {
        return Err(Fail::Fault);
    }
    let (size, interrupt) = match gate.kind {
        0x5 => return Err(Fail::Unsupported("task gate in the IDT".into())),
        0x6 => (2u64, true),
        0x7 => (2, false),
        0xe => (4, true),
        0xf => (4, false),
        _ => return Err(Fail::Fault),
    };
    let cur = cpl(r);
    if software && gate.dpl < cur {
        return Err(Fail::Fault);
    }
    let d = descriptor(mem, r, gate.selector)?;
    let (dpl, conforming) = check_code(d)?;
    let mut n = r.clone();
    let new_cpl = if conforming || dpl == cur {
        cur
    } else if dpl < cur {
        dpl
    } else {
        return Err(Fail::Fault);
    };
    let mut ss = r.seg[traces::regs::SS];
    let mut sp = r.gpr[4];
    let mut frame: Vec<u64> = Vec::new();
    if new_cpl < cur {
        // Inner-privilege stack from the TSS.
        let tss32 = r.tr.attrs & 0xf == 0xb || r.tr.attrs & 0xf == 0x9;
        let (nsp, nss) = if tss32 {
            let p = r.tr.base + 4 + 8 * new_cpl as u64;
            (
                mem.read_u32(p).ok_or(Fail::Fault)? as u64,
                mem.read_u16(p + 4).ok_or(Fail::Fault)?,
            )
        } else {
            let p = r.tr.base + 2 + 4 * new_cpl as u64;
            (
                mem.read_u16(p).ok_or(Fail::Fault)? as u64,
                mem.read_u16(p + 2).ok_or(Fail::Fault)?,
            )
        };
        let sd = descriptor(mem, r, nss)?;
        frame.push(r.seg[traces::regs::SS].selector as u64);
        frame.push(r.gpr[4]);
        ss = seg_from_descriptor(nss, sd);
        sp = nsp;
    }
    frame.extend([r.rflags, r.seg[1].selector as u64, r.rip]);
    if let Some(e) = err {
        frame.push(e as u64);
    }
    mem.stack_cpl = new_cpl;
    let big = ss.attrs & (1 << 14) != 0;
    let mask = if big { 0xffff_ffffu64 } else { 0xffff };
    for val in frame {
        sp = sp.wrapping_sub(size) & mask | (sp & !mask);
        let la = ss.base.wrapping_add(sp & mask) & 0xffff_ffff;
        let bytes = val.to_le_bytes();
        if !mem.write(la, &bytes[..size as usize]) {
            return Err(Fail::Fault);
        }
    }
    n.gpr[4] = (r.gpr[4] & !mask) | (sp & mask);
    if new_cpl < cur {
        n.gpr[4] = sp & mask;
        n.seg[traces::regs::SS] = ss;
    }
    n.rflags &= !(TF | NT | RF | VM);
    if interrupt {
        n.rflags &= !IF;
    }
    n.seg[1] = seg_from_descriptor((gate.selector & !3) | new_cpl as u16, d);
    n.rip = if size == 2 {
        gate.offset & 0xffff
    } else {
        gate.offset
    };
    Ok(n)
}

fn long_mode(
    mem: &mut Mem,
    r: &Regs,
    v: u8,
    err: Option<u32>,
    software: bool,
) -> Result<Regs, Fail> {
    let off = v as u64 * 16;
    if off + 15 > r.idtr.limit as u64 {
        return Err(Fail::Fault);
    }
    let lo = mem.read_u64(r.idtr.base + off).ok_or(Fail::Fault)?;
    let hi = mem.read_u64(r.idtr.base + off + 8).ok_or(Fail::Fault)?;
    let gate = Gate {
        offset: (lo & 0xffff) | (((lo >> 48) & 0xffff) << 16) | ((hi & 0xffff_ffff) << 32),
        selector: (lo >> 16) as u16,
        kind: ((lo >> 40) & 0x1f) as u8,
        dpl: ((lo >> 45) & 3) as u8,
        ist: ((lo >> 32) & 7) as u8,
    };
    if lo & (1 << 47) == 0 {
        return Err(Fail::Fault);
    }
    let interrupt = match gate.kind {
        0xe => true,
        0xf => false,
        _ => return Err(Fail::Fault),
    };
    let cur = cpl(r);
    if software && gate.dpl < cur {
        return Err(Fail::Fault);
    }
    let d = descriptor(mem, r, gate.selector)?;
    let (dpl, conforming) = check_code(d)?;
    let e2 = (d >> 32) as u32;
    if e2 & (1 << 21) == 0 || e2 & (1 << 22) != 0 {
        return Err(Fail::Fault); // not a 64-bit code segment
    }
    let new_cpl = if conforming || dpl == cur {
        cur
    } else if dpl < cur {
        dpl
    } else {
        return Err(Fail::Fault);
    };
    let mut n = r.clone();
    let mut rsp = r.gpr[4];
    if new_cpl < cur {
        rsp = mem
            .read_u64(r.tr.base + 4 + 8 * new_cpl as u64)
            .ok_or(Fail::Fault)?;
    }
    if gate.ist != 0 {
        rsp = mem
            .read_u64(r.tr.base + 0x24 + 8 * (gate.ist as u64 - 1))
            .ok_or(Fail::Fault)?;
    }
    rsp &= !0xf;
    mem.stack_cpl = new_cpl;
    let mut frame = vec![
        r.seg[traces::regs::SS].selector as u64,
        r.gpr[4],
        r.rflags,
        r.seg[1].selector as u64,
        r.rip,
    ];
    if let Some(e) = err {
        frame.push(e as u64);
    }
    for val in frame {
        rsp = rsp.wrapping_sub(8);
        if !mem.write(rsp, &val.to_le_bytes()) {
            return Err(Fail::Fault);
        }
    }
    n.gpr[4] = rsp;
    if new_cpl < cur {
        // A null SS with RPL = new CPL, as the CPU (and QEMU) load it.
        n.seg[traces::regs::SS] = Segment {
            selector: new_cpl as u16,
            base: 0,
            limit: 0,
            attrs: crate::regs::attrs_from_flags((new_cpl as u32) << 13),
        };
    }
    n.rflags &= !(TF | NT | RF | VM);
    if interrupt {
        n.rflags &= !IF;
    }
    n.seg[1] = seg_from_descriptor((gate.selector & !3) | new_cpl as u16, d);
    n.rip = gate.offset;
    Ok(n)
}
