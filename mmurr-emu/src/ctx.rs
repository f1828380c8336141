//! Unicorn's saved CPU context, read and written as QEMU's `CPUX86State`.
//!
//! Why: Unicorn's register API cannot read or write the hidden part of CS/DS/ES/SS (base,
//! limit, access rights), the PAE-relevant XCR0/PKRU, or the error code of a pending
//! exception. A saved context (`uc_context_save`) is a byte copy of `CPUX86State`, so those
//! fields are there. Their offsets are not guessed blindly: every offset is either fixed by
//! the start of the structure (verified at open against values written through the register
//! API) or found by writing a distinctive value through the API and locating it
//! ([`Layout::probe`]). If the probe fails — a different Unicorn build — the backend refuses
//! to start rather than record wrong state.
//!
//! The `unsafe` that reaches into Unicorn's raw handle and contexts is in this module.

use unicorn_engine::unicorn_const::{
    uc_context, uc_context_alloc, uc_context_free, uc_context_restore, uc_context_save,
    uc_context_size, uc_error, uc_reg_read, uc_reg_write, uc_x86_mmr, uc_x86_msr,
};
use unicorn_engine::{RegisterX86, Unicorn};

/// Offsets inside `CPUX86State` (target x86_64) that are fixed by the head of the structure:
/// `regs[16]`, `eip`, `eflags`, `cc_dst`, `cc_src`, `cc_src2`, `cc_op`, `df`, `hflags`,
/// `hflags2`, `segs[6]`, `ldt`, `tr`, `gdt`, `idt`, `cr[9]`.
pub const OFF_REGS: usize = 0;
pub const OFF_EIP: usize = 128;
pub const OFF_HFLAGS: usize = 176;
pub const OFF_SEGS: usize = 184;
/// `SegmentCache { u32 selector; u64 base; u32 limit; u32 flags; }`.
pub const SEG_SIZE: usize = 24;
pub const OFF_LDT: usize = OFF_SEGS + 6 * SEG_SIZE;
pub const OFF_TR: usize = OFF_LDT + SEG_SIZE;
pub const OFF_GDT: usize = OFF_TR + SEG_SIZE;
pub const OFF_IDT: usize = OFF_GDT + SEG_SIZE;
pub const OFF_CR: usize = OFF_IDT + SEG_SIZE;

// QEMU's hidden-flag bits (target/i386/cpu.h) that segment loads maintain.
pub const HF_CPL_MASK: u32 = 3;
pub const HF_CS32_MASK: u32 = 1 << 4;
pub const HF_SS32_MASK: u32 = 1 << 5;
pub const HF_ADDSEG_MASK: u32 = 1 << 6;
pub const HF_LMA_MASK: u32 = 1 << 14;
pub const HF_CS64_MASK: u32 = 1 << 15;
/// Descriptor flag bits as QEMU keeps them (the descriptor's high dword).
pub const DESC_B_MASK: u32 = 1 << 22;
pub const DESC_L_MASK: u32 = 1 << 21;
pub const DESC_P_MASK: u32 = 1 << 15;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_PAT: u32 = 0x277;
const MSR_TSC_AUX: u32 = 0xC000_0103;

/// Where the fields found by probing live.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub efer: usize,
    pub xcr0: usize,
    pub pkru: usize,
    pub error_code: usize,
    /// `int old_exception`: QEMU's "exception in flight" for double-fault detection.
    pub old_exception: usize,
}

/// One QEMU segment cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegCache {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// QEMU layout: descriptor high dword bits (type at 8, S 12, DPL 13, P 15, AVL 20, L 21,
    /// D/B 22, G 23).
    pub flags: u32,
}

/// A saved context: an owned `uc_context` allocation.
pub struct Ctx {
    ptr: *mut uc_context,
    /// Byte offset of `data` (the `CPUX86State` copy) inside the allocation.
    data_off: usize,
    data_len: usize,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from uc_context_alloc and is freed exactly once here.
        unsafe {
            uc_context_free(self.ptr);
        }
    }
}

