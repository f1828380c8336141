//! An MMIO read-modify-write (`and dword [mmio], imm`) on Unicorn: the read is answered, the
//! write follows, both are Mmio events of the same step (held to the same check as kvm in
//! recorder-kvm/tests/exact_memory.rs), and the guest runs on.

use mmurr_emu::EmuBackend;

#[test]
fn mmio_read_modify_write_is_one_step_with_a_read_and_a_write() {
    let mut backend = EmuBackend::new().expect("open unicorn");
    recorder::test_support::check_mmio_read_modify_write(&mut backend);
}
