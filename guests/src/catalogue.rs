//! The history of KVM's MMU-role bugs and changes (reference sheet §6.1 and the 30 rows of
//! §6.2), each tied to the scenario that reproduces it, or to the reason it cannot be.
//!
//! The verdicts are not written here: a guest scenario declares its findings
//! ([`crate::Scenario::expected_findings`]), a model-level scenario its [`Expect`]s; this
//! table only names them, and [`policies_showing`] reads them back.
//!
//! [`Expect`]: crate::model::Expect

use crate::model::{from_scenario, scripts, Script, Shows};
use crate::CpuFeatures;
use mmu::Flavour;
use traces::FindingKind;

/// How an entry is reproduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repro {
    /// A guest scenario (`mmurr record --scenario NAME`): runs on kvm or emu, and on the model
    /// from its exact writes.
    Guest(&'static str),
    /// A model-level scenario ([`crate::model::scripts`]): a script of guest writes and host
    /// actions, run on the model; one that runs no L2 also runs as a guest whose host actions
    /// the recorder performs (`mmurr record --scenario NAME`, [`crate::model::guest`]).
    Model(&'static str),
    /// The entry changes nothing a verdict shows: the scenario gives identical verdicts under
    /// the policy before and the policy after it.
    Unchanged {
        scenario: &'static str,
        before: &'static str,
        after: &'static str,
    },
    /// Cannot be reproduced as a verdict: why.
    Explained(&'static str),
}

/// One entry of the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `seed` for §6.1, else `#N` as in §6.2.
    pub id: &'static str,
    pub commits: &'static [&'static str],
    /// First mainline release with the change.
    pub version: &'static str,
    pub what: &'static str,
    pub repro: &'static [Repro],
    /// One sentence on what the reproduction shows or why there is none.
    pub note: &'static str,
}

use Repro::*;

