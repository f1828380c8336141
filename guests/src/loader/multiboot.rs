//! Multiboot (version 1) kernels: header search, ELF or a.out-kludge loading, the multiboot
//! information structure, and the entry state the specification defines.
//!
//! Entry state (Multiboot 0.6.96 §3.2): 32-bit protected mode, paging off, CS a flat 4 GiB
//! 32-bit code segment, DS/ES/FS/GS/SS flat 4 GiB data segments, EAX = 0x2BADB002, EBX = the
//! physical address of the information structure, interrupts off (RFLAGS = 0x2). The GDT the
//! segments come from is placed in low memory too (the specification lets the kernel assume
//! nothing about GDTR; a valid one costs nothing). ESP is 0: the kernel sets its own stack.
//!
//! Memory: ELF `PT_LOAD` segments are placed at their physical addresses (`p_paddr`); their
//! bss (`memsz - filesz`) is zero because all RAM a blob does not cover is zero at entry, and
//! the loader claims the whole `memsz` range so nothing else is placed there. Modules follow
//! the kernel at page-aligned addresses above 1 MiB. The information structure, memory map,
//! module list, strings and GDT share one block in free low memory (below 640 KiB).

use super::elf::{self, Elf};
use super::{check_ram, Layout, LoadError};
use crate::asm::gdt_blob;
use crate::image::{protected_entry, Image};
use traces::GuestSpec;

/// The magic in a kernel's multiboot header.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The magic the loader passes in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within this many bytes from the start of the file.
pub const SEARCH_LEN: usize = 8192;

const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Bits 0..15 are requirements a loader must fail on if it does not understand them.
const REQUIRED_MASK: u32 = 0xffff;
const SUPPORTED_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

/// `multiboot_info.flags` bits the loader sets.
pub mod info_flags {
    pub const MEMORY: u32 = 1 << 0;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODS: u32 = 1 << 3;
    pub const MMAP: u32 = 1 << 6;
    pub const BOOT_LOADER_NAME: u32 = 1 << 9;
}

/// Size of `struct multiboot_info` up to and including the framebuffer fields.
pub const INFO_SIZE: usize = 116;
/// Size of one memory-map entry including its leading `size` field (which holds 20).
pub const MMAP_ENTRY_SIZE: usize = 24;
/// Size of one module entry (`mod_start`, `mod_end`, `string`, reserved).
pub const MODULE_ENTRY_SIZE: usize = 16;
/// Memory-map types.
pub const MMAP_AVAILABLE: u32 = 1;
pub const MMAP_RESERVED: u32 = 2;

const LOW_MEMORY_END: u64 = 0xA_0000;
const HIGH_MEMORY: u64 = 0x10_0000;
const MAX_CMDLINE: usize = 64 * 1024;
const MAX_MODULES: usize = 1024;
const BOOT_LOADER_NAME: &str = "mmurr";

/// The multiboot header fields the loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the header.
    pub offset: usize,
    pub flags: u32,
    /// The a.out kludge fields (meaningful when flag 16 is set).
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Finds the multiboot header: the first 4-byte-aligned magic in the first 8 KiB whose
/// checksum is valid.
pub fn find_header(file: &[u8]) -> Result<MultibootHeader, LoadError> {
    let window = &file[..file.len().min(SEARCH_LEN)];
    let mut bad_checksum = None;
    for offset in (0..window.len().saturating_sub(11)).step_by(4) {
        let (Some(magic), Some(flags), Some(sum)) = (
            u32_at(window, offset),
            u32_at(window, offset + 4),
            u32_at(window, offset + 8),
        ) else {
            break;
        };
        if magic != HEADER_MAGIC {
            continue;
        }
        let total = magic.wrapping_add(flags).wrapping_add(sum);
        if total != 0 {
            bad_checksum.get_or_insert(LoadError::BadChecksum { offset, sum: total });
            continue;
        }
        let mut h = MultibootHeader {
            offset,
            flags,
            header_addr: 0,
            load_addr: 0,
            load_end_addr: 0,
            bss_end_addr: 0,
            entry_addr: 0,
        };
        if flags & FLAG_AOUT_KLUDGE != 0 {
            let field = |i: usize| {
                u32_at(window, offset + 12 + 4 * i).ok_or_else(|| {
                    LoadError::AoutKludge(
                        "the header's address fields do not fit in the first 8 KiB".into(),
                    )
                })
            };
            h.header_addr = field(0)?;
            h.load_addr = field(1)?;
            h.load_end_addr = field(2)?;
            h.bss_end_addr = field(3)?;
            h.entry_addr = field(4)?;
        }
        return Ok(h);
    }
    Err(bad_checksum.unwrap_or(LoadError::NoMultibootHeader))
}

