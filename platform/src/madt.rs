//! The ACPI tables that tell a guest with no firmware how many CPUs this platform has and how
//! its interrupt controllers are wired (ACPI 6.5, chapter 5.2): a Root System Description
//! Pointer (revision 2), an XSDT listing one table, and the Multiple APIC Description Table
//! ("APIC") with a Processor Local APIC entry per vCPU, the I/O APIC, an interrupt source
//! override for IRQ 0 and the local APICs' NMI on LINT1. Nothing else: no FADT or DSDT, so a
//! guest finds no ACPI hardware (PM timer, SCI, power button) this platform lacks; Linux then
//! disables its ACPI interpreter after reading the MADT ("Unable to load the System
//! Description Tables").
//!
//! Why a MADT rather than an Intel MP table: kernels built without CONFIG_X86_MPPARSE (Debian's
//! cloud kernel among them) never look for an MP table, while every x86-64 kernel with ACPI
//! reads a MADT; a boot loader hands its address over in `boot_params.acpi_rsdp_addr`.
//!
//! Routing, as the platform implements it (crate documentation): ISA IRQ n is I/O APIC pin n
//! (GSI n), edge-triggered, active high — the ACPI default for ISA, so only IRQ 0 gets an
//! override: without a FADT a guest takes IRQ 0 for the SCI and, unless an override names its
//! polarity and trigger, makes it level-triggered and active low (Linux's
//! `acpi_sci_ioapic_setup`), which would stop the PIT's interrupts.

use crate::{ioapic, lapic};

/// The most vCPUs the tables describe: xAPIC IDs are bytes, and 0xff means "all".
pub const MAX_CPUS: u32 = 0xff;

const RSDP_LEN: usize = 36;
const HEADER_LEN: usize = 36;
/// Where the XSDT follows the RSDP (8-byte aligned).
const XSDT_OFFSET: usize = 40;
const XSDT_LEN: usize = HEADER_LEN + 8;
const MADT_OFFSET: usize = XSDT_OFFSET + XSDT_LEN;

/// MADT entry types and flags (ACPI 6.5, 5.2.12).
const LOCAL_APIC: u8 = 0;
const IO_APIC: u8 = 1;
const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const LOCAL_APIC_NMI: u8 = 4;
const LOCAL_APIC_ENABLED: u32 = 1;
/// The MADT's flags: the PC's dual 8259 PICs are present (and must be masked).
const PCAT_COMPAT: u32 = 1;
/// MPS INTI flags: active high (01), edge-triggered (01 << 2).
const ACTIVE_HIGH_EDGE: u16 = 0b0101;
const ISA_BUS: u8 = 0;
/// Processor UID 0xff: every processor.
const ALL_PROCESSORS: u8 = 0xff;

const OEM_ID: &[u8; 6] = b"MMURR ";
const OEM_TABLE_ID: &[u8; 8] = b"MMURRPC ";

/// Why no tables can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MadtError {
    #[error("the ACPI MADT describes 1 to {MAX_CPUS} CPUs here, not {0}")]
    Cpus(u32),
    #[error("ACPI tables at {0:#x} must be 16-byte aligned and below 4 GiB")]
    Address(u64),
}