/// Every entry, in the sheet's order.
pub const ENTRIES: &[Entry] = &[
    Entry {
        id: "seed",
        commits: &["47c42e6b4192", "\"reset MMU context when 32-bit guest switches PAE\" (id [U])"],
        version: "v5.1-rc3",
        what: "cr4_pae becomes gpte_is_8_bytes, forced 1 for TDP: a PAE toggle with CR0.PG=1 keeps the 2-level walker",
        repro: &[Guest("pae-toggle")],
        note: "v5.1-rc3 keeps the paging32 context when the guest sets CR4.PAE with paging on; v5.1 re-initialises",
    },
    Entry {
        id: "#1",
        commits: &["9645bb56b31a"],
        version: "~v2.6.35",
        what: "EFER.NXE in the page role",
        repro: &[Explained("predates the oldest modelled policy (v4.20), which has it")],
        note: "every policy re-initialises on the EFER.NXE toggles of long-mode-toggles, with no finding",
    },
    Entry {
        id: "#2",
        commits: &["smep_andnot_wp (id [U])"],
        version: "~v3.7",
        what: "smep_andnot_wp in the page role",
        repro: &[Explained("predates every modelled policy; it separates shadow pages, which the model tracks only as roots")],
        note: "all 13 policies carry it (shadow root_role.smep_andnot_wp)",
    },
    Entry {
        id: "#3",
        commits: &["0be0226f07d1"],
        version: "~v4.2",
        what: "smap_andnot_wp in the role; CR4.SMAP resets the MMU",
        repro: &[Explained("predates every modelled policy; its later loss is #14")],
        note: "all policies but v5.9-rc reset on CR4.SMAP (smap-pke-toggle)",
    },
    Entry {
        id: "#4",
        commits: &["id [U]"],
        version: "~2016",
        what: "shadow reserved-bit check allows the NX KVM sets for smep_andnot_wp pages",
        repro: &[Explained("a host-side WARN on KVM's own SPTEs; the model has no SPTEs")],
        note: "no guest-visible context changes",
    },
    Entry {
        id: "#5",
        commits: &["9fa72119b24d"],
        version: "~v4.19",
        what: "kvm_mmu_calc_root_page_role and the level/direct-dropping mask",
        repro: &[Explained("groundwork that changed no decision by itself; its mask is the v4.20 compare key whose effect is #13")],
        note: "",
    },
    Entry {
        id: "#6",
        commits: &["7dcd57552008"],
        version: "v4.20",
        what: "extended role; re-init skipped when the role is unchanged",
        repro: &[Explained("the short-circuit behind every 'skipped (role unchanged)' verdict; no modelled policy predates it")],
        note: "shown through its consequences: the seed, #13, #14, #16, #17, #20",
    },
    Entry {
        id: "#7",
        commits: &["ad7dc69aeb23", "14c07ad89f4d"],
        version: "v5.0",
        what: "x86/kvm/mmu: fix switch between root and guest MMUs: the root cache across nVMX's root_mmu/guest_mmu switch",
        repro: &[Unchanged { scenario: "nested-ept-exit", before: "v4.20", after: "v5.0" }],
        note: "a prev_roots bug of nVMX (the sheet's nSVM reading is not the commit's): 14c07ad89f4d (\"introduce guest_mmu\", in the series of 7dcd57552008, so v4.20 [I]) left root_mmu current again at L2's VM-exit while the vCPU still held L2's CR3, so the fast CR3 switch filed L1's root under it; ad7dc69aeb23 (\"KVM fixes for 5.0-rc8 or final\", Cc: stable) stashes root_cr3. v4.20 carries it in the model's root cache, but no modelled policy shows it: before 47c42e6b4192 direct roots never hit prev_roots in long mode (cr4_pae filtered), and TDP roots translate alike whatever CR3 they are filed under (mmu's nested_ept_vm_exit_root_cache test puts the bug back into v5.1-rc3 to show the misses)",
    },
    Entry {
        id: "#8",
        commits: &["de3ccd26fafc"],
        version: "v5.0",
        what: "ext.maxphyaddr: a CPUID MAXPHYADDR change re-initialises",
        repro: &[Model("cpuid-maxphyaddr")],
        note: "v4.20 keeps the 46-bit reserved-bit table after KVM_SET_CPUID2 lowers MAXPHYADDR",
    },
    Entry {
        id: "#9",
        commits: &["552c69b1dc71"],
        version: "v5.1",
        what: "nested EPT root role no longer inherits quadrant/invalid from root_mmu",
        repro: &[Unchanged { scenario: "nested-ept-5-level", before: "v5.0", after: "v5.1-rc3" }],
        note: "a no-op per its commit: root_mmu's roots never carry quadrant or invalid, so there was nothing to inherit; shadow EPT's verdicts are the same under v5.0 and v5.1-rc3 (which also brings 47c42e6b4192's cr0_wp + smap_andnot_wp marker)",
    },
    Entry {
        id: "#10",
        commits: &["47c42e6b4192"],
        version: "v5.1-rc3",
        what: "the seed regression (§6.1)",
        repro: &[Guest("pae-toggle")],
        note: "",
    },
    Entry {
        id: "#11",
        commits: &["\"reset MMU context when 32-bit guest switches PAE\" (id [U])"],
        version: "v5.1",
        what: "ext.cr4_pae: the seed fix",
        repro: &[Guest("pae-toggle")],
        note: "v5.1 and later show no finding",
    },
    Entry {
        id: "#12",
        commits: &["\"Allocate PAE root array when using SVM's 32-bit NPT\" (id [U])"],
        version: "~v5.2",
        what: "pae_root allocated for 32-bit NPT hosts",
        repro: &[Explained("a host crash (NULL pae_root) on 32-bit NPT hosts, not a guest context")],
        note: "",
    },
    Entry {
        id: "#13",
        commits: &["\"Don't drop level/direct from MMU role calculation\" (id [U])", "8053f924cad3"],
        version: "v5.7",
        what: "level/direct compared again; ext.cr4_la57 dropped",
        repro: &[Model("sregs-pae-to-long-shadow"), Model("nested-ept-5-level"), Model("sregs-la57")],
        note: "v4.20-v5.1 miss a shadow root-level change and L1 switching L2's EPT between 4 and 5 levels (masked key; the nested case latent there, 5-level nested EPT came in v5.7); v5.7-v5.9 miss an LA57 change under TDP",
    },
    Entry {
        id: "#14",
        commits: &["427890aff855", "cb957adb4ea4", "8d214c481611"],
        version: "v5.9",
        what: "CR4.SMAP/PKE dropped from the reset mask in v5.9-rc, restored by a separate role mask",
        repro: &[Guest("smap-pke-toggle"), Guest("long-mode-toggles")],
        note: "v5.9-rc keeps the permission/PKRU bitmask after CR4.SMAP or PKE is set",
    },
    Entry {
        id: "#15",
        commits: &["0aa1837533e5"],
        version: "v5.14",
        what: "INIT resets the MMU when CR0.PG was set",
        repro: &[Model("init-long-mode")],
        note: "before v5.14 the 64-bit context survives INIT (shadow)",
    },
    Entry {
        id: "#16",
        commits: &["f71a53d1180d"],
        version: "v5.14",
        what: "ext.cr4_la57 restored (revert of 8053f924cad3)",
        repro: &[Model("nested-exit-la57"), Model("sregs-la57")],
        note: "an LA57 change without CR0.PG=0 (a nested VM-exit loading L1's host state, or KVM_SET_SREGS) keeps the 4-level walker in v5.7-v5.9",
    },
    Entry {
        id: "#17",
        commits: &["49c6f8756cdf", "6c032f12dd1e"],
        version: "v5.14",
        what: "every MMU re-initialised on a CPUID update; ext.maxphyaddr reverted",
        repro: &[Model("cpuid-gbpages-amd"), Model("cpuid-maxphyaddr")],
        note: "GBPAGES and AMD-vendor changes leave the reserved-bit table stale before v5.14",
    },
    Entry {
        id: "#18",
        commits: &["ef318b9edf66"],
        version: "v5.14",
        what: "nested NPT walk takes SMEP from the MMU role, not the vCPU",
        repro: &[Model("nested-npt-smep")],
        note: "before v5.14 nested NPT walks of L1's tables apply L2's SMEP",
    },
    Entry {
        id: "#19",
        commits: &["594e91a100cc", "8626c120baef", "ca8d664f5099", "84c679f5f52c", "18db1b1790a8", "20f632bd0060", "cd6767c334b6"],
        version: "v5.14",
        what: "roles from kvm_mmu_role_regs; no paging bits with CR0.PG=0; PKE/LA57 need LMA; nested EPT ignores CR0/CR4",
        repro: &[Model("cr4-unpaged"), Model("nested-npt-set-state")],
        note: "before v5.14 CR4 toggles with CR0.PG=0 rebuild an identical context (also seen on kvm in unpaged-cr4's needless resets), and KVM_SET_NESTED_STATE builds nested NPT from L2's registers; its nested-EPT part gives no verdict: the model builds shadow EPT from the EPTP alone in every policy (what CR0/CR4 fed it before is [U])",
    },
    Entry {
        id: "#20",
        commits: &["b8453cdcf260"],
        version: "v5.16",
        what: "ext.efer_lma",
        repro: &[Model("sregs-pae-to-long")],
        note: "KVM_SET_SREGS from PAE to long mode with the same CR0/CR4 keeps the PAE walker under TDP before v5.16",
    },
    Entry {
        id: "#21",
        commits: &["12ec33a70574"],
        version: "v5.16",
        what: "special roots when the shadow root level is 5 and the guest's below 4",
        repro: &[Explained("a fix in KVM's allocation of special roots (pml5_root above pae_root) for a 5-level NPT host, not a role or context decision; like #12, the failure is in host-side root construction")],
        note: "",
    },
    Entry {
        id: "#22",
        commits: &["a91a7c709600", "552617382c19", "509bfe3d9796"],
        version: "v5.16",
        what: "CR4.PGE and PCIDE 1->0 flush the TLB instead of resetting the MMU",
        repro: &[Model("cr4-pge-pcide")],
        note: "v5.16 and later do not reset on them",
    },
    Entry {
        id: "#23",
        commits: &["bb3b394d35e8", "6b123c3a89a9"],
        version: "v5.17",
        what: "has_4_byte_gpte (inverted rename); the shadow PAE root rebuilt when the PDPTEs change",
        repro: &[
            Unchanged { scenario: "pae-toggle", before: "v5.16", after: "v5.18" },
            Model("pdpte-change-shadow"),
        ],
        note: "the rename gives identical verdicts; before the fix a changed PDPTE keeps the old PAE root",
    },
    Entry {
        id: "#24",
        commits: &["d6174299365d"],
        version: "v5.18",
        what: "EFER.LME in the reset mask (host-initiated writes)",
        repro: &[Model("msrs-efer-lme")],
        note: "KVM_SET_MSRS changing LME with paging on resets from v5.18; LMA is kept, so no context goes stale",
    },
    Entry {
        id: "#25",
        commits: &["e5ed0fb01004", "7a458f0e1ba1", "faf729621c96", "362505deb8e2"],
        version: "v5.19",
        what: "cpu_role split from root_role; ext loses cr0_pg/cr4_pae; shadow efer_nx forced",
        repro: &[
            Unchanged { scenario: "long-mode-toggles", before: "v5.18", after: "v5.19" },
            Unchanged { scenario: "sregs-pae-to-long", before: "v5.18", after: "v5.19" },
        ],
        note: "a refactor: identical verdicts",
    },
    Entry {
        id: "#26",
        commits: &["84e5ffd045f3"],
        version: "v5.19",
        what: "role.passthrough for a 5-level NPT host shadowing a 4-level L1 NPT",
        repro: &[Unchanged { scenario: "nested-npt-5-level", before: "v5.18", after: "v5.19" }],
        note: "root_role.passthrough is set from v5.19 (mmu's shadow_npt tests); the L2 breakage the sheet infers [I] is in KVM's shadow pages for the fake top level, which the model does not build: identical verdicts",
    },
    Entry {
        id: "#27",
        commits: &["5499ea73e7db"],
        version: "v5.19",
        what: "cached PGD looked up from 32-bit to 64-bit; PAE roots freed early",
        repro: &[Explained("performance only: more prev_roots hits, no verdict changes")],
        note: "",
    },
    Entry {
        id: "#28",
        commits: &["01b31714bd90", "e40bcf9f3a18", "fb509f76acc8", "cf9f4c0eb169"],
        version: "v6.4",
        what: "CR0.WP-only toggles: no unload under TDP, ignored with PG=0; stale cr0_wp fixed by cf9f4c0eb169",
        repro: &[Model("cr0-wp-only")],
        note: "v6.4 and later do not reset on WP-only writes; the stale-WP window never shipped (all four are in v6.4)",
    },
    Entry {
        id: "#29",
        commits: &["1bc26cb90902"],
        version: "v6.9",
        what: "a CPUID update sets root_role.invalid instead of zeroing the role word",
        repro: &[Unchanged { scenario: "cpuid-gbpages-amd", before: "v6.4", after: "v6.14" }],
        note: "the bug was host-side (a TDP root taken for indirect, wrong lock mode); guest verdicts are identical",
    },
    Entry {
        id: "#30",
        commits: &["is_mirror (id [U])"],
        version: "v6.14",
        what: "is_mirror in the page role (TDX mirror roots)",
        repro: &[Explained("a new TDX feature: never set by the role computations modelled")],
        note: "",
    },
];

