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
