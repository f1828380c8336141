//! The loaders: the multiboot test kernel loaded with a command line and modules, the
//! multiboot information checked field by field, raw images in every entry mode, and malformed
//! inputs (which must give errors, never panics).

use guests::loader::elf::{self, ElfError};
use guests::loader::multiboot::{self, info_flags};
use guests::loader::{load_multiboot, load_raw, EntryMode, LoadError};
use guests::test_kernels::build_hello;
use proptest::prelude::*;
use std::sync::OnceLock;
use traces::{regs, GuestSpec};

const MIB: u64 = 1 << 20;

/// The hello kernel, built once per test binary. Missing binutils fail the tests loudly.
fn hello() -> &'static [u8] {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(|| build_hello().unwrap_or_else(|e| panic!("building the test kernel: {e}")))
}

/// Guest memory at entry, as a sparse view over the loads.
struct Mem<'a>(&'a GuestSpec);

impl Mem<'_> {
    fn bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for l in &self.0.loads {
            let b = &self.0.blobs[l.blob as usize].data;
            for (i, o) in out.iter_mut().enumerate() {
                let a = gpa + i as u64;
                if a >= l.gpa && a < l.gpa + b.len() as u64 {
                    *o = b[(a - l.gpa) as usize];
                }
            }
        }
        out
    }
    fn u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.bytes(gpa, 4).try_into().unwrap())
    }
    fn u64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.bytes(gpa, 8).try_into().unwrap())
    }
    fn cstr(&self, gpa: u64) -> String {
        let b = self.bytes(gpa, 256);
        let n = b.iter().position(|&c| c == 0).expect("NUL-terminated");
        String::from_utf8(b[..n].to_vec()).unwrap()
    }
}

fn no_overlapping_loads(g: &GuestSpec) {
    let mut r: Vec<(u64, u64)> = g
        .loads
        .iter()
        .map(|l| (l.gpa, l.gpa + g.blobs[l.blob as usize].data.len() as u64))
        .collect();
    r.sort();
    for w in r.windows(2) {
        assert!(w[0].1 <= w[1].0, "{w:x?}");
    }
    assert!(r.iter().all(|&(_, e)| e <= g.ram_size));
}

#[test]
fn hello_kernel_is_a_multiboot_elf() {
    let k = hello();
    let e = elf::parse(k).unwrap();
    assert!(!e.is64);
    let h = multiboot::find_header(k).unwrap();
    assert!(h.offset < multiboot::SEARCH_LEN);
    assert_eq!(h.flags, 3);
    let text = e.load_segments().next().unwrap();
    assert_eq!(text.paddr, 0x10_0000);
}

