//! The Unicorn backend: engine setup, hooks, and the [`Backend`] implementation.
//!
//! One step is one architectural instruction, or one iteration of a `rep` string instruction
//! (as KVM single-step reports it: RIP stays on the instruction until the last iteration, whose
//! step also retires it), or the delivery of one exception together with the faulting
//! instruction. Unicorn itself needs one extra `emu_start` for the final, empty check of a
//! `rep` loop; [`EmuBackend::step`] folds it into the last iteration's step. A #PF that Unicorn
//! raises while looking up a branch target belongs to the next step, not the branch's.
//!
//! The only `unsafe` here is the guest-RAM mapping lent to Unicorn and `uc_version`; the rest
//! of the raw-handle work is in [`crate::ctx`].

use crate::ctx::{self, Ctx, Layout, SegCache, HF_LMA_MASK, OFF_CR, OFF_EIP, OFF_HFLAGS, OFF_REGS};
use crate::decode::{self, Decoded, Kind};
use crate::exceptions;
use crate::ram::{in_ram, RamBuf, RamView};
use crate::regs::{cache_from_segment, segment_from_cache};
use crate::trampoline::{self, EntryMode, SCRATCH_SIZE};
use recorder::{Backend, BackendError, Exit, StepResult, Written};
use std::cell::RefCell;
use std::rc::Rc;
use traces::{
    BackendInfo, BackendKind, CpuidEntry, DescriptorTable, GuestSpec, RegionKind, Regs, Segment,
};
use unicorn_engine::unicorn_const::{uc_error, Arch, HookType, MemType, Mode, Prot};
use unicorn_engine::{RegisterX86, Unicorn};

mod machine;
// --- runs (many instructions per emu_start): see engine/run.rs ---
mod rep;
mod run;
mod syscall;
pub use run::needs_step;
// --- end runs ---

pub const MSR_EFER: u32 = 0xC000_0080;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
use mmu::bits::EFER_LMA;

/// What the hooks saw during one `emu_start`.
#[derive(Default)]
pub struct HookState {
    /// Guest-physical ranges written (RAM only).
    pub writes: Vec<(u64, u64)>,
    /// The step's writes cannot be listed (the instruction completes later).
    pub writes_unknown: bool,
    pub out: Option<(u16, u8, u32)>,
    /// Value for the next `in`; consumed by the hook.
    pub in_value: Option<u32>,
    /// An `in` executed without a value (should not happen: `in` is intercepted by decoding).
    pub in_unanswered: Option<(u16, u8)>,
    /// First exception/interrupt vector raised.
    pub intr: Option<u32>,
    pub mmio_value: Option<u64>,
    pub mmio_read: Option<(u64, u8)>,
    pub mmio_write: Option<(u64, u8, u64)>,
    pub unmapped: Option<(MemType, u64, usize)>,
    pub ram: Vec<(u64, u64)>,
    /// Runs: the block cache, dirty pages and undo log (engine/run.rs).
    pub run: run::RunHooks,
    /// The PC platform (set by `load`), reached by the port and MMIO hooks.
    pub machine: Option<machine::Machine>,
}

pub(crate) fn engine_err(what: &str, e: uc_error) -> BackendError {
    BackendError::Engine(format!("mmurr-emu: Unicorn {what} failed: {e:?} ({e})"))
}

/// The emu backend.
pub struct EmuBackend {
    uc: Unicorn<'static, HookState>,
    /// Runs: a second engine, without Unicorn's instruction count (engine/run.rs), opened by
    /// the first run. Declared before the memory it maps too.
    runner: Option<Unicorn<'static, HookState>>,
    runner_tried: bool,
    /// Declared after `uc` (and `runner`) so that Unicorn is closed before the memory it maps
    /// is freed (the engines of the other vCPUs of the machine share it, and the last one
    /// frees it).
    ram_buf: Option<Rc<RamBuf>>,
    /// The PDPTE shadow page (see [`EmuBackend::sync_pae`]), ours so both engines map it.
    pdpt_buf: Option<RamBuf>,
    /// Guest RAM as the steps so far reported it (loads, host writes, every step's written
    /// ranges): what RAM held before the current step wherever the step reported nothing.
    /// Lazily committed like RAM itself. See [`EmuBackend::defer_lookahead`]. Shared by the
    /// engines of all vCPUs, like RAM.
    mirror: Option<Rc<RefCell<RamBuf>>>,
    /// vCPUs of the machine (the platform's local APICs), and which one this engine is.
    pub(crate) smp_cpus: u32,
    pub(crate) smp_index: u32,
    /// Guest-physical pages of the instructions decoded since the machine last took them
    /// (several vCPUs only): where this engine may hold translated code.
    pub(crate) code_pages: Vec<u64>,
    /// The guest's own CPUID table when it is not the engine's (a trace recorded on KVM):
    /// Unicorn's CPUID hook answers from it. Declared after `uc`, which holds a pointer to it.
    guest_cpuid: Option<Box<crate::cpuid::GuestCpuid>>,
    /// The CPUID the guest sees: the engine's own, or the guest spec's.
    cpuid: Vec<CpuidEntry>,
    cpu: mmu::CpuModel,
    layout: Layout,
    /// Scratch context used to read/write the CPU state.
    ctx: Ctx,
    /// The CPU as Unicorn opened it: the trampoline's starting point.
    pristine: Ctx,
    ram_size: u64,
    ram: Vec<(u64, u64)>,
    mmio: Vec<(u64, u64)>,
    pdptrs: [u64; 4],
    pending_in: Option<(u16, u8)>,
    pending_mmio: bool,
    /// The write of an MMIO read-modify-write, made when `complete_mmio_read` finished it.
    completion_write: Option<Exit>,
    loaded: bool,
    /// A guest-physical page outside RAM holding the PAE PDPTE *registers*, and the guest's
    /// CR3 while Unicorn's CR3 points there (PAE paging active). See [`EmuBackend::sync_pae`].
    pdpt_shadow: Option<u64>,
    guest_cr3: Option<u64>,
    /// The registers as last read, valid until the CPU state changes.
    regs_cache: Option<Regs>,
    /// CS was a 64-bit code segment when the current step started.
    ctx_long_before: bool,
    /// Vectors delivered so far (for tests).
    pub delivered: Vec<exceptions::Delivered>,
    /// What the current step delivered, for the recorder ([`Backend::take_deliveries`]).
    step_deliveries: Vec<recorder::Delivery>,
    /// Whether the last load needed host fix-ups beyond the trampoline (field names).
    pub entry_fixups: Vec<String>,
    /// What the guest's CPUID table offers that the engine does not emulate (set by `load`).
    pub warnings: Vec<String>,
}

impl EmuBackend {
    /// Opens Unicorn in 64-bit mode (so every 64-bit register reads correctly in all guest
    /// modes) and verifies the context layout.
    pub fn new() -> Result<EmuBackend, BackendError> {
        // Unicorn warns on stderr for some register writes in modes where they are unusual;
        // our writes are deliberate.
        std::env::set_var("UC_IGNORE_REG_BREAK", "1");
        let mut uc = Unicorn::new_with_data(Arch::X86, Mode::MODE_64, HookState::default())
            .map_err(|e| engine_err("open", e))?;
        uc.ctl_set_cpu_model(crate::cpuid::CPU_MODEL as i32)
            .map_err(|e| engine_err("set CPU model", e))?;
        let layout = Layout::probe(&mut uc).map_err(BackendError::Engine)?;
        let ctx = Ctx::alloc(&uc).map_err(|e| engine_err("context alloc", e))?;
        let mut pristine = Ctx::alloc(&uc).map_err(|e| engine_err("context alloc", e))?;
        pristine
            .save(&uc)
            .map_err(|e| engine_err("context save", e))?;
        let cpuid = Self::probe_cpuid()?;
        let cpu = recorder::guest_view::cpu_model(&cpuid);
        let mut b = EmuBackend {
            uc,
            runner: None,
            runner_tried: false,
            ram_buf: None,
            pdpt_buf: None,
            mirror: None,
            smp_cpus: 1,
            smp_index: 0,
            code_pages: Vec::new(),
            guest_cpuid: None,
            cpuid,
            cpu,
            layout,
            ctx,
            pristine,
            ram_size: 0,
            ram: Vec::new(),
            mmio: Vec::new(),
            pdptrs: [0; 4],
            pending_in: None,
            pending_mmio: false,
            completion_write: None,
            loaded: false,
            ctx_long_before: false,
            regs_cache: None,
            pdpt_shadow: None,
            guest_cr3: None,
            delivered: Vec::new(),
            step_deliveries: Vec::new(),
            entry_fixups: Vec::new(),
            warnings: Vec::new(),
        };
        b.add_hooks()?;
        Ok(b)
    }