/// The RSDP, XSDT and MADT for `cpus` vCPUs (APIC IDs and processor UIDs 0 to `cpus - 1`),
/// laid out from guest-physical `at` (the RSDP's address, for `boot_params.acpi_rsdp_addr`).
pub fn tables(cpus: u32, at: u64) -> Result<Vec<u8>, MadtError> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(MadtError::Cpus(cpus));
    }
    let end = at.checked_add(tables_len(cpus) as u64);
    if !at.is_multiple_of(16) || end.is_none_or(|e| e > 1 << 32) {
        return Err(MadtError::Address(at));
    }
    let xsdt_at = at + XSDT_OFFSET as u64;
    let madt_at = at + MADT_OFFSET as u64;

    let mut rsdp = Vec::with_capacity(RSDP_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0 and later (XSDT)
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&xsdt_at.to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]); // extended checksum, reserved
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let xsdt = sdt(b"XSDT", 1, &madt_at.to_le_bytes());

    let mut body = Vec::new();
    body.extend_from_slice(&(lapic::BASE as u32).to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for id in 0..cpus as u8 {
        body.extend_from_slice(&[LOCAL_APIC, 8, id, id]);
        body.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
    }
    body.extend_from_slice(&[IO_APIC, 12, ioapic::RESET_ID as u8, 0]);
    body.extend_from_slice(&(ioapic::BASE as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    body.extend_from_slice(&[INTERRUPT_SOURCE_OVERRIDE, 10, ISA_BUS, 0]);
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI 0
    body.extend_from_slice(&ACTIVE_HIGH_EDGE.to_le_bytes());
    body.extend_from_slice(&[LOCAL_APIC_NMI, 6, ALL_PROCESSORS]);
    body.extend_from_slice(&0u16.to_le_bytes()); // flags: conforms to the bus
    body.push(1); // LINT1
    let madt = sdt(b"APIC", 3, &body);

    let mut out = rsdp;
    out.resize(XSDT_OFFSET, 0);
    out.extend_from_slice(&xsdt);
    out.extend_from_slice(&madt);
    Ok(out)
}

/// How many bytes [`tables`] lays out for `cpus` vCPUs.
pub fn tables_len(cpus: u32) -> usize {
    MADT_OFFSET + HEADER_LEN + 8 + 8 * cpus as usize + 12 + 10 + 6
}

/// A system description table: the common header, then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"MMRR"); // creator ID
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// The byte that makes `bytes` (with it in place of a zero) sum to 0 modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// Follows the pointers as a guest does: RSDP -> XSDT -> MADT, checking every checksum
    /// and length; returns the MADT.
    fn madt_of(t: &[u8], at: u64) -> &[u8] {
        let rsdp = &t[..RSDP_LEN];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        assert_eq!(rsdp[15], 2);
        assert_eq!(u32_at(rsdp, 20) as usize, RSDP_LEN);
        let xsdt_off = (u64_at(rsdp, 24) - at) as usize;
        let xsdt_len = u32_at(t, xsdt_off + 4) as usize;
        let xsdt = &t[xsdt_off..xsdt_off + xsdt_len];
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0, "XSDT checksum");
        assert_eq!(xsdt_len, HEADER_LEN + 8, "one table");
        let madt_off = (u64_at(xsdt, HEADER_LEN) - at) as usize;
        let madt_len = u32_at(t, madt_off + 4) as usize;
        assert_eq!(madt_off + madt_len, t.len());
        let madt = &t[madt_off..];
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(sum(madt), 0, "MADT checksum");
        madt
    }

    #[test]
    fn rsdp_xsdt_and_madt_for_two_cpus() {
        let at = 0x9_fc00;
        let t = tables(2, at).unwrap();
        assert_eq!(t.len(), tables_len(2));
        let madt = madt_of(&t, at);
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(madt, 40), PCAT_COMPAT);
        // The entries, walked by type and length as a guest does.
        let mut o = 44;
        let (mut cpus, mut ioapics, mut overrides, mut nmis) = (vec![], vec![], vec![], vec![]);
        while o < madt.len() {
            let (kind, len) = (madt[o], madt[o + 1] as usize);
            let e = &madt[o..o + len];
            match kind {
                LOCAL_APIC => cpus.push((e[2], e[3], u32_at(e, 4))),
                IO_APIC => ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8))),
                INTERRUPT_SOURCE_OVERRIDE => {
                    overrides.push((e[2], e[3], u32_at(e, 4), u16::from_le_bytes([e[8], e[9]])))
                }
                LOCAL_APIC_NMI => nmis.push((e[2], u16::from_le_bytes([e[3], e[4]]), e[5])),
                k => panic!("entry type {k}"),
            }
            o += len;
        }
        assert_eq!(o, madt.len());
        // Processor UIDs and APIC IDs 0 and 1, both enabled.
        assert_eq!(cpus, [(0, 0, 1), (1, 1, 1)]);
        assert_eq!(ioapics, [(0, 0xfec0_0000, 0)]);
        // IRQ 0 is GSI 0, edge-triggered and active high, as the platform's PIT drives it.
        assert_eq!(overrides, [(0, 0, 0, 0b0101)]);
        assert_eq!(nmis, [(0xff, 0, 1)]);
    }

    #[test]
    fn one_processor_entry_per_cpu() {
        for cpus in [1, 4, 64, MAX_CPUS] {
            let t = tables(cpus, 0xe_0000).unwrap();
            assert_eq!(t.len(), tables_len(cpus));
            let madt = madt_of(&t, 0xe_0000);
            let ids: Vec<u8> = (0..cpus as usize).map(|k| madt[44 + 8 * k + 3]).collect();
            assert_eq!(ids, (0..cpus as u8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn impossible_tables_are_refused() {
        assert_eq!(tables(0, 0), Err(MadtError::Cpus(0)));
        assert_eq!(tables(256, 0), Err(MadtError::Cpus(256)));
        assert_eq!(tables(2, 0x9_fc08), Err(MadtError::Address(0x9_fc08)));
        assert_eq!(tables(2, 0xffff_ffc0), Err(MadtError::Address(0xffff_ffc0)));
    }
}
