//! The MMU model's types as the trace stores them: plain integers and strings.

use traces::{
    CrWrite, Finding, FindingKind, MmuDecision, MmuOutcome, RootCacheLookup, TlbFlush, Translation,
    TranslationDiff,
};

/// The paging mode the registers select, under the trace's name for it.
pub fn mode_of(regs: &traces::Regs) -> traces::PagingMode {
    paging_mode(mmu::PagingMode::of(regs.cr0, regs.cr4, regs.efer))
}

/// The `mmu` crate's paging mode under the trace's name for it.
pub fn paging_mode(m: mmu::PagingMode) -> traces::PagingMode {
    match m {
        mmu::PagingMode::Real => traces::PagingMode::Real,
        mmu::PagingMode::Unpaged => traces::PagingMode::Unpaged,
        mmu::PagingMode::Bits32 => traces::PagingMode::Bits32,
        mmu::PagingMode::Pae => traces::PagingMode::Pae,
        mmu::PagingMode::Level4 => traces::PagingMode::Level4,
        mmu::PagingMode::Level5 => traces::PagingMode::Level5,
    }
}

pub fn outcome(o: mmu::Outcome) -> MmuOutcome {
    match o {
        mmu::Outcome::Reinit => MmuOutcome::Reinit,
        mmu::Outcome::SkippedRoleUnchanged => MmuOutcome::SkippedRoleUnchanged,
        mmu::Outcome::NoTrigger => MmuOutcome::NoTrigger,
        mmu::Outcome::Gp => MmuOutcome::Gp,
        mmu::Outcome::InitOnly => MmuOutcome::InitOnly,
        mmu::Outcome::NewPgd => MmuOutcome::NewPgd,
    }
}

pub fn tlb_flush(f: mmu::TlbFlush) -> TlbFlush {
    match f {
        mmu::TlbFlush::None => TlbFlush::None,
        mmu::TlbFlush::Current => TlbFlush::Current,
        mmu::TlbFlush::Guest => TlbFlush::Guest,
    }
}

pub fn root_cache(l: &mmu::RootCacheLookup) -> RootCacheLookup {
    RootCacheLookup {
        hit: l.hit,
        slot: match l.slot {
            Some(mmu::RootSlot::Prev(n)) => Some(n),
            _ => None,
        },
        role: l.role_word,
    }
}

pub fn decision(policy: u16, cause: traces::EventId, d: &mmu::Decision) -> MmuDecision {
    MmuDecision {
        policy,
        cause,
        outcome: outcome(d.outcome),
        trigger_bits: d.trigger_bits,
        old_cpu_role: d.old_cpu_role.0,
        new_cpu_role: d.new_cpu_role.0,
        old_root_role: d.old_root_role.0,
        new_root_role: d.new_root_role.0,
        context_changes: d.context_changes.clone(),
        root_cache: d.root_cache.as_ref().map(root_cache),
        tlb_flush: tlb_flush(d.tlb_flush),
    }
}

pub fn access_char(a: mmu::Access) -> char {
    match a {
        mmu::Access::Read => 'r',
        mmu::Access::Write => 'w',
        mmu::Access::Fetch => 'x',
    }
}

/// `None` for a result the trace cannot express (a table outside RAM).
pub fn translation(t: &mmu::TranslationResult) -> Option<Translation> {
    match *t {
        mmu::TranslationResult::Phys { gpa } => Some(Translation::Phys(gpa)),
        mmu::TranslationResult::PageFault { error_code } => {
            Some(Translation::PageFault(error_code))
        }
        mmu::TranslationResult::Gp => Some(Translation::GeneralProtection),
        mmu::TranslationResult::Unreadable { .. } => None,
    }
}

pub fn translation_diff(d: &mmu::TranslationDiff) -> Option<TranslationDiff> {
    Some(TranslationDiff {
        gva: d.gva,
        access: access_char(d.access),
        kept: translation(&d.kept)?,
        correct: translation(&d.correct)?,
    })
}

/// The trace's translation as the model's result type, so both print alike.
pub fn translation_result(t: &Translation) -> mmu::TranslationResult {
    match *t {
        Translation::Phys(gpa) => mmu::TranslationResult::Phys { gpa },
        Translation::PageFault(error_code) => mmu::TranslationResult::PageFault { error_code },
        Translation::GeneralProtection => mmu::TranslationResult::Gp,
    }
}

pub fn access_name(access: char) -> &'static str {
    match access {
        'w' => "write",
        'x' => "fetch",
        _ => "read",
    }
}

