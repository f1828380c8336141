//! Guest-physical memory as the replayer rebuilds it.
//!
//! A [`MemoryImage`] is a two-level sparse table of 4 KiB pages over zero-filled RAM:
//! directories of 512 pages (2 MiB), each shared (`Arc`) between images, and pages shared
//! likewise. A snapshot costs one pointer per directory in use; writing copies one directory
//! and one page. So the replayer can keep a checkpoint at every keyframe cheaply.

use std::collections::BTreeMap;
use std::sync::Arc;
use traces::GuestSpec;
use xxhash_rust::xxh3::Xxh3;

pub const PAGE_SIZE: u64 = 4096;
type PageData = [u8; PAGE_SIZE as usize];
const ZERO_PAGE: PageData = [0; PAGE_SIZE as usize];
/// Pages per directory: 2 MiB of guest memory.
const DIR_PAGES: usize = 512;
const DIR_SPAN: u64 = PAGE_SIZE * DIR_PAGES as u64;
type Dir = [Option<Arc<PageData>>; DIR_PAGES];

/// Guest RAM `0..ram_size`, copy-on-write per directory and per page.
#[derive(Clone, Debug)]
pub struct MemoryImage {
    ram_size: u64,
    /// Directory index (gpa / 2 MiB) → its pages.
    dirs: BTreeMap<u64, Arc<Dir>>,
    /// The guest's ROM regions (base, bytes), read-only: what the reset vector runs, never
    /// written by a recorded step.
    roms: Arc<Vec<(u64, Vec<u8>)>>,
}

/// Why a guest image could not be built from a trace header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("load {index} names blob {blob}, but the trace has only {blobs} blobs")]
    MissingBlob {
        index: usize,
        blob: u32,
        blobs: usize,
    },
    #[error("load {index} ({len} bytes at {gpa:#x}) does not fit in {ram_size:#x} bytes of RAM")]
    OutOfRam {
        index: usize,
        gpa: u64,
        len: u64,
        ram_size: u64,
    },
}

impl MemoryImage {
    /// Zero-filled RAM of `ram_size` bytes.
    pub fn zeroed(ram_size: u64) -> MemoryImage {
        MemoryImage {
            ram_size,
            dirs: BTreeMap::new(),
            roms: Arc::new(Vec::new()),
        }
    }

    /// RAM at entry: zero, with the header's blobs placed at their load addresses. A load
    /// that lies wholly in a declared region above RAM (firmware ROM below 4 GiB) belongs to
    /// that region: a ROM region's bytes are kept beside RAM, read-only.
    pub fn from_guest(guest: &GuestSpec) -> Result<MemoryImage, ImageError> {
        let mut image = MemoryImage::zeroed(guest.ram_size);
        let mut roms: Vec<(u64, Vec<u8>)> = guest
            .regions
            .iter()
            .filter(|r| r.kind == traces::RegionKind::Rom && r.gpa >= guest.ram_size)
            .filter_map(|r| Some((r.gpa, vec![0u8; usize::try_from(r.size).ok()?])))
            .collect();
        for (index, load) in guest.loads.iter().enumerate() {
            let blob = guest
                .blobs
                .get(load.blob as usize)
                .ok_or(ImageError::MissingBlob {
                    index,
                    blob: load.blob,
                    blobs: guest.blobs.len(),
                })?;
            let len = blob.data.len() as u64;
            let in_region = guest.regions.iter().any(|r| {
                r.kind != traces::RegionKind::Mmio
                    && load.gpa >= r.gpa.max(guest.ram_size)
                    && load
                        .gpa
                        .checked_add(len)
                        .is_some_and(|e| e <= r.gpa.saturating_add(r.size))
            });
            if in_region {
                let rom = roms.iter_mut().find(|(base, bytes)| {
                    load.gpa >= *base && load.gpa - base + len <= bytes.len() as u64
                });
                if let Some((base, bytes)) = rom {
                    let at = (load.gpa - *base) as usize;
                    bytes[at..at + blob.data.len()].copy_from_slice(&blob.data);
                }
                continue;
            }
            if !image.write(load.gpa, &blob.data) {
                return Err(ImageError::OutOfRam {
                    index,
                    gpa: load.gpa,
                    len: blob.data.len() as u64,
                    ram_size: guest.ram_size,
                });
            }
        }
        image.roms = Arc::new(roms);
        Ok(image)
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    fn in_ram(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.ram_size)
    }

