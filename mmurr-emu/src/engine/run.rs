//! Runs: many instructions per `emu_start`, for recording at emulator speed.
//!
//! A step costs an `emu_start`, a decode, page walks and a register read per instruction
//! (≈ 4 µs); Unicorn itself runs tens of millions of instructions a second. While nothing the
//! recorder must see happens, [`EmuBackend::run_instructions`] lets Unicorn run whole
//! translation blocks and only watches:
//!
//! - the blocks run on the *runner*, a second Unicorn on the same RAM without Unicorn's
//!   instruction count ([`EmuBackend::open_runner`] says why it must be a second engine);
//!   the CPU state moves over for each of its `emu_start`s and back after;
//! - a block hook, called before every translation block executes, looks the block up in a
//!   cache of decoded blocks, counts its instructions (virtual time), and stops the engine
//!   *before* a block holding an instruction that needs a step of its own ([`needs_step`]:
//!   control-register/MSR/XCR0 writes, I/O, `hlt`, software interrupts, far transfers and
//!   segment loads, nondeterministic inputs, `rep` string instructions, anything
//!   undecodable) or one that would take the run past its budget. The clean instructions
//!   before it run in a second, counted `emu_start` on the stepping engine, so the run ends
//!   exactly before the instruction or at the budget;
//! - the memory-write hook marks pages dirty (and saves each page's bytes before its first
//!   write, to undo the run);
//! - QEMU's page walker sets accessed/dirty bits without any hook: the paging-structure pages
//!   reachable from CR3 ([`mmu::structure_pages`]) in which some present entry still lacks
//!   one of them join the dirty pages, and the recorder keeps only the bytes that changed;
//! - an exception inside the run (a page fault, #UD, a trap) undoes the whole run and runs
//!   again up to the instruction before the faulting one, so the fault itself is stepped and
//!   recorded exactly as without runs;
//! - the platform ([`super::machine`]): a run starts only at a boundary where the CPU takes no
//!   interrupt, and its budget ends at the next timer deadline (in virtual time, a count of
//!   retired instructions), so it stops exactly at the boundary where stepping would first
//!   see the timer's interrupt; while an interrupt waits for RFLAGS.IF, `popf` (which may set
//!   it) is a step too. An access to the LAPIC or IOAPIC page must see the device at its
//!   exact virtual time, which only a step gives: the run is undone up to the instruction
//!   before it, as for an exception. So a run holds no interrupt and no input, and
//!   re-executing it step by step on a fresh platform passes through the same states.
//!
//! The stepping engine's instruction count is always on (`count > 0` in every `emu_start`
//! there): switching it off flushes every translated block. The runner never has one. Each
//! engine notices writes to code only when it makes them itself: pages holding code either
//! translated are tracked (`RunHooks::code`), and a write to one flushes the other engine's
//! translations before it runs again.

use super::{engine_err, EmuBackend, HookState};
use crate::ctx::{self, Ctx, OFF_EIP};
use crate::ram::{in_ram, RamView};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};
use recorder::{BackendError, RunResult, Written};
use rustc_hash::FxHashMap;
use unicorn_engine::unicorn_const::{Arch, HookType, Mode, Prot};
use unicorn_engine::{RegisterX86, Unicorn};

/// At most this many paging-structure pages are diffed after a run; a guest with more runs
/// step by step (its tables are too large to diff cheaply at every run's end).
const MAX_TABLE_PAGES: usize = 4096;

/// Whether `i` must be executed as a step of its own: what it does is an event, an input, or
/// something the step path handles specially (see the module documentation).
pub fn needs_step(i: &Instruction) -> bool {
    use Mnemonic as M;
    // CLI only clears IF (iced counts it privileged, as IOPL-sensitive): no interrupt arrives
    // inside a run, and one that waits keeps waiting. A Linux boot runs it 100 000s of times
    // (`local_irq_save`); a #GP for it undoes the run like any exception.
    if (i.is_privileged() && i.mnemonic() != M::Cli)
        || insn::nondeterministic(i).is_some()
        || i.is_jmp_far()
        || i.is_jmp_far_indirect()
        || i.is_call_far()
        || i.is_call_far_indirect()
        || ((i.has_rep_prefix() || i.has_repne_prefix()) && i.is_string_instruction())
    {
        return true;
    }
    if matches!(
        i.flow_control(),
        FlowControl::Interrupt | FlowControl::Exception | FlowControl::XbeginXabortXend
    ) {
        return true;
    }
    // Segment loads (descriptor reads and accessed bits), MOV SS/POP SS and STI (interrupt
    // shadows), and what writes the registers a step re-reads ([`recorder`]'s rare ones).
    let writes_segment = matches!(i.mnemonic(), M::Mov | M::Pop)
        && i.op0_kind() == OpKind::Register
        && i.op0_register().is_segment_register();
    writes_segment
        || matches!(
            i.mnemonic(),
            M::In
                | M::Out
                | M::Insb
                | M::Insw
                | M::Insd
                | M::Outsb
                | M::Outsw
                | M::Outsd
                | M::Iret
                | M::Iretd
                | M::Iretq
                | M::Retf
                | M::Syscall
                | M::Sysret
                | M::Sysretq
                | M::Sysenter
                | M::Sysexit
                | M::Sysexitq
                | M::Lds
                | M::Les
                | M::Lfs
                | M::Lgs
                | M::Lss
                | M::Sti
                | M::Wrpkru
                | M::Xrstor
                | M::Xrstor64
                | M::Xrstors
                | M::Xrstors64
                | M::Xsetbv
                | M::Rsm
                | M::Monitor
                | M::Mwait
                | M::Monitorx
                | M::Mwaitx
                | M::Hlt
        )
}