/// A piece of the kernel to place: (what, gpa, file bytes, memory size).
struct Piece<'a> {
    what: String,
    gpa: u64,
    data: &'a [u8],
    memsz: u64,
}

fn below_4g(what: &str, start: u64, len: u64) -> Result<(), LoadError> {
    let end = start.saturating_add(len);
    if end > 1 << 32 {
        return Err(LoadError::Above4G {
            what: what.into(),
            start,
            end,
        });
    }
    Ok(())
}

/// The kernel's pieces and entry point from the a.out kludge fields.
fn aout_pieces<'a>(
    file: &'a [u8],
    h: &MultibootHeader,
) -> Result<(Vec<Piece<'a>>, u64), LoadError> {
    let bad = |s: String| Err(LoadError::AoutKludge(s));
    let (header_addr, load_addr) = (h.header_addr as u64, h.load_addr as u64);
    if load_addr > header_addr {
        return bad(format!(
            "load_addr {load_addr:#x} is above header_addr {header_addr:#x}"
        ));
    }
    // The file offset that load_addr corresponds to.
    let Some(file_start) = (h.offset as u64).checked_sub(header_addr - load_addr) else {
        return bad(format!(
            "header_addr - load_addr = {:#x} is more than the header's file offset {:#x}",
            header_addr - load_addr,
            h.offset
        ));
    };
    let file_len = file.len() as u64;
    let load_len = if h.load_end_addr == 0 {
        file_len - file_start
    } else {
        let end = h.load_end_addr as u64;
        if end < load_addr {
            return bad(format!(
                "load_end_addr {end:#x} is below load_addr {load_addr:#x}"
            ));
        }
        if end - load_addr > file_len - file_start {
            return bad(format!(
                "load_end_addr {end:#x} asks for {:#x} bytes but the file has {:#x} from offset {file_start:#x}",
                end - load_addr,
                file_len - file_start
            ));
        }
        end - load_addr
    };
    let load_end = load_addr + load_len;
    let mem_end = if h.bss_end_addr == 0 {
        load_end
    } else {
        let bss_end = h.bss_end_addr as u64;
        if bss_end < load_end {
            return bad(format!(
                "bss_end_addr {bss_end:#x} is below the loaded end {load_end:#x}"
            ));
        }
        bss_end
    };
    let entry = h.entry_addr as u64;
    if entry < load_addr || entry >= mem_end.max(load_end) {
        return Err(LoadError::Entry {
            entry,
            why: "outside the kernel's a.out kludge image",
        });
    }
    let data = &file[file_start as usize..(file_start + load_len) as usize];
    let piece = Piece {
        what: "the kernel image".into(),
        gpa: load_addr,
        data,
        memsz: mem_end - load_addr,
    };
    Ok((vec![piece], entry))
}

/// The kernel's pieces (PT_LOAD segments at their physical addresses) and entry point from
/// the ELF headers. A virtual entry point inside a segment whose virtual and physical
/// addresses differ is translated to the physical address, as GRUB does.
fn elf_pieces<'a>(file: &'a [u8], e: &Elf) -> Result<(Vec<Piece<'a>>, u64), LoadError> {
    let mut pieces = Vec::new();
    for (index, ph) in e.program_headers.iter().enumerate() {
        if ph.p_type != elf::PT_LOAD || ph.memsz == 0 {
            continue;
        }
        pieces.push(Piece {
            what: format!("ELF segment {index}"),
            gpa: ph.paddr,
            data: ph.file_bytes(file),
            memsz: ph.memsz,
        });
    }
    if pieces.is_empty() {
        return Err(LoadError::Elf(elf::ElfError::ProgramHeaders(
            "no loadable segment".into(),
        )));
    }
    let in_range = |a: u64, start: u64, len: u64| a >= start && a - start < len;
    let segs = || e.load_segments();
    let entry = if segs().any(|p| in_range(e.entry, p.paddr, p.memsz)) {
        e.entry
    } else if let Some(p) = segs().find(|p| in_range(e.entry, p.vaddr, p.memsz)) {
        p.paddr + (e.entry - p.vaddr)
    } else {
        return Err(LoadError::Entry {
            entry: e.entry,
            why: "not inside any loadable segment",
        });
    };
    Ok((pieces, entry))
}

