//! The memory the trace reconstructs: a copy of RAM at entry, updated only from the recorded
//! `MemWrite`s. At page keyframes it is compared with the guest's real RAM; any difference is
//! a write the recorder missed, reported as a self-check failure and never hidden.

use crate::Backend;
use std::borrow::Cow;
use traces::{MemWrite, Page};

pub const PAGE: usize = 4096;

/// What a page that was never written holds.
static ZERO: [u8; PAGE] = [0; PAGE];

/// Only the pages that ever held a non-zero byte have a copy: copying all of RAM up front
/// cost ≈ 10 ms per recording of 16 MiB (a host page fault for every page of the copy), and
/// most of a guest's RAM is still zero when it starts.
pub struct Shadow {
    /// One slot per page; `None` is a page of zeros.
    pages: Vec<Option<Box<[u8; PAGE]>>>,
    /// Bytes of RAM (the last page may be partial).
    len: usize,
    /// Pages written since the previous page keyframe (one bit per page).
    dirty: Vec<u64>,
}

/// All of the backend's RAM, borrowed where it is mapped.
pub fn ram(backend: &dyn Backend) -> Cow<'_, [u8]> {
    if let Some(r) = backend.ram() {
        return Cow::Borrowed(r);
    }
    let mut v = vec![0u8; backend.ram_size() as usize];
    for (i, chunk) in v.chunks_mut(1 << 20).enumerate() {
        if !backend.read_phys((i << 20) as u64, chunk) {
            chunk.fill(0xff);
        }
    }
    Cow::Owned(v)
}

pub fn hash(ram: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(ram)
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes == &ZERO[..bytes.len()]
}

impl Shadow {
    pub fn new(initial: &[u8]) -> Shadow {
        let pages = initial.len().div_ceil(PAGE);
        let mut s = Shadow {
            pages: Vec::with_capacity(pages),
            len: initial.len(),
            dirty: vec![0; pages.div_ceil(64)],
        };
        for chunk in initial.chunks(PAGE) {
            s.pages.push((!is_zero(chunk)).then(|| copy_of(chunk)));
        }
        s
    }

    fn mark(&mut self, page: usize) {
        if let Some(w) = self.dirty.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
    }

    /// The page's bytes (zeros for a page never written), cut to RAM's end.
    fn page(&self, page: usize) -> &[u8] {
        let n = self.len.saturating_sub(page * PAGE).min(PAGE);
        match self.pages.get(page) {
            Some(Some(p)) => &p[..n],
            _ => &ZERO[..n],
        }
    }

    fn page_mut(&mut self, page: usize) -> &mut [u8; PAGE] {
        self.pages[page].get_or_insert_with(|| Box::new([0; PAGE]))
    }

    /// The byte range `start..start + len` inside RAM, or `None`.
    fn span(&self, gpa: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(gpa).ok()?;
        start.checked_add(len).filter(|&e| e <= self.len)?;
        Some(start)
    }

    /// Applies a recorded write; `false` if it lies outside RAM.
    pub fn apply(&mut self, w: &MemWrite) -> bool {
        let Some(mut at) = self.span(w.gpa, w.data.len()) else {
            return false;
        };
        let mut data = &w.data[..];
        while !data.is_empty() {
            let (page, off) = (at / PAGE, at % PAGE);
            let n = data.len().min(PAGE - off);
            self.page_mut(page)[off..off + n].copy_from_slice(&data[..n]);
            self.mark(page);
            (at, data) = (at + n, &data[n..]);
        }
        true
    }

    /// Whether the shadow holds exactly `data` at `gpa` (false outside RAM).
    pub fn holds(&self, gpa: u64, data: &[u8]) -> bool {
        let Some(mut at) = self.span(gpa, data.len()) else {
            return false;
        };
        let mut data = data;
        while !data.is_empty() {
            let (page, off) = (at / PAGE, at % PAGE);
            let n = data.len().min(PAGE - off);
            if self.page(page)[off..off + n] != data[..n] {
                return false;
            }
            (at, data) = (at + n, &data[n..]);
        }
        true
    }