    /// Reads `buf.len()` bytes at `gpa`; false (and `buf` untouched) if any byte is outside RAM
    /// and the ROM regions.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        if !self.in_ram(gpa, buf.len() as u64) {
            let rom = self.roms.iter().find(|(base, bytes)| {
                gpa >= *base && gpa - base + buf.len() as u64 <= bytes.len() as u64
            });
            let Some((base, bytes)) = rom else {
                return false;
            };
            let at = (gpa - base) as usize;
            buf.copy_from_slice(&bytes[at..at + buf.len()]);
            return true;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let addr = gpa + done as u64;
            let (page, offset) = (addr & !(PAGE_SIZE - 1), (addr % PAGE_SIZE) as usize);
            let n = (PAGE_SIZE as usize - offset).min(buf.len() - done);
            let src = self.page(page).unwrap_or(&ZERO_PAGE);
            buf[done..done + n].copy_from_slice(&src[offset..offset + n]);
            done += n;
        }
        true
    }

    /// Writes `data` at `gpa`; false (and nothing written) if any byte is outside RAM.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        if !self.in_ram(gpa, data.len() as u64) {
            return false;
        }
        let mut done = 0usize;
        while done < data.len() {
            let addr = gpa + done as u64;
            let (page, offset) = (addr & !(PAGE_SIZE - 1), (addr % PAGE_SIZE) as usize);
            let n = (PAGE_SIZE as usize - offset).min(data.len() - done);
            self.page_mut(page)[offset..offset + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        true
    }

    /// Replaces a whole page (from a keyframe); false if it is not a page-aligned page of RAM.
    pub fn set_page(&mut self, gpa: u64, data: &[u8]) -> bool {
        if !gpa.is_multiple_of(PAGE_SIZE)
            || data.len() as u64 != PAGE_SIZE
            || !self.in_ram(gpa, PAGE_SIZE)
        {
            return false;
        }
        self.page_mut(gpa).copy_from_slice(data);
        true
    }

    fn page(&self, gpa: u64) -> Option<&PageData> {
        let dir = self.dirs.get(&(gpa / DIR_SPAN))?;
        dir[((gpa % DIR_SPAN) / PAGE_SIZE) as usize].as_deref()
    }

    /// The page at `gpa` (page-aligned, in RAM), made private to this image.
    fn page_mut(&mut self, gpa: u64) -> &mut PageData {
        let dir = self
            .dirs
            .entry(gpa / DIR_SPAN)
            .or_insert_with(|| Arc::new(std::array::from_fn(|_| None)));
        let slot = &mut Arc::make_mut(dir)[((gpa % DIR_SPAN) / PAGE_SIZE) as usize];
        Arc::make_mut(slot.get_or_insert_with(|| Arc::new(ZERO_PAGE)))
    }

    /// Pages that hold data, in ascending address order.
    fn pages(&self) -> impl Iterator<Item = (u64, &PageData)> {
        self.dirs.iter().flat_map(|(&d, dir)| {
            dir.iter().enumerate().filter_map(move |(i, p)| {
                p.as_deref()
                    .map(|p| (d * DIR_SPAN + i as u64 * PAGE_SIZE, p))
            })
        })
    }

    /// xxh3-64 over all of RAM in ascending address order: the same function the recorder
    /// stores in every keyframe, so a reconstruction can be proven right.
    pub fn hash(&self) -> u64 {
        let mut hasher = Xxh3::new();
        let mut next = 0u64;
        for (page, data) in self.pages().take_while(|(p, _)| *p < self.ram_size) {
            feed_zeros(&mut hasher, page - next);
            let len = PAGE_SIZE.min(self.ram_size - page) as usize;
            hasher.update(&data[..len]);
            next = page + len as u64;
        }
        feed_zeros(&mut hasher, self.ram_size - next);
        hasher.digest()
    }

    /// The runs of consecutive pages that hold data, as (gpa, bytes), ascending: the image
    /// as the loads of a guest (re-execution starts a guest in this state).
    pub fn extents(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (gpa, data) in self.pages().take_while(|(p, _)| *p < self.ram_size) {
            if data.iter().all(|&b| b == 0) {
                continue;
            }
            let len = PAGE_SIZE.min(self.ram_size - gpa) as usize;
            match out.last_mut() {
                Some((start, bytes)) if *start + bytes.len() as u64 == gpa => {
                    bytes.extend_from_slice(&data[..len])
                }
                _ => out.push((gpa, data[..len].to_vec())),
            }
        }
        out
    }

    /// Number of pages that hold data (not zero-filled): the image's own memory cost.
    pub fn resident_pages(&self) -> usize {
        self.pages().count()
    }
}

fn feed_zeros(hasher: &mut Xxh3, mut len: u64) {
    while len > 0 {
        let n = len.min(PAGE_SIZE);
        hasher.update(&ZERO_PAGE[..n as usize]);
        len -= n;
    }
}