fn push_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn push_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// The multiboot command line a boot loader passes for `kernel_path` with the arguments
/// `append`: `"<kernel path> <append>"`, exactly as QEMU's `-kernel`/`-append` (hw/i386/multiboot.c
/// formats `"%s %s"`) and GRUB's `multiboot PATH ARGS` do, so a kernel that reads argv[1] finds
/// the first `--append` word there.
pub fn multiboot_cmdline(kernel_path: &str, append: &str) -> String {
    format!("{kernel_path} {append}")
}

/// Loads a multiboot kernel (an ELF executable, 32- or 64-bit with a 32-bit entry point, or any
/// image with the a.out kludge) read from `kernel_path`, with the arguments `append` (the guest
/// sees [`multiboot_cmdline`]) and modules (name, bytes), into a guest of `ram_size` bytes.
pub fn load_multiboot<S: AsRef<str>, B: AsRef<[u8]>>(
    elf_bytes: &[u8],
    kernel_path: &str,
    append: &str,
    modules: &[(S, B)],
    ram_size: u64,
) -> Result<GuestSpec, LoadError> {
    let cmdline = &multiboot_cmdline(kernel_path, append);
    check_ram(ram_size, 2 << 20)?;
    let header = find_header(elf_bytes)?;
    let unsupported = header.flags & REQUIRED_MASK & !SUPPORTED_REQUIRED;
    if unsupported != 0 {
        return Err(LoadError::UnsupportedFlags(unsupported));
    }
    let (pieces, entry) = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        aout_pieces(elf_bytes, &header)?
    } else {
        let e = elf::parse(elf_bytes)?;
        elf_pieces(elf_bytes, &e)?
    };
    let strings_ok = |what: &str, s: &str| -> Result<(), LoadError> {
        if s.len() > MAX_CMDLINE {
            return Err(LoadError::TooLong {
                what: what.into(),
                len: s.len(),
                max: MAX_CMDLINE,
            });
        }
        if s.contains('\0') {
            return Err(LoadError::Invalid(format!("{what} contains a NUL byte")));
        }
        Ok(())
    };
    strings_ok("the command line", cmdline)?;
    if modules.len() > MAX_MODULES {
        return Err(LoadError::TooLong {
            what: "the module list".into(),
            len: modules.len(),
            max: MAX_MODULES,
        });
    }
    for (name, _) in modules {
        strings_ok("a module name", name.as_ref())?;
    }

    let mut layout = Layout::new(ram_size);
    let mut img = Image::new(ram_size);
    for p in &pieces {
        below_4g(&p.what, p.gpa, p.memsz)?;
        layout.claim(&p.what, p.gpa, p.memsz)?;
    }
    if entry >= ram_size {
        return Err(LoadError::Entry {
            entry,
            why: "outside guest RAM",
        });
    }

    // Modules: page-aligned, above 1 MiB and above everything the kernel occupies.
    let mut module_ranges = Vec::with_capacity(modules.len());
    for (i, (_, data)) in modules.iter().enumerate() {
        let data = data.as_ref();
        let what = format!("module {i}");
        let lo = layout.top().max(HIGH_MEMORY);
        // mod_end is a 32-bit field: keep the end strictly below 4 GiB.
        let at = layout.place(
            &what,
            data.len() as u64,
            0x1000,
            lo,
            ram_size.min(0xffff_f000),
        )?;
        module_ranges.push((at, at + data.len() as u64));
    }

    // The boot information block: info | mmap | module entries | strings | GDT.
    let mmap = memory_map(ram_size);
    let mut strings: Vec<u8> = Vec::new();
    let mut add_string = |s: &str| {
        let off = strings.len();
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let cmdline_off = add_string(cmdline);
    let name_off = add_string(BOOT_LOADER_NAME);
    let module_name_offs: Vec<usize> = modules
        .iter()
        .map(|(n, _)| add_string(n.as_ref()))
        .collect();
    let mmap_off = INFO_SIZE.next_multiple_of(8);
    let mmap_len = mmap.len() * MMAP_ENTRY_SIZE;
    let mods_off = mmap_off + mmap_len;
    let strings_off = mods_off + modules.len() * MODULE_ENTRY_SIZE;
    let gdt_off = (strings_off + strings.len()).next_multiple_of(16);
    let block_len = gdt_off + gdt_blob(0).len();
    let base = layout.place(
        "the multiboot information",
        block_len as u64,
        0x1000,
        0x1000,
        LOW_MEMORY_END,
    )?;
    let addr = |off: usize| (base + off as u64) as u32;

    let mut block = Vec::with_capacity(block_len);
    let flags = info_flags::MEMORY
        | info_flags::CMDLINE
        | info_flags::MODS
        | info_flags::MMAP
        | info_flags::BOOT_LOADER_NAME;
    push_u32(&mut block, flags);
    push_u32(&mut block, (ram_size.min(LOW_MEMORY_END) / 1024) as u32); // mem_lower (KiB)
    let upper = ram_size.min(1 << 32).saturating_sub(HIGH_MEMORY) / 1024;
    push_u32(&mut block, upper as u32); // mem_upper (KiB from 1 MiB)
    push_u32(&mut block, 0); // boot_device (flag 1 not set)
    push_u32(&mut block, addr(strings_off + cmdline_off));
    push_u32(&mut block, modules.len() as u32);
    push_u32(&mut block, addr(mods_off));
    block.extend_from_slice(&[0; 16]); // syms (flags 4/5 not set)
    push_u32(&mut block, mmap_len as u32);
    push_u32(&mut block, addr(mmap_off));
    push_u32(&mut block, 0); // drives_length
    push_u32(&mut block, 0); // drives_addr
    push_u32(&mut block, 0); // config_table
    push_u32(&mut block, addr(strings_off + name_off));
    block.resize(INFO_SIZE, 0); // apm, vbe, framebuffer: not provided (flags 10-12 clear)
    block.resize(mmap_off, 0);
    for (start, len, kind) in &mmap {
        push_u32(&mut block, (MMAP_ENTRY_SIZE - 4) as u32);
        push_u64(&mut block, *start);
        push_u64(&mut block, *len);
        push_u32(&mut block, *kind);
    }
    for ((start, end), name_off) in module_ranges.iter().zip(&module_name_offs) {
        push_u32(&mut block, *start as u32);
        push_u32(&mut block, *end as u32);
        push_u32(&mut block, addr(strings_off + name_off));
        push_u32(&mut block, 0);
    }
    block.extend_from_slice(&strings);
    block.resize(gdt_off, 0);
    block.extend_from_slice(&gdt_blob(base + gdt_off as u64));

    img.add("multiboot information", base, block)?;
    for p in &pieces {
        if !p.data.is_empty() {
            img.add(&p.what, p.gpa, p.data.to_vec())?;
        }
    }
    for ((name, data), (start, _)) in modules.iter().zip(&module_ranges) {
        if !data.as_ref().is_empty() {
            img.add(
                &format!("module {}", name.as_ref()),
                *start,
                data.as_ref().to_vec(),
            )?;
        }
    }
    let mut regs = protected_entry(entry as u32, base + gdt_off as u64);
    regs.gpr[0] = BOOTLOADER_MAGIC as u64; // EAX
    regs.gpr[3] = base; // EBX
    Ok(img.into_spec(regs, "multiboot kernel".into(), cmdline.to_string()))
}

/// (start, length, type) of each memory-map entry: conventional memory, the reserved
/// 640 KiB-1 MiB hole (VGA, option ROMs, BIOS), and RAM above 1 MiB.
fn memory_map(ram_size: u64) -> Vec<(u64, u64, u32)> {
    let mut m = vec![(0, ram_size.min(LOW_MEMORY_END), MMAP_AVAILABLE)];
    m.push((LOW_MEMORY_END, HIGH_MEMORY - LOW_MEMORY_END, MMAP_RESERVED));
    if ram_size > HIGH_MEMORY {
        m.push((HIGH_MEMORY, ram_size - HIGH_MEMORY, MMAP_AVAILABLE));
    }
    m
}