    fn add_hooks(&mut self) -> Result<(), BackendError> {
        let uc = &mut self.uc;
        add_common_hooks(uc)?;
        uc.add_insn_out_hook(|uc, port, size, value| {
            let st = uc.get_data_mut();
            if machine::out_hook(st, port as u16, size as u8, value) {
                return;
            }
            if st.out.is_none() {
                st.out = Some((port as u16, size as u8, value));
            }
        })
        .map_err(|e| engine_err("hook", e))?;
        uc.add_insn_in_hook(|uc, port, size| {
            let st = uc.get_data_mut();
            match st.in_value.take() {
                Some(v) => v,
                None => {
                    st.in_unanswered = Some((port as u16, size as u8));
                    let _ = uc.emu_stop();
                    0xffff_ffff
                }
            }
        })
        .map_err(|e| engine_err("hook", e))?;
        uc.add_mem_hook(HookType::MEM_UNMAPPED, 1, 0, |uc, ty, addr, size, _v| {
            note_unmapped(uc, ty, addr, size);
            false
        })
        .map_err(|e| engine_err("hook", e))?;
        Ok(())
    }

    pub fn engine_version() -> String {
        let v = unsafe_version();
        format!(
            "unicorn {}.{}.{}",
            (v >> 24) & 0xff,
            (v >> 16) & 0xff,
            (v >> 8) & 0xff
        )
    }

    fn save(&mut self) -> Result<(), BackendError> {
        self.ctx
            .save(&self.uc)
            .map_err(|e| engine_err("context save", e))
    }

    fn read_regs_from_ctx(&mut self) -> Result<Regs, BackendError> {
        if let Some(r) = &self.regs_cache {
            return Ok(r.clone());
        }
        self.save()?;
        let c = &self.ctx;
        let mut r = Regs::default();
        for i in 0..16 {
            r.gpr[i] = c.u64_at(OFF_REGS + 8 * i);
        }
        r.rip = c.u64_at(OFF_EIP);
        for n in 0..6 {
            r.seg[n] = segment_from_cache(c.seg(n));
        }
        r.ldtr = segment_from_cache(c.seg(6));
        r.tr = segment_from_cache(c.seg(7));
        let (gb, gl) = c.dtable(false);
        let (ib, il) = c.dtable(true);
        r.gdtr = DescriptorTable {
            base: gb,
            limit: gl,
        };
        r.idtr = DescriptorTable {
            base: ib,
            limit: il,
        };
        r.cr0 = c.cr(0);
        r.cr2 = c.cr(2);
        r.cr3 = self.guest_cr3.unwrap_or(c.cr(3));
        r.cr4 = c.cr(4);
        r.cr8 = c.cr(8);
        r.efer = c.u64_at(self.layout.efer);
        r.xcr0 = c.u64_at(self.layout.xcr0);
        r.pkru = c.u32_at(self.layout.pkru);
        r.rflags = self
            .uc
            .reg_read(RegisterX86::RFLAGS)
            .map_err(|e| engine_err("reg read", e))?;
        r.kernel_gs_base = ctx::msr_read(&self.uc, MSR_KERNEL_GS_BASE).unwrap_or(0);
        r.pdptrs = self.pdptrs;
        self.regs_cache = Some(r.clone());
        Ok(r)
    }

    /// QEMU remembers a contributory exception or #PF "in flight" to turn the next one into #DF
    /// (and then into a triple fault that silently halts the engine). Its own delivery code
    /// clears that memory, but Unicorn never runs it: mmurr-emu delivers (or discards) the
    /// exception, so it clears it. The field is checked to hold the vector QEMU just raised.
    fn clear_exception_in_flight(&mut self, vector: u32) -> Result<(), BackendError> {
        self.save()?;
        let off = self.layout.old_exception;
        let held = self.ctx.u32_at(off);
        let tracked = matches!(vector, 0 | 8 | 10..=14);
        if tracked && held != vector {
            return Err(BackendError::Engine(format!(
                "mmurr-emu: after exception {vector} QEMU's in-flight exception field holds {held:#x}: \
                 this Unicorn build's CPU context layout is not the one mmurr-emu knows"
            )));
        }
        if held != u32::MAX {
            self.ctx.set_u32(off, u32::MAX);
            self.ctx
                .restore(&self.uc)
                .map_err(|e| engine_err("context restore", e))?;
        }
        Ok(())
    }

    /// The error code QEMU computed for the exception just raised.
    fn pending_error_code(&mut self) -> Result<u32, BackendError> {
        self.save()?;
        Ok(self.ctx.u32_at(self.layout.error_code))
    }

    fn map_memory(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        let page = |x: u64| (x + 0xfff) & !0xfff;
        let ram_size = page(guest.ram_size);
        if ram_size == 0 {
            return Err(BackendError::Other(
                "mmurr-emu: the guest has no RAM (ram_size 0)".into(),
            ));
        }
        let buf = usize::try_from(ram_size)
            .ok()
            .and_then(RamBuf::new)
            .ok_or_else(|| {
                BackendError::Other(format!(
                    "mmurr-emu: cannot allocate {ram_size} bytes of guest RAM"
                ))
            })?;
        self.lend_ram(Rc::new(buf))?;
        self.mirror = usize::try_from(ram_size)
            .ok()
            .and_then(RamBuf::new)
            .map(|m| Rc::new(RefCell::new(m)));
        for r in &guest.regions {
            let (b, s) = (r.gpa & !0xfff, page(r.size + (r.gpa & 0xfff)));
            if b < ram_size && r.kind != RegionKind::Mmio {
                continue; // inside the RAM mapped above
            }
            match r.kind {
                RegionKind::Ram | RegionKind::Rom => {
                    let prot = if r.kind == RegionKind::Rom {
                        Prot::READ | Prot::EXEC
                    } else {
                        Prot::ALL
                    };
                    self.uc
                        .mem_map(b, s, prot)
                        .map_err(|e| engine_err(&format!("mem_map region {}", r.name), e))?;
                    self.ram.push((b, s));
                }
                RegionKind::Mmio => {
                    self.map_mmio(b, s)?;
                }
            }
        }
        self.uc.get_data_mut().ram = self.ram.clone();
        Ok(())
    }

    /// Maps `buf` as guest RAM at guest-physical 0 (this vCPU's engine; the others of the
    /// machine map the same buffer).
    fn lend_ram(&mut self, buf: Rc<RamBuf>) -> Result<(), BackendError> {
        let ram_size = buf.len as u64;
        // SAFETY: the buffer is ram_size bytes, page-aligned, and outlives the mapping: this
        // engine holds an `Rc` of it in `ram_buf`, declared after `uc`, so the buffer is freed
        // only after every Unicorn that maps it is closed (see RamBuf).
        unsafe { self.uc.mem_map_ptr(0, ram_size, Prot::ALL, buf.ptr.cast()) }
            .map_err(|e| engine_err("mem_map RAM", e))?;
        self.ram_buf = Some(buf);
        self.ram = vec![(0, ram_size)];
        self.ram_size = ram_size;
        Ok(())
    }

    /// Loads the engine of application processor `index` of the machine whose BSP engine
    /// `bsp` has loaded `guest`: the same RAM, MMIO regions and platform, and the INIT state
    /// (it waits for a startup IPI).
    pub(crate) fn load_ap(
        &mut self,
        guest: &GuestSpec,
        bsp: &EmuBackend,
        index: u32,
    ) -> Result<(), BackendError> {
        let (Some(ram), Some(platform)) = (bsp.ram_buf.clone(), bsp.platform_handle()) else {
            return Err(BackendError::Other(
                "mmurr-emu: an AP's engine is loaded after the BSP's".into(),
            ));
        };
        self.smp_cpus = bsp.smp_cpus;
        self.smp_index = index;
        self.adopt_cpuid(guest)?;
        self.lend_ram(ram)?;
        self.mirror = bsp.mirror.clone();
        for r in guest.regions.iter().filter(|r| r.kind == RegionKind::Mmio) {
            let page = |x: u64| (x + 0xfff) & !0xfff;
            self.map_mmio(r.gpa & !0xfff, page(r.size + (r.gpa & 0xfff)))?;
        }
        self.uc.get_data_mut().ram = self.ram.clone();
        self.attach_shared_platform(platform)?;
        if let Some(p) = self.free_window(0x1000) {
            if self.uc.mem_map(p, 0x1000, Prot::READ | Prot::WRITE).is_ok() {
                self.pdpt_shadow = Some(p);
            }
        }
        // Through the trampoline to plain real mode, then the INIT state (whose CS base is
        // not selector << 4) set directly, as KVM's vCPU reset does.
        self.entry_fixups = self.enter(&guests::image::startup_entry(0))?;
        self.set_regs(&guests::image::init_entry())?;
        self.loaded = true;
        Ok(())
    }

