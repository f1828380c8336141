//! Exact memory on kvm: the pages the guest may have written since the previous step.
//!
//! Preferred: the vCPUs' dirty rings (KVM_CAP_DIRTY_LOG_RING), one per vCPU. KVM publishes
//! each page a vCPU writes in that vCPU's ring, shared with us, so a step costs no system call at all: on this PVM
//! host, where KVM emulates ring-0 instructions and publishes every write they make, the
//! KVM_GET_DIRTY_LOG ioctl after every step was most of what exact memory cost. Harvested
//! pages stay writable until KVM_RESET_DIRTY_RINGS re-protects them (a natively running guest
//! writes them without KVM seeing it), so they are *hot* until then, as below, and the ring is
//! reset on the same rule. KVM_RESET_DIRTY_RINGS is one VM-wide ioctl and a hot page is
//! writable by every vCPU, so with several vCPUs the hot set is the machine's: a page one
//! vCPU's ring published is reported after any vCPU's step until the rings are reset.
//!
//! Otherwise the dirty bitmap (KVM_MEM_LOG_DIRTY_PAGES on the RAM slot, KVM_GET_DIRTY_LOG after
//! every step, ≈ 1.3 µs per step here). Plain KVM_GET_DIRTY_LOG write-protects every page it
//! reports again, so a natively running guest that writes its stack or a counter every few
//! instructions would take a host fault for each of those writes. With
//! KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (Documentation/virt/kvm/api.rst, "KVM_CLEAR_DIRTY_LOG")
//! reading the log leaves the reported pages writable and their bits set until
//! KVM_CLEAR_DIRTY_LOG. A page the guest dirtied so stays *hot*: it is reported every step,
//! and the tracer compares it with its shadow (4 KiB, far cheaper than a host fault), until it
//! is cleared, i.e. write-protected again, so that its next write is logged again. (On this PVM
//! host it gains nothing measurable: ring-0 stores are emulated and never fault.)
//!
//! When to clear is a rent-or-buy choice: keeping a page hot costs a comparison per step, clearing
//! it costs a fault on its next write. A page is cleared after [`HOT_REPORTS`] reports (about a
//! fault's cost in comparisons), and at once when more than [`MAX_HOT`] pages are hot (a guest
//! filling memory). Exact either way: a hot page is compared every step, and a cleared page's
//! next write sets its bit again.

use crate::mapping::{self, DirtyRing};
use kvm_ioctls::VmFd;

/// Reports a page stays hot for before it is write-protected again.
pub const HOT_REPORTS: u32 = 64;
/// At most this many pages are hot at once; the oldest are cleared first.
pub const MAX_HOT: usize = 16;

/// The dirty log of one memory slot.
pub struct DirtyLog {
    slot: u32,
    source: Source,
}

enum Source {
    Ring(RingLog),
    Bitmap {
        /// The last KVM_GET_DIRTY_LOG, one bit per page, reused every step.
        bitmap: Vec<u64>,
        /// `Some` with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 on; `None`: every read re-protects.
        hot: Option<HotPages>,
    },
}

/// The vCPUs' dirty rings and the pages harvested from them since their last reset.
struct RingLog {
    rings: Vec<DirtyRing>,
    hot: Vec<u64>,
    /// Reports since the oldest hot page became hot.
    reports: u32,
}

impl DirtyLog {
    /// The bitmap log of slot `slot` of `size` bytes; `manual` when the VM has
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled (without KVM_DIRTY_LOG_INITIALLY_SET).
    pub fn bitmap(slot: u32, size: u64, manual: bool) -> DirtyLog {
        DirtyLog {
            slot,
            source: Source::Bitmap {
                bitmap: vec![0; size.div_ceil(4096 * 64) as usize],
                hot: manual.then(HotPages::default),
            },
        }
    }

    /// The log of slot `slot` read from the vCPUs' dirty rings (one per vCPU).
    pub fn rings(slot: u32, rings: Vec<DirtyRing>) -> DirtyLog {
        DirtyLog {
            slot,
            source: Source::Ring(RingLog {
                rings,
                hot: Vec::new(),
                reports: 0,
            }),
        }
    }

    /// How the log is read, for the trace header.
    pub fn describe(&self) -> &'static str {
        match &self.source {
            Source::Ring(_) => "KVM dirty ring",
            Source::Bitmap { hot: Some(_), .. } => {
                "KVM dirty bitmap with manual re-protection of recently written pages"
            }
            Source::Bitmap { hot: None, .. } => "KVM dirty bitmap",
        }
    }

    /// KVM stopped the vCPU because the ring is full (KVM_EXIT_DIRTY_RING_FULL): harvests it
    /// and frees it. The harvested pages stay hot, so the next [`DirtyLog::read`] reports them.
    pub fn ring_full(&mut self, vm: &VmFd) -> Result<(), String> {
        match &mut self.source {
            Source::Ring(r) => {
                r.harvest(self.slot);
                r.reset(vm)
            }
            Source::Bitmap { .. } => Err("a dirty-ring exit without a dirty ring".into()),
        }
    }

    /// Appends to `pages` the numbers of the pages written since the previous call, and hot
    /// pages (which may have been); re-protects the pages whose turn it is.
    pub fn read(&mut self, vm: &VmFd, pages: &mut Vec<u64>) -> Result<(), String> {
        let (bitmap, hot) = match &mut self.source {
            Source::Ring(r) => return r.read(vm, self.slot, pages),
            Source::Bitmap { bitmap, hot } => (bitmap, hot),
        };
        mapping::get_dirty_log(vm, self.slot, bitmap)?;
        let start = pages.len();
        for (i, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                pages.push((i * 64) as u64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        let Some(hot) = hot.as_mut() else {
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

impl RingLog {
    /// Takes in the pages KVM published since the last harvest (only the vCPU that stepped
    /// can have published any, but a ring costs one load to look at).
    fn harvest(&mut self, slot: u32) {
        for ring in &mut self.rings {
            while let Some((s, page)) = ring.harvest() {
                if s == slot && !self.hot.contains(&page) {
                    if self.hot.is_empty() {
                        self.reports = 0;
                    }
                    self.hot.push(page);
                }
            }
        }
    }

    /// KVM_RESET_DIRTY_RINGS resets every vCPU's ring at once.
    fn reset(&mut self, vm: &VmFd) -> Result<(), String> {
        mapping::reset_dirty_rings(vm)?;
        for ring in &mut self.rings {
            ring.reset_done();
        }
        Ok(())
    }

    fn read(&mut self, vm: &VmFd, slot: u32, pages: &mut Vec<u64>) -> Result<(), String> {
        self.harvest(slot);
        if self.hot.is_empty() {
            return Ok(());
        }
        pages.extend_from_slice(&self.hot);
        self.reports += 1;
        let full = self.rings.iter().any(|r| r.harvested() >= r.len() / 2);
        if self.reports >= HOT_REPORTS || self.hot.len() > MAX_HOT || full {
            // Reported just now, so nothing is lost by forgetting them: from here on their
            // writes are published again.
            self.reset(vm)?;
            self.hot.clear();
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
