//! The current root and the three `prev_roots` consulted by `kvm_mmu_new_pgd` (sheet §4.9, §5.7).

use crate::roles::PageRole;

/// KVM_MMU_NUM_PREV_ROOTS.
pub const NUM_PREV_ROOTS: usize = 3;

/// One root: the guest PGD it was loaded for and the role of the page behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CachedRoot {
    /// CR3 (with PCID bits, without NOFLUSH) when the root was current.
    pub pgd: u64,
    /// `sp->role` of the root page.
    pub role: PageRole,
    /// False for roots without a shadow page (the PAE `pae_root` of shadow paging with a
    /// 32-bit/PAE guest, or a non-paging shadow root): such roots are never cached.
    pub has_shadow_page: bool,
}

/// Where a lookup found its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootSlot {
    Current,
    Prev(u8),
}

/// The result of a `kvm_mmu_new_pgd` lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootCacheLookup {
    pub hit: bool,
    pub slot: Option<RootSlot>,
    /// The required `root_role.word` roots were matched against.
    pub role_word: u32,
    pub pgd: u64,
    /// The fast switch was not attempted (≤ v5.18: guest or root level below 4).
    pub not_attempted: bool,
    /// A current root without a shadow page was freed first (v5.19+ `fast_pgd_switch`).
    pub freed_uncacheable_current: bool,
}

/// Current root + prev_roots, MRU first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RootCache {
    pub current: Option<CachedRoot>,
    pub prev_roots: [Option<CachedRoot>; NUM_PREV_ROOTS],
}

impl RootCache {
    /// `kvm_mmu_unload`: free every root.
    pub fn unload(&mut self) {
        *self = RootCache::default();
    }

    pub fn free_current(&mut self) {
        self.current = None;
    }

    /// Number of valid roots.
    pub fn len(&self) -> usize {
        usize::from(self.current.is_some()) + self.prev_roots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn usable(root: &Option<CachedRoot>, pgd: u64, role: PageRole, pgd_always: bool) -> bool {
        match root {
            Some(r) => {
                r.has_shadow_page
                    && (pgd == r.pgd || (!pgd_always && role.direct()))
                    && r.role == role
            }
            None => false,
        }
    }

    /// v5.19+ `fast_pgd_switch`: free an uncacheable current root, then
    /// `cached_root_find_and_keep_current` or `cached_root_find_without_current`.
    pub fn lookup_keep_current(&mut self, pgd: u64, role: PageRole) -> RootCacheLookup {
        let mut res = RootCacheLookup {
            hit: false,
            slot: None,
            role_word: role.0,
            pgd,
            not_attempted: false,
            freed_uncacheable_current: false,
        };
        if self.current.is_some_and(|r| !r.has_shadow_page) {
            self.current = None;
            res.freed_uncacheable_current = true;
        }
        if self.current.is_some() {
            if Self::usable(&self.current, pgd, role, false) {
                res.hit = true;
                res.slot = Some(RootSlot::Current);
                return res;
            }
            for i in 0..NUM_PREV_ROOTS {
                std::mem::swap(&mut self.current, &mut self.prev_roots[i]);
                if Self::usable(&self.current, pgd, role, false) {
                    res.hit = true;
                    res.slot = Some(RootSlot::Prev(i as u8));
                    return res;
                }
            }
            // The least recently used root ended up current: free it.
            self.current = None;
            return res;
        }
        for i in 0..NUM_PREV_ROOTS {
            if Self::usable(&self.prev_roots[i], pgd, role, false) {
                self.current = self.prev_roots[i].take();
                for j in i..NUM_PREV_ROOTS - 1 {
                    self.prev_roots[j] = self.prev_roots[j + 1];
                }
                self.prev_roots[NUM_PREV_ROOTS - 1] = None;
                res.hit = true;
                res.slot = Some(RootSlot::Prev(i as u8));
                return res;
            }
        }
        res
    }

    /// ≤ v5.18 `fast_cr3_switch` + `cached_root_available`: only when `attempt` (64-bit guest
    /// and root); the current root is rotated into prev_roots\[0\] without being tested; the PGD
    /// is compared unless `direct_ignores_pgd` and the role is direct. On a miss the current
    /// root (the LRU one) is freed.
    pub fn lookup_legacy(
        &mut self,
        pgd: u64,
        role: PageRole,
        attempt: bool,
        direct_ignores_pgd: bool,
    ) -> RootCacheLookup {
        let mut res = RootCacheLookup {
            hit: false,
            slot: None,
            role_word: role.0,
            pgd,
            not_attempted: !attempt,
            freed_uncacheable_current: false,
        };
        if !attempt {
            self.current = None;
            return res;
        }
        let mut root = self.current;
        for i in 0..NUM_PREV_ROOTS {
            std::mem::swap(&mut root, &mut self.prev_roots[i]);
            if Self::usable(&root, pgd, role, !direct_ignores_pgd) {
                self.current = root;
                res.hit = true;
                res.slot = Some(RootSlot::Prev(i as u8));
                return res;
            }
        }
        self.current = None;
        res
    }
}