#[test]
fn multiboot_info_and_entry_state() {
    let modules: Vec<(&str, Vec<u8>)> = vec![
        ("initrd.img", b"module one".to_vec()),
        ("second arg=1", vec![0xab; 5000]),
    ];
    let ram = 16 * MIB;
    let g = load_multiboot(
        hello(),
        "/boot/hello.elf",
        "console=ttyS0 mmurr",
        &modules,
        ram,
    )
    .unwrap();
    no_overlapping_loads(&g);
    assert_eq!(g.ram_size, ram);
    assert_eq!(g.cmdline, "/boot/hello.elf console=ttyS0 mmurr");
    assert_eq!(g.origin, "multiboot kernel");
    let r = &g.entry;
    let e = elf::parse(hello()).unwrap();
    assert_eq!(r.rip, e.entry);
    assert_eq!(r.gpr[0], 0x2BAD_B002);
    assert_eq!((r.cr0, r.cr4, r.efer, r.rflags), (0x11, 0, 0, 0x2));
    let cs = r.seg[regs::CS];
    assert_eq!((cs.base, cs.limit, cs.attrs), (0, 0xffff_ffff, 0xc09b));
    for i in [regs::DS, regs::ES, regs::FS, regs::GS, regs::SS] {
        assert_eq!(
            (r.seg[i].base, r.seg[i].limit, r.seg[i].attrs),
            (0, 0xffff_ffff, 0xc093)
        );
    }
    let m = Mem(&g);
    // The GDT the segments came from is in memory where GDTR says.
    assert_eq!(r.gdtr.limit, 31);
    assert_eq!(m.u64(r.gdtr.base + 8), 0x00CF_9B00_0000_FFFF);
    assert_eq!(m.u64(r.gdtr.base + 16), 0x00CF_9300_0000_FFFF);
    // The kernel's text, at its physical address.
    let text = e.load_segments().next().unwrap();
    assert_eq!(
        m.bytes(text.paddr, text.filesz as usize),
        text.file_bytes(hello())
    );

    let info = r.gpr[3];
    assert!(
        info >= 0x1000 && info + 116 <= 0xA_0000,
        "info in low memory: {info:#x}"
    );
    let flags = m.u32(info);
    for f in [
        info_flags::MEMORY,
        info_flags::CMDLINE,
        info_flags::MODS,
        info_flags::MMAP,
        info_flags::BOOT_LOADER_NAME,
    ] {
        assert_ne!(flags & f, 0, "{f:#x}");
    }
    assert_eq!(
        flags & (1 << 1 | 1 << 11 | 1 << 12),
        0,
        "no boot device, VBE or framebuffer"
    );
    assert_eq!(m.u32(info + 4), 640);
    assert_eq!(m.u32(info + 8), ((ram - MIB) / 1024) as u32);
    // As QEMU and GRUB pass it: argv[0] is the kernel's path, the --append words follow.
    let cmdline = m.cstr(m.u32(info + 16) as u64);
    assert_eq!(cmdline, "/boot/hello.elf console=ttyS0 mmurr");
    let argv: Vec<&str> = cmdline.split(' ').collect();
    assert_eq!(argv, ["/boot/hello.elf", "console=ttyS0", "mmurr"]);
    assert_eq!(m.cstr(m.u32(info + 64) as u64), "mmurr");

    // Modules: page-aligned, above the kernel (and its bss), contents and names as given.
    assert_eq!(m.u32(info + 20), 2);
    let mods = m.u32(info + 24) as u64;
    let kernel_end = e.load_segments().map(|p| p.paddr + p.memsz).max().unwrap();
    let mut prev_end = kernel_end;
    for (i, (name, data)) in modules.iter().enumerate() {
        let entry = mods + 16 * i as u64;
        let (start, end) = (m.u32(entry) as u64, m.u32(entry + 4) as u64);
        assert_eq!(start % 4096, 0);
        assert!(start >= prev_end);
        assert_eq!(end - start, data.len() as u64);
        assert_eq!(m.bytes(start, data.len()), *data);
        assert_eq!(m.cstr(m.u32(entry + 8) as u64), *name);
        prev_end = end;
    }

    // Memory map: RAM below 640 KiB, the reserved hole, RAM above 1 MiB.
    let (len, addr) = (m.u32(info + 44) as u64, m.u32(info + 48) as u64);
    assert_eq!(len, 3 * 24);
    let entries: Vec<(u32, u64, u64, u32)> = (0..3)
        .map(|i| {
            let e = addr + 24 * i;
            (m.u32(e), m.u64(e + 4), m.u64(e + 12), m.u32(e + 20))
        })
        .collect();
    assert_eq!(
        entries,
        [
            (20, 0, 0xA_0000, 1),
            (20, 0xA_0000, 0x6_0000, 2),
            (20, MIB, ram - MIB, 1)
        ]
    );
}

#[test]
fn multiboot_without_modules_or_cmdline() {
    let none: &[(&str, &[u8])] = &[];
    let g = load_multiboot(hello(), "/boot/hello.elf", "", none, 2 * MIB).unwrap();
    let m = Mem(&g);
    let info = g.entry.gpr[3];
    assert_eq!(m.u32(info + 20), 0);
    // QEMU's "%s %s" with nothing to append: the path and a space.
    assert_eq!(m.cstr(m.u32(info + 16) as u64), "/boot/hello.elf ");
    assert_eq!(m.u32(info + 8), 1024);
}

/// Patches a little-endian u32 into a copy of the kernel.
fn patched(at: usize, v: u32) -> Vec<u8> {
    let mut k = hello().to_vec();
    k[at..at + 4].copy_from_slice(&v.to_le_bytes());
    k
}

fn load(k: &[u8]) -> Result<GuestSpec, LoadError> {
    load_multiboot(k, "k", "", &[] as &[(&str, &[u8])], 16 * MIB)
}

// ELF32 field offsets.
const E_PHOFF: usize = 28;
const E_PHENTSIZE: usize = 42;
const E_PHNUM: usize = 44;
const P_OFFSET: usize = 4;
const P_PADDR: usize = 12;
const P_FILESZ: usize = 16;
const P_MEMSZ: usize = 20;

