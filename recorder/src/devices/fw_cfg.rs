//! QEMU's fw_cfg, traditional I/O interface: selector at 0x510 (16-bit write), data at 0x511
//! (byte reads advancing through the selected item). Enough for firmware and kernels that
//! probe it: the signature, the interface ID, the RAM size and the CPU count.

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;

const FW_CFG_SIGNATURE: u16 = 0x00;
const FW_CFG_ID: u16 = 0x01;
const FW_CFG_RAM_SIZE: u16 = 0x03;
const FW_CFG_NB_CPUS: u16 = 0x05;
const FW_CFG_MAX_CPUS: u16 = 0x0f;
/// FW_CFG_ID bit 0: the traditional interface (no DMA).
const ID_TRADITIONAL: u32 = 1;

pub struct FwCfg {
    ram_size: u64,
    /// The machine's vCPUs (FW_CFG_NB_CPUS, as QEMU's `-smp` sets it).
    cpus: u16,
    selected: u16,
    offset: usize,
}

impl FwCfg {
    pub fn new(ram_size: u64) -> FwCfg {
        FwCfg {
            ram_size,
            cpus: 1,
            selected: 0,
            offset: 0,
        }
    }

    /// The machine has `cpus` vCPUs (at least one).
    pub fn set_cpus(&mut self, cpus: u32) {
        self.cpus = u16::try_from(cpus.max(1)).unwrap_or(u16::MAX);
    }

    pub fn claims(port: u16) -> bool {
        port == SELECTOR || port == DATA
    }

    fn item(&self, key: u16) -> Vec<u8> {
        match key {
            FW_CFG_SIGNATURE => b"QEMU".to_vec(),
            FW_CFG_ID => ID_TRADITIONAL.to_le_bytes().to_vec(),
            FW_CFG_RAM_SIZE => self.ram_size.to_le_bytes().to_vec(),
            FW_CFG_NB_CPUS | FW_CFG_MAX_CPUS => self.cpus.to_le_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    pub fn write(&mut self, port: u16, _size: u8, data: u32) {
        if port == SELECTOR {
            self.selected = data as u16;
            self.offset = 0;
        }
    }

    /// Data reads return successive bytes of the item (0 past its end); a wider read of the
    /// data port returns that many bytes, little endian.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        if port == SELECTOR {
            return self.selected as u32;
        }
        let item = self.item(self.selected);
        let mut v = 0u32;
        for i in 0..size.min(4) as usize {
            let b = item.get(self.offset).copied().unwrap_or(0);
            v |= (b as u32) << (8 * i);
            self.offset += 1;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        f.write(SELECTOR, 2, key as u32);
        (0..len).map(|_| f.read(DATA, 1) as u8).collect()
    }

    #[test]
    fn signature_ram_size_and_cpus() {
        let mut f = FwCfg::new(64 << 20);
        assert_eq!(read_item(&mut f, 0, 4), b"QEMU");
        assert_eq!(read_item(&mut f, 3, 8), (64u64 << 20).to_le_bytes());
        assert_eq!(read_item(&mut f, 5, 2), [1, 0]);
        assert_eq!(read_item(&mut f, 1, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&mut f, 0x1234, 2), [0, 0]);
        f.set_cpus(4);
        assert_eq!(read_item(&mut f, 5, 2), [4, 0]);
        assert_eq!(read_item(&mut f, 0x0f, 2), [4, 0]);
    }
}