impl mmu::GuestMemory for MemoryImage {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        MemoryImage::read(self, gpa, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{Blob, Load};

    #[test]
    fn a_load_in_a_rom_region_above_ram_is_read_only_rom_not_ram() {
        let rom = vec![0xeau8; 0x2_0000];
        let mut g = GuestSpec {
            ram_size: 16 * PAGE_SIZE,
            blobs: vec![Blob {
                hash: 0,
                name: "rom".into(),
                data: rom,
            }],
            loads: vec![Load {
                blob: 0,
                gpa: 0xfffe_0000,
            }],
            ..GuestSpec::default()
        };
        // Without a region it is a load outside RAM: an inconsistent guest.
        assert!(matches!(
            MemoryImage::from_guest(&g),
            Err(ImageError::OutOfRam { .. })
        ));
        g.regions.push(traces::MemRegion {
            gpa: 0xfffe_0000,
            size: 0x2_0000,
            kind: traces::RegionKind::Rom,
            name: "rom".into(),
        });
        let mut m = MemoryImage::from_guest(&g).unwrap();
        assert_eq!(m.ram_size(), 16 * PAGE_SIZE);
        // Its bytes are read as the reset vector's code; no step writes them.
        let mut b = [0u8; 2];
        assert!(m.read(0xffff_fffe, &mut b));
        assert_eq!(b, [0xea, 0xea]);
        assert!(!m.read(0xffff_ffff, &mut b));
        assert!(!m.write(0xfffe_0000, &[0]));
        assert_eq!(m.resident_pages(), 0);
    }

    #[test]
    fn reads_and_writes_across_page_boundaries() {
        let mut m = MemoryImage::zeroed(3 * PAGE_SIZE);
        let data: Vec<u8> = (0..100).collect();
        assert!(m.write(PAGE_SIZE - 50, &data));
        let mut back = vec![0; 100];
        assert!(m.read(PAGE_SIZE - 50, &mut back));
        assert_eq!(back, data);
        assert_eq!(m.resident_pages(), 2);
    }

    #[test]
    fn refuses_accesses_outside_ram() {
        let mut m = MemoryImage::zeroed(PAGE_SIZE);
        assert!(!m.write(PAGE_SIZE - 1, &[1, 2]));
        assert!(!m.write(u64::MAX, &[1]));
        let mut b = [7u8; 2];
        assert!(!m.read(PAGE_SIZE - 1, &mut b));
        assert_eq!(b, [7, 7]);
        assert_eq!(m.resident_pages(), 0);
    }

    #[test]
    fn hash_equals_hash_of_the_flat_bytes() {
        let ram = 5 * PAGE_SIZE + 123;
        let mut m = MemoryImage::zeroed(ram);
        m.write(PAGE_SIZE + 7, b"hello");
        m.write(ram - 3, b"end");
        let mut flat = vec![0u8; ram as usize];
        flat[PAGE_SIZE as usize + 7..][..5].copy_from_slice(b"hello");
        flat[ram as usize - 3..].copy_from_slice(b"end");
        assert_eq!(m.hash(), xxhash_rust::xxh3::xxh3_64(&flat));
    }

    #[test]
    fn snapshots_share_pages_until_written() {
        let mut a = MemoryImage::zeroed(2 * PAGE_SIZE);
        a.write(0, b"one");
        let snapshot = a.clone();
        a.write(0, b"two");
        let mut b = [0u8; 3];
        snapshot.read(0, &mut b);
        assert_eq!(&b, b"one");
        a.read(0, &mut b);
        assert_eq!(&b, b"two");
    }

    #[test]
    fn guest_image_places_blobs_and_rejects_bad_loads() {
        let mut guest = GuestSpec {
            ram_size: 2 * PAGE_SIZE,
            ..Default::default()
        };
        guest.blobs.push(Blob {
            hash: 0,
            name: "code".into(),
            data: vec![0xf4; 16],
        });
        guest.loads.push(Load {
            blob: 0,
            gpa: 0x1000,
        });
        let m = MemoryImage::from_guest(&guest).unwrap();
        let mut b = [0u8; 16];
        assert!(m.read(0x1000, &mut b));
        assert_eq!(b, [0xf4; 16]);

        guest.loads.push(Load { blob: 1, gpa: 0 });
        assert!(matches!(
            MemoryImage::from_guest(&guest),
            Err(ImageError::MissingBlob { .. })
        ));
        guest.loads[1] = Load {
            blob: 0,
            gpa: 2 * PAGE_SIZE - 8,
        };
        assert!(matches!(
            MemoryImage::from_guest(&guest),
            Err(ImageError::OutOfRam { .. })
        ));
    }
}