    /// Appends to `out` the runs of bytes (gpa, length) where `real`, the current contents of
    /// the page at `page_gpa`, differs from the shadow: exactly what changed there, nothing
    /// that did not. Nothing when the page is outside the shadow or `real` is longer than a
    /// page.
    pub fn changed_ranges(&self, page_gpa: u64, real: &[u8], out: &mut Vec<(u64, u64)>) {
        let Some(start) = usize::try_from(page_gpa).ok().filter(|s| s % PAGE == 0) else {
            return;
        };
        if real.len() > PAGE || self.span(page_gpa, real.len()).is_none() {
            return;
        }
        let shadow = &self.page(start / PAGE)[..real.len()];
        if shadow == real {
            return; // the common case: one memcmp
        }
        let mut push = |at: usize| match out.last_mut() {
            Some(last) if last.0 + last.1 == (start + at) as u64 => last.1 += 1,
            _ => out.push(((start + at) as u64, 1)),
        };
        // The common case is a few changed words in a page: 64-byte chunks are ruled out with
        // one OR of XORed words each (vectorised; a memcmp call per block cost more), then the
        // bytes of each differing word are looked at.
        const CHUNK: usize = 64;
        let chunks = shadow.chunks_exact(CHUNK).zip(real.chunks_exact(CHUNK));
        for (c, (sc, rc)) in chunks.enumerate() {
            let xor = || {
                sc.chunks_exact(8)
                    .zip(rc.chunks_exact(8))
                    .map(|(s, r)| le_word(s) ^ le_word(r))
            };
            if xor().fold(0, |acc, x| acc | x) == 0 {
                continue;
            }
            for (w, x) in xor().enumerate().filter(|&(_, x)| x != 0) {
                for i in (0..8).filter(|i| (x >> (8 * i)) & 0xff != 0) {
                    push(c * CHUNK + w * 8 + i);
                }
            }
        }
        let tail = real.len() - real.len() % CHUNK;
        for i in (tail..real.len()).filter(|&i| shadow[i] != real[i]) {
            push(i);
        }
    }

    /// The self-checked keyframe: pages changed since the previous one, taken from `real`, and the
    /// pages where the shadow disagreed with `real` (written without a recorded write). The
    /// shadow is brought in line with `real` so each miss is reported once.
    pub fn page_keyframe(&mut self, real: &[u8]) -> (Vec<Page>, Vec<u64>) {
        let mut mismatched = Vec::new();
        for (i, r) in real.chunks(PAGE).enumerate().take(self.pages.len()) {
            if self.page(i) != r {
                mismatched.push((i * PAGE) as u64);
                self.pages[i] = Some(copy_of(r));
                self.mark(i);
            }
        }
        (self.take_dirty_pages(), mismatched)
    }

    /// Pages written since the previous keyframe, as the trace reconstructs them.
    pub fn take_dirty_pages(&mut self) -> Vec<Page> {
        let mut pages = Vec::new();
        for wi in 0..self.dirty.len() {
            let mut bits = std::mem::take(&mut self.dirty[wi]);
            while bits != 0 {
                let p = wi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                pages.push(Page {
                    gpa: (p * PAGE) as u64,
                    data: self.page(p).to_vec(),
                });
            }
        }
        pages
    }
}

