//! The host's side of a root: which shadow pages KVM looks up when it loads a root, so the
//! pages a host reports (`kvmmmu:kvm_mmu_get_page`) can be held against a modelled
//! `root_role`, and which modelled kernel version a host kernel release is.

use crate::policy::Policy;
use crate::roles::{Field, Layout, PageRole};

/// `PT32E_ROOT_LEVEL`: a root of this level is KVM's `pae_root`, an array of four PDPTEs that
/// is no shadow page itself.
const PAE_ROOT_LEVEL: u8 = 3;
/// `PT32_ROOT_LEVEL`: the level of the four pages under a `pae_root`.
const PAE_QUARTER_LEVEL: u8 = 2;

/// The root role a group of shadow pages KVM loaded together stands for. `mmu_alloc_root`
/// (mmu.c) looks up a root's page with `root_role` as its role but for `level` and
/// `quadrant`: a 4- or 5-level root is one page with the root role itself; a PAE root
/// (`mmu_alloc_direct_roots` / `mmu_alloc_shadow_roots` with `PT32E_ROOT_LEVEL`) is up to four
/// level-2 pages, one per present PDPTE, whose quadrant is the PDPTE index when 4-byte guest
/// PTEs are shadowed and 0 otherwise (v5.19+ form, 1bc26cb90902-era mmu.c). `None` when the
/// pages are no such group.
pub fn root_of_pages(pages: &[PageRole], layout: &Layout) -> Option<PageRole> {
    let first = *pages.first()?;
    let level = first.level();
    if pages.len() == 1 && level > PAE_ROOT_LEVEL {
        return Some(first);
    }
    if pages.len() > 4 || level != PAE_QUARTER_LEVEL {
        return None;
    }
    let root = |p: PageRole| {
        p.with(layout, Field::Level, u32::from(PAE_ROOT_LEVEL))
            .with(layout, Field::Quadrant, 0)
    };
    let role = root(first);
    pages.iter().all(|&p| root(p) == role).then_some(role)
}

/// The modelled kernel version a host kernel release (`uname -r`, e.g. `6.18.44-fc-v1272`)
/// behaves as: the newest policy whose release is not after it. `None` for a release older
/// than every policy or one that is not `MAJOR.MINOR...`.
pub fn policy_for_release(release: &str) -> Option<&'static Policy> {
    let host = major_minor(release)?;
    crate::policies()
        .iter()
        .rfind(|p| major_minor(p.name.trim_start_matches('v')).is_some_and(|v| v <= host))
}

/// `(6, 18)` of `6.18.44-fc`, `(5, 1)` of `5.1-rc3`.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::layout::LAYOUT_V6_14;

    #[test]
    fn four_direct_quarters_are_the_pae_root_and_one_page_is_a_4_level_root() {
        let l = &LAYOUT_V6_14;
        let quarter = PageRole(0x1782);
        assert_eq!(root_of_pages(&[quarter; 4], l), Some(PageRole(0x1783)));
        assert_eq!(
            root_of_pages(&[PageRole(0x3704)], l),
            Some(PageRole(0x3704))
        );
        // Quadrants 0..3 of a 32-bit guest's shadow (has_4_byte_gpte) make one root.
        let q = |i: u32| PageRole(0x1712 | (i << 5));
        assert_eq!(
            root_of_pages(&[q(0), q(1), q(2), q(3)], l),
            Some(PageRole(0x1713))
        );
        // Not a root: mixed roles, a lone level-1 page, nothing, five quarters.
        assert_eq!(root_of_pages(&[quarter, PageRole(0x3782)], l), None);
        assert_eq!(root_of_pages(&[PageRole(0x1701)], l), None);
        assert_eq!(root_of_pages(&[], l), None);
        assert_eq!(root_of_pages(&[quarter; 5], l), None);
    }

    #[test]
    fn a_host_release_behaves_as_the_newest_policy_not_after_it() {
        let name = |r| policy_for_release(r).map(|p| p.name);
        assert_eq!(name("6.18.44-fc-v1272"), Some("v6.14"));
        assert_eq!(name("6.13.0"), Some("v6.4"));
        assert_eq!(name("5.1.0-1-amd64"), Some("v5.1"));
        assert_eq!(name("5.0.21"), Some("v5.0"));
        assert_eq!(name("4.19.0"), None);
        assert_eq!(name("linux"), None);
    }
}