/// `CR4 write 0x0 -> 0x20 (+PAE)`.
pub fn describe_write(w: &CrWrite) -> String {
    let change = crate::flags::changed_flags(w.reg, w.old, w.new);
    let change = if change.is_empty() {
        "no bit changed".to_string()
    } else {
        change
    };
    format!(
        "{} write {:#x} -> {:#x} ({change})",
        w.reg.name().to_uppercase(),
        w.old,
        w.new
    )
}

/// What kind of write `w` is, for grouping repeated findings: the register and the names of
/// the flags it changed, without direction or values, e.g. `CR4.PSE writes` or `CR3 loads`.
pub fn write_kind(w: &CrWrite) -> String {
    let reg = w.reg.name().to_uppercase();
    if w.reg == traces::ControlReg::Cr3 {
        return format!("{reg} loads");
    }
    let names: Vec<String> = crate::flags::changed_flags(w.reg, w.old, w.new)
        .split(' ')
        .filter(|f| !f.is_empty())
        .map(|f| f.trim_start_matches(['+', '-']).to_string())
        .collect();
    if names.is_empty() {
        format!("same-value {reg} writes")
    } else {
        format!("{reg}.{} writes", names.join("/"))
    }
}

/// A stale-context finding: the attributes the kept context got wrong, and of the `looked_at`
/// addresses the guest touched next, those that translate differently.
#[allow(clippy::too_many_arguments)]
pub fn stale_finding(
    policy: u16,
    cause: traces::EventId,
    step: traces::Step,
    write: &crate::Cause,
    outcome: mmu::Outcome,
    stale: &mmu::StaleContext,
    translations: Vec<TranslationDiff>,
    looked_at: usize,
) -> Finding {
    let attributes: Vec<(String, String, String)> = stale
        .attributes
        .iter()
        .map(|a| (a.attribute.to_string(), a.kept.clone(), a.correct.clone()))
        .collect();
    let why = match outcome {
        mmu::Outcome::SkippedRoleUnchanged => {
            "triggered kvm_mmu_reset_context, but the recompute returned early because the \
             compare key (the role) did not change"
        }
        mmu::Outcome::NoTrigger => {
            "did not trigger an MMU reset under this version's trigger masks"
        }
        _ => "left the MMU context behind the architecture",
    };
    let kept_required: Vec<String> = attributes
        .iter()
        .map(|(n, k, c)| format!("{n} {k} (required: {c})"))
        .collect();
    let consequence = match translations.first() {
        // A model-level scenario's trace: no instruction ran after it.
        None if looked_at == 0 => "No guest instruction ran after it to translate, but KVM's \
             software walks (emulation, MMIO, gva_to_gpa) use this context."
            .to_string(),
        None => format!(
            "None of the {looked_at} addresses the guest touched next translate differently, \
             but KVM's software walks (emulation, MMIO, gva_to_gpa) use this context."
        ),
        Some(first) => format!(
            "{} of the {looked_at} addresses the guest touched next translate differently; \
             e.g. {} of {:#x} gives {} with the kept context but {} with the correct one.",
            translations.len(),
            access_name(first.access),
            first.gva,
            translation_result(&first.kept),
            translation_result(&first.correct)
        ),
    };
    Finding {
        policy,
        cause,
        kind: FindingKind::StaleContext,
        detail: format!(
            "The {} at step {step} {why}. The MMU context kept {}. {consequence}",
            write.describe(),
            kept_required.join(", ")
        ),
        attributes,
        translations,
    }
}

pub fn needless_reset_finding(
    policy: u16,
    cause: traces::EventId,
    step: traces::Step,
    write: &crate::Cause,
) -> Finding {
    Finding {
        policy,
        cause,
        kind: FindingKind::NeedlessReset,
        attributes: Vec::new(),
        translations: Vec::new(),
        detail: format!(
            "The {} at step {step} reset the MMU (all roots freed) and rebuilt \
             a context identical to the old one.",
            write.describe()
        ),
    }
}

/// The recording CPU and the policy's KVM disagree on whether `write` raises #GP; `model_gp`
/// is the model's reason when it would inject one.
pub fn gp_mismatch_finding(
    policy: u16,
    cause: traces::EventId,
    step: traces::Step,
    write: &crate::Cause,
    model_gp: Option<&mmu::Gp>,
) -> Finding {
    let detail = match model_gp {
        None => format!(
            "The {} at step {step} raised #GP on the recording CPU, but this \
             version of KVM would accept it.",
            write.describe()
        ),
        Some(why) => format!(
            "The {} at step {step} took effect on the recording CPU, but this \
             version of KVM would inject #GP ({why}).",
            write.describe()
        ),
    };
    Finding {
        policy,
        cause,
        kind: FindingKind::GpMismatch,
        attributes: Vec::new(),
        translations: Vec::new(),
        detail,
    }
}
