//! Legality of CR0/CR3/CR4/EFER writes (sheet §7.2) and the registers a legal write produces.

mod common;
use common::*;
use mmu::bits::*;
use mmu::*;

fn cpu() -> CpuModel {
    CpuModel::default_x86_64()
}

fn pae_pdpt(m: &mut FlatMemory, at: u64, e0: u64) {
    m.write_u64(at, e0);
}

#[test]
fn cr0_rules() {
    let m = mem();
    let c = cpu();
    let prot = regs(CR0_PROT, 0, 0, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr0, &prot, 1 << 32 | CR0_PROT, &c, &m),
        Err(Gp::Cr0HighBits { bits: 1 << 32 })
    );
    assert_eq!(
        check_write(CrReg::Cr0, &prot, CR0_PROT | CR0_NW, &c, &m),
        Err(Gp::Cr0NwWithoutCd)
    );
    assert!(check_write(CrReg::Cr0, &prot, CR0_PROT | CR0_NW | CR0_CD, &c, &m).is_ok());
    assert_eq!(
        check_write(CrReg::Cr0, &prot, CR0_PG, &c, &m),
        Err(Gp::Cr0PgWithoutPe)
    );
    // PG with LME=1 and PAE=0.
    let lme = regs(CR0_PROT, 0, EFER_LME, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr0, &lme, CR0_PAGED, &c, &m),
        Err(Gp::Cr0LongModeWithoutPae)
    );
    let lme_pae = regs(CR0_PROT, CR4_PAE, EFER_LME, 0x1000);
    let after = apply_write(CrReg::Cr0, &lme_pae, CR0_PAGED, &c, &m).unwrap();
    assert!(after.lma(), "entering IA-32e mode sets LMA");
    // CS.L=1 when enabling paging in long mode: KVM #GP.
    let wc = WriteContext {
        cs_l: Some(true),
        host_initiated: false,
    };
    assert_eq!(
        check_write_with(CrReg::Cr0, &lme_pae, CR0_PAGED, &c, &m, &wc),
        Err(Gp::Cr0LongModeWithCsL)
    );
    // Clearing PG: LMA cleared; #GP in 64-bit mode or with PCIDE.
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    let after = apply_write(CrReg::Cr0, &long, CR0_PROT, &c, &m).unwrap();
    assert!(!after.lma());
    assert_eq!(
        check_write_with(CrReg::Cr0, &long, CR0_PROT, &c, &m, &wc),
        Err(Gp::Cr0ClearPgIn64BitMode)
    );
    let pcid = regs(CR0_PAGED, CR4_PAE | CR4_PCIDE, EFER_LONG, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr0, &pcid, CR0_PROT, &c, &m),
        Err(Gp::Cr0ClearPgWithPcide)
    );
    // ET is forced.
    let a = apply_write(CrReg::Cr0, &prot, CR0_PE, &c, &m).unwrap();
    assert_eq!(a.cr0, CR0_PE | CR0_ET);
}

#[test]
fn cr0_pg_in_pae_mode_loads_pdptes() {
    let mut m = mem();
    let c = cpu();
    pae_pdpt(&mut m, 0x1000, 0x2000 | P);
    let b = regs(CR0_PROT, CR4_PAE, 0, 0x1000);
    let a = apply_write(CrReg::Cr0, &b, CR0_PAGED, &c, &m).unwrap();
    assert_eq!(a.pdptrs, [0x2001, 0, 0, 0]);
    pae_pdpt(&mut m, 0x1000, 0x2000 | P | 2);
    assert!(matches!(
        check_write(CrReg::Cr0, &b, CR0_PAGED, &c, &m),
        Err(Gp::PdpteReserved { index: 0, .. })
    ));
    // CD change while in PAE paging reloads too; a WP change does not.
    let paged = ControlRegs {
        cr0: CR0_PAGED,
        ..b
    };
    assert!(check_write(CrReg::Cr0, &paged, CR0_PAGED | CR0_CD, &c, &m).is_err());
    assert!(check_write(CrReg::Cr0, &paged, CR0_PAGED & !CR0_WP, &c, &m).is_ok());
}

#[test]
fn cr4_rules() {
    let mut m = mem();
    let c = cpu();
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr4, &long, 0, &c, &m),
        Err(Gp::Cr4ClearPaeInLongMode)
    );
    let c57 = CpuModel { la57: true, ..c };
    assert_eq!(
        check_write(CrReg::Cr4, &long, CR4_PAE | CR4_LA57, &c57, &m),
        Err(Gp::Cr4La57ChangeInLongMode)
    );
    // LA57 without CPU support: reserved.
    let prot = regs(CR0_PROT, 0, 0, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr4, &prot, CR4_LA57, &c, &m),
        Err(Gp::Cr4Reserved { bits: CR4_LA57 })
    );
    assert!(check_write(CrReg::Cr4, &prot, CR4_LA57, &c57, &m).is_ok());
    assert_eq!(
        check_write(CrReg::Cr4, &prot, 1 << 30, &c, &m),
        Err(Gp::Cr4Reserved { bits: 1 << 30 })
    );
    let nopku = CpuModel { pku: false, ..c };
    assert!(check_write(CrReg::Cr4, &prot, CR4_PKE, &nopku, &m).is_err());
    // PCIDE: needs long mode and CR3[11:0] = 0.
    assert_eq!(
        check_write(CrReg::Cr4, &prot, CR4_PCIDE, &c, &m),
        Err(Gp::Cr4PcideOutsideLongMode)
    );
    let long_pcid = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1005);
    assert_eq!(
        check_write(CrReg::Cr4, &long_pcid, CR4_PAE | CR4_PCIDE, &c, &m),
        Err(Gp::Cr4PcideWithNonZeroPcid)
    );
    assert!(check_write(CrReg::Cr4, &long, CR4_PAE | CR4_PCIDE, &c, &m).is_ok());
    // Setting PAE with PG=1 outside long mode loads PDPTEs (the seed-bug transition).
    let p32 = regs(CR0_PAGED, 0, 0, 0x1000);
    pae_pdpt(&mut m, 0x1000, 0x2000 | P | (1 << 7));
    assert!(check_write(CrReg::Cr4, &p32, CR4_PAE, &c, &m).is_err());
    pae_pdpt(&mut m, 0x1000, 0x2000 | P);
    let a = apply_write(CrReg::Cr4, &p32, CR4_PAE, &c, &m).unwrap();
    assert_eq!(a.pdptrs[0], 0x2001);
    assert_eq!(PagingMode::of_regs(&a), PagingMode::Pae);
}

