//! Every `unsafe` block of the kvm backend's memory mappings lives here: guest RAM (an
//! anonymous mapping registered with KVM), the data area of the vCPU's `kvm_run` page, and the
//! dirty-log ioctls that hand KVM a bitmap buffer (which kvm-ioctls wraps only in part).

use kvm_bindings::{
    kvm_clear_dirty_log, kvm_clear_dirty_log__bindgen_ty_1, kvm_dirty_gfn, kvm_dirty_log,
    kvm_dirty_log__bindgen_ty_1, kvm_irqchip, kvm_run, kvm_userspace_memory_region, KVMIO,
    KVM_DIRTY_LOG_PAGE_OFFSET, KVM_IRQCHIP_PIC_MASTER,
};
use kvm_ioctls::{VcpuFd, VmFd};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_ref};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr, ioctl_iowr_nr};

ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
ioctl_iowr_nr!(KVM_CLEAR_DIRTY_LOG, KVMIO, 0xc0, kvm_clear_dirty_log);
ioctl_io_nr!(KVM_RESET_DIRTY_RINGS, KVMIO, 0xc7);

/// `what: <errno text>` for the system call that just failed.
fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// `kvm_dirty_gfn.flags`: KVM published the entry / userspace has harvested it.
const KVM_DIRTY_GFN_F_DIRTY: u32 = 1;
const KVM_DIRTY_GFN_F_RESET: u32 = 2;

/// A vCPU's dirty ring (KVM_CAP_DIRTY_LOG_RING, Documentation/virt/kvm/api.rst): entries
/// KVM publishes, one per page written, in a mapping of the vCPU fd shared with the kernel.
pub struct DirtyRing {
    entries: *mut kvm_dirty_gfn,
    len: u32,
    /// The next entry to harvest (free-running; the slot is `fetch % len`).
    fetch: u32,
    /// Entries harvested since the last KVM_RESET_DIRTY_RINGS.
    harvested: u32,
}

impl DirtyRing {
    /// Maps the ring of `vcpu`, `bytes` long (the size the VM enabled the ring with).
    pub fn map(vcpu: &VcpuFd, bytes: usize) -> Result<DirtyRing, String> {
        let len = bytes / std::mem::size_of::<kvm_dirty_gfn>();
        if len == 0 || !len.is_power_of_two() || len > u32::MAX as usize {
            return Err(format!("dirty ring of {bytes} bytes"));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let offset = libc::off_t::try_from(page)
            .ok()
            .and_then(|p| p.checked_mul(KVM_DIRTY_LOG_PAGE_OFFSET.into()))
            .ok_or("page size")?;
        // SAFETY: a new shared mapping of the vCPU fd at KVM's dirty-ring offset, with no address
        // hint, aliases nothing of ours; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error("mapping the dirty ring"));
        }
        Ok(DirtyRing {
            entries: ptr.cast(),
            len: len as u32,
            fetch: 0,
            harvested: 0,
        })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    /// Entries harvested and not yet reset.
    pub fn harvested(&self) -> u32 {
        self.harvested
    }

    /// The next published entry, `(slot, page offset in the slot)`, marked harvested.
    pub fn harvest(&mut self) -> Option<(u32, u64)> {
        let i = (self.fetch % self.len) as usize;
        // SAFETY: `i < len`, so the entry lies inside the live mapping of `len` entries. Its
        // flags word is shared with KVM, which writes it with release order after filling
        // the entry, so it is read atomically with acquire order before the other fields;
        // KVM does not touch a published entry until userspace marks it harvested.
        let (flags, entry) = unsafe {
            let e = self.entries.add(i);
            let flags = AtomicU32::from_ptr(std::ptr::addr_of_mut!((*e).flags));
            if flags.load(Ordering::Acquire) & KVM_DIRTY_GFN_F_DIRTY == 0 {
                return None;
            }
            (flags, std::ptr::read_volatile(e))
        };
        flags.store(KVM_DIRTY_GFN_F_RESET, Ordering::Release);
        self.fetch = self.fetch.wrapping_add(1);
        self.harvested += 1;
        Some((entry.slot, entry.offset))
    }

    /// KVM_RESET_DIRTY_RINGS ([`reset_dirty_rings`]) freed the entries harvested so far.
    pub fn reset_done(&mut self) {
        self.harvested = 0;
    }
}

/// Whether the in-kernel 8259 pair has an unmasked interrupt request (IRR & ~IMR of the
/// master, KVM_GET_IRQCHIP), which KVM hands to a vCPU accepting ExtINT.
pub fn pic_requests(vm: &VmFd) -> bool {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_PIC_MASTER,
        ..Default::default()
    };
    if vm.get_irqchip(&mut chip).is_err() {
        return false;
    }
    // SAFETY: KVM_GET_IRQCHIP with chip_id KVM_IRQCHIP_PIC_MASTER fills the `pic` member of
    // the union (a plain-data struct every bit pattern of which is valid).
    let pic = unsafe { chip.chip.pic };
    pic.irr & !pic.imr != 0
}

