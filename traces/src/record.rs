//! What a trace says: the header and the records, format version 4 (version 1 plus appended
//! variants: `EventKind::ExternalInterrupt`, `EventKind::Retired`, `EndReason::Stuck`; a
//! `CrWrite` made by an instruction carries the value it wrote in `new` (format 2);
//! `Record::Run`, many instructions in one record (format 3); `Header::host`, `Record::Host`
//! and `FindingKind::HostDisagreement`, what the recording host's own KVM did (format 4);
//! `Header::vcpus`, `Record::Vcpu` and `Record::Vcpus`, several vCPUs (format 5)).
//!
//! These types are the contract between the recorder (which writes them), the replayer, the
//! TUI and the gdb server (which read them). They are plain data: `traces` depends on none of
//! our crates, so MMU roles are stored as the raw integers KVM compares (`cpu_role.as_u64`,
//! `root_role.word`) and policies by index into [`Header::policies`]; the `mmu` crate
//! decodes them.
//!
//! Compatibility: bincode encodes enums by variant index, so variants and fields are only ever
//! appended in a new format version, never reordered or removed.

use crate::regs::Regs;
use serde::{Deserialize, Serialize};

/// Instruction count since the entry state. Step `n`'s record describes the `n`-th
/// instruction executed (1-based); step 0 is the entry state itself.
pub type Step = u64;
/// Sequence number of an [`Event`], dense from 0 in file order.
pub type EventId = u64;

/// Everything a reader needs before the first record, and everything `verify` needs to run the
/// guest again: the trace is self-contained.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `mmurr` version that wrote the trace.
    pub tool_version: String,
    /// Seconds since the Unix epoch when recording started.
    pub created_unix: u64,
    pub backend: BackendInfo,
    pub guest: GuestSpec,
    /// Policy names (kernel releases, e.g. `v5.1-rc3`) whose decisions the trace carries;
    /// [`MmuDecision::policy`] indexes this list.
    pub policies: Vec<String>,
    /// `tdp` or `shadow`: which MMU flavour the policies were evaluated for.
    pub mmu_flavour: String,
    /// Built-in scenario name, if the guest is one.
    pub scenario: Option<String>,
    /// The command line that recorded this trace.
    pub command_line: Vec<String>,
    /// A keyframe is written at least every this many steps.
    pub keyframe_interval: u64,
    /// The recording host's KVM MMU and whether its events were recorded (format 4; `None`
    /// for older traces and for backends without a host KVM). Must stay the last field: a
    /// format 1–3 header decodes as a format 4 one without it (see `preamble`).
    pub host: Option<crate::host::HostMmu>,
    /// How many vCPUs the guest has (format 5; 0 in older traces, which means one). With more
    /// than one, [`Record::Vcpu`] says which vCPU the records that follow belong to. Must stay
    /// the last field, like `host` before it.
    pub vcpus: u32,
}

impl Header {
    /// The number of vCPUs: at least one.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.max(1)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendKind {
    #[default]
    Kvm,
    Emu,
    /// No engine: a model-level scenario's script written as a trace (format 6). Its steps
    /// are the script's actions; there is nothing to re-execute.
    Model,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Kvm => "kvm",
            BackendKind::Emu => "emu",
            BackendKind::Model => "model",
        }
    }
}

/// The machine and engine that recorded the trace, so `verify` elsewhere can say what differs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub kind: BackendKind,
    /// Engine description, e.g. `KVM api 12 (PVM, shadow paging)` or `unicorn 2.1.3`.
    pub engine: String,
    /// `uname -r` of the recording host.
    pub host_kernel: String,
    pub cpu_vendor: String,
    pub cpu_model_name: String,
    pub cpu_family: u32,
    pub cpu_model: u32,
    pub cpu_stepping: u32,
    /// KVM capabilities and module parameters that matter to the MMU (name, value).
    pub kvm_facts: Vec<(String, String)>,
}