#[test]
fn cr3_rules() {
    let mut m = mem();
    let c = cpu();
    let p32 = regs(CR0_PAGED, 0, 0, 0x1000);
    assert_eq!(
        check_write(CrReg::Cr3, &p32, 1 << 46, &c, &m),
        Err(Gp::Cr3AboveMaxPhyAddr { bits: 1 << 46 })
    );
    assert!(check_write(CrReg::Cr3, &p32, 0x3000, &c, &m).is_ok());
    // PAE paging: PDPTEs loaded on every CR3 load, even the same value.
    let mut pae = regs(CR0_PAGED, CR4_PAE, 0, 0x1000);
    pae_pdpt(&mut m, 0x1000, 0x2000 | P);
    let a = apply_write(CrReg::Cr3, &pae, 0x1000, &c, &m).unwrap();
    assert_eq!(a.pdptrs[0], 0x2001);
    pae_pdpt(&mut m, 0x1000, 0x2000 | P | 4);
    pae.pdptrs = a.pdptrs;
    assert!(matches!(
        check_write(CrReg::Cr3, &pae, 0x1000, &c, &m),
        Err(Gp::PdpteReserved { .. })
    ));
    // PCIDE: bit 63 is NOFLUSH, not a reserved bit.
    let pcid = regs(CR0_PAGED, CR4_PAE | CR4_PCIDE, EFER_LONG, 0x1000);
    let a = apply_write(CrReg::Cr3, &pcid, CR3_NOFLUSH | 0x5003, &c, &m).unwrap();
    assert_eq!(a.cr3, 0x5003);
    let long = regs(CR0_PAGED, CR4_PAE, EFER_LONG, 0x1000);
    assert!(check_write(CrReg::Cr3, &long, CR3_NOFLUSH | 0x5000, &c, &m).is_err());
}

#[test]
fn efer_rules() {
    let m = mem();
    let c = cpu();
    let paged = regs(CR0_PAGED, CR4_PAE, 0, 0x1000);
    assert_eq!(
        check_write(CrReg::Efer, &paged, EFER_LME, &c, &m),
        Err(Gp::EferLmeChangeWithPaging)
    );
    let host = WriteContext {
        cs_l: None,
        host_initiated: true,
    };
    let a = apply_write_with(CrReg::Efer, &paged, EFER_LME, &c, &m, &host).unwrap();
    assert!(a.lme() && !a.lma(), "LMA is read-only");
    let prot = regs(CR0_PROT, 0, 0, 0);
    assert!(check_write(CrReg::Efer, &prot, EFER_LME | EFER_NXE, &c, &m).is_ok());
    let nonx = CpuModel { nx: false, ..c };
    assert_eq!(
        check_write(CrReg::Efer, &prot, EFER_NXE, &nonx, &m),
        Err(Gp::EferReserved { bits: EFER_NXE })
    );
    assert!(check_write(CrReg::Efer, &prot, 1 << 20, &c, &m).is_err());
    // Writing LMA does not set it.
    let a = apply_write(CrReg::Efer, &prot, EFER_LMA, &c, &m).unwrap();
    assert!(!a.lma());
}

#[test]
fn efer_host_writes_still_reject_unknown_bits() {
    let m = mem();
    let c = CpuModel { nx: false, ..cpu() };
    let host = WriteContext {
        cs_l: None,
        host_initiated: true,
    };
    let prot = regs(CR0_PROT, 0, 0, 0);
    // CPUID-dependent bits pass for the host, unknown bits never do.
    assert!(check_write_with(CrReg::Efer, &prot, EFER_NXE, &c, &m, &host).is_ok());
    assert_eq!(
        check_write_with(CrReg::Efer, &prot, 1 << 40, &c, &m, &host),
        Err(Gp::EferReserved { bits: 1 << 40 })
    );
    let lme_pae = regs(CR0_PROT, CR4_PAE, EFER_LME, 0x1000);
    let csl = WriteContext {
        cs_l: Some(true),
        host_initiated: false,
    };
    assert_eq!(
        check_write_with(CrReg::Cr0, &lme_pae, CR0_PAGED, &cpu(), &m, &csl),
        Err(Gp::Cr0LongModeWithCsL)
    );
}
