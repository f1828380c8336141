//! The memory the trace reconstructs: a copy of RAM at entry, updated only from the recorded
//! `MemWrite`s. At page keyframes it is compared with the guest's real RAM; any difference is
//! a write the recorder missed, reported as a self-check failure and never hidden.

use crate::Backend;
use std::borrow::Cow;
use traces::{MemWrite, Page};

pub const PAGE: usize = 4096;

pub struct Shadow {
    bytes: Vec<u8>,
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

impl Shadow {
    pub fn new(initial: &[u8]) -> Shadow {
        let pages = initial.len().div_ceil(PAGE);
        Shadow {
            bytes: initial.to_vec(),
            dirty: vec![0; pages.div_ceil(64)],
        }
    }

    fn mark(&mut self, page: usize) {
        if let Some(w) = self.dirty.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
    }

    /// Applies a recorded write; `false` if it lies outside RAM.
    pub fn apply(&mut self, w: &MemWrite) -> bool {
        let Ok(start) = usize::try_from(w.gpa) else {
            return false;
        };
        let Some(end) = start
            .checked_add(w.data.len())
            .filter(|&e| e <= self.bytes.len())
        else {
            return false;
        };
        self.bytes[start..end].copy_from_slice(&w.data);
        for p in start / PAGE..end.div_ceil(PAGE) {
            self.mark(p);
        }
        true
    }

    /// The runs of bytes where `real`, the current contents of the page at `page_gpa`, differs
    /// from the shadow: exactly what changed there, nothing that did not. Empty when the page is
    /// outside the shadow or `real` is not that page's size.
    pub fn changed_runs(&self, page_gpa: u64, real: &[u8]) -> Vec<MemWrite> {
        let mut out: Vec<MemWrite> = Vec::new();
        let Some(start) = usize::try_from(page_gpa).ok().filter(|s| s % PAGE == 0) else {
            return out;
        };
        let Some(shadow) = start
            .checked_add(real.len())
            .and_then(|end| self.bytes.get(start..end))
        else {
            return out;
        };
        if shadow == real {
            return out;
        }
        // The common case is a few changed words in a page: blocks compared whole (one memcmp
        // each) rule out most of it, then the words of a differing block as integers, then the
        // bytes of each differing word.
        let mut push = |at: usize, byte: u8| match out.last_mut() {
            Some(last) if last.gpa as usize + last.data.len() == start + at => last.data.push(byte),
            _ => out.push(MemWrite {
                gpa: (start + at) as u64,
                data: vec![byte],
            }),
        };
        const BLOCK: usize = 256;
        let blocks = shadow.chunks(BLOCK).zip(real.chunks(BLOCK));
        for (b, (sb, rb)) in blocks.enumerate().filter(|(_, (sb, rb))| sb != rb) {
            let words = sb.chunks_exact(8).zip(rb.chunks_exact(8));
            for (w, (s, r)) in words.enumerate() {
                let (Ok(s8), Ok(r8)) = (<[u8; 8]>::try_from(s), <[u8; 8]>::try_from(r)) else {
                    continue;
                };
                if u64::from_ne_bytes(s8) != u64::from_ne_bytes(r8) {
                    for i in (0..8).filter(|&i| s8[i] != r8[i]) {
                        push(b * BLOCK + w * 8 + i, r8[i]);
                    }
                }
            }
            let tail = rb.len() - rb.len() % 8;
            for i in (tail..rb.len()).filter(|&i| sb[i] != rb[i]) {
                push(b * BLOCK + i, rb[i]);
            }
        }
        out
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The self-checked keyframe: pages changed since the previous one, taken from `real`, and the
    /// pages where the shadow disagreed with `real` (written without a recorded write). The
    /// shadow is brought in line with `real` so each miss is reported once.
    pub fn page_keyframe(&mut self, real: &[u8]) -> (Vec<Page>, Vec<u64>) {
        let mut mismatched = Vec::new();
        for (i, (s, r)) in self
            .bytes
            .chunks_mut(PAGE)
            .zip(real.chunks(PAGE))
            .enumerate()
        {
            if s != r {
                mismatched.push((i * PAGE) as u64);
                s.copy_from_slice(r);
                if let Some(w) = self.dirty.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
        }
        (self.take_dirty_pages(), mismatched)
    }

    /// Pages written since the previous keyframe, as the trace reconstructs them.
    pub fn take_dirty_pages(&mut self) -> Vec<Page> {
        let mut pages = Vec::new();
        for (wi, word) in self.dirty.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let p = wi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = p * PAGE;
                let end = (start + PAGE).min(self.bytes.len());
                pages.push(Page {
                    gpa: start as u64,
                    data: self.bytes[start..end].to_vec(),
                });
            }
        }
        pages
    }
}

impl mmu::GuestMemory for Shadow {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(gpa) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_runs_are_exactly_the_bytes_that_differ() {
        let mut real = vec![0u8; 3 * PAGE];
        let s = Shadow::new(&real);
        let page = PAGE as u64;
        assert!(s.changed_runs(page, &real[PAGE..2 * PAGE]).is_empty());
        // An accessed bit, a qword that changed in two bytes, a run across a word boundary.
        real[PAGE + 0x10] = 0x20;
        real[PAGE + 0x21] = 1;
        real[PAGE + 0x23] = 2;
        real[PAGE + 0x3e..PAGE + 0x42].copy_from_slice(&[1, 2, 3, 4]);
        real[2 * PAGE - 1] = 9;
        let runs = s.changed_runs(page, &real[PAGE..2 * PAGE]);
        let got: Vec<(u64, Vec<u8>)> = runs.into_iter().map(|w| (w.gpa, w.data)).collect();
        assert_eq!(
            got,
            vec![
                (page + 0x10, vec![0x20]),
                (page + 0x21, vec![1]),
                (page + 0x23, vec![2]),
                (page + 0x3e, vec![1, 2, 3, 4]),
                (2 * page - 1, vec![9]),
            ]
        );
        // Part of a page, not a whole number of words: its tail counts too.
        let mut part = real[PAGE..PAGE + 13].to_vec();
        part[12] = 5;
        let got: Vec<(u64, Vec<u8>)> = s
            .changed_runs(page, &part)
            .into_iter()
            .map(|w| (w.gpa, w.data))
            .collect();
        assert_eq!(got, vec![(page + 12, vec![5])]);
        // Outside the shadow or unaligned: nothing.
        assert!(s.changed_runs(3 * page, &real[..PAGE]).is_empty());
        assert!(s.changed_runs(page + 1, &real[..PAGE]).is_empty());
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
        assert_eq!(hash(s.bytes()), hash(&real));
        let (pages, missed) = s.page_keyframe(&real);
        assert!(pages.is_empty() && missed.is_empty());
        assert!(!s.apply(&MemWrite {
            gpa: 4 * PAGE as u64 - 1,
            data: vec![1, 2]
        }));
    }
}
