//! One event in one line: `#7 step 10 rip 0x1021: cr4 0x10 -> 0x30 (+PAE) via MovCr`.

use history::flags::changed_flags;
use traces::{Event, EventKind, ExceptionInfo, Translation};

fn translation(t: &Translation) -> String {
    match t {
        Translation::Phys(gpa) => format!("{gpa:#x}"),
        Translation::PageFault(ec) => format!("#PF({ec:#x})"),
        Translation::GeneralProtection => "#GP".into(),
    }
}

/// What happened, without the position.
pub fn kind_text(kind: &EventKind, policies: &[String]) -> String {
    let policy = |i: u16| {
        policies
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| format!("policy #{i}"))
    };
    match kind {
        EventKind::CrWrite(w) => {
            let mut s = format!(
                "{} {:#x} -> {:#x} ({}) via {:?}",
                w.reg.name(),
                w.old,
                w.new,
                changed_flags(w.reg, w.old, w.new),
                w.via
            );
            if w.faulted {
                s += ", faulted (#GP)";
            }
            s
        }
        EventKind::Transition { from, to } => {
            format!("transition {} -> {}", from.name(), to.name())
        }
        EventKind::Mmu(d) => format!(
            "mmu {}: {} (event #{})",
            policy(d.policy),
            d.outcome.name(),
            d.cause
        ),
        EventKind::Finding(f) => {
            let mut s = format!(
                "finding {}: {} (event #{})",
                policy(f.policy),
                f.kind.name(),
                f.cause
            );
            for d in f.translations.iter().take(2) {
                s += &format!(
                    "; {:#x} kept {} correct {}",
                    d.gva,
                    translation(&d.kept),
                    translation(&d.correct)
                );
            }
            s
        }
        EventKind::Io(io) => format!(
            "io {} port {:#x} size {} data {:#x}",
            if io.write { "out" } else { "in" },
            io.port,
            io.size,
            io.data
        ),
        EventKind::Mmio(m) => format!(
            "mmio {} {:#x} size {} data {:#x}",
            if m.write { "write" } else { "read" },
            m.gpa,
            m.size,
            m.data
        ),
        EventKind::Exception(x) => {
            let mut s = match ExceptionInfo::mnemonic(x.vector) {
                Some(m) => format!("exception {m} (vector {})", x.vector),
                None => format!("exception vector {}", x.vector),
            };
            if let Some(ec) = x.error_code {
                s += &format!(" error code {ec:#x}");
            }
            if let Some(cr2) = x.cr2 {
                s += &format!(" cr2 {cr2:#x}");
            }
            s
        }
        EventKind::EngineDivergence {
            gva,
            engine,
            reference,
        } => format!("engine divergence at {gva:#x}: engine {engine}, reference {reference}"),
        EventKind::ExternalInterrupt(i) if i.nmi => "NMI".to_string(),
        EventKind::ExternalInterrupt(i) => format!("external interrupt vector {}", i.vector),
        EventKind::Retired { count } => format!("this step retired {count} instructions"),
        EventKind::Startup { vector } => format!(
            "startup IPI {vector:#04x}: the AP starts in real mode at {:#x}",
            u64::from(*vector) << 12
        ),
        EventKind::HostAction(a) if a.is_vmm() => format!("host: {}", a.describe()),
        EventKind::HostAction(a) => format!("guest {}", a.describe()),
    }
}

/// `#id step S rip R: what`.
pub fn line(e: &Event, policies: &[String]) -> String {
    format!(
        "#{} step {} rip {:#x}: {}",
        e.id,
        e.step,
        e.rip,
        kind_text(&e.kind, policies)
    )
}
