//! KVM_GET_SREGS2, which kvm-ioctls does not wrap: the only way to read the PAE PDPTE
//! registers KVM holds (they are loaded at CR writes, not re-read from memory).

use kvm_bindings::{kvm_dtable, kvm_segment, KVMIO};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_ior_nr;

/// `struct kvm_sregs2` of the Linux UAPI (arch/x86/include/uapi/asm/kvm.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmSregs2 {
    segments: [kvm_segment; 8],
    gdt: kvm_dtable,
    idt: kvm_dtable,
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    cr8: u64,
    efer: u64,
    apic_base: u64,
    flags: u64,
    pdptrs: [u64; 4],
}

const KVM_SREGS2_FLAGS_PDPTRS_VALID: u64 = 1;

ioctl_ior_nr!(KVM_GET_SREGS2, KVMIO, 0xcc, KvmSregs2);

/// The PDPTE registers, when KVM says they are valid (PAE paging active).
pub fn pdptrs(vcpu: &VcpuFd) -> Option<[u64; 4]> {
    let mut s = KvmSregs2::default();
    // SAFETY: KVM_GET_SREGS2 writes exactly one `struct kvm_sregs2`, whose layout KvmSregs2
    // reproduces (repr(C), same field order and types); the fd is a vCPU fd.
    let ret = unsafe { ioctl_with_mut_ref(vcpu, KVM_GET_SREGS2(), &mut s) };
    (ret == 0 && s.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID != 0).then_some(s.pdptrs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_matches_the_uapi_struct() {
        // 8 segments * 24 + 2 dtables * 16 + 12 u64.
        assert_eq!(
            std::mem::size_of::<super::KvmSregs2>(),
            8 * 24 + 2 * 16 + 12 * 8
        );
    }
}