/// The guest: its memory at entry, its CPUID, its registers at entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSpec {
    /// Guest RAM size in bytes; RAM is guest-physical `0..ram_size` unless `regions` says more.
    pub ram_size: u64,
    pub regions: Vec<MemRegion>,
    /// Distinct byte blobs (images, boot structures), deduplicated by content hash.
    pub blobs: Vec<Blob>,
    /// Where each blob is placed at entry; all other RAM is zero.
    pub loads: Vec<Load>,
    pub entry: Regs,
    pub cpuid: Vec<CpuidEntry>,
    /// How the guest was produced: `scenario NAME`, `multiboot FILE`, `raw FILE@ADDR`.
    pub origin: String,
    /// Kernel command line for multiboot guests.
    pub cmdline: String,
    /// MAXPHYADDR the guest sees (CPUID 0x80000008.EAX[7:0]).
    pub maxphyaddr: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemRegion {
    pub gpa: u64,
    pub size: u64,
    pub kind: RegionKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionKind {
    Ram,
    Rom,
    Mmio,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// xxh3-64 of `data`.
    pub hash: u64,
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Index into [`GuestSpec::blobs`].
    pub blob: u32,
    pub gpa: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// One record of the stream.
// A keyframe carries a full register file inline; boxing it would change every producer and
// consumer for a saving only decoded chunks see.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Step(StepRecord),
    Event(Event),
    Keyframe(Keyframe),
    End(EndRecord),
    /// Instructions `first..=step` as one record (format 3): see [`RunRecord`].
    Run(RunRecord),
    /// What the host's KVM did during one step (format 4): see [`crate::host::HostRecord`].
    Host(crate::host::HostRecord),
    /// The records that follow belong to another vCPU (format 5): see [`VcpuSwitch`].
    Vcpu(VcpuSwitch),
    /// Every vCPU's registers at a keyframe (format 5): see [`VcpusKeyframe`].
    Vcpus(VcpusKeyframe),
}

impl Record {
    /// The step this record belongs to.
    pub fn step(&self) -> Step {
        match self {
            Record::Step(s) => s.step,
            Record::Event(e) => e.step,
            Record::Keyframe(k) => k.step,
            Record::End(e) => e.step,
            Record::Run(r) => r.step,
            Record::Host(h) => h.step,
            Record::Vcpu(v) => v.step,
            Record::Vcpus(v) => v.step,
        }
    }

    /// The first step this record covers: [`RunRecord::first`] for a run, else [`Record::step`].
    pub fn first_step(&self) -> Step {
        match self {
            Record::Run(r) => r.first,
            other => other.step(),
        }
    }
}

/// One executed instruction: where it was and what it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    /// RIP before the instruction executed.
    pub rip: u64,
    /// Registers whose value changed, with the value after the instruction.
    pub regs: Vec<(crate::regs::RegId, u64)>,
    /// Guest-physical memory the instruction wrote, with the bytes after the write.
    pub mem: Vec<MemWrite>,
}

/// A run (format 3): instructions `first..=step` executed with nothing to record one by one —
/// no control-register write, exception, interrupt, I/O or other event among them (the
/// recorder runs any instruction that may produce one as its own step). It stores what the
/// run changed as a whole: registers after its last instruction (a delta from the state before
/// `first`) and the memory it wrote, as bytes at its end. State *inside* a run is rebuilt by
/// deterministic re-execution from the state before it; a reader without that answers only at
/// run boundaries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The first instruction of the run (1-based, like [`StepRecord::step`]).
    pub first: Step,
    /// The last instruction of the run: the state after the record is the state after `step`.
    pub step: Step,
    /// RIP before the first instruction.
    pub rip: u64,
    /// Registers whose value differs after `step` from before `first`, with the value after.
    pub regs: Vec<(crate::regs::RegId, u64)>,
    /// Guest-physical memory that differs after `step` from before `first`, with the bytes after.
    pub mem: Vec<MemWrite>,
}

impl RunRecord {
    /// Instructions in the run.
    pub fn count(&self) -> u64 {
        self.step.saturating_sub(self.first).saturating_add(1)
    }
}

/// A change of the current vCPU (format 5, traces of several vCPUs only): the step, register,
/// memory and event records after this one, up to the next switch, belong to vCPU `vcpu`, and
/// steps `step + 1 ..` are its instructions. Steps count instructions of the whole machine in
/// the one total order the recorder ran them in. A one-vCPU trace has none; a trace of several
/// starts every chunk with one, so that each chunk says alone whose records it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuSwitch {
    /// The last step before the switch (the machine state it applies to).
    pub step: Step,
    pub vcpu: u32,
}