/// A set of guest-physical pages: a bitmap over RAM plus the list of members, so clearing
/// costs what was set.
#[derive(Default)]
struct PageSet {
    bits: Vec<u64>,
    list: Vec<u64>,
}

impl PageSet {
    fn with_pages(pages: u64) -> PageSet {
        PageSet {
            bits: vec![0; pages.div_ceil(64) as usize],
            list: Vec::new(),
        }
    }

    /// Adds the page of `gpa`; true if it was new.
    fn insert(&mut self, gpa: u64) -> bool {
        let page = gpa >> 12;
        match self.bits.get_mut((page / 64) as usize) {
            Some(w) => {
                let bit = 1u64 << (page % 64);
                if *w & bit != 0 {
                    return false;
                }
                *w |= bit;
            }
            // Above the bitmap (RAM/ROM regions high up): the list alone.
            None if self.list.contains(&(page << 12)) => return false,
            None => {}
        }
        self.list.push(page << 12);
        true
    }

    fn contains(&self, gpa: u64) -> bool {
        let page = gpa >> 12;
        match self.bits.get((page / 64) as usize) {
            Some(w) => w & (1u64 << (page % 64)) != 0,
            None => self.list.contains(&(page << 12)),
        }
    }

    fn clear(&mut self) {
        for p in self.list.drain(..) {
            let page = p >> 12;
            if let Some(w) = self.bits.get_mut((page / 64) as usize) {
                *w = 0;
            }
        }
    }
}

/// Whether `i` may set RFLAGS.IF without being a step already ([`needs_step`] has `sti`,
/// `iret`, `sysret`): while an interrupt waits for IF, it must be.
fn may_set_if(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Popf | Mnemonic::Popfd | Mnemonic::Popfq
    )
}

/// A block's cache key: linear address, size in bytes, code bitness, CR3, and whether an
/// interrupt waits for RFLAGS.IF (which makes [`may_set_if`] instructions steps).
type BlockKey = (u64, u32, u32, u64, bool);

/// One translation block as decoded: how many instructions it has, how many of them (from
/// its start) may run in a run, and where each starts (offsets from the block's address).
struct Block {
    clean: u32,
    offsets: Vec<u16>,
}

/// The run machinery's part of the hook state.
#[derive(Default)]
pub struct RunHooks {
    /// A run is in progress (the hooks below act only then, except the write watch).
    active: bool,
    /// Code bitness and CS base for the run (constant within it: far transfers end runs).
    bits: u32,
    cs_base: u64,
    /// Decoded blocks by (linear address, size, bitness, CR3).
    blocks: FxHashMap<BlockKey, Block>,
    cr3: u64,
    /// An interrupt waits for RFLAGS.IF during this run.
    irq_waiting: bool,
    /// The run is iterations of this `rep` instruction ([`super::rep`]): the block hook
    /// neither stops nor counts.
    rep: Option<super::rep::Rep>,
    /// The run reached an instruction touching a platform page; the instructions of the run
    /// before it (`None`: where could not be told).
    device_hit: Option<Option<u64>>,
    /// Pages holding code of cached blocks and the paging structures: a write there (by the
    /// guest, in a run or a step) invalidates the cache.
    watch: PageSet,
    stale: bool,
    /// Pages written during the run, and their bytes before the first write.
    dirty: PageSet,
    undo: Vec<(u64, Box<[u8]>)>,
    /// Instructions in the blocks entered so far.
    executed: u64,
    /// The block last entered (its cache key) and how many of its instructions were counted.
    last: Option<(BlockKey, u32)>,
    /// The run stopped before a block whose first `n` instructions are clean.
    stopped_before: Option<u32>,
    /// Let the block at this address run its clean prefix (the counted second `emu_start`).
    allow: Option<u64>,
    /// On the runner: stop before a block that would take the run past this many instructions
    /// (the runner has no instruction count; blocks count by their decoded instructions).
    budget: Option<u64>,
    /// Guest-physical pages holding code either engine translated: decoded blocks and the
    /// instructions steps executed (tracked once the runner is open). Unicorn notices a write
    /// to code only in the engine that makes it and that translated the code.
    code: PageSet,
    /// A code page was written or the host wrote memory: flush both engines' translations
    /// before the runner runs again.
    flush_runner: bool,
    /// Pages joined `code` or the runner wrote code: flush the stepping engine's translations
    /// (a step's block reaches past the instruction it executes) after the runner.
    flush_stepper: bool,
    snapshot: Option<Ctx>,
    /// The paging-structure pages and the registers they were found under.
    tables: Option<(TablesKey, Vec<u64>)>,
    tables_stale: bool,
    /// Those of the pages in `tables` that the page walker may change (diffed after a run).
    walker: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct TablesKey {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    pdptrs: [u64; 4],
}

impl RunHooks {
    /// Whether a run is in progress.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the run reached a platform page (and forgets it).
    pub(super) fn take_device_hit(&mut self) -> bool {
        self.device_hit.take().is_some()
    }