/// The scenario `name` as a script: a model-level one, or a guest scenario's writes.
pub fn script(name: &str) -> Option<Script> {
    if let Some(s) = scripts::script_named(name) {
        return Some(s);
    }
    let f = CpuFeatures::default();
    let s = crate::scenario(name, &f)?;
    Some(from_scenario::from_scenario(&s, &f, Flavour::Tdp).script)
}

/// The policies that show each verdict a reproduction declares (for a bug, the policies
/// carrying it; for a change, the ones with it), in policy order; empty for the other kinds.
pub fn policies_showing(r: &Repro) -> Vec<(Shows, Vec<&'static str>)> {
    let declared: Vec<(Shows, &'static str)> = match *r {
        Guest(name) => crate::scenario(name, &CpuFeatures::default())
            .map(|s| {
                s.expected_findings
                    .iter()
                    .filter(|f| f.kind == FindingKind::StaleContext)
                    .map(|f| (Shows::Stale, f.policy))
                    .collect()
            })
            .unwrap_or_default(),
        Model(name) => scripts::script_named(name)
            .map(|s| {
                s.expects
                    .iter()
                    .flat_map(|e| e.policies.iter().map(move |&p| (e.shows, p)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut kinds: Vec<Shows> = declared.iter().map(|d| d.0).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|k| {
            let names = mmu::policies()
                .iter()
                .map(|p| p.name)
                .filter(|&p| {
                    declared
                        .iter()
                        .any(|&(s, n)| s == k && mmu::policy(n).is_some_and(|q| q.name == p))
                })
                .collect();
            (k, names)
        })
        .collect()
}

/// `v4.20, v5.0, v5.1-rc3` as `v4.20–v5.1-rc3`: runs of three or more consecutive policies
/// (in [`mmu::policies`] order) shortened to their ends.
pub fn policy_ranges(names: &[&str]) -> String {
    let order: Vec<&str> = mmu::policies().iter().map(|p| p.name).collect();
    let mut idx: Vec<usize> = names
        .iter()
        .filter_map(|n| order.iter().position(|o| o == n))
        .collect();
    idx.sort_unstable();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && idx[j + 1] == idx[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}–{}", order[idx[i]], order[idx[j]]));
        } else {
            parts.extend(idx[i..=j].iter().map(|&k| order[k].to_string()));
        }
        i = j + 1;
    }
    parts.join(", ")
}

/// Where a reproduction runs: `kvm here, emu, model`, `emu, model`, `model`; empty when
/// there is nothing to run. "Here" is this project's machines: a PVM KVM (no 32-bit or PAE
/// paging; its guests get no PCID or LA57; Linux after 5.16, which refuses KVM_SET_CPUID2
/// once a vCPU has run) and the emu backend (QEMU's TCG, which implements no PCID).
pub fn backends(r: &Repro) -> &'static str {
    let guest = |name| match crate::scenario(name, &CpuFeatures::default()) {
        Some(s) if s.runs_on_pvm_kvm() => "kvm here, emu, model",
        Some(_) => "emu, model",
        None => "model",
    };
    match *r {
        Guest(name) => guest(name),
        Model(name) | Unchanged { scenario: name, .. } => match scripts::script_named(name) {
            Some(s) => script_backends(&s),
            None => guest(name),
        },
        Explained(_) => "",
    }
}

/// Where a model-level script runs here (see [`backends`]): as a guest on emu and kvm when
/// it runs no L2 and the machine offers what it uses.
fn script_backends(s: &Script) -> &'static str {
    use crate::model::{guest, Action};
    let Ok(g) = guest::scenario(s) else {
        return "model";
    };
    let features = guest::features(s);
    if features.contains(&"PCID") {
        return "model";
    }
    let kvm = g.runs_on_pvm_kvm()
        && !features.contains(&"LA57")
        && !s.actions.iter().any(|a| matches!(a, Action::SetCpuid(_)));
    if kvm {
        "kvm here, emu, model"
    } else {
        "emu, model"
    }
}