/// Every vCPU's registers at a keyframe (format 5, traces of several vCPUs only), written right
/// after the [`Keyframe`] of the same step, whose `regs` are those of vCPU `current`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpusKeyframe {
    pub step: Step,
    /// The vCPU that executed `step` (vCPU 0 at step 0).
    pub current: u32,
    /// Indexed by vCPU.
    pub regs: Vec<Regs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemWrite {
    pub gpa: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Full register state and, every so often, the memory pages changed since the previous
/// memory keyframe: the starting points of a seek.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyframe {
    /// State after step `step` executed (step 0: the entry state).
    pub step: Step,
    pub regs: Regs,
    /// Pages (4 KiB, guest-physical, page-aligned) changed since the previous keyframe that
    /// carried pages; empty for register-only keyframes.
    pub pages: Vec<Page>,
    /// True for a page keyframe: `pages` holds every page changed since the previous page
    /// keyframe (or since entry, for the first), possibly none. Memory at `step` is then the
    /// entry image (the header's loads) with the pages of every page keyframe up to here
    /// applied in order.
    pub carries_pages: bool,
    /// xxh3-64 over all of guest RAM at this step, in ascending address order: the recorder's
    /// self-check and the replayer's proof of a correct reconstruction.
    pub memory_hash: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub gpa: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Something worth stopping at: numbered densely from 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// The step whose instruction caused the event (0 for events at entry).
    pub step: Step,
    /// RIP of that instruction.
    pub rip: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A control register, EFER or XCR0 write (including writes that leave the value as it was).
    CrWrite(CrWrite),
    /// The paging mode changed.
    Transition { from: PagingMode, to: PagingMode },
    /// What one modelled kernel version's MMU did about a `CrWrite`.
    Mmu(MmuDecision),
    /// A policy's MMU context disagrees with the architecture, or a reset was needless.
    Finding(Finding),
    /// Port I/O; reads carry the value the device returned (a recorded input for `verify`).
    Io(IoAccess),
    /// MMIO outside RAM; reads carry the value returned.
    Mmio(MmioAccess),
    /// An exception or interrupt delivered to the guest.
    Exception(ExceptionInfo),
    /// The engine's translation disagreed with the reference walker (emu backend).
    EngineDivergence {
        gva: u64,
        engine: String,
        reference: String,
    },
    /// An external interrupt (or NMI) delivered at the boundary before the instruction at
    /// `Event::rip` (format 2). Exceptions, including `int n`, are [`EventKind::Exception`].
    ExternalInterrupt(InterruptInfo),
    /// The step retired `count` (> 1) instructions at once: on some hosts one KVM single step
    /// runs past an instruction (seen: `endbr64` and the following `push`). Format 2.
    Retired { count: u32 },
    /// A startup IPI started this vCPU, an AP that waited for one since INIT (format 5): the
    /// step ran no instruction; it loaded CS = `vector << 8`, IP = 0 into the INIT state.
    Startup { vector: u8 },
    /// The VMM acted on the vCPU before this step (format 6): KVM_SET_SREGS, KVM_SET_MSRS,
    /// KVM_SET_CPUID2, INIT, KVM_SET_NESTED_STATE, or L1's VMRUN into L2. The step's registers
    /// are those after it.
    HostAction(crate::host_action::HostAction),
}

impl EventKind {
    /// Short kind name used by filters, `info --json` and exports.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CrWrite(w) => w.reg.name(),
            EventKind::Transition { .. } => "transition",
            EventKind::Mmu(_) => "mmu",
            EventKind::Finding(_) => "finding",
            EventKind::Io(_) => "io",
            EventKind::Mmio(_) => "mmio",
            EventKind::Exception(_) => "exception",
            EventKind::EngineDivergence { .. } => "engine-divergence",
            EventKind::ExternalInterrupt(_) => "interrupt",
            EventKind::Retired { .. } => "retired",
            EventKind::Startup { .. } => "startup",
            EventKind::HostAction(_) => "host-action",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlReg {
    Cr0,
    Cr3,
    Cr4,
    Efer,
    Xcr0,
}

impl ControlReg {
    pub fn name(self) -> &'static str {
        match self {
            ControlReg::Cr0 => "cr0",
            ControlReg::Cr3 => "cr3",
            ControlReg::Cr4 => "cr4",
            ControlReg::Efer => "efer",
            ControlReg::Xcr0 => "xcr0",
        }
    }
}