    /// Other vCPUs' engines wrote `ranges` (every page when `all`), which this engine's own
    /// write tracking never sees: its TLB is flushed, the blocks its runs decoded and the
    /// paging structures they watch are dropped where written, and its translated code goes
    /// when `stepped_code` (they wrote a page its steps ran code from) or they wrote a page of
    /// code its runs translated. Unicorn's ranged TB removal takes *linear* addresses and
    /// walks the page tables to translate them, setting accessed bits no instruction set: all
    /// of it goes.
    pub(crate) fn others_wrote(&mut self, ranges: &[(u64, u64)], all: bool, stepped_code: bool) {
        let run = &mut self.uc.get_data_mut().run;
        let run_code = run.others_wrote(ranges, all);
        if stepped_code || run_code {
            let _ = self.uc.ctl_flush_tb();
            self.uc.get_data_mut().run.host_wrote();
        }
        let _ = self.uc.ctl_flush_tlb();
    }

    fn map_mmio(&mut self, base: u64, size: u64) -> Result<(), BackendError> {
        self.uc
            .mmio_map(
                base,
                size,
                Some(
                    move |uc: &mut Unicorn<'_, HookState>, off: u64, sz: usize| {
                        let st = uc.get_data_mut();
                        match st.mmio_value.take() {
                            Some(v) => v,
                            None => {
                                if st.mmio_read.is_none() {
                                    st.mmio_read = Some((base + off, sz as u8));
                                }
                                let _ = uc.emu_stop();
                                0
                            }
                        }
                    },
                ),
                Some(
                    move |uc: &mut Unicorn<'_, HookState>, off: u64, sz: usize, v: u64| {
                        let st = uc.get_data_mut();
                        if st.mmio_write.is_none() {
                            st.mmio_write = Some((base + off, sz as u8, v));
                        }
                    },
                ),
            )
            .map_err(|e| engine_err("mmio_map", e))?;
        self.mmio.push((base, size));
        Ok(())
    }

    /// A free 128 KiB window below 4 GiB, outside RAM and every region, for the trampoline.
    /// Where the trampoline runs: a free 128 KiB window below 4 GiB outside RAM and every region
    /// (mapped for the run), or — when RAM and regions fill the low 4 GiB — a window of RAM
    /// whose bytes are saved and restored afterwards. `true` means the window is RAM.
    fn scratch_base(&self) -> (u64, bool) {
        match self.free_window(SCRATCH_SIZE) {
            Some(b) => (b, false),
            None => (0x10_0000, true),
        }
    }

    /// A free, `size`-aligned window of guest-physical space below 4 GiB (from the top, in
    /// 1 MiB strides), outside RAM, every region and the PDPTE shadow page.
    fn free_window(&self, size: u64) -> Option<u64> {
        let mut taken: Vec<(u64, u64)> = self.ram.iter().chain(self.mmio.iter()).copied().collect();
        if let Some(p) = self.pdpt_shadow {
            taken.push((p, 0x1000));
        }
        let mut cand = 0xfff0_0000u64 - size;
        while cand >= 0x10_0000 {
            if taken
                .iter()
                .all(|&(b, s)| cand + size <= b || cand >= b + s)
            {
                return Some(cand);
            }
            cand -= 0x10_0000;
        }
        None
    }

    /// Makes Unicorn honour the architectural PDPTE registers. QEMU keeps none: in PAE paging
    /// it re-reads the four PDPTEs at CR3 on every walk, so a guest that rewrites its PDPT
    /// without reloading CR3 would translate differently from a CPU. While PAE paging is
    /// active, Unicorn's CR3 therefore points at a shadow page outside guest RAM that holds
    /// the registers (loaded at the architectural moments by the `mmu` model), and the guest's
    /// own CR3 is kept here and reported in `regs()` and to MOV from CR3. Called after every
    /// control-register write; `wrote_cr3` says the guest wrote CR3 (Unicorn holds its value).
    fn sync_pae(&mut self, wrote_cr3: bool) -> Result<(), BackendError> {
        let Some(shadow) = self.pdpt_shadow else {
            return Ok(());
        };
        self.save()?;
        let (cr0, cr4, ucr3) = (self.ctx.cr(0), self.ctx.cr(4), self.ctx.cr(3));
        let efer = self.ctx.u64_at(self.layout.efer);
        let guest = match self.guest_cr3 {
            Some(g) if !wrote_cr3 => g,
            _ => ucr3,
        };
        let pae = mmu::PagingMode::of(cr0, cr4, efer) == mmu::PagingMode::Pae;
        self.regs_cache = None;
        if pae {
            let mut bytes = [0u8; 32];
            for (i, p) in self.pdptrs.iter().enumerate() {
                bytes[i * 8..i * 8 + 8].copy_from_slice(&p.to_le_bytes());
            }
            self.uc
                .mem_write(shadow, &bytes)
                .map_err(|e| engine_err("PDPTE shadow write", e))?;
            self.guest_cr3 = Some(guest);
            // Keep the guest's PWT/PCD bits.
            self.w(RegisterX86::CR3, shadow | (guest & 0x18))?;
        } else if self.guest_cr3.take().is_some() {
            self.w(RegisterX86::CR3, guest)?;
        }
        Ok(())
    }

    /// Brings the CPU from its pristine state to `entry` with the trampoline, then applies
    /// the rest of `entry` as the host would. Returns the fields the host had to fix up beyond
    /// control registers, GPRs and flags.
    pub fn enter(&mut self, entry: &Regs) -> Result<Vec<String>, BackendError> {
        self.regs_cache = None;
        self.guest_cr3 = None;
        self.pristine
            .restore(&self.uc)
            .map_err(|e| engine_err("context restore", e))?;
        let (base, in_ram) = self.scratch_base();
        let t = trampoline::build(entry, base).map_err(BackendError::Other)?;
        let saved = if in_ram {
            let mut saved = vec![0u8; SCRATCH_SIZE as usize];
            if !self.read_phys(base, &mut saved) {
                return Err(BackendError::Other(
                    "mmurr-emu: no guest-physical window below 4 GiB for the entry trampoline"
                        .into(),
                ));
            }
            Some(saved)
        } else {
            self.uc
                .mem_map(base, SCRATCH_SIZE, Prot::ALL)
                .map_err(|e| engine_err("mem_map scratch", e))?;
            None
        };
        let run = (|| -> Result<(), BackendError> {
            for (off, bytes) in &t.writes {
                self.uc
                    .mem_write(base + off, bytes)
                    .map_err(|e| engine_err("mem_write scratch", e))?;
            }
            if t.mode != EntryMode::Long {
                // Leave Unicorn's initial 64-bit state the architectural way QEMU knows:
                // enable then disable paging with long mode enabled (clears LMA), then clear
                // EFER.LME. Nothing executes in between.
                self.w(RegisterX86::CR4, 0x20)?;
                self.w(RegisterX86::CR0, 0x8000_0011)?;
                self.w(RegisterX86::CR0, 0x11)?;
                ctx::msr_write(&self.uc, MSR_EFER, 0).map_err(|e| engine_err("EFER write", e))?;
                self.w(RegisterX86::CR4, 0)?;
            }
            // The 64-bit path pushes the far-return frame: give it a stack in the scratch region.
            self.w(RegisterX86::RSP, base + SCRATCH_SIZE - 0x10)?;
            let mut rip = t.start;
            let cs_sel = entry.seg[traces::regs::CS].selector;
            for _ in 0..t.max_instructions {
                self.uc.get_data_mut().intr = None;
                self.uc
                    .emu_start(rip, 0, 0, 1)
                    .map_err(|e| engine_err("trampoline emu_start", e))?;
                if let Some(v) = self.uc.get_data_mut().intr.take() {
                    return Err(BackendError::Engine(format!(
                        "mmurr-emu: the entry trampoline raised exception {v} at {rip:#x}; the entry state cannot be reached"
                    )));
                }
                rip = self
                    .uc
                    .reg_read(RegisterX86::RIP)
                    .map_err(|e| engine_err("reg read", e))?;
                let cs = self
                    .uc
                    .reg_read(RegisterX86::CS)
                    .map_err(|e| engine_err("reg read", e))? as u16;
                if rip == t.end_rip && cs == cs_sel {
                    return Ok(());
                }
            }
            Err(BackendError::Engine(
                "mmurr-emu: the entry trampoline did not reach the entry CS:RIP".into(),
            ))
        })();
        let unmap = match &saved {
            // Guest memory at step 0 must be the spec's exactly.
            Some(bytes) => self.uc.mem_write(base, bytes),
            None => self.uc.mem_unmap(base, SCRATCH_SIZE),
        };
        // Translated trampoline code must not survive the unmapping.
        let _ = self.uc.ctl_flush_tb();
        run?;
        unmap.map_err(|e| engine_err("unmapping the trampoline", e))?;
        self.uc.get_data_mut().writes.clear();

        let reached = self.read_regs_from_ctx()?;
        let mut fixups = Vec::new();
        for n in 0..6 {
            // FS/GS bases above 4 GiB (long mode) are host-set by design, not a fix-up.
            let base_only = n >= 4
                && t.mode == EntryMode::Long
                && Segment {
                    base: entry.seg[n].base,
                    ..reached.seg[n]
                } == entry.seg[n];
            if reached.seg[n] != entry.seg[n] && !base_only {
                fixups.push(["es", "cs", "ss", "ds", "fs", "gs"][n].to_string());
            }
        }
        self.set_regs(entry)?;
        Ok(fixups)
    }

    fn w(&mut self, r: RegisterX86, v: u64) -> Result<(), BackendError> {
        self.uc
            .reg_write(r, v)
            .map_err(|e| engine_err("reg write", e))
    }

    /// Reads guest-linear memory the way the engine sees it (for decoding only). Returns the
    /// bytes read and the guest-physical page of each linear page read.
    fn read_linear(&mut self, la: u64, buf: &mut [u8]) -> (usize, [Option<u64>; 2]) {
        let mut done = 0;
        let mut pages = [None; 2];
        while done < buf.len() {
            let a = la.wrapping_add(done as u64);
            let chunk = ((0x1000 - (a & 0xfff)) as usize).min(buf.len() - done);
            match self.uc.vmem_translate(a, Prot::EXEC) {
                Ok(pa) => {
                    if self.smp_cpus > 1 {
                        // Pages this engine holds translated code of (see smp.rs).
                        self.code_pages.push(pa & !0xfff);
                    }
                    if self.uc.mem_read(pa, &mut buf[done..done + chunk]).is_err() {
                        break;
                    }
                    pages[usize::from(done > 0)] = Some(pa & !0xfff);
                }
                Err(_) => break,
            }
            done += chunk;
        }
        (done, pages)
    }

    fn bitness(&mut self) -> u32 {
        let hf = self.ctx.hflags();
        if hf & ctx::HF_CS64_MASK != 0 {
            64
        } else if hf & ctx::HF_CS32_MASK != 0 {
            32
        } else {
            16
        }
    }

    /// Decodes the instruction at RIP; returns its linear address too.
    fn decode_at_rip(&mut self) -> Result<(u64, Option<Decoded>), BackendError> {
        self.save()?;
        let rip = self.ctx.u64_at(OFF_EIP);
        let cs_base = self.ctx.seg(1).base;
        let bits = self.bitness();
        self.ctx_long_before = bits == 64;
        let la = if bits == 64 {
            rip
        } else {
            (cs_base.wrapping_add(rip)) & 0xffff_ffff
        };
        let mut bytes = [0u8; 15];
        let (n, pages) = self.read_linear(la, &mut bytes);
        let dx = self.ctx.u64_at(OFF_REGS + 8 * 2) as u16;
        let d = decode::decode(&bytes[..n], bits, rip, dx);
        // The instruction's own pages hold code the engine translates (engine/run.rs).
        let last = la.wrapping_add(d.map_or(1, |d| d.len as u64).max(1) - 1);
        let run = &mut self.uc.get_data_mut().run;
        if let Some(p) = pages[0] {
            run.stepped_code(p);
        }
        if let (Some(p), true) = (pages[1], last & !0xfff != la & !0xfff) {
            run.stepped_code(p);
        }
        Ok((la, d))
    }

    fn reset_hook_state(&mut self) {
        let st = self.uc.get_data_mut();
        st.writes.clear();
        st.writes_unknown = false;
        st.out = None;
        st.in_unanswered = None;
        st.intr = None;
        st.mmio_read = None;
        st.mmio_write = None;
        st.unmapped = None;
    }

    /// The paging-structure entries on the walks of `pages` under `regs`' paging registers.
    fn walk_entries(&self, regs: &Regs, pages: &[u64], out: &mut Vec<(u64, u64)>) {
        if regs.cr0 & (1 << 31) == 0 {
            return;
        }
        let Some(ram) = self.ram_buf.as_ref() else {
            return;
        };
        let cregs = recorder::guest_view::control_regs(regs);
        let mem = RamView(ram.bytes());
        let req = mmu::AccessRequest::supervisor(mmu::Access::Read);
        for &la in pages {
            let w = mmu::walk(&cregs, &self.cpu, &mem, la, &req);
            for l in w.levels.iter().filter(|l| !l.from_register) {
                let r = (l.entry_gpa, l.entry_bytes as u64);
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
    }

    /// The paging-structure entries the engine may have set accessed/dirty bits in during the
    /// step (QEMU's walker sets them on a TLB fill; no write hook reports it): the walks of the
    /// pages the step fetched, read or wrote under the paging registers it started with, and
    /// of the descriptors a segment load read under the registers it ended with. The recorder
    /// keeps only bytes that really changed.
    ///
    /// Unicorn also translates the *next* instruction's block before its instruction counter
    /// stops it, setting accessed bits a CPU sets only when it fetches that instruction (e.g.
    /// the first fetch after MOV to CR0 enables paging or MOV to CR3 switches tables, or a
    /// branch to a fresh page): KVM single-step shows them in the next step. Those bytes are
    /// put back as they were before the step (see [`EmuBackend::defer_lookahead`]).
    fn ad_candidates(
        &mut self,
        before: &Regs,
        fetch: (u64, u64),
        d: Option<&Decoded>,
        written: &[(u64, u64)],
    ) -> Vec<(u64, u64)> {
        let mut pages = Vec::new();
        if let Some(d) = d {
            for t in insn::memory_operands(&d.instr, before) {
                let last = t.linear.wrapping_add(t.size.max(1) as u64 - 1);
                for p in [t.linear & !0xfff, last & !0xfff] {
                    if !pages.contains(&p) {
                        pages.push(p);
                    }
                }
            }
        }
        for p in [
            fetch.0 & !0xfff,
            fetch.0.wrapping_add(fetch.1.max(1) - 1) & !0xfff,
        ] {
            if !pages.contains(&p) {
                pages.push(p);
            }
        }
        let mut out = Vec::new();
        self.walk_entries(before, &pages, &mut out);
        if let Ok(after) = self.read_regs_from_ctx() {
            // A segment load read its descriptor through paging.
            let mut tables = Vec::new();
            for n in 0..6 {
                let sel = after.seg[n].selector;
                if sel != before.seg[n].selector && sel & 0xfffc != 0 && after.cr0 & 1 != 0 {
                    let table = if sel & 4 != 0 {
                        after.ldtr.base
                    } else {
                        after.gdtr.base
                    };
                    tables.push(table.wrapping_add((sel & !7) as u64) & !0xfff);
                }
            }
            self.walk_entries(&after, &tables, &mut out);
            let la = insn::linear_ip(&after);
            let mut lookahead = Vec::new();
            self.walk_entries(
                &after,
                &[la & !0xfff, la.wrapping_add(14) & !0xfff],
                &mut lookahead,
            );
            lookahead.retain(|e| !out.contains(e) && !overlaps(written, *e));
            self.defer_lookahead(&lookahead);
        }
        out
    }

    /// Puts back the bytes of `entries` (next-instruction walk entries that the step itself
    /// neither walked nor wrote) that changed during the step: only Unicorn's look-ahead
    /// translation can have changed them. The TLB is flushed so that the next step's fetch
    /// walks again and sets them, in the step a CPU sets them.
    fn defer_lookahead(&mut self, entries: &[(u64, u64)]) {
        let (Some(ram), Some(mirror)) = (self.ram_buf.as_ref(), self.mirror.as_ref()) else {
            return;
        };
        let mirror = mirror.borrow();
        let mut restored = false;
        for &(gpa, len) in entries {
            let (Ok(a), Ok(n)) = (usize::try_from(gpa), usize::try_from(len)) else {
                continue;
            };
            let (Some(now), Some(was)) = (
                ram.bytes().get(a..a.saturating_add(n)),
                mirror.bytes().get(a..a.saturating_add(n)),
            ) else {
                continue;
            };
            if now != was {
                let was = was.to_vec();
                if self.uc.mem_write(gpa, &was).is_ok() {
                    restored = true;
                }
            }
        }
        if restored {
            let _ = self.uc.ctl_flush_tlb();
        }
    }

    /// Brings the mirror up to date with RAM over `ranges` (what a step reported written).
    fn sync_mirror(&mut self, ranges: &[(u64, u64)]) {
        let (Some(ram), Some(mirror)) = (self.ram_buf.as_ref(), self.mirror.as_ref()) else {
            return;
        };
        let mut mirror = mirror.borrow_mut();
        for &(gpa, len) in ranges {
            let (Ok(a), Ok(n)) = (usize::try_from(gpa), usize::try_from(len)) else {
                continue;
            };
            if let Some(src) = ram.bytes().get(a..a.saturating_add(n)) {
                if let Some(dst) = mirror.bytes_mut().get_mut(a..a + n) {
                    dst.copy_from_slice(src);
                }
            }
        }
    }

    /// One `emu_start` of one instruction from the current RIP.
    fn run_one(&mut self) -> Result<(), BackendError> {
        self.regs_cache = None;
        let rip = self
            .uc
            .reg_read(RegisterX86::RIP)
            .map_err(|e| engine_err("reg read", e))?;
        match self.uc.emu_start(rip, 0, 0, 1) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some((ty, addr, size)) = self.uc.get_data_mut().unmapped.take() {
                    let wanted = recorder::devices::mmio_device(addr)
                        .map(|d| format!(" — {d}?, which mmurr does not emulate"))
                        .unwrap_or_default();
                    return Err(BackendError::EngineAt(format!(
                        "mmurr-emu: the guest accessed unmapped address {addr:#x} ({size} bytes, {ty:?}) at RIP {rip:#x}{wanted}; \
                         only RAM, declared MMIO regions and the platform's LAPIC and IOAPIC pages exist in the emu backend"
                    )));
                }
                Err(BackendError::EngineAt(format!(
                    "mmurr-emu: Unicorn stopped at RIP {rip:#x}: {e:?} ({e})"
                )))
            }
        }
    }

    fn take_written(&mut self, before: &Regs, fetch: (u64, u64), d: Option<&Decoded>) -> Written {
        let mut w = std::mem::take(&mut self.uc.get_data_mut().writes);
        let ad = self.ad_candidates(before, fetch, d, &w);
        w.extend(ad);
        self.sync_mirror(&w);
        if self.uc.get_data_mut().writes_unknown {
            return Written::Unknown;
        }
        Written::Ranges(w)
    }

    /// Executes the instruction at RIP (an `in` must have its value in the hook state) and
    /// handles what happened. `d` is its decoding (None if undecodable).
    fn execute(&mut self, d: Option<Decoded>, before: &Regs) -> Result<Exit, BackendError> {
        let snapshot = if self.mmio.is_empty() {
            None
        } else {
            let mut s = Ctx::alloc(&self.uc).map_err(|e| engine_err("context alloc", e))?;
            s.save(&self.uc)
                .map_err(|e| engine_err("context save", e))?;
            Some(s)
        };
        self.run_one()?;
        // An MMIO read needs the VMM's answer: undo the attempt and ask.
        if let Some((gpa, size)) = self.uc.get_data_mut().mmio_read.take() {
            if let Some(s) = snapshot {
                s.restore(&self.uc)
                    .map_err(|e| engine_err("context restore", e))?;
            }
            self.uc.get_data_mut().writes.clear();
            self.pending_mmio = true;
            self.uc.get_data_mut().writes_unknown = true;
            return Ok(Exit::MmioRead { gpa, size });
        }
        if let Some((port, size)) = self.uc.get_data_mut().in_unanswered.take() {
            return Err(BackendError::EngineAt(format!(
                "mmurr-emu: an `in` from port {port:#x} (size {size}) at RIP {:#x} ran without a value \
                 (the instruction was not recognised before execution)",
                before.rip
            )));
        }
        if let Some(vector) = self.uc.get_data_mut().intr.take() {
            self.clear_exception_in_flight(vector)?;
            let rip = self
                .uc
                .reg_read(RegisterX86::RIP)
                .map_err(|e| engine_err("reg read", e))?;
            if vector == 14 && rip != before.rip && !is_software_int(d.as_ref()) {
                // The instruction retired (a branch moved RIP) and Unicorn, looking up the next
                // block before its instruction counter stopped it, faulted fetching the target.
                // That #PF belongs to the next instruction: undo its early CR2 write; the next
                // step faults again and delivers it, as on hardware single-step.
                self.w(RegisterX86::CR2, before.cr2)?;
                self.regs_cache = None;
            } else if vector == 13
                && rip != before.rip
                && branched_off_canonical(d.as_ref(), before, rip)
            {
                // QEMU moved RIP to a non-canonical branch target and faulted fetching there;
                // the CPU faults on the branch itself, before it pushes or pops anything.
                self.undo_step(before)?;
                return self.deliver(vector, d, before);
            } else {
                return self.deliver(vector, d, before);
            }
        }
        // KVM-consistent rep: finish the instruction in the same step when the count ran out.
        if let Some(a) = d.and_then(|d| d.rep_addr_size) {
            let rip = self
                .uc
                .reg_read(RegisterX86::RIP)
                .map_err(|e| engine_err("reg read", e))?;
            let rcx = self
                .uc
                .reg_read(RegisterX86::RCX)
                .map_err(|e| engine_err("reg read", e))?;
            let mask = match a {
                16 => 0xffff,
                32 => 0xffff_ffff,
                _ => u64::MAX,
            };
            if rip == before.rip && rcx & mask == 0 {
                let out = self.uc.get_data_mut().out.take();
                self.run_one()?;
                if let Some(o) = out {
                    self.uc.get_data_mut().out = Some(o);
                }
            }
        }
        self.emulate_cr8(d.as_ref(), before)?;
        if let Some((reg, value)) = d.as_ref().and_then(|d| self.cr_write(d, before)) {
            // PDPTE registers as the architecture loads them (Unicorn re-reads the PDPT on
            // every walk instead and keeps no registers).
            if let Some(Ok(after)) = self.cr_verdict(reg, value, before) {
                if after.pdptrs != self.pdptrs {
                    self.pdptrs = after.pdptrs;
                    self.regs_cache = None;
                }
            }
            self.sync_pae(reg == mmu::CrReg::Cr3)?;
        }
        if let Some((gpa, size, data)) = self.uc.get_data_mut().mmio_write.take() {
            return Ok(Exit::MmioWrite { gpa, size, data });
        }
        if let Some((port, size, data)) = self.uc.get_data_mut().out.take() {
            return Ok(Exit::IoOut { port, size, data });
        }
        if matches!(d.map(|d| d.kind), Some(Kind::Hlt)) {
            return Ok(Exit::Halted);
        }
        Ok(Exit::Stepped)
    }

    /// After a `cpuid` retired on a vCPU of a machine of several: its own APIC ID in the
    /// results ([`insn::with_apic_id`]), which the engine reports as 0 on every vCPU.
    fn cpuid_apic_id(&mut self, d: Option<&Decoded>, before: &Regs) -> Result<(), BackendError> {
        let is_cpuid = d.is_some_and(|d| d.instr.mnemonic() == iced_x86::Mnemonic::Cpuid);
        if self.smp_cpus < 2 || !is_cpuid || !self.step_deliveries.is_empty() {
            return Ok(());
        }
        let r = |uc: &Unicorn<'static, HookState>, reg| {
            uc.reg_read(reg)
                .map(|v| v as u32)
                .map_err(|e| engine_err("reg read", e))
        };
        let out = [
            r(&self.uc, RegisterX86::RAX)?,
            r(&self.uc, RegisterX86::RBX)?,
            r(&self.uc, RegisterX86::RCX)?,
            r(&self.uc, RegisterX86::RDX)?,
        ];
        let fixed = insn::with_apic_id(before.gpr[0] as u32, out, self.smp_index);
        if fixed != out {
            self.w(RegisterX86::RBX, u64::from(fixed[1]))?;
            self.w(RegisterX86::RDX, u64::from(fixed[3]))?;
            self.regs_cache = None;
        }
        Ok(())
    }

    /// Puts the instruction's effects back (RIP, RSP and the RAM it wrote, from the mirror of
    /// RAM before the step) so that a fault is delivered from the state before it.
    fn undo_step(&mut self, before: &Regs) -> Result<(), BackendError> {
        let writes = std::mem::take(&mut self.uc.get_data_mut().writes);
        if let Some(mirror) = self.mirror.clone() {
            let mirror = mirror.borrow();
            for (gpa, len) in writes {
                let (Ok(a), Ok(n)) = (usize::try_from(gpa), usize::try_from(len)) else {
                    continue;
                };
                if let Some(was) = mirror.bytes().get(a..a.saturating_add(n)) {
                    let was = was.to_vec();
                    self.uc
                        .mem_write(gpa, &was)
                        .map_err(|e| engine_err("mem_write", e))?;
                }
            }
        }
        self.w(RegisterX86::RIP, before.rip)?;
        self.w(RegisterX86::RSP, before.gpr[4])?;
        self.regs_cache = None;
        Ok(())
    }

    fn deliver(
        &mut self,
        vector: u32,
        d: Option<Decoded>,
        before: &Regs,
    ) -> Result<Exit, BackendError> {
        let software = is_software_int(d.as_ref())
            && self.uc.reg_read(RegisterX86::RIP).ok() != Some(before.rip);
        let error_code = if exceptions::has_error_code(vector) && !software {
            Some(self.pending_error_code()?)
        } else {
            None
        };
        self.deliver_vector(vector as u8, error_code, software, before.rip)
    }

    /// Delivers `vector` from the current state (RIP at the faulting instruction, or after it
    /// for a software interrupt).
    fn deliver_vector(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        software: bool,
        at: u64,
    ) -> Result<Exit, BackendError> {
        let regs = self.read_regs_from_ctx()?;
        let mut mem = exceptions::Mem {
            uc: &mut self.uc,
            regs: recorder::guest_view::control_regs(&regs),
            cpu: self.cpu,
            stack_cpl: 0,
        };
        match exceptions::deliver(&mut mem, &regs, vector, error_code, software) {
            exceptions::Outcome::Delivered(new, info) => {
                self.apply_delivery(&new)?;
                self.step_deliveries.push(recorder::Delivery {
                    vector: info.vector,
                    kind: recorder::DeliveryKind::Exception,
                    error_code: info.error_code,
                    // QEMU wrote CR2 when it raised the #PF.
                    cr2: (info.vector == 14).then_some(regs.cr2),
                });
                self.delivered.push(info);
                Ok(Exit::Stepped)
            }
            exceptions::Outcome::Shutdown => Ok(Exit::Shutdown),
            exceptions::Outcome::Unsupported(msg) => Err(BackendError::EngineAt(format!(
                "mmurr-emu: exception {vector} (error code {error_code:?}) at RIP {at:#x}: {msg} — Unicorn does not \
                 deliver exceptions itself and mmurr-emu cannot deliver this one"
            ))),
        }
    }

    /// CR8 (the task-priority register) lives in the local APIC in QEMU, and Unicorn has none:
    /// a MOV to CR8 is dropped and a MOV from CR8 reads 0. mmurr-emu keeps CR8 itself, as
    /// KVM does: the written value (bits 3:0) is stored and read back.
    fn emulate_cr8(&mut self, d: Option<&Decoded>, before: &Regs) -> Result<(), BackendError> {
        let Some(d) = d else { return Ok(()) };
        match d.kind {
            Kind::MovCr(8) => {
                let v = insn::register_value(before, 64, d.instr.op1_register()).unwrap_or(0) & 0xf;
                self.w(RegisterX86::CR8, v)?;
            }
            Kind::MovFromCr(3, gpr) if self.guest_cr3.is_some() => {
                self.save()?;
                self.ctx.set_u64(OFF_REGS + 8 * gpr as usize, before.cr3);
                self.ctx
                    .restore(&self.uc)
                    .map_err(|e| engine_err("context restore", e))?;
            }
            Kind::MovFromCr(8, gpr) => {
                self.save()?;
                self.ctx.set_u64(OFF_REGS + 8 * gpr as usize, before.cr8);
                self.ctx
                    .restore(&self.uc)
                    .map_err(|e| engine_err("context restore", e))?;
            }
            _ => return Ok(()),
        }
        self.regs_cache = None;
        Ok(())
    }

    /// The control-register write `d` performs, if it is one mmurr checks: MOV to CR0/CR3/CR4
    /// and WRMSR to EFER, with the value written.
    fn cr_write(&self, d: &Decoded, r: &Regs) -> Option<(mmu::CrReg, u64)> {
        match d.kind {
            Kind::MovCr(n) => {
                let reg = match n {
                    0 => mmu::CrReg::Cr0,
                    3 => mmu::CrReg::Cr3,
                    4 => mmu::CrReg::Cr4,
                    _ => return None,
                };
                let value = insn::register_value(r, insn::bitness(r), d.instr.op1_register())?;
                Some((reg, value))
            }
            Kind::Other if d.instr.mnemonic() == iced_x86::Mnemonic::Wrmsr => (r.gpr[1] as u32
                == MSR_EFER)
                .then(|| ((r.gpr[2] & 0xffff_ffff) << 32) | (r.gpr[0] & 0xffff_ffff))
                .map(|v| (mmu::CrReg::Efer, v)),
            _ => None,
        }
    }

    /// The architecture's verdict on a control-register write, from the reference model
    /// (`mmu::apply_write_with`): the registers after it, or #GP. QEMU checks few of these
    /// (reserved CR4/EFER bits, PDPTE reserved bits, CR0.PG without PE, ...) and raises no #GP
    /// for the rest, so mmurr-emu applies the architectural rule itself.
    fn cr_verdict(
        &self,
        reg: mmu::CrReg,
        value: u64,
        r: &Regs,
    ) -> Option<Result<mmu::ControlRegs, mmu::Gp>> {
        let ram = self.ram_buf.as_ref()?;
        let mem = RamView(ram.bytes());
        let before = recorder::guest_view::control_regs(r);
        let wctx = insn::write_context(r);
        Some(mmu::apply_write_with(
            reg, &before, value, &self.cpu, &mem, &wctx,
        ))
    }

    /// Writes the registers an exception delivery changed.
    fn apply_delivery(&mut self, r: &Regs) -> Result<(), BackendError> {
        self.regs_cache = None;
        self.save()?;
        for i in 0..16 {
            self.ctx.set_u64(OFF_REGS + 8 * i, r.gpr[i]);
        }
        self.ctx.set_u64(OFF_EIP, r.rip);
        let vm = r.rflags & (1 << 17) != 0;
        self.ctx
            .load_seg_cache(1, cache_from_segment(&r.seg[1]), vm);
        self.ctx
            .load_seg_cache(2, cache_from_segment(&r.seg[2]), vm);
        self.ctx
            .restore(&self.uc)
            .map_err(|e| engine_err("context restore", e))?;
        self.w(RegisterX86::RFLAGS, r.rflags)?;
        Ok(())
    }

    /// The engine's own translation of a guest-linear address for an access at the current
    /// CPL, with an empty
    /// TLB (so the engine walks the page tables now), as the differential tests compare it
    /// with `mmu::walk`. `None` when the engine would fault. Note that the engine sets
    /// accessed/dirty bits on success, as a real access would.
    pub fn engine_translate(&mut self, la: u64, access: mmu::Access) -> Option<u64> {
        let prot = match access {
            mmu::Access::Read => Prot::READ,
            mmu::Access::Write => Prot::WRITE,
            mmu::Access::Fetch => Prot::EXEC,
        };
        let _ = self.uc.ctl_flush_tlb();
        self.uc.vmem_translate(la, prot).ok()
    }

    /// Presents the guest spec's CPUID (when it carries one other than the engine's own) to
    /// the guest's `cpuid` instruction, and makes mmurr's own architectural checks (CR writes,
    /// PDPTEs, I/O permission, page walks) follow it and `guest.maxphyaddr`. What the table
    /// offers but Unicorn cannot emulate goes to `warnings`.
    fn adopt_cpuid(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        let engine = self.cpu;
        let mut cpu = if guest.cpuid.is_empty() {
            engine
        } else {
            recorder::guest_view::cpu_model(&guest.cpuid)
        };
        if guest.maxphyaddr != 0 {
            cpu.maxphyaddr = guest.maxphyaddr;
        }
        if !guest.cpuid.is_empty() && guest.cpuid != self.cpuid {
            self.answer_cpuid_from(guest.cpuid.clone())?;
        }
        self.warnings = crate::cpuid::unemulated(&cpu, &engine);
        self.cpu = cpu;
        Ok(())
    }

    /// The guest's CPU as mmurr's architectural checks see it.
    pub(crate) fn cpu_model(&self) -> mmu::CpuModel {
        self.cpu
    }

    /// EAX, EBX, ECX, EDX of CPUID leaf `function` (sub-leaf 0) in the guest's table.
    pub(crate) fn cpuid_leaf(&self, function: u32) -> [u32; 4] {
        self.cpuid
            .iter()
            .find(|e| e.function == function && e.index == 0)
            .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
    }

    /// KVM_SET_CPUID2: the guest's `cpuid` answers from `table` from now on, and mmurr's
    /// architectural checks follow it (as [`Self::adopt_cpuid`] does at load).
    pub(crate) fn replace_cpuid(&mut self, table: Vec<CpuidEntry>) -> Result<(), BackendError> {
        // MAXPHYADDR from the new table too (the spec's override was the old CPU's).
        self.cpu = recorder::guest_view::cpu_model(&table);
        self.answer_cpuid_from(table)?;
        self.regs_cache = None;
        Ok(())
    }

    /// The guest's `cpuid` answers from `table`: the hook is installed the first time and
    /// reads the new table after that.
    fn answer_cpuid_from(&mut self, table: Vec<CpuidEntry>) -> Result<(), BackendError> {
        match &self.guest_cpuid {
            Some(t) => t.replace(table.clone()),
            None => {
                let t = Box::new(crate::cpuid::GuestCpuid::new(table.clone()));
                crate::cpuid::install_hook(&mut self.uc, &t)?;
                self.guest_cpuid = Some(t);
            }
        }
        self.cpuid = table;
        Ok(())
    }

    /// CPUID as the guest sees it under Unicorn, for the main leaves.
    pub fn probe_cpuid() -> Result<Vec<CpuidEntry>, BackendError> {
        crate::cpuid::probe()
    }
}

