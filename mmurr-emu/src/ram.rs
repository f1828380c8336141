//! Guest RAM: an anonymous mapping we own and lend to Unicorn, and views of it.

pub(crate) fn in_ram(ram: &[(u64, u64)], gpa: u64, len: u64) -> bool {
    ram.iter()
        .any(|&(b, s)| gpa >= b && gpa.saturating_add(len) <= b + s)
}

/// Guest RAM at guest-physical 0, owned by us and lent to Unicorn (`mem_map_ptr`), so the
/// recorder can hash and diff it without copying.
pub(crate) struct RamBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl RamBuf {
    /// An anonymous private mapping: page-aligned, zero-filled lazily by the kernel, so a
    /// guest with gigabytes of RAM costs only the pages it touches.
    pub(crate) fn new(len: usize) -> Option<RamBuf> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(RamBuf {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: ptr/len describe our live mapping; Unicorn writes to it only inside
        // emu_start/mem_write, which take `&mut self` of the backend that owns this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// For a buffer not lent to Unicorn (the backend's mirror of RAM).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe our live mapping, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for RamBuf {
    fn drop(&mut self) {
        // SAFETY: mapped in new() with this length; Unicorn (declared before this field in
        // EmuBackend) has been dropped already, so nothing uses it any more.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Guest RAM as the reference page walker reads it.
pub(crate) struct RamView<'a>(pub(crate) &'a [u8]);

impl mmu::GuestMemory for RamView<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(gpa) else {
            return false;
        };
        match self.0.get(start..start.saturating_add(buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}