fn first_load_ph() -> usize {
    let k = hello();
    let phoff = u32::from_le_bytes(k[E_PHOFF..E_PHOFF + 4].try_into().unwrap()) as usize;
    let e = elf::parse(k).unwrap();
    let i = e
        .program_headers
        .iter()
        .position(|p| p.p_type == elf::PT_LOAD)
        .unwrap();
    phoff + 32 * i
}

#[test]
fn malformed_elf_files_are_errors() {
    let k = hello();
    // Truncated anywhere before the end of the loaded bytes.
    for len in [0, 3, 16, 40, 51, 52, 60, 100, k.len() / 2] {
        assert!(load(&k[..len]).is_err(), "truncated to {len}");
        assert!(elf::parse(&k[..len.min(52)]).is_err() || len >= 52);
    }
    let mut bad = k.to_vec();
    bad[0] = 0x7e;
    assert!(matches!(
        load(&bad),
        Err(LoadError::Elf(ElfError::BadMagic))
    ));
    let mut bad = k.to_vec();
    bad[4] = 3;
    assert!(matches!(
        load(&bad),
        Err(LoadError::Elf(ElfError::BadClass(3)))
    ));
    let mut bad = k.to_vec();
    bad[5] = 2;
    assert!(matches!(
        load(&bad),
        Err(LoadError::Elf(ElfError::NotLittleEndian(2)))
    ));
    let mut bad = k.to_vec();
    bad[16] = 3; // ET_DYN
    assert!(matches!(
        load(&bad),
        Err(LoadError::Elf(ElfError::NotExecutable(3)))
    ));
    let mut bad = k.to_vec();
    bad[18] = 62; // EM_X86_64 in a 32-bit file
    assert!(matches!(
        load(&bad),
        Err(LoadError::Elf(ElfError::BadMachine { .. }))
    ));

    // Program header table out of the file, absurd counts, too-small entries.
    let phoff_past_end = patched(E_PHOFF, k.len() as u32 - 8);
    assert!(matches!(
        load(&phoff_past_end),
        Err(LoadError::Elf(ElfError::ProgramHeaders(_)))
    ));
    let mut many = k.to_vec();
    many[E_PHNUM..E_PHNUM + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(matches!(
        load(&many),
        Err(LoadError::Elf(ElfError::ProgramHeaders(_)))
    ));
    let mut small = k.to_vec();
    small[E_PHENTSIZE..E_PHENTSIZE + 2].copy_from_slice(&8u16.to_le_bytes());
    assert!(matches!(
        load(&small),
        Err(LoadError::Elf(ElfError::ProgramHeaders(_)))
    ));
    let mut none = k.to_vec();
    none[E_PHNUM..E_PHNUM + 2].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        load(&none),
        Err(LoadError::Elf(ElfError::ProgramHeaders(_)))
    ));

    // Segments: file range past the end, filesz > memsz, huge sizes, outside RAM, above 4 GiB.
    let ph = first_load_ph();
    let seg_err = |k: &[u8]| matches!(load(k), Err(LoadError::Elf(ElfError::Segment { .. })));
    assert!(seg_err(&patched(ph + P_OFFSET, 0xffff_fff0)));
    assert!(seg_err(&patched(ph + P_FILESZ, 0xffff_ffff)));
    assert!(seg_err(&patched(ph + P_MEMSZ, 1)));
    assert!(matches!(
        load(&patched(ph + P_MEMSZ, 0x0200_0000)),
        Err(LoadError::OutOfRam { .. })
    ));
    assert!(matches!(
        load(&patched(ph + P_MEMSZ, 0xffff_0000)),
        Err(LoadError::Above4G { .. })
    ));
    assert!(matches!(
        load(&patched(ph + P_PADDR, 0x4000_0000)),
        Err(LoadError::OutOfRam { .. })
    ));
    assert!(matches!(
        load(&patched(ph + P_PADDR, 0xffff_f000)),
        Err(LoadError::Above4G { .. })
    ));
    // The entry point outside every segment.
    assert!(matches!(
        load(&patched(24, 0x10)),
        Err(LoadError::Entry { .. })
    ));
}