/// Whether `e` (gpa, len) overlaps any of `ranges`.
fn overlaps(ranges: &[(u64, u64)], e: (u64, u64)) -> bool {
    ranges
        .iter()
        .any(|&(g, l)| g < e.0.saturating_add(e.1) && e.0 < g.saturating_add(l))
}

/// A branch (`jmp`/`call`/`ret`/...) in 64-bit code moved RIP to `rip`, which is not canonical.
fn branched_off_canonical(d: Option<&Decoded>, before: &Regs, rip: u64) -> bool {
    let la57 = before.cr4 & (1 << 12) != 0;
    let shift = if la57 { 7 } else { 16 };
    let canonical = ((rip << shift) as i64 >> shift) as u64 == rip;
    !canonical && d.is_some_and(|d| d.instr.flow_control() != iced_x86::FlowControl::Next)
}

/// `int n`, `int3`, `into`, `int1`: interrupts raised by the instruction itself.
fn is_software_int(d: Option<&Decoded>) -> bool {
    d.is_some_and(|d| {
        matches!(
            d.instr.mnemonic(),
            iced_x86::Mnemonic::Int
                | iced_x86::Mnemonic::Int3
                | iced_x86::Mnemonic::Into
                | iced_x86::Mnemonic::Int1
        )
    })
}

