//! What the recording host's own KVM did (format 4): its MMU facts in the header
//! ([`HostMmu`]) and, per step, the events its `kvm`/`kvmmmu` tracepoints emitted
//! ([`HostRecord`]). Plain data, as the host reported it: role words stay raw integers; the
//! `mmu` crate decodes them with the layout of the kernel version the host runs.
//!
//! Field meanings follow the tracepoints in `arch/x86/kvm/mmu/mmutrace.h` (kvmmmu) and
//! `arch/x86/kvm/trace.h` (kvm) of Linux.

use crate::record::Step;
use serde::{Deserialize, Serialize};

/// The recording host's KVM MMU, in the header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMmu {
    /// `tdp` or `shadow`: how the host's KVM maps this guest's memory.
    pub flavour: String,
    /// Why that flavour (`kvm_pvm is loaded: PVM uses shadow paging`, `kvm_intel.ept=N`).
    pub flavour_evidence: String,
    /// KVM module parameters that shape its MMU, e.g. (`kvm.tdp_mmu`, `N`), (`kvm_intel.ept`,
    /// `Y`). The kernel release is [`crate::BackendInfo::host_kernel`].
    pub params: Vec<(String, String)>,
    /// Whether the trace carries the host's events, and if not, why.
    pub events: HostEventsStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEventsStatus {
    /// Recorded from these tracepoints (`kvmmmu:kvm_mmu_get_page`, ...).
    Recorded { tracepoints: Vec<String> },
    /// Switched off (`--no-host-events`).
    #[default]
    Off,
    /// Asked for (or on by default) but not possible here: why.
    Unavailable(String),
}

/// The host events of one step: everything the host's KVM reported between the end of the
/// previous step and the end of this one (for a single-stepped guest, the KVM_RUN calls of
/// this instruction). Written after the step, possibly after later steps' records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub step: Step,
    /// In the order the host emitted them.
    pub events: Vec<HostEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEvent {
    /// `kvmmmu:kvm_mmu_get_page`: KVM looked up a shadow page by gfn and role and built it
    /// when none existed. Roots are looked up this way when KVM loads its MMU.
    GetPage(ShadowPage),
    /// `kvmmmu:kvm_mmu_prepare_zap_page`: a shadow page is being zapped.
    ZapPage(ShadowPage),
    /// `kvmmmu:kvm_mmu_sync_page`: an unsync shadow page re-synced with the guest table.
    SyncPage(ShadowPage),
    /// `kvmmmu:kvm_mmu_unsync_page`: a shadow page marked unsync.
    UnsyncPage(ShadowPage),
    /// `kvmmmu:kvm_mmu_zap_all_fast`: every shadow page made obsolete at once.
    ZapAllFast { mmu_valid_gen: u8 },
    /// `kvmmmu:kvm_mmu_pagetable_walk`: KVM's software walker walked the guest's tables.
    Walk { addr: u64, pferr: u32 },
    /// `kvmmmu:kvm_mmu_walker_error`: that walk faulted with this error code.
    WalkerError { pferr: u32 },
    /// `kvm:kvm_page_fault`: a page fault KVM handled.
    PageFault { address: u64, error_code: u64 },
    /// `kvm:kvm_inj_exception`: an exception KVM injected into the guest.
    InjectedException {
        vector: u8,
        error_code: Option<u32>,
        reinjected: bool,
    },
    /// `kvm:kvm_msr`: an MSR access KVM handled (EFER writes among them).
    Msr {
        write: bool,
        index: u32,
        data: u64,
        faulted: bool,
    },
    /// `kvm:kvm_cr`: a control-register access KVM handled (not emitted by every host).
    Cr { write: bool, cr: u32, value: u64 },
    /// `kvm:kvm_emulate_insn`: an instruction KVM's emulator ran.
    Emulated {
        csbase: u32,
        rip: u64,
        len: u8,
        /// The tracepoint's mode flags (0 real, 1 prot16, 3 vm86, 5 prot32, 9 prot64).
        mode: u8,
        failed: bool,
    },
    /// The kernel's buffer overflowed: this many host events were lost before the next one.
    Lost { count: u64 },
}