/// The instruction (or host action) that wrote a control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteVia {
    MovCr,
    Lmsw,
    Clts,
    Wrmsr,
    Xsetbv,
    Rsm,
    TaskSwitch,
    /// Set by the VMM (KVM_SET_SREGS / KVM_SET_MSRS), not by a guest instruction.
    Host,
    /// The value changed but no decoded instruction explains it.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrWrite {
    pub reg: ControlReg,
    pub old: u64,
    /// The value written: for an instruction, the operand it wrote, whether or not it faulted
    /// (what KVM's handlers receive; the register may end up holding something else — CR0.ET
    /// forced, the CR3 no-flush bit dropped, EFER.LMA kept — which the step's registers show).
    /// Format 1 recorded the register's value after the write, and `old` for a faulted one.
    /// For `via: Other`/`Host`, the register's new value.
    pub new: u64,
    pub via: WriteVia,
    /// The write raised #GP instead of taking effect.
    pub faulted: bool,
}

/// The architectural paging mode (SDM Vol. 3A §4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PagingMode {
    /// CR0.PE = 0.
    Real,
    /// CR0.PE = 1, CR0.PG = 0.
    Unpaged,
    /// 32-bit paging (CR0.PG = 1, CR4.PAE = 0).
    Bits32,
    /// PAE paging (CR0.PG = 1, CR4.PAE = 1, EFER.LMA = 0).
    Pae,
    /// 4-level paging (IA-32e).
    Level4,
    /// 5-level paging (IA-32e with CR4.LA57).
    Level5,
}

impl PagingMode {
    pub fn name(self) -> &'static str {
        match self {
            PagingMode::Real => "real",
            PagingMode::Unpaged => "unpaged",
            PagingMode::Bits32 => "32-bit",
            PagingMode::Pae => "pae",
            PagingMode::Level4 => "4-level",
            PagingMode::Level5 => "5-level",
        }
    }
}

/// What a policy's KVM did with one control-register write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmuDecision {
    /// Index into [`Header::policies`].
    pub policy: u16,
    /// The `CrWrite` event this decision answers.
    pub cause: EventId,
    pub outcome: MmuOutcome,
    /// Bits of the written register whose change triggered the reset (0 when none did).
    pub trigger_bits: u64,
    pub old_cpu_role: u64,
    pub new_cpu_role: u64,
    pub old_root_role: u32,
    pub new_root_role: u32,
    /// Names of the MMU-context attributes a real re-init changed (root level, walker, ...).
    pub context_changes: Vec<String>,
    /// For CR3 loads: the prev_roots lookup.
    pub root_cache: Option<RootCacheLookup>,
    pub tlb_flush: TlbFlush,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MmuOutcome {
    /// `kvm_mmu_reset_context` ran and the context was rebuilt.
    Reinit,
    /// A reset was triggered but the recompute short-circuited: the compare key was unchanged.
    SkippedRoleUnchanged,
    /// No role bit changed: no reset.
    NoTrigger,
    /// The model says KVM would inject #GP for this write.
    Gp,
    /// `kvm_init_mmu` without unloading roots (v6.4+ CR0.WP-only toggles under TDP).
    InitOnly,
    /// A CR3 load handled by `kvm_mmu_new_pgd` (no role recompute).
    NewPgd,
}