impl Ctx {
    pub fn alloc<D>(uc: &Unicorn<'_, D>) -> Result<Ctx, uc_error> {
        let mut ptr: *mut uc_context = std::ptr::null_mut();
        // SAFETY: the handle is live for the duration of the call; on success `ptr` points to
        // an allocation of uc_context_size() bytes owned by the returned Ctx.
        let total = unsafe {
            let err = uc_context_alloc(uc.get_handle(), &mut ptr);
            if err != uc_error::OK {
                return Err(err);
            }
            uc_context_size(uc.get_handle())
        };
        // The allocation starts with `size_t context_size` (the CPU-state byte count) and ends
        // with the flexible `data[]` member, so data starts at total - context_size.
        // SAFETY: the first field of struct uc_context is a size_t, initialised by alloc.
        let data_len = unsafe { *(ptr as *const usize) };
        if data_len == 0 || data_len >= total {
            // SAFETY: ptr came from uc_context_alloc.
            unsafe { uc_context_free(ptr) };
            return Err(uc_error::ARG);
        }
        Ok(Ctx {
            ptr,
            data_off: total - data_len,
            data_len,
        })
    }

    pub fn save<D>(&mut self, uc: &Unicorn<'_, D>) -> Result<(), uc_error> {
        // SAFETY: live handle, context allocated for this engine.
        let err = unsafe { uc_context_save(uc.get_handle(), self.ptr) };
        if err == uc_error::OK {
            Ok(())
        } else {
            Err(err)
        }
    }

