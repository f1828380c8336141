//! Exact memory on kvm: the pages the guest may have written since the previous step.
//!
//! KVM logs the pages the guest dirties (KVM_MEM_LOG_DIRTY_PAGES on the RAM slot). Plain
//! KVM_GET_DIRTY_LOG write-protects every page it reports again, so a guest that writes its
//! stack or a counter every few instructions takes a host fault for each of those writes, and
//! every read of a non-empty log flushes the TLB: on this PVM host that doubled the time of a
//! step. With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (Documentation/virt/kvm/api.rst, "KVM_CLEAR_DIRTY_LOG")
//! reading the log leaves the reported pages writable and their bits set until
//! KVM_CLEAR_DIRTY_LOG. A page the guest dirtied so stays *hot*: it is reported every step,
//! and the tracer compares it with its shadow (4 KiB, far cheaper than a host fault), until it
//! is cleared, i.e. write-protected again, so that its next write is logged again.
//!
//! When to clear is a rent-or-buy choice: keeping a page hot costs a comparison per step, clearing
//! it costs a fault on its next write. A page is cleared after [`HOT_REPORTS`] reports (about a
//! fault's cost in comparisons), and at once when more than [`MAX_HOT`] pages are hot (a guest
//! filling memory). Exact either way: a hot page is compared every step, and a cleared page's
//! next write sets its bit again.

use crate::mapping;
use kvm_ioctls::VmFd;

/// Reports a page stays hot for before it is write-protected again.
pub const HOT_REPORTS: u32 = 64;
/// At most this many pages are hot at once; the oldest are cleared first.
pub const MAX_HOT: usize = 16;

/// The dirty log of one memory slot.
pub struct DirtyLog {
    slot: u32,
    /// The last KVM_GET_DIRTY_LOG, one bit per page, reused every step.
    bitmap: Vec<u64>,
    /// `Some` with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 on; `None`: every read re-protects.
    hot: Option<HotPages>,
}

impl DirtyLog {
    /// The log of slot `slot` of `size` bytes; `manual` when the VM has
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled (without KVM_DIRTY_LOG_INITIALLY_SET).
    pub fn new(slot: u32, size: u64, manual: bool) -> DirtyLog {
        DirtyLog {
            slot,
            bitmap: vec![0; size.div_ceil(4096 * 64) as usize],
            hot: manual.then(HotPages::default),
        }
    }

    pub fn manual(&self) -> bool {
        self.hot.is_some()
    }

    /// Appends to `pages` the numbers of the pages written since the previous call, and hot
    /// pages (which may have been); clears the pages whose turn it is.
    pub fn read(&mut self, vm: &VmFd, pages: &mut Vec<u64>) -> Result<(), String> {
        mapping::get_dirty_log(vm, self.slot, &mut self.bitmap)?;
        let start = pages.len();
        for (i, &word) in self.bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                pages.push((i * 64) as u64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        let Some(hot) = self.hot.as_mut() else {
            return Ok(());
        };
        let cold = hot.reported(&pages[start..]);
        // One KVM_CLEAR_DIRTY_LOG per 64-page group (usually one).
        let mut i = 0;
        while i < cold.len() {
            let group = cold[i] / 64;
            let mut mask = 0u64;
            while i < cold.len() && cold[i] / 64 == group {
                mask |= 1 << (cold[i] % 64);
                i += 1;
            }
            mapping::clear_dirty_log(vm, self.slot, group * 64, 64, &[mask])?;
        }
        Ok(())
    }
}

/// The pages left writable, in the order they became hot, with how often each was reported.
#[derive(Default, Debug)]
struct HotPages {
    pages: Vec<(u64, u32)>,
}

impl HotPages {
    /// Takes in the pages whose dirty bit is set now (hot ones and newly written ones, in
    /// ascending order); returns the pages to clear, in ascending order.
    fn reported(&mut self, set: &[u64]) -> Vec<u64> {
        for (_, reports) in &mut self.pages {
            *reports += 1;
        }
        for &page in set {
            if !self.pages.iter().any(|&(p, _)| p == page) {
                self.pages.push((page, 1));
            }
        }
        // A set bit not hot here was cleared by someone else: nothing to track. A hot page
        // whose bit is no longer set is gone from the log too.
        self.pages.retain(|(p, _)| set.binary_search(p).is_ok());
        let over = self.pages.len().saturating_sub(MAX_HOT);
        let mut cold: Vec<u64> = Vec::new();
        let mut kept = Vec::with_capacity(self.pages.len());
        for (i, &(page, reports)) in self.pages.iter().enumerate() {
            if i < over || reports >= HOT_REPORTS {
                cold.push(page);
            } else {
                kept.push((page, reports));
            }
        }
        self.pages = kept;
        cold.sort_unstable();
        cold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stays_hot_for_a_while_then_is_cleared() {
        let mut hot = HotPages::default();
        for _ in 1..HOT_REPORTS {
            assert!(hot.reported(&[8]).is_empty());
        }
        assert_eq!(hot.reported(&[8]), vec![8]);
        // Written again after it was cleared: hot again from the start.
        assert!(hot.reported(&[8]).is_empty());
        assert_eq!(hot.pages, vec![(8, 1)]);
    }

    #[test]
    fn too_many_hot_pages_clear_the_oldest() {
        let mut hot = HotPages::default();
        let first: Vec<u64> = (100..100 + MAX_HOT as u64).collect();
        assert!(hot.reported(&first).is_empty());
        // Two more pages: the two oldest go (ties: the lower numbers became hot first).
        let mut all = first.clone();
        all.extend([5, 7]);
        all.sort_unstable();
        assert_eq!(hot.reported(&all), vec![100, 101]);
        assert_eq!(hot.pages.len(), MAX_HOT);
        assert!(hot.pages.iter().any(|&(p, r)| p == 5 && r == 1));
    }

    #[test]
    fn pages_no_longer_in_the_log_are_forgotten() {
        let mut hot = HotPages::default();
        assert!(hot.reported(&[1, 2]).is_empty());
        assert!(hot.reported(&[2]).is_empty());
        assert_eq!(hot.pages, vec![(2, 2)]);
    }
}