#[test]
fn multiboot_header_problems_are_errors() {
    let k = hello();
    let h = multiboot::find_header(k).unwrap();
    // No magic anywhere (the symbol table holds the header constants too: a magic there
    // without a valid checksum is skipped, and reported only when nothing else is found).
    let mut no_magic = k.to_vec();
    for at in (0..no_magic.len() - 3).step_by(4) {
        if no_magic[at..at + 4] == multiboot::HEADER_MAGIC.to_le_bytes() {
            no_magic[at..at + 4].fill(0);
        }
    }
    assert!(
        matches!(load(&no_magic), Err(LoadError::NoMultibootHeader)),
        "{:?}",
        load(&no_magic).err()
    );
    // Bad checksum.
    let mut bad_sum = no_magic.clone();
    bad_sum[h.offset..h.offset + 4].copy_from_slice(&multiboot::HEADER_MAGIC.to_le_bytes());
    bad_sum[h.offset + 8..h.offset + 12].copy_from_slice(&0x1234u32.to_le_bytes());
    assert!(
        matches!(load(&bad_sum), Err(LoadError::BadChecksum { offset, .. }) if offset == h.offset)
    );
    // A required flag we do not provide (bit 3), with a consistent checksum.
    let flags = 3 | 1 << 3;
    let mut k2 = patched(h.offset + 4, flags);
    let sum = 0u32.wrapping_sub(multiboot::HEADER_MAGIC.wrapping_add(flags));
    k2[h.offset + 8..h.offset + 12].copy_from_slice(&sum.to_le_bytes());
    assert!(matches!(load(&k2), Err(LoadError::UnsupportedFlags(8))));
    // The header beyond the first 8 KiB is not found.
    let mut far = vec![0u8; 9000];
    far.extend_from_slice(&k[h.offset..h.offset + 12]);
    assert!(matches!(load(&far), Err(LoadError::NoMultibootHeader)));
    // RAM too small, command line with a NUL.
    assert!(matches!(
        load_multiboot(k, "k", "", &[] as &[(&str, &[u8])], MIB),
        Err(LoadError::RamSize { .. })
    ));
    assert!(matches!(
        load_multiboot(k, "k", "a\0b", &[] as &[(&str, &[u8])], 4 * MIB),
        Err(LoadError::Invalid(_))
    ));
    // A module that does not fit.
    let big = vec![0u8; 3 * MIB as usize];
    assert!(matches!(
        load_multiboot(k, "k", "", &[("big", &big[..])], 4 * MIB),
        Err(LoadError::NoRoom { .. })
    ));
}

/// A flat a.out-kludge kernel: header at offset 0x10, image loaded at 1 MiB, entry at +0x40.
fn aout_kernel(load_end: u32, bss_end: u32, entry: u32) -> Vec<u8> {
    let load = 0x10_0000u32;
    let flags = 1 << 16 | 3;
    let mut k = vec![0x90u8; 0x100];
    let fields = [
        multiboot::HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(multiboot::HEADER_MAGIC.wrapping_add(flags)),
        load + 0x10, // header_addr
        load,        // load_addr
        load_end,
        bss_end,
        entry,
    ];
    for (i, f) in fields.iter().enumerate() {
        k[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&f.to_le_bytes());
    }
    k
}

#[test]
fn aout_kludge_is_honoured() {
    let k = aout_kernel(0x10_0100, 0x10_2000, 0x10_0040);
    let g = load(&k).unwrap();
    assert_eq!(g.entry.rip, 0x10_0040);
    assert_eq!(Mem(&g).bytes(0x10_0000, 0x100), k);
    // load_end_addr 0: the rest of the file; bss_end 0: no bss.
    let g = load(&aout_kernel(0, 0, 0x10_0040)).unwrap();
    assert_eq!(
        Mem(&g).bytes(0x10_0000, 0x100),
        aout_kernel(0, 0, 0x10_0040)
    );
    // Inconsistent fields.
    for k in [
        aout_kernel(0x10_1000, 0, 0x10_0040), // load_end past the file
        aout_kernel(0x0f_0000, 0, 0x10_0040), // load_end below load_addr
        aout_kernel(0x10_0100, 0x10_0080, 0x10_0040), // bss_end below load_end
    ] {
        assert!(
            matches!(load(&k), Err(LoadError::AoutKludge(_))),
            "{:?}",
            load(&k).err()
        );
    }
    assert!(matches!(
        load(&aout_kernel(0x10_0100, 0, 0x20_0000)),
        Err(LoadError::Entry { .. })
    ));
}

#[test]
fn raw_real_mode() {
    let g = load_raw(&[0xf4], 0x7c00, 0x7c00, EntryMode::Real, 2 * MIB).unwrap();
    assert_eq!(g.entry, guests::image::real_mode_entry(0x7c00));
    let g = load_raw(&[0xf4; 16], 0xf_fff0, 0xf_fff0, EntryMode::Real, 2 * MIB).unwrap();
    let cs = g.entry.seg[regs::CS];
    assert_eq!(
        (cs.selector, cs.base, g.entry.rip),
        (0xf000, 0xf_0000, 0xfff0)
    );
    assert!(matches!(
        load_raw(&[0xf4], 0x10_0000, 0x10_0000, EntryMode::Real, 2 * MIB),
        Err(LoadError::Entry { .. })
    ));
}