fn unsafe_version() -> u32 {
    let (mut maj, mut min) = (0u32, 0u32);
    // SAFETY: uc_version only writes the two out-parameters.
    unsafe { unicorn_engine::unicorn_const::uc_version(&mut maj, &mut min) }
}

/// Records a guest write. Unicorn's write hook reports the guest-PHYSICAL address (it runs
/// after the TLB lookup, with the entry's physical page; a store that crosses a page boundary
/// is split into separate stores), so no translation is needed.
/// The hooks both engines need (the runner's, engine/run.rs, too): writes, exceptions and the
/// runs' block hook.
fn add_common_hooks(uc: &mut Unicorn<'static, HookState>) -> Result<(), BackendError> {
    uc.add_mem_hook(HookType::MEM_WRITE, 1, 0, |uc, _ty, addr, size, _val| {
        record_write(uc, addr, size as u64);
        true
    })
    .map_err(|e| engine_err("hook", e))?;
    uc.add_intr_hook(|uc, vector| {
        let st = uc.get_data_mut();
        if st.intr.is_none() {
            st.intr = Some(vector);
        }
        let _ = uc.emu_stop();
    })
    .map_err(|e| engine_err("hook", e))?;
    // #UD goes to the invalid-instruction hook, not the interrupt hook.
    uc.add_insn_invalid_hook(|uc| {
        let st = uc.get_data_mut();
        if st.intr.is_none() {
            st.intr = Some(6);
        }
        let _ = uc.emu_stop();
        true
    })
    .map_err(|e| engine_err("hook", e))?;
    // Runs: the block hook does nothing outside a run (engine/run.rs).
    uc.add_block_hook(1, 0, run::on_block)
        .map_err(|e| engine_err("hook", e))?;
    Ok(())
}

