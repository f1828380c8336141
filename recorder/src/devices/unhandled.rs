//! Accesses no device answers: counted for the end summary, watched for a guest that polls
//! an absent device forever, and named with the device the guest probably wanted (the one a
//! PC or QEMU's pc machine has there), so the message says what is missing.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnhandledAccess {
    PortRead(u16),
    PortWrite(u16),
    MmioRead(u64),
    MmioWrite(u64),
}

impl std::fmt::Display for UnhandledAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnhandledAccess::PortRead(p) => write!(f, "read of port {p:#x}"),
            UnhandledAccess::PortWrite(p) => write!(f, "write to port {p:#x}"),
            UnhandledAccess::MmioRead(a) => write!(f, "MMIO read at {a:#x}"),
            UnhandledAccess::MmioWrite(a) => write!(f, "MMIO write at {a:#x}"),
        }?;
        let device = match *self {
            UnhandledAccess::PortRead(p) | UnhandledAccess::PortWrite(p) => port_device(p),
            UnhandledAccess::MmioRead(a) | UnhandledAccess::MmioWrite(a) => mmio_device(a),
        };
        match device {
            Some(d) => write!(f, " ({d}?, which mmurr does not emulate)"),
            None => Ok(()),
        }
    }
}

/// The devices mmurr's machine has, for messages about the ones it does not.
pub const EMULATED: &str = "serial COM1 0x3f8 (IRQ 4), debug-exit 0xf4, debugcon 0xe9, fw_cfg \
     0x510, CMOS/RTC 0x70, PCI configuration 0xcf8 (i440FX host bridge), reset 0xcf9/0x92/0x64, \
     and the PIC, PIT, port 0x61, local APIC and I/O APIC as KVM's in-kernel irqchip has them";

/// The device a PC (or QEMU's pc machine) has at I/O port `port`, for one mmurr lacks.
pub fn port_device(port: u16) -> Option<&'static str> {
    Some(match port {
        0x00..=0x1f | 0xc0..=0xdf => "the ISA DMA controllers (8237)",
        0x80 => "the POST diagnostic / I/O delay port",
        0x81..=0x8f => "the DMA page registers",
        0x60 | 0x64 => "the PS/2 keyboard controller (i8042)",
        0xb2 | 0xb3 => "the APM/SMI command port",
        0xf0 | 0xf1 => "the FPU error port",
        0x170..=0x177 | 0x376 => "the secondary IDE controller",
        0x1f0..=0x1f7 | 0x3f6 => "the primary IDE controller",
        0x278..=0x27f => "the parallel port LPT2",
        0x2e8..=0x2ef => "the serial port COM4",
        0x2f8..=0x2ff => "the serial port COM2",
        0x378..=0x37f => "the parallel port LPT1",
        0x3b0..=0x3df => "the VGA controller",
        0x3e8..=0x3ef => "the serial port COM3",
        0x3f0..=0x3f7 => "the floppy controller",
        0x402 => "QEMU's isa-debugcon (SeaBIOS's log port)",
        0x510..=0x51b => "QEMU's fw_cfg DMA interface",
        0x600..=0x63f | 0xb000..=0xb03f => "the ACPI PM registers (PM timer, PM1 events/control)",
        0x5658 => "the VMware backdoor",
        0xcf8..=0xcff => "PCI configuration mechanism #1 (a 32-bit access to 0xcf8)",
        _ => return None,
    })
}

/// The device a PC (or QEMU's pc/q35 machine) has at guest-physical `gpa`.
pub fn mmio_device(gpa: u64) -> Option<&'static str> {
    Some(match gpa {
        0xa_0000..=0xb_ffff => "the VGA frame buffer / text screen",
        0xc_0000..=0xf_ffff => "option ROMs and the BIOS (no firmware is loaded)",
        0xb000_0000..=0xbfff_ffff => "q35's PCI Express configuration space (MMCONFIG)",
        0xfec0_0000..=0xfec0_0fff => "the I/O APIC",
        0xfed0_0000..=0xfed0_03ff => "the HPET",
        0xfed4_0000..=0xfed4_4fff => "a TPM",
        0xfee0_0000..=0xfee0_0fff => {
            "the local APIC (disabled in IA32_APIC_BASE, or in x2APIC mode)"
        }
        0xffc0_0000..=0xffff_ffff => "the firmware flash below 4 GiB",
        _ => return None,
    })
}

#[derive(Default)]
pub struct Unhandled {
    counts: BTreeMap<UnhandledAccess, u64>,
    /// The same unhandled read, repeated with no other I/O in between.
    streak: Option<(UnhandledAccess, u64)>,
}

impl Unhandled {
    pub fn record(&mut self, access: UnhandledAccess) {
        *self.counts.entry(access).or_default() += 1;
        let is_read = matches!(
            access,
            UnhandledAccess::PortRead(_) | UnhandledAccess::MmioRead(_)
        );
        self.streak = match self.streak {
            Some((a, n)) if a == access => Some((a, n + 1)),
            _ if is_read => Some((access, 1)),
            _ => None,
        };
    }

    /// Any handled access breaks a polling streak.
    pub fn handled(&mut self) {
        self.streak = None;
    }

    /// The access the guest has been repeating `limit` times or more in a row.
    pub fn polling(&self, limit: u64) -> Option<(UnhandledAccess, u64)> {
        self.streak.filter(|&(_, n)| n >= limit)
    }

    /// Every unhandled access kind with its count, most frequent first.
    pub fn summary(&self) -> Vec<(UnhandledAccess, u64)> {
        let mut v: Vec<_> = self.counts.iter().map(|(&a, &n)| (a, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_of_the_same_read_is_polling() {
        let mut u = Unhandled::default();
        for _ in 0..5 {
            u.record(UnhandledAccess::PortRead(0x64));
        }
        assert_eq!(u.polling(5), Some((UnhandledAccess::PortRead(0x64), 5)));
        u.handled();
        assert_eq!(u.polling(1), None);
        u.record(UnhandledAccess::PortRead(0x64));
        u.record(UnhandledAccess::PortRead(0x60));
        assert_eq!(u.polling(2), None);
    }

    #[test]
    fn messages_name_the_device_the_guest_probably_wanted() {
        let m = UnhandledAccess::PortRead(0x2f9).to_string();
        assert_eq!(
            m,
            "read of port 0x2f9 (the serial port COM2?, which mmurr does not emulate)"
        );
        assert!(UnhandledAccess::MmioRead(0xfed0_00f0)
            .to_string()
            .contains("HPET"));
        assert!(UnhandledAccess::PortRead(0x608)
            .to_string()
            .contains("PM timer"));
        assert!(UnhandledAccess::PortWrite(0x3c0)
            .to_string()
            .contains("VGA"));
        assert!(UnhandledAccess::PortRead(0x60)
            .to_string()
            .contains("i8042"));
        assert_eq!(
            UnhandledAccess::PortWrite(0x1234).to_string(),
            "write to port 0x1234"
        );
    }
}