    /// The linear address of `rip` in the run's code segment.
    fn linear(&self, rip: u64) -> u64 {
        if self.bits == 64 {
            rip
        } else {
            self.cs_base.wrapping_add(rip) & 0xffff_ffff
        }
    }

    /// How many instructions of the run retired before the one at linear address `lin`, when
    /// it lies in the block last entered.
    fn position(&self, lin: u64) -> Option<u64> {
        let (key, counted) = self.last?;
        let b = self.blocks.get(&key)?;
        let j = b.offsets[..counted as usize]
            .iter()
            .position(|&o| key.0.wrapping_add(u64::from(o)) == lin)?;
        self.executed
            .checked_sub(u64::from(counted))?
            .checked_add(j as u64)
    }

    /// The host changed guest memory (a debugger's write, a load): forget decoded blocks.
    pub fn host_wrote(&mut self) {
        self.stale = true;
        self.tables_stale = true;
        self.flush_runner = true;
    }

    /// Another vCPU's engine wrote `ranges` (every page when `all`), which this engine's write
    /// hook never saw: decoded blocks and paging-structure pages there are stale. Returns
    /// whether a page of code either engine translated was written (both engines' translated
    /// code must then go, [`RunHooks::host_wrote`]).
    pub(crate) fn others_wrote(&mut self, ranges: &[(u64, u64)], all: bool) -> bool {
        let hit = |set: &PageSet| {
            all || ranges.iter().any(|&(gpa, len)| {
                let last = gpa.saturating_add(len.max(1) - 1) & !0xfff;
                (gpa & !0xfff..=last)
                    .step_by(0x1000)
                    .any(|p| set.contains(p))
            })
        };
        if hit(&self.code) {
            self.host_wrote();
            return true;
        }
        if hit(&self.watch) {
            self.stale = true;
            self.tables_stale = true;
        }
        false
    }