fn note_unmapped(uc: &mut Unicorn<'_, HookState>, ty: MemType, addr: u64, size: usize) {
    let st = uc.get_data_mut();
    if st.unmapped.is_none() {
        st.unmapped = Some((ty, addr, size));
    }
}

fn record_write(uc: &mut Unicorn<'_, HookState>, paddr: u64, size: u64) {
    // Runs mark pages dirty instead of listing writes (engine/run.rs).
    if in_ram(&uc.get_data().ram, paddr, size) && run::on_write(uc, paddr, size) {
        uc.get_data_mut().writes.push((paddr, size));
    }
}

impl Backend for EmuBackend {
    fn info(&self) -> BackendInfo {
        let (cpu_vendor, cpu_model_name, cpu_family, cpu_model, cpu_stepping) =
            crate::cpuid::identity(&self.cpuid);
        let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        BackendInfo {
            kind: BackendKind::Emu,
            engine: Self::engine_version(),
            host_kernel,
            cpu_vendor,
            cpu_model_name,
            cpu_family,
            cpu_model,
            cpu_stepping,
            kvm_facts: Vec::new(),
        }
    }

    fn load(&mut self, guest: &GuestSpec) -> Result<(), BackendError> {
        if self.loaded {
            return Err(BackendError::Other(
                "mmurr-emu: a backend loads one guest; open a new one".into(),
            ));
        }
        self.adopt_cpuid(guest)?;
        self.map_memory(guest)?;
        self.attach_platform()?;
        for l in &guest.loads {
            let blob = guest.blobs.get(l.blob as usize).ok_or_else(|| {
                BackendError::Other(format!(
                    "mmurr-emu: load refers to blob {} which does not exist",
                    l.blob
                ))
            })?;
            if !self.write_phys(l.gpa, &blob.data) {
                return Err(BackendError::Other(format!(
                    "mmurr-emu: blob {} ({} bytes) at {:#x} does not fit guest RAM",
                    blob.name,
                    blob.data.len(),
                    l.gpa
                )));
            }
        }
        if let (Some(p), Some(buf)) = (self.free_window(0x1000), RamBuf::new(0x1000)) {
            // SAFETY: the buffer is one page, page-aligned, and outlives the mapping (it is
            // freed only after both engines are closed, see RamBuf).
            if unsafe {
                self.uc
                    .mem_map_ptr(p, 0x1000, Prot::READ | Prot::WRITE, buf.ptr.cast())
            }
            .is_ok()
            {
                self.pdpt_shadow = Some(p);
                self.pdpt_buf = Some(buf);
            }
        }
        self.entry_fixups = self.enter(&guest.entry)?;
        self.loaded = true;
        Ok(())
    }

