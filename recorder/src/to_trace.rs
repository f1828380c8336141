//! The MMU model's types as the trace stores them: plain integers and strings.

use traces::{
    Finding, FindingKind, MmuDecision, MmuOutcome, RootCacheLookup, TlbFlush, Translation,
    TranslationDiff,
};

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

/// A stale-context finding, with the translations that came out differently.
pub fn stale_finding(
    policy: u16,
    policy_name: &str,
    cause: traces::EventId,
    stale: &mmu::StaleContext,
    diffs: &[mmu::TranslationDiff],
    addresses_checked: usize,
) -> Finding {
    let attributes: Vec<(String, String, String)> = stale
        .attributes
        .iter()
        .map(|a| (a.attribute.to_string(), a.kept.clone(), a.correct.clone()))
        .collect();
    let names: Vec<&str> = stale.attributes.iter().map(|a| a.attribute).collect();
    let mut detail = format!(
        "Under {policy_name}, KVM keeps an MMU context whose {} no longer match the guest's \
         paging mode. Of the next {addresses_checked} addresses the guest touched, {} translate \
         differently with the kept context.",
        names.join(", "),
        diffs.len()
    );
    for d in diffs.iter().take(4) {
        detail += &format!(
            " {:#x} ({}): kept {} vs correct {}.",
            d.gva,
            access_char(d.access),
            d.kept,
            d.correct
        );
    }
    Finding {
        policy,
        cause,
        kind: FindingKind::StaleContext,
        attributes,
        translations: diffs.iter().filter_map(translation_diff).collect(),
        detail,
    }
}

pub fn needless_reset_finding(policy: u16, policy_name: &str, cause: traces::EventId) -> Finding {
    Finding {
        policy,
        cause,
        kind: FindingKind::NeedlessReset,
        attributes: Vec::new(),
        translations: Vec::new(),
        detail: format!(
            "Under {policy_name}, KVM unloaded every root and rebuilt an MMU context identical \
             to the one it had: the reset cost a full root rebuild for nothing."
        ),
    }
}

pub fn gp_mismatch_finding(
    policy: u16,
    policy_name: &str,
    cause: traces::EventId,
    model_gp: bool,
) -> Finding {
    let detail = if model_gp {
        format!("Under {policy_name}, KVM would inject #GP for this write, but the guest's CPU accepted it.")
    } else {
        format!(
            "The guest's CPU raised #GP for this write, but {policy_name}'s KVM would accept it."
        )
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