    /// A step is about to execute code on guest-physical page `pa`.
    pub(super) fn stepped_code(&mut self, pa: u64) {
        if !self.code.bits.is_empty() {
            self.code.insert(pa);
        }
    }
}

/// A guest write of `len` bytes at `gpa` (in RAM), from the memory-write hook, which runs
/// before the bytes are stored. Returns whether the step path should list it (outside runs).
pub fn on_write(uc: &mut Unicorn<'_, HookState>, gpa: u64, len: u64) -> bool {
    let last = gpa.saturating_add(len.max(1) - 1);
    for page in [gpa & !0xfff, last & !0xfff] {
        let run = &mut uc.get_data_mut().run;
        if run.watch.contains(page) {
            run.stale = true;
            if run.tables_contain(page) {
                // Steps write tables too: the next run must not trust their walker bits.
                run.tables_stale = true;
            }
        }
        if run.code.contains(page) {
            run.flush_runner = true;
            run.flush_stepper = true;
        }
        if run.active && run.dirty.insert(page) {
            let mut bytes = vec![0u8; 0x1000].into_boxed_slice();
            if uc.mem_read(page, &mut bytes).is_ok() {
                uc.get_data_mut().run.undo.push((page, bytes));
            }
        }
    }
    !uc.get_data().run.active
}

/// An access to a platform page (LAPIC, IOAPIC) inside a run, from its MMIO callback (on the
/// stepping engine) or the runner's unmapped-memory hook: the access is not made; the engine
/// stops, and the run is undone up to the instruction before (the module documentation says
/// why). RIP is the accessing instruction's: the stepping engine's instruction count syncs
/// it before every instruction, and Unicorn restores it before an unmapped-memory hook.
pub fn device_access(uc: &mut Unicorn<'_, HookState>) {
    let rip = uc.reg_read(RegisterX86::RIP).ok();
    let run = &mut uc.get_data_mut().run;
    if run.device_hit.is_none() {
        run.device_hit = Some(rip.and_then(|r| run.position(run.linear(r))));
    }
    let _ = uc.emu_stop();
}

/// The block hook: see the module documentation.
pub fn on_block(uc: &mut Unicorn<'_, HookState>, addr: u64, size: u32) {
    if !uc.get_data().run.active || uc.get_data().run.rep.is_some() {
        return;
    }
    let (bits, cr3, irq_waiting) = {
        let run = &mut uc.get_data_mut().run;
        if run.stale {
            run.blocks.clear();
            run.watch.clear();
            run.stale = false;
            run.tables_stale = true;
        }
        (run.bits, run.cr3, run.irq_waiting)
    };
    let key = (addr, size, bits, cr3, irq_waiting);
    let known = uc
        .get_data()
        .run
        .blocks
        .get(&key)
        .map(|b| (b.clean, b.offsets.len() as u32));
    let (clean, total) = match known {
        Some(v) => v,
        None => {
            let block = decode_block(uc, addr, size, bits, irq_waiting);
            let v = (block.clean, block.offsets.len() as u32);
            uc.get_data_mut().run.blocks.insert(key, block);
            v
        }
    };
    let run = &mut uc.get_data_mut().run;
    let allowed = run.allow.take_if(|a| *a == addr).is_some();
    let past_budget = run
        .budget
        .is_some_and(|b| run.executed + u64::from(total) > b);
    if (clean == total || allowed) && !past_budget {
        let counted = if allowed { clean } else { total };
        run.executed += u64::from(counted);
        run.last = Some((key, counted));
    } else {
        run.stopped_before = Some(clean);
        let _ = uc.emu_stop();
    }
}

/// Decodes the block's bytes; its code pages join the write watch.
fn decode_block(
    uc: &mut Unicorn<'_, HookState>,
    addr: u64,
    size: u32,
    bits: u32,
    irq_waiting: bool,
) -> Block {
    let mut bytes = vec![0u8; size as usize];
    let mut done = 0usize;
    let mut pages = Vec::new();
    while done < bytes.len() {
        let a = addr.wrapping_add(done as u64);
        let chunk = ((0x1000 - (a & 0xfff)) as usize).min(bytes.len() - done);
        let Ok(pa) = uc.vmem_translate(a, Prot::EXEC) else {
            break;
        };
        if uc.mem_read(pa, &mut bytes[done..done + chunk]).is_err() {
            break;
        }
        pages.push(pa);
        done += chunk;
    }
    let run = &mut uc.get_data_mut().run;
    for p in pages {
        run.watch.insert(p);
        if !run.code.bits.is_empty() && run.code.insert(p) {
            run.flush_stepper = true;
        }
    }
    let mut offsets = Vec::new();
    let mut clean = None;
    let mut d = Decoder::with_ip(bits, &bytes[..done], addr, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() && offsets.len() < u16::MAX as usize {
        let off = d.position();
        d.decode_out(&mut i);
        offsets.push(off as u16);
        if clean.is_none() && (i.is_invalid() || needs_step(&i) || (irq_waiting && may_set_if(&i)))
        {
            clean = Some(offsets.len() as u32 - 1);
        }
    }
    // A block that does not decode to exactly its size is not understood: step it.
    if done != size as usize || d.position() != done {
        clean = Some(0);
    }
    Block {
        clean: clean.unwrap_or(offsets.len() as u32),
        offsets,
    }
}

impl EmuBackend {
    /// Runs at most `max` instructions (see the module documentation). Returns how many
    /// retired and the pages that may have changed.
    pub(super) fn run_instructions(&mut self, max: u64) -> Result<RunResult, BackendError> {
        let none = || RunResult {
            count: 0,
            retired: 0,
            written: Written::DirtyPages(Vec::new()),
        };
        if !self.loaded
            || max == 0
            || self.pending_in.is_some()
            || self.pending_mmio
            || !self.mmio.is_empty()
            || self.ram_buf.is_none()
        {
            return Ok(none());
        }
        let regs = self.read_regs_from_ctx()?;
        let Some(window) = self.run_window(regs.rflags, max) else {
            return Ok(none());
        };
        let max = window.budget;
        if max == 0 {
            return Ok(none());
        }
        let Some(tables) = self.table_pages(&regs) else {
            return Ok(none());
        };
        self.open_runner();
        let rep = match self.decode_at_rip()? {
            (_, Some(d)) => super::rep::rep_run(&d, regs.rip, regs.gpr[1]),
            _ => None,
        };
        self.save()?;
        let hf = self.ctx.hflags();
        let bits = if hf & ctx::HF_CS64_MASK != 0 {
            64
        } else if hf & ctx::HF_CS32_MASK != 0 {
            32
        } else {
            16
        };
        let mut snapshot = match self.uc.get_data_mut().run.snapshot.take() {
            Some(s) => s,
            None => Ctx::alloc(&self.uc).map_err(|e| engine_err("context alloc", e))?,
        };
        snapshot
            .save(&self.uc)
            .map_err(|e| engine_err("context save", e))?;
        let ram_pages = self.ram_size >> 12;
        {
            let run = &mut self.uc.get_data_mut().run;
            if run.dirty.bits.is_empty() {
                run.dirty = PageSet::with_pages(ram_pages);
                run.watch = PageSet::with_pages(ram_pages);
            }
            // Cached blocks are keyed by CR3 and bitness: nothing to clear when they change.
            run.cr3 = regs.cr3;
            run.bits = bits;
            run.irq_waiting = window.irq_waiting;
            run.rep = rep;
            run.device_hit = None;
            run.cs_base = self.ctx.seg(1).base;
            run.snapshot = Some(snapshot);
            run.executed = 0;
            run.last = None;
            run.stopped_before = None;
            run.allow = None;
            run.active = true;
        }
        self.reset_hook_state();
        self.regs_cache = None;
        let count = match self.advance(max) {
            Ok(n) => n,
            Err(Some(before)) => self.redo(before)?,
            Err(None) => self.redo(0)?,
        };
        {
            let run = &mut self.uc.get_data_mut().run;
            run.active = false;
            run.rep = None;
        }
        self.regs_cache = None;
        self.platform_retired(count);
        let mut pages = std::mem::take(&mut self.uc.get_data_mut().run.dirty.list);
        {
            let run = &mut self.uc.get_data_mut().run;
            // The list moved out; clear the bitmap behind it.
            for p in &pages {
                let page = p >> 12;
                if let Some(w) = run.dirty.bits.get_mut((page / 64) as usize) {
                    *w = 0;
                }
            }
            run.undo.clear();
            if pages.iter().any(|p| run.tables_contain(*p)) {
                run.tables_stale = true;
            }
        }
        if count > 0 {
            pages.extend_from_slice(&tables);
        }
        let ranges: Vec<(u64, u64)> = pages.iter().map(|&p| (p, 0x1000)).collect();
        self.sync_mirror(&ranges);
        let retired = match rep {
            Some(r) => u64::from(r.finished_by(count)),
            None => count,
        };
        Ok(RunResult {
            count,
            retired,
            written: Written::DirtyPages(pages),
        })
    }

    /// One `emu_start` of at most `count` instructions from RIP, `allow` letting the block at
    /// that linear address run its clean prefix. `Err` when the engine failed.
    fn run_engine(&mut self, count: u64, allow: Option<u64>) -> Result<Stop, ()> {
        let start = self.current_rip().map_err(|_| ())?;
        {
            let run = &mut self.uc.get_data_mut().run;
            run.stopped_before = None;
            run.allow = allow;
        }
        // The clean prefix of a block runs counted, on the stepping engine.
        let on_runner = allow.is_none() && self.runner.is_some();
        let r = if on_runner {
            self.run_on_runner(start, count)
        } else {
            let n = usize::try_from(count).unwrap_or(usize::MAX);
            self.uc.emu_start(start, 0, 0, n).map_err(|_| ())
        };
        let (executed, stopped, intr, unmapped, device_hit) = {
            let st = self.uc.get_data_mut();
            st.run.allow = None;
            (
                st.run.executed,
                st.run.stopped_before.take(),
                st.intr.take(),
                st.unmapped.take(),
                st.run.device_hit.take(),
            )
        };
        if let Some(before) = device_hit {
            // Whatever else happened, the run went past a platform access: undo it.
            return Ok(Stop::Fault {
                before: before.ok_or(())?,
            });
        }
        if r.is_err() || unmapped.is_some() {
            return Err(());
        }
        if let Some(vector) = intr {
            return Ok(Stop::Fault {
                before: self.retired_before_fault(vector).ok_or(())?,
            });
        }
        if let Some(clean) = stopped {
            return Ok(Stop::Before { executed, clean });
        }
        // Nothing else stops the engine but its instruction count (the runner has none: its
        // block hook stops it) — and Unicorn's exit address (`until` = 0): a guest executing at
        // linear address 0 is stepped instead.
        let rip = self.current_rip().map_err(|_| ())?;
        if on_runner || self.run_linear(rip) == 0 {
            return Err(());
        }
        Ok(Stop::Budget)
    }

    /// After the engine raised `vector` inside a run: how many instructions retired before
    /// the one that faulted (`None` if that cannot be told).
    fn retired_before_fault(&mut self, vector: u32) -> Option<u64> {
        let rip = self.current_rip().ok()?;
        let run = &self.uc.get_data().run;
        let executed = run.executed;
        if let Some(n) = run.position(run.linear(rip)) {
            return Some(n);
        }
        // Outside the last block: the block retired and fetching the next one faulted (a #PF
        // belongs to the next instruction) — except a branch to a non-canonical address,
        // which faults on the branch itself (the block's last instruction).
        let canonical = ((rip << 16) as i64 >> 16) as u64 == rip;
        if vector == 13 && !canonical {
            return executed.checked_sub(1);
        }
        Some(executed)
    }

    /// Runs at most `max` instructions: `Ok(n)` when `n` retired with nothing raised;
    /// `Err(Some(k))` when an exception was raised after `k` retired; `Err(None)` when the
    /// engine failed.
    fn advance(&mut self, max: u64) -> Result<u64, Option<u64>> {
        if let Some(rep) = self.uc.get_data().run.rep {
            return self.advance_rep(rep, max);
        }
        match self.run_engine(max, None) {
            Ok(Stop::Budget) => Ok(max),
            Ok(Stop::Before { executed, clean }) => {
                let extra = u64::from(clean).min(max.saturating_sub(executed));
                if extra == 0 {
                    return Ok(executed);
                }
                let rip = self.current_rip().map_err(|_| None)?;
                let at = self.run_linear(rip);
                match self.run_engine(extra, Some(at)) {
                    Ok(Stop::Budget) => Ok(executed + extra),
                    Ok(Stop::Fault { before }) => Err(Some(before)),
                    // Nothing else can stop a clean prefix.
                    _ => Err(None),
                }
            }
            Ok(Stop::Fault { before }) => Err(Some(before)),
            Err(()) => Err(None),
        }
    }

    /// Opens the runner (once; `None` when it cannot serve this guest): a second Unicorn on
    /// the same RAM with no instruction count, so no per-instruction helper in its blocks.
    /// Unicorn installs its count as a code hook in every block it translates, and switching
    /// the count off deletes that hook and flushes every translated block (`uc_emu_start`),
    /// so one engine cannot both step and run without it. Guests with memory Unicorn owns
    /// (ROM, RAM regions beyond the first) keep running counted on the stepping engine.
    fn open_runner(&mut self) -> Option<()> {
        if self.runner.is_some() || self.runner_tried {
            return self.runner.as_ref().map(|_| ());
        }
        self.runner_tried = true;
        if self.ram.len() != 1 || !self.mmio.is_empty() {
            return None;
        }
        let ram = self.ram_buf.as_ref()?;
        let mut uc =
            Unicorn::new_with_data(Arch::X86, Mode::MODE_64, super::HookState::default()).ok()?;
        uc.ctl_set_cpu_model(crate::cpuid::CPU_MODEL as i32).ok()?;
        // SAFETY: the buffers are page-aligned and as long as mapped, and outlive the runner
        // (declared after it in EmuBackend).
        unsafe { uc.mem_map_ptr(0, self.ram_size, Prot::ALL, ram.ptr.cast()) }.ok()?;
        if let (Some(p), Some(buf)) = (self.pdpt_shadow, self.pdpt_buf.as_ref()) {
            unsafe { uc.mem_map_ptr(p, 0x1000, Prot::READ | Prot::WRITE, buf.ptr.cast()) }.ok()?;
        }
        super::add_common_hooks(&mut uc).ok()?;
        // The platform's pages are not mapped here: an access stops the runner with RIP at
        // the accessing instruction (Unicorn restores it for an unmapped access).
        uc.add_mem_hook(HookType::MEM_UNMAPPED, 1, 0, |uc, ty, addr, size, _v| {
            if super::machine::is_platform_page(addr) {
                device_access(uc);
            } else {
                super::note_unmapped(uc, ty, addr, size);
            }
            false
        })
        .ok()?;
        uc.get_data_mut().ram = self.ram.clone();
        let run = &mut self.uc.get_data_mut().run;
        run.code = PageSet::with_pages(self.ram_size >> 12);
        // Steps before now translated code nobody tracked.
        run.flush_stepper = true;
        self.runner = Some(uc);
        Some(())
    }

    /// One `emu_start` of the runner from `start` (linear `rip`), stopping before the block
    /// that would take it past `budget` instructions: the CPU state moves over and back, the
    /// run machinery's state too, and what the runner's hooks saw lands in the stepping
    /// engine's hook state.
    fn run_on_runner(&mut self, start: u64, budget: u64) -> Result<(), ()> {
        let Some(runner) = self.runner.as_mut() else {
            return Err(());
        };
        self.ctx.save(&self.uc).map_err(|_| ())?;
        self.ctx.restore(runner).map_err(|_| ())?;
        // Steps may have changed mappings: the runner's TLB (and its block lookup by address,
        // which the TLB flush clears) must walk again.
        let _ = runner.ctl_flush_tlb();
        let run = &mut self.uc.get_data_mut().run;
        if run.flush_runner {
            // Both engines start afresh, and so does the record of their code pages.
            let _ = runner.ctl_flush_tb();
            run.flush_runner = false;
            run.code.clear();
            run.stale = true;
            run.flush_stepper = true;
        }
        run.budget = Some(budget);
        std::mem::swap(run, &mut runner.get_data_mut().run);
        let r = runner.emu_start(start, 0, 0, 0);
        let st = runner.get_data_mut();
        let (intr, unmapped) = (st.intr.take(), st.unmapped.take());
        let run = &mut self.uc.get_data_mut().run;
        std::mem::swap(run, &mut runner.get_data_mut().run);
        run.budget = None;
        let flush_stepper = std::mem::take(&mut run.flush_stepper);
        let st = self.uc.get_data_mut();
        st.intr = st.intr.or(intr);
        st.unmapped = st.unmapped.or(unmapped);
        self.ctx.save(runner).map_err(|_| ())?;
        self.ctx.restore(&self.uc).map_err(|_| ())?;
        self.regs_cache = None;
        let _ = self.uc.ctl_flush_tlb();
        if flush_stepper {
            let _ = self.uc.ctl_flush_tb();
        }
        r.map_err(|_| ())
    }

    /// Puts the machine back as it was when the run started and runs exactly `count`
    /// instructions again (deterministically: they raised nothing the first time). Returns
    /// the instructions the run retired (0 if even that failed).
    fn redo(&mut self, count: u64) -> Result<u64, BackendError> {
        self.undo_run()?;
        if count == 0 {
            return Ok(0);
        }
        match self.advance(count) {
            Ok(n) if n == count => Ok(count),
            _ => {
                self.undo_run()?;
                Ok(0)
            }
        }
    }

    /// Restores registers, the pages the run wrote and the paging structures (whose A/D bits
    /// the walker may have set; the mirror holds them as before the run).
    fn undo_run(&mut self) -> Result<(), BackendError> {
        let (undo, snapshot) = {
            let run = &mut self.uc.get_data_mut().run;
            (std::mem::take(&mut run.undo), run.snapshot.take())
        };
        if let Some(s) = &snapshot {
            s.restore(&self.uc)
                .map_err(|e| engine_err("context restore", e))?;
        }
        self.uc.get_data_mut().run.snapshot = snapshot;
        let tables = self.uc.get_data().run.walker.clone();
        if let Some(mirror) = self.mirror.clone() {
            let mirror = mirror.borrow();
            for p in tables {
                let a = p as usize;
                if let Some(was) = mirror.bytes().get(a..a + 0x1000) {
                    let was = was.to_vec();
                    self.uc
                        .mem_write(p, &was)
                        .map_err(|e| engine_err("mem_write", e))?;
                }
            }
        }
        let mut code = false;
        for (page, bytes) in undo.iter().rev() {
            let run = &self.uc.get_data().run;
            code |= run.watch.contains(*page) || run.code.contains(*page);
            self.uc
                .mem_write(*page, bytes)
                .map_err(|e| engine_err("mem_write", e))?;
        }
        {
            let run = &mut self.uc.get_data_mut().run;
            run.dirty.clear();
            run.executed = 0;
            run.last = None;
            run.stopped_before = None;
            run.allow = None;
        }
        self.reset_hook_state();
        self.regs_cache = None;
        let _ = self.uc.ctl_flush_tlb();
        if code {
            // uc_mem_write does not invalidate translated code.
            let _ = self.uc.ctl_flush_tb();
            self.uc.get_data_mut().run.flush_runner = true;
        }
        Ok(())
    }

    fn current_rip(&mut self) -> Result<u64, BackendError> {
        self.save()?;
        Ok(self.ctx.u64_at(OFF_EIP))
    }

    /// The linear address of `rip` in the run's code segment.
    fn run_linear(&self, rip: u64) -> u64 {
        self.uc.get_data().run.linear(rip)
    }

    /// The paging-structure pages under `regs` that the engine's page walker may still
    /// change ([`walker_may_set`]; the structure is cached until the registers change or a
    /// write lands in it); `None` when there are too many to diff at every run's end.
    fn table_pages(&mut self, regs: &traces::Regs) -> Option<Vec<u64>> {
        let key = TablesKey {
            cr0: regs.cr0,
            cr3: regs.cr3,
            cr4: regs.cr4,
            efer: regs.efer,
            pdptrs: regs.pdptrs,
        };
        let ram = self.ram_buf.as_ref()?;
        let entry = if regs.cr4 & mmu::bits::CR4_PAE != 0 {
            8
        } else {
            4
        };
        let may_set = |p: &u64| {
            let a = *p as usize;
            ram.bytes()
                .get(a..a + 0x1000)
                .is_none_or(|b| walker_may_set(b, entry))
        };
        let run = &mut self.uc.get_data_mut().run;
        if run.tables.as_ref().is_some_and(|(k, _)| *k == key) && !run.tables_stale {
            // Only the walker changed these pages since: it sets bits, never clears them.
            run.walker.retain(may_set);
            return Some(run.walker.clone());
        }
        let cregs = recorder::guest_view::control_regs(regs);
        let pages =
            mmu::structure_pages(&cregs, &self.cpu, &RamView(ram.bytes()), MAX_TABLE_PAGES)?;
        let run = &mut self.uc.get_data_mut().run;
        for &p in &pages {
            if in_ram(&self.ram, p, 0x1000) {
                run.watch.insert(p);
            }
        }
        run.walker = pages.iter().copied().filter(may_set).collect();
        run.tables = Some((key, pages));
        run.tables_stale = false;
        Some(run.walker.clone())
    }
}

/// Whether QEMU's page walker may change this paging-structure page: some present entry
/// lacks its accessed or dirty bit (bits 5 and 6 in every format; a non-leaf entry's bit 6
/// is ignored, so it counts only if the guest left it clear). The walker sets those bits
/// without any hook, and nothing else changes the page without a guest write, which the
/// write hook sees: the other pages need no diff at a run's end.
fn walker_may_set(page: &[u8], entry: usize) -> bool {
    page.chunks_exact(entry).any(|e| {
        let low = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        low & 1 != 0 && low & 0x60 != 0x60
    })
}

impl RunHooks {
    fn tables_contain(&self, page: u64) -> bool {
        self.tables
            .as_ref()
            .is_some_and(|(_, t)| t.binary_search(&page).is_ok())
    }
}

/// Why one `emu_start` of a run ended.
enum Stop {
    /// The instruction count ran out: exactly the budget retired.
    Budget,
    /// Stopped before a block (`executed` instructions retired) whose first `clean`
    /// instructions may still run.
    Before { executed: u64, clean: u32 },
    /// An exception: `before` instructions retired before the faulting one.
    Fault { before: u64 },
}

#[cfg(test)]
mod tests {
    use super::needs_step;
    use iced_x86::{Decoder, DecoderOptions};

    fn step(bytes: &[u8]) -> bool {
        let i = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
        assert!(!i.is_invalid());
        needs_step(&i)
    }

    #[test]
    fn events_and_inputs_need_a_step_of_their_own() {
        assert!(step(&[0x0f, 0x22, 0xd8])); // mov cr3, rax
        assert!(step(&[0x0f, 0x20, 0xd8])); // mov rax, cr3
        assert!(step(&[0x0f, 0x30])); // wrmsr
        assert!(step(&[0x0f, 0x01, 0xd1])); // xsetbv
        assert!(step(&[0x0f, 0x31])); // rdtsc
        assert!(step(&[0x0f, 0xa2])); // cpuid
        assert!(step(&[0xe6, 0x80])); // out 0x80, al
        assert!(step(&[0xec])); // in al, dx
        assert!(step(&[0xf4])); // hlt
        assert!(step(&[0xcd, 0x80])); // int 0x80
        assert!(step(&[0xcc])); // int3
        assert!(step(&[0x48, 0xcf])); // iretq
        assert!(step(&[0x8e, 0xd8])); // mov ds, ax
        assert!(step(&[0xf3, 0x48, 0xab])); // rep stosq
        assert!(step(&[0x0f, 0x05])); // syscall
        assert!(step(&[0x0f, 0x01, 0xf8])); // swapgs
        assert!(step(&[0xfb])); // sti
    }

    #[test]
    fn ordinary_instructions_run() {
        assert!(!step(&[0x48, 0x89, 0x4c, 0x24, 0xf8])); // mov [rsp-8], rcx
        assert!(!step(&[0xff, 0xc9])); // dec ecx
        assert!(!step(&[0x75, 0xf7])); // jnz
        assert!(!step(&[0xe8, 0, 0, 0, 0])); // call
        assert!(!step(&[0xc3])); // ret
        assert!(!step(&[0x48, 0xab])); // stosq (no rep)
        assert!(!step(&[0x9c])); // pushfq
        assert!(!step(&[0xfa])); // cli
    }
}
