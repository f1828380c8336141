//! mmurr-emu links Unicorn (GPL-2.0) and must never link the Apache-2.0-only KVM crates:
//! walk its dependency closure in the workspace's Cargo.lock.

use std::collections::{BTreeMap, BTreeSet};

fn lock_packages() -> BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("Cargo.lock");
    let mut pkgs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut name = String::new();
    let mut in_deps = false;
    for line in lock.lines() {
        let l = line.trim();
        if l == "[[package]]" {
            in_deps = false;
        } else if let Some(n) = l.strip_prefix("name = ") {
            name = n.trim_matches('"').to_string();
            pkgs.entry(name.clone()).or_default();
        } else if l.starts_with("dependencies = [") {
            in_deps = !l.ends_with(']');
        } else if in_deps && l == "]" {
            in_deps = false;
        } else if in_deps {
            let dep = l
                .trim_matches(|c| c == '"' || c == ',')
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string();
            pkgs.entry(name.clone()).or_default().push(dep);
        }
    }
    pkgs
}

#[test]
fn no_kvm_crates_in_the_dependency_closure() {
    let pkgs = lock_packages();
    let mut seen = BTreeSet::new();
    let mut todo = vec!["mmurr-emu".to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(pkgs.get(&p).cloned().unwrap_or_default());
        }
    }
    assert!(
        seen.contains("unicorn-engine"),
        "the closure walk found Unicorn: {seen:?}"
    );
    // linux-loader is Apache-2.0 AND BSD-3-Clause: `mmurr` loads bzImages with it and hands
    // mmurr-emu the finished guest.
    for banned in ["kvm-ioctls", "kvm-bindings", "recorder-kvm", "linux-loader"] {
        assert!(!seen.contains(banned), "mmurr-emu depends on {banned} (Apache-2.0 only, cannot be combined with GPL-2.0 Unicorn)");
    }
}