#[test]
fn raw_protected_mode_has_a_gdt_beside_the_image() {
    let img = vec![0x90; 0x3000];
    let g = load_raw(&img, 0x1000, 0x1000, EntryMode::Protected, 2 * MIB).unwrap();
    no_overlapping_loads(&g);
    let r = &g.entry;
    assert_eq!((r.rip, r.cr0), (0x1000, 0x11));
    assert_eq!(r.seg[regs::CS].attrs, 0xc09b);
    assert!(r.gdtr.base >= 0x4000);
    assert_eq!(Mem(&g).u64(r.gdtr.base + 8), 0x00CF_9B00_0000_FFFF);
}

#[test]
fn raw_long_mode_identity_maps_ram_and_low_4g() {
    let img = vec![0x90; 0x2000];
    let ram = 6 << 30;
    let g = load_raw(&img, 0x10_0000, 0x10_0000, EntryMode::Long, ram).unwrap();
    no_overlapping_loads(&g);
    let r = &g.entry;
    assert_eq!((r.cr0, r.cr4, r.efer), (0x8000_0011, 0x20, 0x500));
    assert_eq!(r.seg[regs::CS].attrs, 0xa09b);
    let m = Mem(&g);
    let walk = |la: u64| {
        let pml4e = m.u64((r.cr3 & !0xfff) + 8 * ((la >> 39) & 0x1ff));
        let pdpte = m.u64((pml4e & !0xfff) + 8 * ((la >> 30) & 0x1ff));
        let pde = m.u64((pdpte & !0xfff) + 8 * ((la >> 21) & 0x1ff));
        assert_eq!(pml4e & pdpte & pde & 1, 1, "{la:#x} present");
        assert_eq!(pde & 0x80, 0x80);
        (pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (la & 0x1f_ffff)
    };
    for la in [0, 0x10_0000, 0xfee0_0000, 0x1_2345_6789, ram - 1] {
        assert_eq!(walk(la), la);
    }
    assert_eq!(m.u64(r.gdtr.base + 24), 0x00AF_9B00_0000_FFFF);
}

#[test]
fn raw_images_that_do_not_fit_are_errors() {
    assert!(matches!(
        load_raw(&[], 0, 0, EntryMode::Real, MIB),
        Err(LoadError::EmptyImage)
    ));
    assert!(matches!(
        load_raw(&[0; 16], MIB - 8, MIB - 8, EntryMode::Protected, MIB),
        Err(LoadError::OutOfRam { .. })
    ));
    assert!(matches!(
        load_raw(&[0; 16], u64::MAX - 4, 0, EntryMode::Protected, MIB),
        Err(LoadError::OutOfRam { .. })
    ));
    assert!(matches!(
        load_raw(&[0; 16], 0, 2 * MIB, EntryMode::Protected, MIB),
        Err(LoadError::Entry { .. })
    ));
    assert!(matches!(
        load_raw(&[0; 16], 0, 0, EntryMode::Long, 1000),
        Err(LoadError::RamSize { .. })
    ));
    assert!(matches!(
        load_raw(&[0; 16], 0, 0, EntryMode::Long, 1 << 41),
        Err(LoadError::RamSize { .. })
    ));
    // An image covering all of RAM leaves no room for the GDT.
    let all = vec![0u8; MIB as usize];
    assert!(matches!(
        load_raw(&all, 0, 0, EntryMode::Protected, MIB),
        Err(LoadError::NoRoom { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = elf::parse(&bytes);
        let _ = load(&bytes);
    }

    #[test]
    fn mutated_kernels_never_panic(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..16),
        cut in proptest::option::of(0usize..8192),
    ) {
        let mut k = hello().to_vec();
        for (at, v) in edits {
            let n = k.len();
            k[at % n] = v;
        }
        if let Some(c) = cut {
            k.truncate(c);
        }
        let _ = load(&k);
    }

    #[test]
    fn mutated_aout_headers_never_panic(fields in proptest::collection::vec(any::<u32>(), 4)) {
        let k = aout_kernel(fields[0], fields[1], fields[2]);
        let _ = load(&k);
        let mut k2 = k.clone();
        k2[0x1c..0x20].copy_from_slice(&fields[3].to_le_bytes()); // header_addr
        let _ = load(&k2);
    }
}