impl MmuOutcome {
    pub fn name(self) -> &'static str {
        match self {
            MmuOutcome::Reinit => "reinit",
            MmuOutcome::SkippedRoleUnchanged => "skipped: role unchanged",
            MmuOutcome::NoTrigger => "no trigger",
            MmuOutcome::Gp => "#GP",
            MmuOutcome::InitOnly => "init without unload",
            MmuOutcome::NewPgd => "new pgd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCacheLookup {
    pub hit: bool,
    /// Which prev_roots slot hit (0 = MRU), or `None` for the current root / a miss.
    pub slot: Option<u8>,
    /// The `root_role.word` required for the match.
    pub role: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlbFlush {
    None,
    /// KVM_REQ_TLB_FLUSH_CURRENT.
    Current,
    /// KVM_REQ_TLB_FLUSH_GUEST (all PCIDs).
    Guest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Index into [`Header::policies`].
    pub policy: u16,
    /// The event (normally a `CrWrite`) the finding is about.
    pub cause: EventId,
    pub kind: FindingKind,
    /// Context attributes that differ: (name, kept by the policy, required by the architecture).
    pub attributes: Vec<(String, String, String)>,
    /// Addresses the guest touched after the cause, translated both ways where they differ.
    pub translations: Vec<TranslationDiff>,
    /// One paragraph for humans.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FindingKind {
    StaleContext,
    NeedlessReset,
    GpMismatch,
    /// The recording host's KVM built or reused a root whose role differs from the policy's
    /// `root_role` (format 4; found by `check --host`, never written by the recorder).
    HostDisagreement,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::StaleContext => "stale-context",
            FindingKind::NeedlessReset => "needless-reset",
            FindingKind::GpMismatch => "gp-mismatch",
            FindingKind::HostDisagreement => "host-disagreement",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslationDiff {
    pub gva: u64,
    /// `r`, `w` or `x`.
    pub access: char,
    pub kept: Translation,
    pub correct: Translation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Translation {
    Phys(u64),
    /// #PF with this error code.
    PageFault(u32),
    /// #GP (non-canonical address).
    GeneralProtection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoAccess {
    pub port: u16,
    pub write: bool,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub data: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioAccess {
    pub gpa: u64,
    pub write: bool,
    pub size: u8,
    pub data: u64,
}

/// An exception delivered to the guest; the event's `rip` is the instruction that raised it
/// (for a trap such as `int n` or #DB, the instruction that just executed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    pub vector: u8,
    /// The error code the CPU pushed, for the vectors that push one (#DF, #TS, #NP, #SS, #GP,
    /// #PF, #AC, #CP); `None` for the others. Format 1 traces never carry it.
    pub error_code: Option<u32>,
    /// CR2 for #PF.
    pub cr2: Option<u64>,
}

impl ExceptionInfo {
    /// The SDM's mnemonic of an exception vector (`#GP`), if it has one.
    pub fn mnemonic(vector: u8) -> Option<&'static str> {
        const NAMES: [&str; 22] = [
            "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
            "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
        ];
        NAMES
            .get(vector as usize)
            .copied()
            .filter(|n| !n.is_empty())
    }
}

/// An external interrupt delivered to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptInfo {
    pub vector: u8,
    /// A non-maskable interrupt (vector 2).
    pub nmi: bool,
}

/// The last record of a complete trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    /// Steps executed.
    pub step: Step,
    pub reason: EndReason,
    /// Human explanation (what happened and what to do about it).
    pub message: String,
    /// Keyframe memory-hash self-check failures (empty when every check passed).
    pub self_check_failures: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// HLT with interrupts disabled (or no further work).
    Halted,
    /// The guest wrote `status` to the debug-exit port 0xf4.
    DebugExit { status: u32 },
    /// Triple fault / KVM_EXIT_SHUTDOWN.
    Shutdown,
    /// `--max-steps` reached.
    StepBudget,
    /// `--timeout` reached.
    Timeout,
    /// SIGINT / SIGTERM.
    Interrupted,
    /// The backend cannot run this guest on this host (e.g. PVM and 32-bit paging).
    HostUnsupported,
    /// Anything else: an unhandled exit, an emulation failure, an internal error.
    Error,
    /// The guest made no progress: the same instruction with the same registers and no I/O
    /// for many steps (format 2).
    Stuck,
}

impl EndReason {
    pub fn name(&self) -> &'static str {
        match self {
            EndReason::Halted => "halted",
            EndReason::DebugExit { .. } => "debug-exit",
            EndReason::Shutdown => "shutdown",
            EndReason::StepBudget => "step-budget",
            EndReason::Timeout => "timeout",
            EndReason::Interrupted => "interrupted",
            EndReason::HostUnsupported => "host-unsupported",
            EndReason::Error => "error",
            EndReason::Stuck => "stuck",
        }
    }
}