/// Eight bytes as a little-endian word (byte `i` in bits `8 * i..`); 0 for a short slice.
fn le_word(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

/// A page holding `bytes` (at most a page), zero-padded.
fn copy_of(bytes: &[u8]) -> Box<[u8; PAGE]> {
    let mut p = Box::new([0; PAGE]);
    p[..bytes.len()].copy_from_slice(bytes);
    p
}

impl mmu::GuestMemory for Shadow {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(mut at) = self.span(gpa, buf.len()) else {
            return false;
        };
        let mut buf = buf;
        while !buf.is_empty() {
            let (page, off) = (at / PAGE, at % PAGE);
            let n = buf.len().min(PAGE - off);
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&self.page(page)[off..off + n]);
            (at, buf) = (at + n, rest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu::GuestMemory;

    fn ranges(s: &Shadow, page: u64, real: &[u8]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        s.changed_ranges(page, real, &mut out);
        out
    }

    #[test]
    fn changed_ranges_are_exactly_the_bytes_that_differ() {
        let mut real = vec![0u8; 3 * PAGE];
        real[PAGE + 0x10] = 0x20; // the shadow has a copy of this page
        let s = Shadow::new(&real);
        let page = PAGE as u64;
        assert!(ranges(&s, page, &real[PAGE..2 * PAGE]).is_empty());
        // An accessed bit, a qword that changed in two bytes, a run across a word boundary.
        real[PAGE + 0x10] = 0x60;
        real[PAGE + 0x21] = 1;
        real[PAGE + 0x23] = 2;
        real[PAGE + 0x3e..PAGE + 0x42].copy_from_slice(&[1, 2, 3, 4]);
        real[2 * PAGE - 1] = 9;
        assert_eq!(
            ranges(&s, page, &real[PAGE..2 * PAGE]),
            vec![
                (page + 0x10, 1),
                (page + 0x21, 1),
                (page + 0x23, 1),
                (page + 0x3e, 4),
                (2 * page - 1, 1),
            ]
        );
        // A page the shadow holds as zeros.
        real[2 * PAGE + 8] = 1;
        assert_eq!(
            ranges(&s, 2 * page, &real[2 * PAGE..]),
            vec![(2 * page + 8, 1)]
        );
        // Part of a page, not a whole number of words: its tail counts too.
        let mut part = s.page(1)[..13].to_vec();
        part[12] = 5;
        assert_eq!(ranges(&s, page, &part), vec![(page + 12, 1)]);
        // Outside the shadow or unaligned: nothing.
        assert!(ranges(&s, 3 * page, &real[..PAGE]).is_empty());
        assert!(ranges(&s, page + 1, &real[..PAGE]).is_empty());
    }

    #[test]
    fn only_pages_with_data_are_copied_and_reads_see_all_of_ram() {
        let mut real = vec![0u8; 3 * PAGE + 100];
        real[2 * PAGE + 5] = 3;
        real[3 * PAGE + 99] = 4;
        let mut s = Shadow::new(&real);
        let copied: Vec<bool> = s.pages.iter().map(Option::is_some).collect();
        assert_eq!(copied, vec![false, false, true, true]);
        // Reads and writes across page boundaries and into zero pages.
        let mut buf = [0xffu8; 8];
        assert!(s.read(2 * PAGE as u64 + 2, &mut buf));
        assert_eq!(buf, [0, 0, 0, 3, 0, 0, 0, 0]);
        let w = MemWrite {
            gpa: PAGE as u64 - 2,
            data: vec![1, 2, 3, 4],
        };
        assert!(s.apply(&w) && s.holds(w.gpa, &w.data));
        assert!(!s.holds(w.gpa, &[1, 2, 3, 5]));
        assert!(s.read(PAGE as u64 - 2, &mut buf[..4]) && buf[..4] == [1, 2, 3, 4]);
        // Not past the end of RAM.
        assert!(!s.read(3 * PAGE as u64 + 99, &mut buf[..2]));
        assert!(!s.holds(3 * PAGE as u64 + 100, &[0]));
        assert!(s.holds(3 * PAGE as u64 + 99, &[4]));
    }

    #[test]
    fn keyframes_carry_written_pages_and_catch_missed_writes() {
        let mut real = vec![0u8; 4 * PAGE];
        let mut s = Shadow::new(&real);
        real[PAGE + 5] = 7;
        assert!(s.apply(&MemWrite {
            gpa: PAGE as u64 + 5,
            data: vec![7]
        }));
        real[3 * PAGE] = 1; // a write nobody recorded
        let (pages, missed) = s.page_keyframe(&real);
        assert_eq!(
            pages.iter().map(|p| p.gpa).collect::<Vec<_>>(),
            vec![PAGE as u64, 3 * PAGE as u64]
        );
        assert_eq!(missed, vec![3 * PAGE as u64]);
        let mut flat = vec![0u8; real.len()];
        assert!(s.read(0, &mut flat));
        assert_eq!(hash(&flat), hash(&real));
        let (pages, missed) = s.page_keyframe(&real);
        assert!(pages.is_empty() && missed.is_empty());
        assert!(!s.apply(&MemWrite {
            gpa: 4 * PAGE as u64 - 1,
            data: vec![1, 2]
        }));
    }
}
