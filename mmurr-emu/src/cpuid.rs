//! The emulated CPU: its model and the CPUID the guest sees.

use crate::engine::engine_err;
use recorder::BackendError;
use traces::CpuidEntry;
use unicorn_engine::unicorn_const::{Arch, Mode, Prot, X86CpuModel};
use unicorn_engine::{RegisterX86, Unicorn};

/// The emulated CPU: Icelake-Server, filtered by what QEMU's TCG implements, offers every
/// paging feature TCG has (SMEP, SMAP, PKU, LA57, NX, 1 GiB pages), so all scenarios run.
pub const CPU_MODEL: X86CpuModel = X86CpuModel::ICELAKE_SERVER;

/// CPUID as the guest sees it under Unicorn, for the main leaves.
pub fn probe() -> Result<Vec<CpuidEntry>, BackendError> {
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_64).map_err(|e| engine_err("open", e))?;
    uc.ctl_set_cpu_model(CPU_MODEL as i32)
        .map_err(|e| engine_err("set CPU model", e))?;
    uc.mem_map(0x1000, 0x1000, Prot::ALL)
        .map_err(|e| engine_err("mem_map", e))?;
    uc.mem_write(0x1000, &[0x0f, 0xa2])
        .map_err(|e| engine_err("mem_write", e))?;
    let mut run = |leaf: u32, sub: u32| -> Result<CpuidEntry, BackendError> {
        uc.reg_write(RegisterX86::RAX, leaf as u64)
            .map_err(|e| engine_err("reg write", e))?;
        uc.reg_write(RegisterX86::RCX, sub as u64)
            .map_err(|e| engine_err("reg write", e))?;
        uc.emu_start(0x1000, 0, 0, 1)
            .map_err(|e| engine_err("cpuid", e))?;
        let g = |r| uc.reg_read(r).unwrap_or(0) as u32;
        Ok(CpuidEntry {
            function: leaf,
            index: sub,
            eax: g(RegisterX86::RAX),
            ebx: g(RegisterX86::RBX),
            ecx: g(RegisterX86::RCX),
            edx: g(RegisterX86::RDX),
        })
    };
    let max = run(0, 0)?.eax.min(0x20);
    let mut out = Vec::new();
    for leaf in 0..=max {
        out.push(run(leaf, 0)?);
    }
    let maxe = run(0x8000_0000, 0)?.eax.clamp(0x8000_0000, 0x8000_0020);
    for leaf in 0x8000_0000..=maxe {
        out.push(run(leaf, 0)?);
    }
    Ok(out)
}

pub fn identity(c: &[CpuidEntry]) -> (String, String, u32, u32, u32) {
    let leaf = |f: u32| c.iter().find(|e| e.function == f);
    let mut vendor = String::new();
    if let Some(l0) = leaf(0) {
        for r in [l0.ebx, l0.edx, l0.ecx] {
            vendor.extend(r.to_le_bytes().iter().map(|&b| b as char));
        }
    }
    let mut name = Vec::new();
    for f in 0x8000_0002..=0x8000_0004 {
        if let Some(l) = leaf(f) {
            for r in [l.eax, l.ebx, l.ecx, l.edx] {
                name.extend_from_slice(&r.to_le_bytes());
            }
        }
    }
    let name = String::from_utf8_lossy(&name)
        .trim_matches(char::from(0))
        .trim()
        .to_string();
    let (mut fam, mut model, mut step) = (0, 0, 0);
    if let Some(l1) = leaf(1) {
        let a = l1.eax;
        fam = (a >> 8) & 0xf;
        model = (a >> 4) & 0xf;
        step = a & 0xf;
        if fam == 0xf {
            fam += (a >> 20) & 0xff;
        }
        if fam >= 6 {
            model |= ((a >> 16) & 0xf) << 4;
        }
    }
    (vendor, name, fam, model, step)
}

