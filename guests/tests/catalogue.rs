//! The history catalogue: 31 entries, each reproduced by a scenario whose verdicts per policy
//! come out of the model as declared, shown unchanged by a refactor, or explained.

use guests::catalogue::{self, Repro, ENTRIES};
use guests::model::{from_scenario::from_scenario, scripts, Observed, Shows};
use guests::CpuFeatures;
use mmu::Flavour;
use std::collections::BTreeSet;

#[test]
fn the_catalogue_has_the_seed_and_the_thirty_rows_of_the_sheet() {
    let ids: Vec<&str> = ENTRIES.iter().map(|e| e.id).collect();
    let mut want = vec!["seed".to_string()];
    want.extend((1..=30).map(|n| format!("#{n}")));
    assert_eq!(ids, want);
    for e in ENTRIES {
        assert!(!e.repro.is_empty() && !e.commits.is_empty(), "{}", e.id);
    }
}

#[test]
fn every_named_scenario_exists_and_every_model_scenario_reproduces_an_entry() {
    let guests = guests::scenario_names();
    for e in ENTRIES {
        for r in e.repro {
            match *r {
                Repro::Guest(n) => assert!(guests.contains(&n), "{}: {n}", e.id),
                Repro::Model(n) => assert!(scripts::script_named(n).is_some(), "{}: {n}", e.id),
                Repro::Unchanged {
                    scenario,
                    before,
                    after,
                } => {
                    assert!(catalogue::script(scenario).is_some(), "{}", e.id);
                    assert!(mmu::policy(before).is_some() && mmu::policy(after).is_some());
                }
                Repro::Explained(_) => {}
            }
        }
    }
    for (name, _) in scripts::ALL {
        assert!(
            !catalogue::entries_of(name).is_empty(),
            "{name} reproduces no entry"
        );
    }
}

#[test]
fn every_model_scenario_shows_exactly_its_declared_verdicts() {
    for (_, build) in scripts::ALL {
        let s = build();
        s.check().unwrap();
        let showing = catalogue::policies_showing(&Repro::Model(s.name));
        assert!(showing.iter().all(|(_, p)| !p.is_empty()), "{}", s.name);
        // A script without declared verdicts only shows that a change leaves them as they were.
        let refactor_only = ENTRIES
            .iter()
            .flat_map(|e| e.repro)
            .any(|r| matches!(*r, Repro::Unchanged { scenario, .. } if scenario == s.name));
        assert!(!showing.is_empty() || refactor_only, "{}", s.name);
    }
}

/// The guest scenarios on the model alone: their writes give exactly the stale contexts
/// they declare (what the recordings on kvm and emu are checked for in
/// `tests/cli_check_scenarios.rs`), for the development hosts' CPU and a full-featured one.
#[test]
fn every_guest_scenario_on_the_model_gives_its_declared_stale_contexts() {
    let all: Vec<_> = mmu::policies().iter().collect();
    for f in [
        CpuFeatures::default(),
        CpuFeatures::all(),
        CpuFeatures::none(),
    ] {
        for s in guests::scenarios() {
            let s = guests::scenario(s.name, &f).unwrap();
            let m = from_scenario(&s, &f, Flavour::Tdp);
            let stale: BTreeSet<Observed> = m
                .script
                .run(&all)
                .into_iter()
                .filter(|o| o.shows == Shows::Stale)
                .collect();
            assert_eq!(stale, m.script.expected(), "{} with {f:?}", s.name);
        }
    }
}

#[test]
fn refactors_give_identical_verdicts_before_and_after() {
    let mut checked = 0;
    for e in ENTRIES {
        for r in e.repro {
            let Repro::Unchanged {
                scenario,
                before,
                after,
            } = *r
            else {
                continue;
            };
            let s = catalogue::script(scenario).unwrap();
            let verdicts = |p: &str| -> BTreeSet<(usize, Shows)> {
                s.run(&[mmu::policy(p).unwrap()])
                    .into_iter()
                    .map(|o| (o.at, o.shows))
                    .collect()
            };
            let (b, a) = (verdicts(before), verdicts(after));
            assert_eq!(b, a, "{}: {scenario} under {before} and {after}", e.id);
            // Not vacuous: the scenario's steps are MMU inputs with verdicts.
            assert!(!b.is_empty(), "{}: {scenario}", e.id);
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn the_readme_has_the_catalogue_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = catalogue::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's history table is out of date; it must read:\n{table}"
    );
}

/// The notes of the entries older than every policy (#1, #3) hold on the model: every policy
/// resets on long-mode-toggles' EFER.NXE writes without a finding, and every policy but
/// v5.9-rc resets on smap-pke-toggle's CR4.SMAP writes.
#[test]
fn entries_before_the_oldest_policy_hold_in_every_policy() {
    use guests::model::Action;
    use mmu::CrReg;
    let all: Vec<_> = mmu::policies().iter().collect();
    for (scenario, bit, not_resetting) in [
        ("long-mode-toggles", mmu::bits::EFER_NXE, &[][..]),
        ("smap-pke-toggle", mmu::bits::CR4_SMAP, &["v5.9-rc"][..]),
    ] {
        let s = catalogue::script(scenario).unwrap();
        let mut prev = (s.entry.cr4, s.entry.efer);
        let mut steps = Vec::new();
        for (at, a) in s.actions.iter().enumerate() {
            if let Action::Write(reg @ (CrReg::Cr4 | CrReg::Efer), v) = *a {
                let old = if reg == CrReg::Cr4 {
                    &mut prev.0
                } else {
                    &mut prev.1
                };
                let is_target = (reg == CrReg::Efer) == (bit == mmu::bits::EFER_NXE);
                if is_target && (*old ^ v) & bit != 0 {
                    steps.push(at);
                }
                *old = v;
            }
        }
        assert!(steps.len() >= 2, "{scenario}: {steps:?}");
        let seen = s.run(&all);
        for at in steps {
            let no_reset: Vec<&str> = seen
                .iter()
                .filter(|o| o.at == at && o.shows == Shows::NoReset)
                .map(|o| o.policy)
                .collect();
            assert_eq!(no_reset, not_resetting, "{scenario} step {at}");
            if not_resetting.is_empty() {
                assert!(
                    !seen.iter().any(|o| o.at == at && o.shows.is_finding()),
                    "{scenario} step {at}"
                );
            }
        }
    }
}