/// A shadow page as `kvmmmu` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShadowPage {
    pub gfn: u64,
    /// `role.word` (`union kvm_mmu_page_role`).
    pub role: u32,
    /// Roots using the page, before this lookup took its reference.
    pub root_count: u32,
    pub unsync: bool,
    /// `GetPage` only: the page was built by this lookup (else an existing one was reused).
    pub created: bool,
    pub mmu_valid_gen: u8,
}

impl HostEvent {
    /// Short kind name, as the tracepoint is called without its group.
    pub fn name(&self) -> &'static str {
        match self {
            HostEvent::GetPage(_) => "get_page",
            HostEvent::ZapPage(_) => "zap_page",
            HostEvent::SyncPage(_) => "sync_page",
            HostEvent::UnsyncPage(_) => "unsync_page",
            HostEvent::ZapAllFast { .. } => "zap_all_fast",
            HostEvent::Walk { .. } => "walk",
            HostEvent::WalkerError { .. } => "walker_error",
            HostEvent::PageFault { .. } => "page_fault",
            HostEvent::InjectedException { .. } => "inj_exception",
            HostEvent::Msr { .. } => "msr",
            HostEvent::Cr { .. } => "cr",
            HostEvent::Emulated { .. } => "emulate_insn",
            HostEvent::Lost { .. } => "lost",
        }
    }

    /// Whether this is MMU work (pages, walks, faults), as opposed to emulation and MSRs.
    pub fn is_mmu(&self) -> bool {
        !matches!(
            self,
            HostEvent::Emulated { .. }
                | HostEvent::Msr { .. }
                | HostEvent::Cr { .. }
                | HostEvent::InjectedException { .. }
                | HostEvent::Lost { .. }
        )
    }
}

impl std::fmt::Display for HostEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let page = |f: &mut std::fmt::Formatter<'_>, what: &str, p: &ShadowPage| {
            write!(
                f,
                "{what} gfn {:#x} role {:#x} level {}{}",
                p.gfn,
                p.role,
                p.role & 0xf,
                if p.root_count > 0 {
                    format!(" roots {}", p.root_count)
                } else {
                    String::new()
                }
            )
        };
        match self {
            HostEvent::GetPage(p) => page(f, if p.created { "new" } else { "reused" }, p),
            HostEvent::ZapPage(p) => page(f, "zap", p),
            HostEvent::SyncPage(p) => page(f, "sync", p),
            HostEvent::UnsyncPage(p) => page(f, "unsync", p),
            HostEvent::ZapAllFast { mmu_valid_gen } => {
                write!(f, "zap all (generation {mmu_valid_gen})")
            }
            HostEvent::Walk { addr, pferr } => write!(f, "walk {addr:#x} pferr {pferr:#x}"),
            HostEvent::WalkerError { pferr } => write!(f, "walker error pferr {pferr:#x}"),
            HostEvent::PageFault {
                address,
                error_code,
            } => write!(f, "page fault {address:#x} error {error_code:#x}"),
            HostEvent::InjectedException {
                vector,
                error_code,
                reinjected,
            } => {
                let name = crate::ExceptionInfo::mnemonic(*vector)
                    .map_or_else(|| format!("vector {vector}"), str::to_string);
                write!(f, "inject {name}")?;
                if let Some(e) = error_code {
                    write!(f, " ({e:#x})")?;
                }
                if *reinjected {
                    write!(f, " reinjected")?;
                }
                Ok(())
            }
            HostEvent::Msr {
                write,
                index,
                data,
                faulted,
            } => write!(
                f,
                "msr {} {index:#x} = {data:#x}{}",
                if *write { "write" } else { "read" },
                if *faulted { " (#GP)" } else { "" }
            ),
            HostEvent::Cr { write, cr, value } => write!(
                f,
                "cr{cr} {} {value:#x}",
                if *write { "write" } else { "read" }
            ),
            HostEvent::Emulated {
                csbase,
                rip,
                len,
                failed,
                ..
            } => write!(
                f,
                "emulated {csbase:#x}:{rip:#x} ({len} bytes){}",
                if *failed { " FAILED" } else { "" }
            ),
            HostEvent::Lost { count } => write!(f, "{count} host events lost"),
        }
    }
}