    pub fn restore<D>(&self, uc: &Unicorn<'_, D>) -> Result<(), uc_error> {
        // SAFETY: live handle, context allocated and saved for this engine.
        let err = unsafe { uc_context_restore(uc.get_handle(), self.ptr) };
        if err == uc_error::OK {
            Ok(())
        } else {
            Err(err)
        }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: the allocation holds data_off + data_len bytes and lives as long as self.
        unsafe {
            std::slice::from_raw_parts((self.ptr as *const u8).add(self.data_off), self.data_len)
        }
    }

    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut((self.ptr as *mut u8).add(self.data_off), self.data_len)
        }
    }

    pub fn u64_at(&self, off: usize) -> u64 {
        let d = self.data();
        d.get(off..off + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        let d = self.data();
        d.get(off..off + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }

    pub fn set_u64(&mut self, off: usize, v: u64) {
        if let Some(b) = self.data_mut().get_mut(off..off + 8) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        if let Some(b) = self.data_mut().get_mut(off..off + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Bytes of CPU state in the context.
    pub fn state_size(&self) -> usize {
        self.data_len
    }

    pub fn seg_off(n: usize) -> usize {
        match n {
            0..=5 => OFF_SEGS + n * SEG_SIZE,
            6 => OFF_LDT,
            _ => OFF_TR,
        }
    }

    /// Segment `n`: 0..6 = ES CS SS DS FS GS, 6 = LDTR, 7 = TR.
    pub fn seg(&self, n: usize) -> SegCache {
        let o = Self::seg_off(n);
        SegCache {
            selector: self.u32_at(o) as u16,
            base: self.u64_at(o + 8),
            limit: self.u32_at(o + 16),
            flags: self.u32_at(o + 20),
        }
    }

    fn put_seg(&mut self, n: usize, s: SegCache) {
        let o = Self::seg_off(n);
        self.set_u32(o, s.selector as u32);
        self.set_u64(o + 8, s.base);
        self.set_u32(o + 16, s.limit);
        self.set_u32(o + 20, s.flags);
    }

    pub fn hflags(&self) -> u32 {
        self.u32_at(OFF_HFLAGS)
    }

    pub fn cr(&self, n: usize) -> u64 {
        self.u64_at(OFF_CR + 8 * n)
    }

    /// Loads a segment cache the way QEMU's `cpu_x86_load_seg_cache` does, keeping the hidden
    /// flags (CS32/CS64/SS32/ADDSEG/CPL) consistent with it. `eflags_vm` is RFLAGS.VM.
    pub fn load_seg_cache(&mut self, n: usize, s: SegCache, eflags_vm: bool) {
        self.put_seg(n, s);
        if n > 5 {
            return;
        }
        let mut hflags = self.hflags();
        if n == 1 {
            if hflags & HF_LMA_MASK != 0 && s.flags & DESC_L_MASK != 0 {
                hflags |= HF_CS32_MASK | HF_SS32_MASK | HF_CS64_MASK;
                hflags &= !HF_ADDSEG_MASK;
            } else {
                let cs32 = (s.flags & DESC_B_MASK) >> (22 - 4);
                hflags = (hflags & !(HF_CS32_MASK | HF_CS64_MASK)) | cs32;
            }
        }
        if n == 2 {
            let cpl = (s.flags >> 13) & 3;
            hflags = (hflags & !HF_CPL_MASK) | cpl;
        }
        let mut new = (self.seg(2).flags & DESC_B_MASK) >> (22 - 5);
        if hflags & HF_CS64_MASK != 0 {
            // Zero base assumed for DS, ES and SS in long mode: QEMU leaves ADDSEG alone.
            new |= hflags & HF_ADDSEG_MASK;
        } else if self.cr(0) & 1 == 0
            || eflags_vm
            || hflags & HF_CS32_MASK == 0
            || (self.seg(3).base | self.seg(0).base | self.seg(2).base) != 0
        {
            // Real/VM86/16-bit code always add segment bases; 32-bit code when any of
            // DS/ES/SS has a non-zero base.
            new |= HF_ADDSEG_MASK;
        }
        hflags = (hflags & !(HF_SS32_MASK | HF_ADDSEG_MASK)) | new;
        self.set_u32(OFF_HFLAGS, hflags);
    }

    /// Writes a system segment (LDTR/TR) or a descriptor table without touching hflags.
    pub fn put_system_seg(&mut self, n: usize, s: SegCache) {
        self.put_seg(n, s);
    }

    pub fn put_dtable(&mut self, idt: bool, base: u64, limit: u16) {
        let o = if idt { OFF_IDT } else { OFF_GDT };
        self.set_u64(o + 8, base);
        self.set_u32(o + 16, limit as u32);
    }

    pub fn dtable(&self, idt: bool) -> (u64, u16) {
        let o = if idt { OFF_IDT } else { OFF_GDT };
        (self.u64_at(o + 8), self.u32_at(o + 16) as u16)
    }
}

/// Reads an x86 MSR through Unicorn's register API.
pub fn msr_read<D>(uc: &Unicorn<'_, D>, rid: u32) -> Result<u64, uc_error> {
    let mut msr = uc_x86_msr { rid, value: 0 };
    // SAFETY: UC_X86_REG_MSR takes a pointer to a uc_x86_msr, which lives across the call.
    let err = unsafe {
        uc_reg_read(
            uc.get_handle(),
            RegisterX86::MSR as i32,
            (&mut msr as *mut uc_x86_msr).cast(),
        )
    };
    if err == uc_error::OK {
        Ok(msr.value)
    } else {
        Err(err)
    }
}

pub fn msr_write<D>(uc: &Unicorn<'_, D>, rid: u32, value: u64) -> Result<(), uc_error> {
    let mut msr = uc_x86_msr { rid, value };
    // SAFETY: as in msr_read.
    let err = unsafe {
        uc_reg_write(
            uc.get_handle(),
            RegisterX86::MSR as i32,
            (&mut msr as *mut uc_x86_msr).cast(),
        )
    };
    if err == uc_error::OK {
        Ok(())
    } else {
        Err(err)
    }
}

/// Writes GDTR/IDTR/LDTR/TR through the register API (`uc_x86_mmr`).
pub fn mmr_write<D>(
    uc: &Unicorn<'_, D>,
    reg: RegisterX86,
    mmr: uc_x86_mmr,
) -> Result<(), uc_error> {
    let mut m = mmr;
    // SAFETY: the MMR registers take a pointer to a uc_x86_mmr.
    let err = unsafe {
        uc_reg_write(
            uc.get_handle(),
            reg as i32,
            (&mut m as *mut uc_x86_mmr).cast(),
        )
    };
    if err == uc_error::OK {
        Ok(())
    } else {
        Err(err)
    }
}

pub fn mmr_read<D>(uc: &Unicorn<'_, D>, reg: RegisterX86) -> Result<uc_x86_mmr, uc_error> {
    let mut m = uc_x86_mmr {
        selector: 0,
        base: 0,
        limit: 0,
        flags: 0,
    };
    // SAFETY: as in mmr_write.
    let err = unsafe {
        uc_reg_read(
            uc.get_handle(),
            reg as i32,
            (&mut m as *mut uc_x86_mmr).cast(),
        )
    };
    if err == uc_error::OK {
        Ok(m)
    } else {
        Err(err)
    }
}

fn find_u64(ctx: &Ctx, v: u64) -> Vec<usize> {
    (0..ctx.state_size().saturating_sub(8))
        .step_by(4)
        .filter(|&o| ctx.u64_at(o) == v)
        .collect()
}

impl Layout {
    /// Verifies the fixed offsets and finds the others on a freshly opened engine, by writing
    /// distinctive values through Unicorn's API and locating them in a saved context. The
    /// engine's registers are restored afterwards.
    pub fn probe<D>(uc: &mut Unicorn<'_, D>) -> Result<Layout, String> {
        let fail = |what: &str| {
            format!(
                "mmurr-emu: this Unicorn build's CPU context layout is not the one mmurr-emu knows \
                 ({what}); hidden segment state cannot be read exactly. Build against unicorn-engine 2.1.x."
            )
        };
        let mut pristine = Ctx::alloc(uc).map_err(|e| fail(&format!("context alloc: {e:?}")))?;
        pristine
            .save(uc)
            .map_err(|e| fail(&format!("context save: {e:?}")))?;

        let gprs = [
            RegisterX86::RAX,
            RegisterX86::RCX,
            RegisterX86::RDX,
            RegisterX86::RBX,
            RegisterX86::RSP,
            RegisterX86::RBP,
            RegisterX86::RSI,
            RegisterX86::RDI,
            RegisterX86::R8,
            RegisterX86::R9,
            RegisterX86::R10,
            RegisterX86::R11,
            RegisterX86::R12,
            RegisterX86::R13,
            RegisterX86::R14,
            RegisterX86::R15,
        ];
        let magic = |i: u64| 0x5a5a_0000_1234_0000u64 | (i << 8) | 0x11;
        for (i, r) in gprs.iter().enumerate() {
            uc.reg_write(*r, magic(i as u64))
                .map_err(|e| fail(&format!("gpr write {e:?}")))?;
        }
        uc.reg_write(RegisterX86::RIP, 0x1234_5678_9abc)
            .map_err(|e| fail(&format!("{e:?}")))?;
        let mmr = |sel: u16, base: u64, limit: u32, flags: u32| uc_x86_mmr {
            selector: sel,
            base,
            limit,
            flags,
        };
        mmr_write(uc, RegisterX86::GDTR, mmr(0, 0x1111_2222_3333, 0x2f, 0))
            .map_err(|e| fail(&format!("{e:?}")))?;
        mmr_write(uc, RegisterX86::IDTR, mmr(0, 0x4444_5555_6666, 0x7f, 0))
            .map_err(|e| fail(&format!("{e:?}")))?;
        mmr_write(uc, RegisterX86::LDTR, mmr(0x28, 0x7777_8888, 0xabc, 0x8200))
            .map_err(|e| fail(&format!("{e:?}")))?;
        mmr_write(uc, RegisterX86::TR, mmr(0x30, 0x9999_aaaa, 0x67, 0x8b00))
            .map_err(|e| fail(&format!("{e:?}")))?;
        uc.reg_write(RegisterX86::FS_BASE, 0x0f0f_0000_f5f5)
            .map_err(|e| fail(&format!("{e:?}")))?;
        uc.reg_write(RegisterX86::GS_BASE, 0x0e0e_0000_e6e6)
            .map_err(|e| fail(&format!("{e:?}")))?;
        uc.reg_write(RegisterX86::CR2, 0xdead_beef_0042)
            .map_err(|e| fail(&format!("{e:?}")))?;
        uc.reg_write(RegisterX86::CR8, 0x7)
            .map_err(|e| fail(&format!("{e:?}")))?;
        let drs = [
            RegisterX86::DR0,
            RegisterX86::DR1,
            RegisterX86::DR2,
            RegisterX86::DR3,
        ];
        for (i, r) in drs.iter().enumerate() {
            uc.reg_write(*r, 0x0d0d_0000_0000_1000 + i as u64)
                .map_err(|e| fail(&format!("{e:?}")))?;
        }
        let pat = 0x0007_0406_0007_0401u64;
        msr_write(uc, MSR_PAT, pat).map_err(|e| fail(&format!("PAT {e:?}")))?;
        let aux = 0x3c3c_a5a5u64;
        msr_write(uc, MSR_TSC_AUX, aux).map_err(|e| fail(&format!("TSC_AUX {e:?}")))?;
        let efer = msr_read(uc, MSR_EFER).map_err(|e| fail(&format!("EFER {e:?}")))?;

        let mut c = Ctx::alloc(uc).map_err(|e| fail(&format!("{e:?}")))?;
        c.save(uc).map_err(|e| fail(&format!("{e:?}")))?;

        for i in 0..16 {
            if c.u64_at(OFF_REGS + 8 * i) != magic(i as u64) {
                return Err(fail("general registers"));
            }
        }
        if c.u64_at(OFF_EIP) != 0x1234_5678_9abc {
            return Err(fail("eip"));
        }
        if c.dtable(false) != (0x1111_2222_3333, 0x2f) || c.dtable(true) != (0x4444_5555_6666, 0x7f)
        {
            return Err(fail("gdt/idt"));
        }
        let ldt = c.seg(6);
        let tr = c.seg(7);
        if ldt
            != (SegCache {
                selector: 0x28,
                base: 0x7777_8888,
                limit: 0xabc,
                flags: 0x8200,
            })
            || tr
                != (SegCache {
                    selector: 0x30,
                    base: 0x9999_aaaa,
                    limit: 0x67,
                    flags: 0x8b00,
                })
        {
            return Err(fail("ldt/tr"));
        }
        if c.seg(4).base != 0x0f0f_0000_f5f5 || c.seg(5).base != 0x0e0e_0000_e6e6 {
            return Err(fail("segment bases"));
        }
        if c.cr(2) != 0xdead_beef_0042 || c.cr(8) != 7 {
            return Err(fail("control registers"));
        }
        let dr = find_u64(&c, 0x0d0d_0000_0000_1000);
        let dr_off = dr
            .into_iter()
            .find(|&o| (1..4).all(|i| c.u64_at(o + 8 * i) == 0x0d0d_0000_0000_1000 + i as u64))
            .ok_or_else(|| fail("debug registers"))?;
        // `int error_code; int exception_is_int; target_ulong exception_next_eip;` precede dr[].
        let error_code = dr_off - 16;
        let pat_off = *find_u64(&c, pat).first().ok_or_else(|| fail("PAT"))?;
        // `u64 pat; u32 smbase; u64 msr_smi_count; u32 pkru;`
        let pkru = pat_off + 24;
        let aux_off = *find_u64(&c, aux).first().ok_or_else(|| fail("TSC_AUX"))?;
        // `u64 tsc_aux; u64 xcr0;`
        let xcr0 = aux_off + 8;
        // `efer` follows cr[9], a20_mask, bnd_regs[4], bndcs_regs and msr_bndcfgs.
        let efer_off = OFF_CR + 9 * 8 + 8 + 64 + 16 + 8;
        if c.u64_at(efer_off) != efer {
            return Err(fail("efer"));
        }
        pristine
            .restore(uc)
            .map_err(|e| fail(&format!("restore {e:?}")))?;
        // `dr[8]`, then a union of four pointers, then `int old_exception` (-1 at reset).
        let old_exception = dr_off + 64 + 32;
        if c.u32_at(old_exception) != u32::MAX {
            return Err(fail("old_exception"));
        }
        Ok(Layout {
            efer: efer_off,
            xcr0,
            pkru,
            error_code,
            old_exception,
        })
    }
}