    fn regs(&mut self) -> Result<Regs, BackendError> {
        self.read_regs_from_ctx()
    }

    fn set_regs(&mut self, r: &Regs) -> Result<(), BackendError> {
        let cur = self.read_regs_from_ctx()?;
        self.regs_cache = None;
        // Back to the guest's own CR3 in the engine; sync_pae re-establishes the shadow.
        if let Some(g) = self.guest_cr3.take() {
            self.w(RegisterX86::CR3, g)?;
        }
        // Control registers and EFER through QEMU's own update functions, in an order that
        // lets CR0.PG switch long mode on or off the way the guest would.
        if cur.cr4 != r.cr4 {
            self.w(RegisterX86::CR4, r.cr4)?;
        }
        if cur.efer & !EFER_LMA != r.efer & !EFER_LMA {
            ctx::msr_write(&self.uc, MSR_EFER, r.efer).map_err(|e| engine_err("EFER write", e))?;
        }
        if cur.cr3 != r.cr3 {
            self.w(RegisterX86::CR3, r.cr3)?;
        }
        if cur.cr0 != r.cr0 {
            self.w(RegisterX86::CR0, r.cr0)?;
        }
        self.save()?;
        let c = &mut self.ctx;
        // EFER.LMA cannot be written through WRMSR; set it (and QEMU's LMA hidden flag) directly
        // when the requested state has it without a paging transition.
        let efer_now = c.u64_at(self.layout.efer);
        if efer_now != r.efer {
            c.set_u64(self.layout.efer, r.efer);
            let hf = c.hflags();
            let hf = if r.efer & EFER_LMA != 0 {
                hf | HF_LMA_MASK
            } else {
                hf & !(HF_LMA_MASK | ctx::HF_CS64_MASK)
            };
            c.set_u32(OFF_HFLAGS, hf);
        }
        for i in 0..16 {
            c.set_u64(OFF_REGS + 8 * i, r.gpr[i]);
        }
        c.set_u64(OFF_EIP, r.rip);
        c.set_u64(OFF_CR + 16, r.cr2);
        c.set_u64(OFF_CR + 64, r.cr8);
        c.set_u64(self.layout.xcr0, r.xcr0);
        c.set_u32(self.layout.pkru, r.pkru);
        let vm = r.rflags & (1 << 17) != 0;
        // CS first (it decides the code size QEMU's other flags depend on), SS last (CPL).
        for n in [1usize, 0, 3, 4, 5, 2] {
            let want: SegCache = cache_from_segment(&r.seg[n]);
            if c.seg(n) != want || n == 1 || n == 2 {
                c.load_seg_cache(n, want, vm);
            }
        }
        c.put_system_seg(6, cache_from_segment(&r.ldtr));
        c.put_system_seg(7, cache_from_segment(&r.tr));
        c.put_dtable(false, r.gdtr.base, r.gdtr.limit);
        c.put_dtable(true, r.idtr.base, r.idtr.limit);
        self.ctx
            .restore(&self.uc)
            .map_err(|e| engine_err("context restore", e))?;
        self.w(RegisterX86::RFLAGS, r.rflags)?;
        if cur.kernel_gs_base != r.kernel_gs_base {
            ctx::msr_write(&self.uc, MSR_KERNEL_GS_BASE, r.kernel_gs_base)
                .map_err(|e| engine_err("MSR write", e))?;
        }
        self.pdptrs = r.pdptrs;
        self.regs_cache = None;
        self.sync_pae(false)?;
        let _ = self.uc.ctl_flush_tlb();
        Ok(())
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        in_ram(&self.ram, gpa, buf.len() as u64) && self.uc.mem_read(gpa, buf).is_ok()
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let ok = in_ram(&self.ram, gpa, data.len() as u64) && self.uc.mem_write(gpa, data).is_ok();
        if ok {
            self.sync_mirror(&[(gpa, data.len() as u64)]);
        }
        if ok && self.loaded {
            // uc_mem_write does not invalidate translated code: a host write over guest code
            // (a debugger's breakpoint, a patched instruction) must not run stale blocks.
            let _ = self.uc.ctl_flush_tb();
            // Runs: nor decoded blocks (engine/run.rs).
            self.uc.get_data_mut().run.host_wrote();
        }
        ok
    }

