//! PCI configuration mechanism #1 (address at 0xcf8, data at 0xcfc–0xcff) with one device:
//! the host bridge QEMU's pc machine has at 00:00.0, an Intel 82441FX (i440FX, 8086:1237),
//! which SeaBIOS and Linux look for. Every other function reads all ones (absent).

const VENDOR_DEVICE: u32 = 0x1237_8086;
/// Registers the guest may write in the host bridge: command, latency timer, the PAM
/// (0x59–0x5f) and SMRAM (0x72) registers that firmware programs.
fn writable(offset: usize) -> bool {
    matches!(offset, 0x04 | 0x05 | 0x0d | 0x59..=0x5f | 0x72)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHost {
    address: u32,
    bridge: [u8; 256],
}

impl Default for PciHost {
    fn default() -> Self {
        let mut c = [0u8; 256];
        c[0..4].copy_from_slice(&VENDOR_DEVICE.to_le_bytes());
        c[0x04] = 0x06; // memory space, bus master
        c[0x06] = 0x80; // status: fast back-to-back
        c[0x08] = 0x02; // revision
        c[0x0a] = 0x00; // subclass: host bridge
        c[0x0b] = 0x06; // class: bridge
        c[0x72] = 0x02; // SMRAM: default
        PciHost {
            address: 0,
            bridge: c,
        }
    }
}

impl PciHost {
    pub fn claims(port: u16, size: u8) -> bool {
        (port == 0xcf8 && size == 4) || (0xcfc..=0xcff).contains(&port)
    }

    /// The config-space offset the data port `port` reaches, if the address selects the
    /// host bridge (bus 0, device 0, function 0) and is enabled.
    fn target(&self, port: u16) -> Option<Option<usize>> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bdf = (self.address >> 8) & 0xffff;
        let offset = (self.address & 0xfc) as usize + (port - 0xcfc) as usize;
        Some((bdf == 0).then_some(offset))
    }

    pub fn read(&self, port: u16, size: u8) -> u32 {
        if port == 0xcf8 {
            return self.address;
        }
        let all_ones = if size >= 4 {
            u32::MAX
        } else {
            (1 << (8 * size)) - 1
        };
        match self.target(port) {
            Some(Some(off)) => (0..size as usize)
                .map(|i| (*self.bridge.get(off + i).unwrap_or(&0xff) as u32) << (8 * i))
                .fold(0, |a, b| a | b),
            _ => all_ones,
        }
    }

    pub fn write(&mut self, port: u16, size: u8, v: u32) {
        if port == 0xcf8 {
            self.address = v & 0x80ff_fffc;
            return;
        }
        if let Some(Some(off)) = self.target(port) {
            for i in 0..size as usize {
                if off + i < 256 && writable(off + i) {
                    self.bridge[off + i] = (v >> (8 * i)) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridge_is_found_and_absent_devices_read_all_ones() {
        let mut p = PciHost::default();
        p.write(0xcf8, 4, 0x8000_0000);
        assert_eq!(p.read(0xcf8, 4), 0x8000_0000);
        assert_eq!(p.read(0xcfc, 4), 0x1237_8086);
        assert_eq!(p.read(0xcfe, 2), 0x1237);
        p.write(0xcf8, 4, 0x8000_0008);
        assert_eq!(p.read(0xcfc, 4) >> 16, 0x0600);
        p.write(0xcf8, 4, 0x8000_0800); // 00:01.0
        assert_eq!(p.read(0xcfc, 4), 0xffff_ffff);
        assert_eq!(p.read(0xcfc, 2), 0xffff);
        p.write(0xcf8, 4, 0x0000_0000); // disabled
        assert_eq!(p.read(0xcfc, 4), 0xffff_ffff);
    }

    #[test]
    fn pam_registers_are_writable_ids_are_not() {
        let mut p = PciHost::default();
        p.write(0xcf8, 4, 0x8000_0058);
        p.write(0xcfd, 1, 0x30); // PAM0
        p.write(0xcfc, 1, 0x55); // 0x58 is not writable
        assert_eq!(p.read(0xcfc, 4) & 0xffff, 0x3000);
        p.write(0xcf8, 4, 0x8000_0000);
        p.write(0xcfc, 4, 0);
        assert_eq!(p.read(0xcfc, 2), 0x8086);
        assert!(PciHost::claims(0xcfe, 1) && !PciHost::claims(0xcf8, 1));
    }
}