/// KVM_RESET_DIRTY_RINGS: KVM write-protects the pages harvested from every vCPU's ring again
/// (their next write is published again) and frees their entries.
pub fn reset_dirty_rings(vm: &VmFd) -> Result<(), String> {
    // SAFETY: `vm` is a VM fd; the ioctl takes no argument.
    let ret = unsafe { ioctl(vm, KVM_RESET_DIRTY_RINGS()) };
    if ret < 0 {
        return Err(os_error("KVM_RESET_DIRTY_RINGS"));
    }
    Ok(())
}

impl Drop for DirtyRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` created; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(
                self.entries.cast(),
                self.len as usize * std::mem::size_of::<kvm_dirty_gfn>(),
            );
        }
    }
}

// SAFETY: the ring mapping is owned by this value alone (the kernel is the other party).
unsafe impl Send for DirtyRing {}

/// KVM_GET_DIRTY_LOG of memory slot `slot` into `bitmap` (one bit per page of the slot; the
/// caller sizes it for the whole slot), reusing the caller's buffer on every step.
pub fn get_dirty_log(vm: &VmFd, slot: u32, bitmap: &mut [u64]) -> Result<(), String> {
    let log = kvm_dirty_log {
        slot,
        padding1: 0,
        __bindgen_anon_1: kvm_dirty_log__bindgen_ty_1 {
            dirty_bitmap: bitmap.as_mut_ptr().cast(),
        },
    };
    // SAFETY: `vm` is a VM fd; KVM writes one bit per page of the slot into the buffer, which
    // the caller made at least that long (`DirtyLog::new` sizes it from the slot's size), and
    // the buffer outlives the call.
    let ret = unsafe { ioctl_with_ref(vm, KVM_GET_DIRTY_LOG(), &log) };
    if ret == 0 {
        Ok(())
    } else {
        Err(os_error("KVM_GET_DIRTY_LOG"))
    }
}

/// KVM_CLEAR_DIRTY_LOG (with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): clears the dirty bits of the
/// pages set in `bitmap`, which covers `64 * bitmap.len()` pages from `first_page` (a multiple
/// of 64), and write-protects those pages again so that the guest's next write is logged.
pub fn clear_dirty_log(
    vm: &VmFd,
    slot: u32,
    first_page: u64,
    num_pages: u32,
    bitmap: &[u64],
) -> Result<(), String> {
    if u64::from(num_pages) > 64 * bitmap.len() as u64 {
        return Err(format!(
            "KVM_CLEAR_DIRTY_LOG: {num_pages} pages but a bitmap of {} words",
            bitmap.len()
        ));
    }
    let clear = kvm_clear_dirty_log {
        slot,
        num_pages,
        first_page,
        __bindgen_anon_1: kvm_clear_dirty_log__bindgen_ty_1 {
            dirty_bitmap: bitmap.as_ptr().cast_mut().cast(),
        },
    };
    // SAFETY: `vm` is a VM fd; KVM only reads `num_pages` bits from the buffer, which holds at
    // least that many (checked above) and outlives the call.
    let ret = unsafe { ioctl_with_ref(vm, KVM_CLEAR_DIRTY_LOG(), &clear) };
    if ret == 0 {
        Ok(())
    } else {
        Err(os_error("KVM_CLEAR_DIRTY_LOG"))
    }
}

/// Guest RAM: one anonymous private mapping, guest-physical `0..size`.
pub struct GuestRam {
    ptr: *mut u8,
    size: usize,
}

impl GuestRam {
    /// Maps `size` bytes of zeroed memory (rounded up to 4 KiB).
    pub fn new(size: u64) -> Result<GuestRam, String> {
        let size = usize::try_from(size.div_ceil(4096) * 4096)
            .map_err(|_| format!("RAM size {size} does not fit this host"))?;
        if size == 0 {
            return Err("RAM size is zero".into());
        }
        // SAFETY: an anonymous private mapping with no address hint creates fresh memory that
        // aliases nothing else in this process; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error(&format!(
                "mmap of {size} bytes of guest RAM failed"
            )));
        }
        Ok(GuestRam {
            ptr: ptr.cast(),
            size,
        })
    }

    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Maps every page for reading now, in one system call (MADV_POPULATE_READ, Linux 5.14):
    /// the recorder reads all of RAM as soon as the guest is loaded (its shadow, the entry
    /// hash), and a read fault per untouched page cost ≈ 4 ms per 16 MiB here. Pages never
    /// written map the shared zero page, as they would after those faults. Best effort: an
    /// older kernel refuses and the faults happen as before.
    pub fn populate_read(&self) {
        /// `MADV_POPULATE_READ` from the kernel's uapi (not in the libc crate we use).
        const MADV_POPULATE_READ: libc::c_int = 22;
        // SAFETY: the range is exactly our live mapping; the advice changes no contents.
        unsafe {
            libc::madvise(self.ptr.cast(), self.size, MADV_POPULATE_READ);
        }
    }

    /// Registers the whole mapping as memory slot `slot` at guest-physical 0, with KVM logging
    /// the pages the guest dirties when `log_dirty` (KVM_MEM_LOG_DIRTY_PAGES).
    pub fn register(&self, vm: &VmFd, slot: u32, log_dirty: bool) -> Result<(), String> {
        let flags = if log_dirty {
            kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        self.register_at(vm, slot, 0, flags)
    }

    /// Registers the whole mapping as a read-only memory slot `slot` at guest-physical `gpa`
    /// (KVM_MEM_READONLY: the guest's writes exit as MMIO), for a ROM.
    pub fn register_rom(&self, vm: &VmFd, slot: u32, gpa: u64) -> Result<(), String> {
        self.register_at(vm, slot, gpa, kvm_bindings::KVM_MEM_READONLY)
    }

    fn register_at(&self, vm: &VmFd, slot: u32, gpa: u64, flags: u32) -> Result<(), String> {
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: gpa,
            memory_size: self.size as u64,
            userspace_addr: self.ptr as u64,
        };
        // SAFETY: the region describes exactly our live mapping, which outlives the VM: the
        // backend drops the VmFd (and with it the slot) before the GuestRam (field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))
    }

    /// All of RAM. The vCPU writes to it only inside KVM_RUN, which runs on the thread that
    /// owns the backend, so no write can race with this borrow.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `size` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size) }
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match range(gpa, buf.len(), self.size) {
            Some(r) => {
                buf.copy_from_slice(&self.as_slice()[r]);
                true
            }
            None => false,
        }
    }

    pub fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let size = self.size;
        match range(gpa, data.len(), size) {
            Some(r) => {
                self.as_mut_slice()[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

fn range(gpa: u64, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(gpa).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size);
        }
    }
}

// SAFETY: GuestRam owns its mapping exclusively; moving it to another thread moves that
// ownership (the raw pointer is what makes the compiler unsure).
unsafe impl Send for GuestRam {}

/// Writes the answer of a pending `in` into the `kvm_run` I/O data area, where KVM picks it up
/// on the next KVM_RUN. `false` if the last exit was not an `in`.
pub fn write_io_in_data(run: &mut kvm_run, data: u32) -> bool {
    if run.exit_reason != kvm_bindings::KVM_EXIT_IO {
        return false;
    }
    // SAFETY: exit_reason says the `io` member of the union is the live one.
    let io = unsafe { run.__bindgen_anon_1.io };
    if u32::from(io.direction) != kvm_bindings::KVM_EXIT_IO_IN {
        return false;
    }
    let len = (io.size as usize * io.count as usize).min(4);
    let bytes = data.to_le_bytes();
    let base = run as *mut kvm_run as *mut u8;
    // SAFETY: data_offset is set by KVM to an offset inside the kvm_run mapping (one page or
    // more, mapped by kvm-ioctls for the vCPU's lifetime) with room for size*count bytes; we
    // write at most that many.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(io.data_offset as usize), len);
    }
    true
}

/// Writes the answer of a pending MMIO read into `kvm_run`. `false` if the last exit was not one.
pub fn write_mmio_read_data(run: &mut kvm_run, data: u64) -> bool {
    if run.exit_reason != kvm_bindings::KVM_EXIT_MMIO {
        return false;
    }
    // SAFETY: exit_reason says the `mmio` member of the union is the live one.
    let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
    if mmio.is_write != 0 {
        return false;
    }
    let len = (mmio.len as usize).min(8);
    mmio.data[..len].copy_from_slice(&data.to_le_bytes()[..len]);
    true
}

/// The internal-error suberror and data words of the last KVM_EXIT_INTERNAL_ERROR.
pub fn internal_error(run: &kvm_run) -> Option<(u32, Vec<u64>)> {
    if run.exit_reason != kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
        return None;
    }
    // SAFETY: exit_reason says the `internal` member of the union is the live one.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    Some((internal.suberror, internal.data[..n].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_reads_back_writes_and_refuses_out_of_range() {
        let mut ram = GuestRam::new(8192).unwrap();
        assert!(ram.write(4090, &[1, 2, 3, 4, 5, 6]));
        let mut buf = [0u8; 6];
        assert!(ram.read(4090, &mut buf));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert!(!ram.read(8190, &mut buf));
        assert!(!ram.write(u64::MAX, &[1]));
        assert_eq!(ram.size(), 8192);
    }
}