    fn ram_size(&self) -> u64 {
        self.ram_size
    }

    fn ram(&self) -> Option<&[u8]> {
        // Only when the buffer is all of the guest's RAM (no extra RAM/ROM regions beyond it).
        if self.ram.len() != 1 {
            return None;
        }
        self.ram_buf.as_deref().map(RamBuf::bytes)
    }

    fn cpuid(&self) -> Vec<CpuidEntry> {
        self.cpuid.clone()
    }

    fn host_action(&mut self, action: &traces::HostAction) -> Result<(), BackendError> {
        self.perform(action)
    }

    fn engine_translation(&mut self, gva: u64, access: mmu::Access) -> Option<Option<u64>> {
        Some(self.engine_translate(gva, access))
    }

    fn step(&mut self) -> Result<StepResult, BackendError> {
        if !self.loaded {
            return Err(BackendError::Other("mmurr-emu: step before load".into()));
        }
        if let Some((port, size)) = self.pending_in {
            return Err(BackendError::Other(format!(
                "mmurr-emu: step while an `in` from port {port:#x} (size {size}) awaits complete_io_in"
            )));
        }
        if self.pending_mmio {
            return Err(BackendError::Other(
                "mmurr-emu: step while an MMIO read awaits complete_mmio_read".into(),
            ));
        }
        self.reset_hook_state();
        self.step_deliveries.clear();
        let before = self.read_regs_from_ctx()?;
        if let Some(t) = &self.guest_cpuid {
            // KVM's run-time CPUID bits follow CR4 and XCR0 as they are when `cpuid` runs.
            t.cr4.set(before.cr4);
            t.xcr0.set(before.xcr0);
        }
        if let Some(r) = self.interrupt_boundary(&before)? {
            return Ok(r);
        }
        let (la, d) = self.decode_at_rip()?;
        let fetch = (la, d.map_or(1, |d| d.len as u64));
        if let Some(d) = d {
            let count_zero = |a: u32| {
                let mask = match a {
                    16 => 0xffff,
                    32 => 0xffff_ffff,
                    _ => u64::MAX,
                };
                before.gpr[1] & mask == 0
            };
            match d.kind {
                Kind::In { port, size } | Kind::Ins { port, size } | Kind::Out { port, size }
                    if !self.ram_buf.as_ref().is_some_and(|m| {
                        crate::io::io_permitted(m.bytes(), &self.cpu, &before, port, size)
                    }) =>
                {
                    // Unicorn does not check IOPL or the TSS I/O bitmap: #GP(0) as the CPU would.
                    let exit = self.deliver_vector(13, Some(0), false, before.rip)?;
                    let written = self.take_written(&before, fetch, Some(&d));
                    return Ok(StepResult { exit, written });
                }
                Kind::In { port, size } if self.platform_claims(port) => {
                    let v = self.platform_in(port, size);
                    self.uc.get_data_mut().in_value = v;
                }
                Kind::In { port, size } => {
                    self.pending_in = Some((port, size));
                    return Ok(StepResult {
                        exit: Exit::IoIn { port, size },
                        // The instruction runs in complete_io_in, after this result is
                        // returned: the recorder derives its writes from the decoded `ins`
                        // destination and the walks' accessed bits.
                        written: Written::Unknown,
                    });
                }
                Kind::Ins { port, size } if !d.rep_addr_size.is_some_and(count_zero) => {
                    self.pending_in = Some((port, size));
                    return Ok(StepResult {
                        exit: Exit::IoIn { port, size },
                        // The instruction runs in complete_io_in, after this result is
                        // returned: the recorder derives its writes from the decoded `ins`
                        // destination and the walks' accessed bits.
                        written: Written::Unknown,
                    });
                }
                _ => {}
            }
            if let Some(r) = self.platform_msr(&d, &before)? {
                return Ok(r);
            }
            if let Some(r) = self.syscall(&d, &before)? {
                return Ok(r);
            }
        }
        if let Some((reg, value)) = d.as_ref().and_then(|d| self.cr_write(d, &before)) {
            if let Some(Err(_gp)) = self.cr_verdict(reg, value, &before) {
                // The write faults architecturally: #GP(0) instead of executing it.
                let exit = self.deliver_vector(13, Some(0), false, before.rip)?;
                let written = self.take_written(&before, fetch, d.as_ref());
                return Ok(StepResult { exit, written });
            }
        }
        let exit = self.execute(d, &before)?;
        self.uc.get_data_mut().in_value = None;
        self.cpuid_apic_id(d.as_ref(), &before)?;
        let exit = self.after_instruction(exit, d.as_ref(), &before)?;
        let written = self.take_written(&before, fetch, d.as_ref());
        Ok(StepResult { exit, written })
    }

    // --- runs: engine/run.rs ---
    fn run(&mut self, max: u64) -> Option<Result<recorder::RunResult, BackendError>> {
        Some(self.run_instructions(max))
    }
    // --- end runs ---
    fn set_irq_line(&mut self, gsi: u32, level: bool) -> Result<(), BackendError> {
        self.platform_irq_line(gsi, level);
        Ok(())
    }

    fn virtual_time_ns(&mut self) -> Option<u64> {
        self.platform_time_ns()
    }

    fn instructions_to_next_timer(&mut self) -> Option<u64> {
        self.platform_instructions_to_next_deadline()
    }

    fn take_deliveries(&mut self) -> Option<Vec<recorder::Delivery>> {
        Some(std::mem::take(&mut self.step_deliveries))
    }

    fn complete_io_in(&mut self, data: u32) -> Result<(), BackendError> {
        if self.pending_in.take().is_none() {
            return Err(BackendError::Other(
                "mmurr-emu: complete_io_in without a pending `in`".into(),
            ));
        }
        self.reset_hook_state();
        let before = self.read_regs_from_ctx()?;
        let (la, d) = self.decode_at_rip()?;
        let fetch = (la, d.map_or(1, |d| d.len as u64));
        self.uc.get_data_mut().in_value = Some(data);
        let exit = self.execute(d, &before)?;
        self.uc.get_data_mut().in_value = None;
        // The exit that asked for this value reported its writes as Unknown.
        let _ = self.take_written(&before, fetch, d.as_ref());
        match exit {
            Exit::Stepped => Ok(()),
            other => Err(BackendError::EngineAt(format!(
                "mmurr-emu: completing the `in` at RIP {:#x} ended with {other:?}",
                before.rip
            ))),
        }
    }

    fn complete_mmio_read(&mut self, data: u64) -> Result<(), BackendError> {
        if !self.pending_mmio {
            return Err(BackendError::Other(
                "mmurr-emu: complete_mmio_read without a pending MMIO read".into(),
            ));
        }
        self.pending_mmio = false;
        self.reset_hook_state();
        let before = self.read_regs_from_ctx()?;
        let (la, d) = self.decode_at_rip()?;
        let fetch = (la, d.map_or(1, |d| d.len as u64));
        self.uc.get_data_mut().mmio_value = Some(data);
        let exit = self.execute(d, &before)?;
        self.uc.get_data_mut().mmio_value = None;
        // The exit that asked for this value reported its writes as Unknown.
        let _ = self.take_written(&before, fetch, d.as_ref());
        match exit {
            Exit::Stepped => Ok(()),
            // `or dword [mmio], 1`: the read answered, the instruction wrote the device too.
            Exit::MmioWrite { .. } => {
                self.completion_write = Some(exit);
                Ok(())
            }
            other => Err(BackendError::EngineAt(format!(
                "mmurr-emu: completing the MMIO read at RIP {:#x} ended with {other:?}",
                before.rip
            ))),
        }
    }

    fn take_completion(&mut self) -> StepResult {
        StepResult {
            exit: self.completion_write.take().unwrap_or(Exit::Stepped),
            // The exit that asked for the value reported its writes as Unknown.
            written: Written::Ranges(Vec::new()),
        }
    }
}
