//! Developer measurement: what each hook Unicorn offers costs on a tight loop.
use std::time::Instant;
use unicorn_engine::unicorn_const::{Arch, HookType, Mode, Prot};
use unicorn_engine::{RegisterX86, Unicorn};

const CODE: u64 = 0x10_0000;

fn code(n: u32) -> Vec<u8> {
    let mut code = vec![0x48, 0xc7, 0xc4, 0x00, 0x90, 0x00, 0x00, 0xb9];
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0x4c, 0x24, 0xf8, 0xff, 0xc9, 0x75, 0xf7, 0xf4]);
    code
}

fn run(name: &str, code: &[u8], block: bool, write: bool, count: bool, nowrite: bool) {
    let mut code = code.to_vec();
    if nowrite {
        // mov rax, rcx instead of the store (3 bytes + 2 nops)
        code[12..17].copy_from_slice(&[0x48, 0x89, 0xc8, 0x90, 0x90]);
    }
    let mut uc = Unicorn::new_with_data(Arch::X86, Mode::MODE_64, 0u64).unwrap();
    uc.mem_map(0, 2 << 20, Prot::ALL).unwrap();
    uc.mem_write(CODE, &code).unwrap();
    uc.reg_write(RegisterX86::RSP, 0x9000).unwrap();
    if block {
        uc.add_block_hook(1, 0, |uc, _a, s| {
            *uc.get_data_mut() += u64::from(s);
        })
        .unwrap();
    }
    if write {
        uc.add_mem_hook(HookType::MEM_WRITE, 1, 0, |uc, _t, a, _s, _v| {
            *uc.get_data_mut() ^= a;
            true
        })
        .unwrap();
    }
    let hlt = CODE + code.len() as u64 - 1;
    let t = Instant::now();
    uc.emu_start(CODE, hlt, 0, if count { usize::MAX } else { 0 })
        .unwrap();
    let dt = t.elapsed().as_secs_f64();
    let n = 3.0 * f64::from(u32::from_le_bytes(code[8..12].try_into().unwrap()));
    println!("{name:40} {:8.1} M insn/s", n / dt / 1e6);
}

fn main() {
    let c = code(10_000_000);
    for _ in 0..2 {
        run("none", &c, false, false, false, false);
        run("block", &c, true, false, false, false);
        run("write", &c, false, true, false, false);
        run("block+write", &c, true, true, false, false);
        run("count", &c, false, false, true, false);
        run("count+block+write", &c, true, true, true, false);
        run("none, no store", &c, false, false, false, true);
        run("block, no store", &c, true, false, false, true);
        run("count, no store", &c, false, false, true, true);
    }
}
