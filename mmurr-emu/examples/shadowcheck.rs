//! Developer check: steps a scenario and reports the first step whose memory changes were not
//! all reported as written.
use mmurr_emu::EmuBackend;
use recorder::{Backend, Exit, Written};

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "pae-toggle".into());
    let mut b = EmuBackend::new().unwrap();
    let f = guests::CpuFeatures::from_cpuid(&b.cpuid());
    let s = guests::scenario(&name, &f).unwrap();
    b.load(&s.guest).unwrap();
    let mut shadow = b.ram().unwrap().to_vec();
    for step in 1..100000 {
        let before = b.regs().unwrap();
        let r = b.step().unwrap();
        if let Exit::IoIn { .. } = r.exit {
            b.complete_io_in(0).unwrap();
        }
        if let Written::Ranges(rs) = &r.written {
            for &(g, l) in rs {
                let (g, l) = (g as usize, l as usize);
                shadow[g..g + l].copy_from_slice(&b.ram().unwrap()[g..g + l]);
            }
        }
        let ram = b.ram().unwrap().to_vec();
        if let Some(i) = (0..ram.len()).find(|&i| ram[i] != shadow[i]) {
            let after = b.regs().unwrap();
            println!(
                "step {step} rip {:#x} -> {:#x}: byte {i:#x} {:#x} (shadow {:#x}); written {:?}",
                before.rip, after.rip, ram[i], shadow[i], r.written
            );
            println!("before cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}; after cr0 {:#x} cr3 {:#x} cr4 {:#x}", before.cr0, before.cr3, before.cr4, before.efer, after.cr0, after.cr3, after.cr4);
            shadow.copy_from_slice(&ram);
        }
        if matches!(
            r.exit,
            Exit::Halted | Exit::Shutdown | Exit::IoOut { port: 0xf4, .. }
        ) {
            println!("end at step {step}: {:?}", r.exit);
            break;
        }
    }
}
