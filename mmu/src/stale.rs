//! Stale-context findings: the context a policy kept versus the one the architecture requires,
//! and concrete translations that come out differently (sheet §0.2 item 3).

use crate::context::{architectural_context, translate_with_context, ContextDiff, MmuContext};
use crate::paging::fault::Fault;
use crate::paging::perm::{Access, AccessRequest};
use crate::paging::walk::{walk, Walk};
use crate::policy::Flavour;
use crate::regs::{ControlRegs, CpuModel, GuestMemory};

/// The context kept differs from the one a correct re-init would build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleContext {
    /// Attributes that differ and can change a software walk.
    pub attributes: Vec<ContextDiff>,
    pub kept: MmuContext,
    pub correct: MmuContext,
}

impl StaleContext {
    pub fn names(&self) -> Vec<&'static str> {
        self.attributes.iter().map(|d| d.attribute).collect()
    }
}

/// `Some` if `kept` differs from [`architectural_context`] for `regs` in an attribute that
/// matters for software walks.
pub fn stale_context(
    kept: &MmuContext,
    regs: &ControlRegs,
    cpu: &CpuModel,
    flavour: Flavour,
) -> Option<StaleContext> {
    let correct = architectural_context(regs, cpu, flavour);
    let attributes = kept.effective_diff(&correct);
    (!attributes.is_empty()).then_some(StaleContext {
        attributes,
        kept: *kept,
        correct,
    })
}

/// The outcome of one translation, for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TranslationResult {
    Phys {
        gpa: u64,
    },
    PageFault {
        error_code: u32,
    },
    Gp,
    /// A paging-structure entry outside guest RAM.
    Unreadable {
        gpa: u64,
    },
}

impl From<&Walk> for TranslationResult {
    fn from(w: &Walk) -> Self {
        match &w.result {
            Ok(t) => TranslationResult::Phys { gpa: t.gpa },
            Err(Fault::PageFault { error_code, .. }) => TranslationResult::PageFault {
                error_code: *error_code,
            },
            Err(Fault::Gp(_)) => TranslationResult::Gp,
            Err(Fault::EntryUnreadable { gpa, .. }) => TranslationResult::Unreadable { gpa: *gpa },
        }
    }
}

impl std::fmt::Display for TranslationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslationResult::Phys { gpa } => write!(f, "GPA {gpa:#x}"),
            TranslationResult::PageFault { error_code } => write!(f, "#PF({error_code:#x})"),
            TranslationResult::Gp => write!(f, "#GP"),
            TranslationResult::Unreadable { gpa } => write!(f, "table at {gpa:#x} outside RAM"),
        }
    }
}

/// A GVA whose translation differs between the kept and the correct context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslationDiff {
    pub gva: u64,
    pub access: Access,
    pub kept: TranslationResult,
    pub correct: TranslationResult,
    /// The architectural walker's verdict (SDM rules) for reference.
    pub architectural: TranslationResult,
    pub kept_walk: Walk,
    pub correct_walk: Walk,
}

/// Translate every `(gva, access)` (explicit CPL0 accesses, RFLAGS.AC=0) with both contexts over
/// the guest's memory and report where the results differ.
pub fn compare_translations(
    kept: &MmuContext,
    correct: &MmuContext,
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    addrs: &[(u64, Access)],
) -> Vec<TranslationDiff> {
    compare_translations_as(kept, correct, regs, cpu, mem, addrs, 0)
}

/// [`compare_translations`] at a given CPL.
pub fn compare_translations_as(
    kept: &MmuContext,
    correct: &MmuContext,
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    addrs: &[(u64, Access)],
    cpl: u8,
) -> Vec<TranslationDiff> {
    let mut out = Vec::new();
    for &(gva, access) in addrs {
        let req = AccessRequest {
            access,
            cpl,
            implicit_supervisor: false,
            rflags_ac: false,
        };
        let kw = translate_with_context(kept, regs, mem, gva, &req);
        let cw = translate_with_context(correct, regs, mem, gva, &req);
        let (k, c) = (TranslationResult::from(&kw), TranslationResult::from(&cw));
        if k != c {
            out.push(TranslationDiff {
                gva,
                access,
                kept: k,
                correct: c,
                architectural: TranslationResult::from(&walk(regs, cpu, mem, gva, &req)),
                kept_walk: kw,
                correct_walk: cw,
            });
        }
    }
    out
}