/// The entries a scenario reproduces (by `Guest`, `Model` or `Unchanged`).
pub fn entries_of(scenario: &str) -> Vec<&'static str> {
    ENTRIES
        .iter()
        .filter(|e| {
            e.repro.iter().any(|r| match *r {
                Guest(n) | Model(n) => n == scenario,
                Unchanged { scenario: n, .. } => n == scenario,
                _ => false,
            })
        })
        .map(|e| e.id)
        .collect()
}

fn repro_cell(r: &Repro) -> String {
    match *r {
        Guest(n) | Model(n) => format!("`{n}`"),
        Unchanged {
            scenario,
            before,
            after,
        } => format!("`{scenario}`: {before} = {after}"),
        Explained(why) => format!("explained: {why}"),
    }
}

fn shows_cell(r: &Repro) -> String {
    match *r {
        Unchanged { .. } => "none (identical verdicts)".into(),
        Explained(_) => "-".into(),
        _ => policies_showing(r)
            .iter()
            .map(|(k, p)| format!("{}: {}", k.name(), policy_ranges(p)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The README's table: one row per reproduction of each entry.
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| entry | commit | version | scenario | policies showing it | backends |\n|---|---|---|---|---|---|\n",
    );
    for e in ENTRIES {
        for (i, r) in e.repro.iter().enumerate() {
            let (id, commits, version) = if i == 0 {
                (e.id, e.commits.join(", "), e.version)
            } else {
                ("", String::new(), "")
            };
            let backends = match backends(r) {
                "" => "-",
                b => b,
            };
            s += &format!(
                "| {id} | {} | {version} | {} | {} | {backends} |\n",
                commits.replace('|', "\\|"),
                repro_cell(r),
                shows_cell(r),
            );
        }
    }
    s
}