/// Functions whose sub-leaf (ECX) selects the entry. KVM marks exactly these
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` when it builds its supported table
/// (`arch/x86/kvm/cpuid.c`, `do_host_cpuid`); a trace stores no flags, so they are restored
/// from the function number. For every other function the sub-leaf is ignored.
fn index_significant(function: u32) -> bool {
    matches!(
        function,
        0x4 | 0x7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x24
            | 0x8000_001d
            | 0x8000_0020
            | 0x8000_0026
    )
}

/// A guest's CPUID table (e.g. a trace recorded on KVM), answered with KVM's semantics so the
/// guest's `cpuid` instruction sees what it saw under KVM.
#[derive(Debug)]
pub struct GuestCpuid {
    /// Replaced by a KVM_SET_CPUID2 host action ([`GuestCpuid::replace`]) while the hook that
    /// reads it stays installed.
    entries: std::cell::RefCell<Vec<CpuidEntry>>,
    /// CR4 and XCR0 when the `cpuid` runs: KVM updates OSXSAVE, OSPKE and the XSAVE area size
    /// at run time (`kvm_update_cpuid_runtime`). Set by the backend before each step.
    pub cr4: std::cell::Cell<u64>,
    pub xcr0: std::cell::Cell<u64>,
}

impl GuestCpuid {
    pub fn new(entries: Vec<CpuidEntry>) -> GuestCpuid {
        GuestCpuid {
            entries: std::cell::RefCell::new(entries),
            cr4: std::cell::Cell::new(0),
            xcr0: std::cell::Cell::new(1),
        }
    }

    /// The table from now on (KVM_SET_CPUID2).
    pub fn replace(&self, entries: Vec<CpuidEntry>) {
        *self.entries.borrow_mut() = entries;
    }

    fn find(&self, function: u32, index: u32) -> Option<CpuidEntry> {
        self.entries
            .borrow()
            .iter()
            .find(|e| e.function == function && (!index_significant(function) || e.index == index))
            .copied()
    }

    /// EAX, EBX, ECX, EDX for `cpuid` with EAX = `function`, ECX = `index`, as KVM's
    /// `kvm_cpuid` computes it: the entry if the table has one; otherwise, for an Intel-style
    /// vendor and a function above its class's maximum (the EAX of leaf 0, 0x8000_0000,
    /// 0xc000_0000 or the hypervisor range's base), the highest basic leaf's entry for the same
    /// sub-leaf; otherwise zeros. Then the run-time bits KVM keeps in step with CR4 and XCR0.
    pub fn lookup(&self, function: u32, index: u32) -> [u32; 4] {
        let mut function = function;
        let mut entry = self.find(function, index);
        if entry.is_none() {
            entry = self.out_of_range(function, index).map(|(f, e)| {
                function = f;
                e
            });
        }
        let Some(e) = entry else {
            return [0; 4];
        };
        let mut out = [e.eax, e.ebx, e.ecx, e.edx];
        let cr4 = self.cr4.get();
        match (function, index) {
            (1, _) if out[2] & (1 << 26) != 0 => {
                // OSXSAVE mirrors CR4.OSXSAVE when XSAVE is offered.
                out[2] = (out[2] & !(1 << 27)) | (((cr4 >> 18) as u32 & 1) << 27);
            }
            (7, 0) if out[2] & (1 << 3) != 0 => {
                // OSPKE mirrors CR4.PKE when PKU is offered.
                out[2] = (out[2] & !(1 << 4)) | (((cr4 >> 22) as u32 & 1) << 4);
            }
            (0xd, 0) => out[1] = self.xsave_size(self.xcr0.get()),
            _ => {}
        }
        out
    }

    /// KVM's `get_out_of_range_cpuid_entry`.
    fn out_of_range(&self, function: u32, index: u32) -> Option<(u32, CpuidEntry)> {
        let basic = self.find(0, 0)?;
        let vendor = |e: &CpuidEntry| {
            let mut v = [0u8; 12];
            v[..4].copy_from_slice(&e.ebx.to_le_bytes());
            v[4..8].copy_from_slice(&e.edx.to_le_bytes());
            v[8..].copy_from_slice(&e.ecx.to_le_bytes());
            v
        };
        // AMD and Hygon return zeros for out-of-range leaves.
        if matches!(&vendor(&basic), b"AuthenticAMD" | b"HygonGenuine") {
            return None;
        }
        let class_base = if (0x4000_0000..=0x4fff_ffff).contains(&function) {
            function & 0xffff_ff00
        } else if function >= 0xc000_0000 {
            0xc000_0000
        } else {
            function & 0x8000_0000
        };
        if self
            .find(class_base, 0)
            .is_some_and(|class| function <= class.eax)
        {
            return None;
        }
        let max = basic.eax;
        self.find(max, index).map(|e| (max, e))
    }

    /// CPUID.(EAX=0DH,ECX=0):EBX, the XSAVE area size for the features enabled in XCR0
    /// (KVM's `xstate_required_size`, uncompacted): the legacy area and header, then each
    /// enabled component at its offset (CPUID.(EAX=0DH,ECX=i):EBX) with its size (EAX).
    fn xsave_size(&self, xcr0: u64) -> u32 {
        let mut size = 512 + 64;
        for i in 2..64u32 {
            if xcr0 >> i & 1 != 0 {
                if let Some(c) = self
                    .entries
                    .borrow()
                    .iter()
                    .find(|e| e.function == 0xd && e.index == i)
                {
                    size = size.max(c.ebx.saturating_add(c.eax));
                }
            }
        }
        size
    }
}

/// Unicorn's CPUID hook (`uc_cb_insn_cpuid_t`): answers from the [`GuestCpuid`] at `user` and
/// returns 1 so that QEMU does not execute CPUID itself. The `unicorn-engine` crate's
/// `add_insn_sys_hook` cannot be used: its callback returns nothing, and QEMU reads the int
/// this callback returns as "skip the instruction".
extern "C" fn cpuid_hook(
    uc: *mut unicorn_engine::unicorn_const::uc_engine,
    user: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    use unicorn_engine::unicorn_const::{uc_reg_read, uc_reg_write};
    // SAFETY: `user` is the `GuestCpuid` that `install_hook` was given, which the backend keeps
    // alive (boxed, never moved) for as long as the engine exists; it is only read here, on
    // the thread running `emu_start`.
    let table = unsafe { &*(user as *const GuestCpuid) };
    let read = |r: RegisterX86| -> u64 {
        let mut v = 0u64;
        // SAFETY: `uc` is the live engine calling us; the register is 64-bit, `v` is 8 bytes.
        unsafe { uc_reg_read(uc, r as std::ffi::c_int, (&mut v as *mut u64).cast()) };
        v
    };
    let (function, index) = (read(RegisterX86::RAX) as u32, read(RegisterX86::RCX) as u32);
    let out = table.lookup(function, index);
    let regs = [
        RegisterX86::RAX,
        RegisterX86::RBX,
        RegisterX86::RCX,
        RegisterX86::RDX,
    ];
    for (r, v) in regs.into_iter().zip(out) {
        // CPUID zero-extends its 32-bit results into the 64-bit registers.
        let v = v as u64;
        // SAFETY: as above; `v` is an 8-byte value for a 64-bit register.
        unsafe { uc_reg_write(uc, r as std::ffi::c_int, (&v as *const u64).cast()) };
    }
    1
}

/// Makes the engine's `cpuid` answer from `table`. The caller keeps `table` alive (and at the
/// same address) until the engine is closed.
pub fn install_hook<D>(uc: &mut Unicorn<'_, D>, table: &GuestCpuid) -> Result<(), BackendError> {
    use unicorn_engine::unicorn_const::{uc_hook, uc_hook_add, HookType, X86Insn};
    let mut id: uc_hook = 0;
    // SAFETY: the callback has the C signature QEMU calls CPUID hooks with; the user data
    // outlives the engine (see above); begin 1 > end 0 means every address.
    let err = unsafe {
        uc_hook_add(
            uc.get_handle(),
            &mut id,
            HookType::INSN.0 as std::ffi::c_int,
            cpuid_hook as *mut std::ffi::c_void,
            table as *const GuestCpuid as *mut std::ffi::c_void,
            1,
            0,
            X86Insn::CPUID as std::ffi::c_int,
        )
    };
    if err != unicorn_engine::unicorn_const::uc_error::OK {
        return Err(engine_err("CPUID hook", err));
    }
    Ok(())
}

/// What the guest's CPUID table offers that the engine does not emulate, one line each: the
/// guest may then behave differently from the machine the table came from.
pub fn unemulated(table: &mmu::CpuModel, engine: &mmu::CpuModel) -> Vec<String> {
    let mut out = Vec::new();
    let features = [
        ("PCID", table.pcid, engine.pcid),
        ("LA57", table.la57, engine.la57),
        ("PKU", table.pku, engine.pku),
        ("SMEP", table.smep, engine.smep),
        ("SMAP", table.smap, engine.smap),
        ("1 GiB pages", table.gbpages, engine.gbpages),
        ("NX", table.nx, engine.nx),
    ];
    for (name, offered, emulated) in features {
        if offered && !emulated {
            out.push(format!(
                "the guest's CPUID offers {name}, which Unicorn does not emulate: the guest may use it and then run differently than on the recording machine"
            ));
        }
    }
    if table.maxphyaddr != engine.maxphyaddr {
        out.push(format!(
            "the guest's MAXPHYADDR is {} bits, Unicorn's page walker checks {}: mmurr's own checks (CR3, PDPTEs, page walks for accessed bits) use {}, but a page-table entry with physical-address bits {}..{} set translates differently in the engine",
            table.maxphyaddr,
            engine.maxphyaddr,
            table.maxphyaddr,
            table.maxphyaddr.min(engine.maxphyaddr),
            table.maxphyaddr.max(engine.maxphyaddr).saturating_sub(1)
        ));
    }
    if table.amd != engine.amd {
        out.push(
            "the guest's CPUID names a different vendor (AMD vs Intel) than Unicorn's CPU model: vendor-specific paging checks follow Unicorn's".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn intel() -> Vec<CpuidEntry> {
        let v = *b"GenuineIntel";
        let r = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        vec![
            e(0, 0, 0xd, r(0), r(8), r(4)),
            e(1, 0, 0x906ea, 0, (1 << 26) | 1, 0),
            e(7, 0, 0, 1 << 7, 1 << 3, 0),
            e(7, 1, 0x11, 0, 0, 0),
            e(0xd, 0, 0x7, 0x240, 0, 0),
            e(0xd, 2, 0x100, 0x240, 0, 0),
            e(0xb, 0, 1, 1, 0x100, 0),
            e(0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
            e(0x8000_0008, 0, 0x3027, 0, 0, 0),
        ]
    }

    #[test]
    fn exact_entries_and_sub_leaves() {
        let t = GuestCpuid::new(intel());
        assert_eq!(t.lookup(7, 0), [0, 1 << 7, 1 << 3, 0]);
        assert_eq!(t.lookup(7, 1), [0x11, 0, 0, 0]);
        // A significant sub-leaf the table lacks: zeros, not sub-leaf 0.
        assert_eq!(t.lookup(7, 5), [0; 4]);
        // Leaf 1's index is not significant.
        assert_eq!(t.lookup(1, 9)[0], 0x906ea);
        assert_eq!(t.lookup(0x8000_0008, 0), [0x3027, 0, 0, 0]);
    }

    #[test]
    fn out_of_range_leaves_follow_kvm() {
        let t = GuestCpuid::new(intel());
        // Above the basic maximum (0xd): the highest basic leaf (0xd) with the same sub-leaf.
        assert_eq!(t.lookup(0x14, 0), t.lookup(0xd, 0));
        assert_eq!(t.lookup(0x14, 2), [0x100, 0x240, 0, 0]);
        // Above the extended maximum as well.
        assert_eq!(t.lookup(0x8000_0010, 0), t.lookup(0xd, 0));
        // Within range but absent: zeros.
        assert_eq!(t.lookup(5, 0), [0; 4]);
        // AMD: zeros.
        let mut amd = intel();
        let v = *b"AuthenticAMD";
        let r = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        amd[0] = e(0, 0, 0xd, r(0), r(8), r(4));
        assert_eq!(GuestCpuid::new(amd).lookup(0x14, 0), [0; 4]);
    }

    #[test]
    fn run_time_bits_follow_cr4_and_xcr0() {
        let t = GuestCpuid::new(intel());
        assert_eq!(t.lookup(1, 0)[2] >> 27 & 1, 0);
        assert_eq!(t.lookup(7, 0)[2] >> 4 & 1, 0);
        t.cr4.set((1 << 18) | (1 << 22));
        assert_eq!(t.lookup(1, 0)[2] >> 27 & 1, 1);
        assert_eq!(t.lookup(7, 0)[2] >> 4 & 1, 1);
        assert_eq!(t.lookup(0xd, 0)[1], 0x240);
        t.xcr0.set(0b111);
        assert_eq!(t.lookup(0xd, 0)[1], 0x340);
    }

    #[test]
    fn each_vcpu_reads_its_own_apic_id() {
        use insn::with_apic_id;
        let t = GuestCpuid::new(intel());
        let leaf1 = t.lookup(1, 0);
        let mine = with_apic_id(1, leaf1, 3);
        assert_eq!(mine[1] >> 24, 3);
        assert_eq!(mine[1] & 0x00ff_ffff, leaf1[1] & 0x00ff_ffff);
        assert_eq!([mine[0], mine[2], mine[3]], [leaf1[0], leaf1[2], leaf1[3]]);
        assert_eq!(with_apic_id(0xb, t.lookup(0xb, 0), 5)[3], 5);
        assert_eq!(with_apic_id(0x1f, [1, 2, 3, 0], 7), [1, 2, 3, 7]);
        assert_eq!(with_apic_id(7, t.lookup(7, 0), 9), t.lookup(7, 0));
    }
}
