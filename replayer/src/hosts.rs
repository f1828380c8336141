//! What differs between the machines two traces were recorded on, as far as the MMU is
//! concerned: said before a `diff` or `verify` so a divergence that follows has its explanation.

use crate::cpu::cpu_model;
use traces::Header;

/// One line per difference that can change what the guest or the MMU model sees.
pub fn differences(a: &Header, b: &Header) -> Vec<String> {
    facts(a, b).into_iter().map(|(line, _)| line).collect()
}

/// The two machines give the MMU model different inputs (CPUID features, MAXPHYADDR, the
/// flavour modelled), so their role words and decisions legitimately differ: compare only
/// what the guest did (`mmurr diff --guest-only`). A different engine alone does not count.
pub fn model_differs(a: &Header, b: &Header) -> bool {
    facts(a, b).iter().any(|(_, model)| *model)
}

/// Each difference, and whether it changes the MMU model's input.
fn facts(a: &Header, b: &Header) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let (ba, bb) = (&a.backend, &b.backend);
    if ba.kind != bb.kind || ba.engine != bb.engine {
        out.push((
            format!(
                "engine: {} ({}) vs {} ({})",
                ba.kind.name(),
                ba.engine,
                bb.kind.name(),
                bb.engine
            ),
            false,
        ));
    }
    if ba.cpu_vendor != bb.cpu_vendor {
        out.push((
            format!("CPU vendor: {} vs {}", ba.cpu_vendor, bb.cpu_vendor),
            false,
        ));
    }
    let (ca, cb) = (cpu_model(&a.guest), cpu_model(&b.guest));
    if ca.maxphyaddr != cb.maxphyaddr {
        out.push((format!(
            "guest MAXPHYADDR: {} vs {} bits (reserved-bit checks and, before v5.14, ext.maxphyaddr in the role)",
            ca.maxphyaddr, cb.maxphyaddr
        ), true));
    }
    let features = [
        ("AMD vendor (bit 8 of PML4Es reserved)", ca.amd, cb.amd),
        ("NX", ca.nx, cb.nx),
        ("1 GiB pages", ca.gbpages, cb.gbpages),
        ("SMEP", ca.smep, cb.smep),
        ("SMAP", ca.smap, cb.smap),
        ("PKU", ca.pku, cb.pku),
        ("LA57", ca.la57, cb.la57),
        ("PCID", ca.pcid, cb.pcid),
    ];
    for (name, x, y) in features {
        if x != y {
            let yes = |v: bool| if v { "yes" } else { "no" };
            out.push((
                format!("guest CPUID {name}: {} vs {}", yes(x), yes(y)),
                true,
            ));
        }
    }
    if a.mmu_flavour != b.mmu_flavour {
        out.push((
            format!(
                "MMU flavour modelled: {} vs {}",
                a.mmu_flavour, b.mmu_flavour
            ),
            true,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{BackendKind, CpuidEntry};

    #[test]
    fn names_engine_and_maxphyaddr_differences() {
        let mut a = Header::default();
        let mut b = Header::default();
        assert!(differences(&a, &b).is_empty());
        b.backend.kind = BackendKind::Emu;
        b.backend.engine = "unicorn 2.1.4".into();
        assert!(
            !model_differs(&a, &b),
            "another engine alone feeds the model the same"
        );
        a.guest.maxphyaddr = 48;
        b.guest.maxphyaddr = 40;
        b.guest.cpuid = vec![CpuidEntry {
            function: 7,
            index: 0,
            eax: 0,
            ebx: 1 << 7,
            ecx: 0,
            edx: 0,
        }];
        let d = differences(&a, &b);
        assert_eq!(d[0], "engine: kvm () vs emu (unicorn 2.1.4)");
        assert!(d[1].starts_with("guest MAXPHYADDR: 48 vs 40 bits"), "{d:?}");
        // b's CPUID table has SMEP only: NX, SMAP, PKU, PCID, 1 GiB pages all differ from the default.
        assert!(
            d.iter().any(|l| l == "guest CPUID SMAP: yes vs no"),
            "{d:?}"
        );
        assert!(!d.iter().any(|l| l.contains("SMEP")), "{d:?}");
        assert!(model_differs(&a, &b));
    }
}
