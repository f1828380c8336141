//! Linux bzImages, booted with the x86 boot protocol (Documentation/arch/x86/boot.rst) and no
//! BIOS. linux-loader (rust-vmm, Apache-2.0 AND BSD-3-Clause) parses the setup header, places
//! the protected-mode kernel and the command line, and supplies the `boot_params` layout; it
//! may only be linked here, on the `mmurr` side: mmurr-emu (GPL-2.0) gets the finished guest
//! as a guest file (`--guest-from`).
//!
//! Entry: the 32-bit boot protocol — protected mode, paging off, at `code32_start` (the
//! protected-mode kernel's load address, where `startup_32` is), with a GDT holding
//! `__BOOT_CS` (0x10) and `__BOOT_DS` (0x18), ESI = boot_params and EBP/EDI/EBX = 0. Not the
//! 64-bit entry at load + 0x200: a debugger of MMU transitions wants the kernel's own way into
//! long mode on record (startup_32 sets CR4.PAE, EFER.LME, loads CR3 and sets CR0.PG), rather
//! than page tables and a paging mode the loader made up; and this host's KVM runs protected
//! mode and the switch to long mode, so kvm records the same entry.
//!
//! Memory (both backends give RAM at `0..--memory`, no BIOS): zero page at 0x7000, GDT at
//! 0x6000, command line at 0x20000, kernel at `code32_start` (1 MiB), the initrd at the top of
//! RAM below `initrd_addr_max`. The e820 map says usable `[0, 0x9fc00)`, reserved
//! `[0x9fc00, 0x100000)` (the EBDA and the legacy VGA/ROM hole, as a PC reports them: the
//! backends have RAM there, which nothing may then use), usable `[1 MiB, RAM end)`.
//!
//! Several vCPUs (`--cpus N`, N > 1): ACPI tables with a MADT ([`platform::madt`]) at 0x9fc00,
//! in memory the e820 map reserves, their RSDP in `boot_params.acpi_rsdp_addr` (boot protocol
//! 2.14). One vCPU gets none, as before: the kernel then runs without ACPI and without an I/O
//! APIC, as it always has here.

use anyhow::{bail, Context};
use guests::image::{protected_entry, Image};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::{load_cmdline, KernelLoader};
use mmurr_flags::{BuiltGuest, GuestArgs};
use std::path::Path;
use traces::regs::{CS, DS, ES, FS, GS, SS};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// RSI in `Regs::gpr` (the SDM's register numbering).
const RSI: usize = 6;

/// Where the loader puts its structures (all below the EBDA, above the real-mode IVT/BDA).
const GDT: u64 = 0x6000;
const ZERO_PAGE: u64 = 0x7000;
const CMDLINE: u64 = 0x2_0000;
const CMDLINE_MAX: usize = 0x1_0000;
/// Start of the EBDA as a PC BIOS leaves it: the end of usable low memory.
const EBDA: u64 = 0x9_fc00;
/// The ACPI tables (several vCPUs): in the reserved memory from the EBDA on.
const ACPI_TABLES: u64 = EBDA;
const HIGH_MEMORY: u64 = 0x10_0000;
/// The kernel's own physical load address (CONFIG_PHYSICAL_START, 16 MiB on x86-64): the
/// decompressor moves itself there and needs `init_size` bytes from it.
const LOAD_PHYSICAL_ADDR: u64 = 0x100_0000;

/// boot.rst constants.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// type_of_loader: "undefined" boot loader.
const LOADER_OTHER: u8 = 0xff;
/// loadflags: LOADED_HIGH (the protected-mode kernel is at 1 MiB).
const LOADED_HIGH: u8 = 0x01;
/// The setup header version that added `initrd_addr_max` (2.03) and `cmdline_size` (2.06).
const V2_03: u16 = 0x0203;
const V2_06: u16 = 0x0206;

/// The GDT of the 32-bit boot protocol: null, unused, `__BOOT_CS`, `__BOOT_DS` (flat 4 GiB,
/// accessed bits set so loading them never writes the table).
const BOOT_GDT: [u64; 4] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Whether `--kernel` names a bzImage (which only this side can load).
pub fn is_linux_guest(args: &GuestArgs) -> anyhow::Result<bool> {
    let Some(kernel) = &args.kernel else {
        return Ok(false);
    };
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(kernel)
        .with_context(|| format!("cannot read the kernel {}", kernel.display()))?
        .take(0x206)
        .read_to_end(&mut head)?;
    Ok(mmurr_flags::is_bzimage(&head))
}

/// The guest for a bzImage `--kernel` on a machine of `cpus` vCPUs, or `None` for any other
/// guest.
pub fn build(args: &GuestArgs, cpus: u32) -> anyhow::Result<Option<BuiltGuest>> {
    if !is_linux_guest(args)? {
        return Ok(None);
    }
    let kernel = args.kernel.as_deref().context("no --kernel")?;
    let ram = args.ram_size()?;
    let initrd = match args.initrd.as_slice() {
        [] => None,
        [one] => Some(
            std::fs::read(one)
                .with_context(|| format!("cannot read the initrd {}", one.display()))?,
        ),
        more => bail!(
            "a Linux kernel takes one --initrd (got {}): concatenate cpio archives into one",
            more.len()
        ),
    };
    let spec = load(kernel, &args.append, initrd.as_deref(), ram, cpus)
        .with_context(|| format!("cannot boot the Linux kernel {}", kernel.display()))?;
    Ok(Some(BuiltGuest {
        spec,
        scenario: None,
        needs: None,
        label: format!("Linux kernel {}", kernel.display()),
        host_actions: Vec::new(),
        flavour: None,
    }))
}

/// Loads the bzImage at `path` into `ram` bytes of RAM for a machine of `cpus` vCPUs and
/// returns the guest: its loads are exactly the ranges the loader wrote.
pub fn load(
    path: &Path,
    append: &str,
    initrd: Option<&[u8]>,
    ram: u64,
    cpus: u32,
) -> anyhow::Result<traces::GuestSpec> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)])
        .context("reserving the loader's view of guest RAM")?;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let loaded = BzImage::load(&mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY)))
        .context("linux-loader could not load the bzImage")?;
    let mut hdr = loaded
        .setup_header
        .context("linux-loader returned no setup header")?;
    let (version, init_size, align) = (hdr.version, hdr.init_size, hdr.kernel_alignment);
    if version < V2_06 {
        bail!("boot protocol {version:#x}: mmurr needs 2.06 or later (Linux 2.6.22+)");
    }
    let kernel_start = loaded.kernel_load.0;
    let kernel_end = loaded.kernel_end;
    // The decompressor runs in place or moves to LOAD_PHYSICAL_ADDR (16 MiB, kernel_alignment
    // aligned) and needs init_size bytes from there.
    let busy_end = kernel_start
        .max(LOAD_PHYSICAL_ADDR.next_multiple_of(u64::from(align.max(1))))
        .saturating_add(u64::from(init_size))
        .max(kernel_end);
    if busy_end > ram {
        bail!(
            "the kernel needs RAM up to {busy_end:#x} to decompress (init_size {init_size:#x}); \
             give more --memory (at least {} MiB)",
            busy_end.div_ceil(1 << 20) + 16
        );
    }

    // Command line.
    let cmdline_size = (hdr.cmdline_size as usize).min(CMDLINE_MAX);
    let mut cmdline = Cmdline::new(cmdline_size.max(2)).context("command line buffer")?;
    if !append.is_empty() {
        cmdline.insert_str(append).with_context(|| {
            format!("--append does not fit the kernel's {cmdline_size}-byte command line")
        })?;
    }
    load_cmdline(&mem, GuestAddress(CMDLINE), &cmdline).context("placing the command line")?;
    let cmdline_len = append.len() as u64 + 1;

    // Initrd: as high as allowed, page aligned, above everything the kernel uses.
    let mut initrd_at = None;
    if let Some(bytes) = initrd {
        let max = if version >= V2_03 {
            u64::from(hdr.initrd_addr_max)
        } else {
            0x37ff_ffff
        };
        let top = ram.min(max.saturating_add(1));
        let at = top
            .checked_sub(bytes.len() as u64)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= busy_end)
            .with_context(|| {
                format!(
                    "no room for the {}-byte initrd between the kernel's end {busy_end:#x} and \
                     {top:#x}: give more --memory",
                    bytes.len()
                )
            })?;
        mem.write_slice(bytes, GuestAddress(at))
            .context("placing the initrd")?;
        initrd_at = Some(at);
    }

    // boot_params: the kernel's own setup header plus what a loader fills in.
    hdr.type_of_loader = LOADER_OTHER;
    hdr.loadflags |= LOADED_HIGH;
    hdr.cmd_line_ptr = CMDLINE as u32;
    if let (Some(at), Some(bytes)) = (initrd_at, initrd) {
        hdr.ramdisk_image = at as u32;
        hdr.ramdisk_size = bytes.len() as u32;
    }
    let acpi = if cpus > 1 {
        Some(platform::madt::tables(cpus, ACPI_TABLES)?)
    } else {
        None
    };
    let mut params = boot_params {
        hdr,
        acpi_rsdp_addr: if acpi.is_some() { ACPI_TABLES } else { 0 },
        ..Default::default()
    };
    let e820 = e820_map(ram);
    for (slot, e) in params.e820_table.iter_mut().zip(&e820) {
        *slot = *e;
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE))
        .context("placing boot_params")?;

    // The guest: each range the loader wrote, read back from its view of RAM.
    let read = |at: u64, len: u64| -> anyhow::Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        mem.read_slice(&mut v, GuestAddress(at))
            .with_context(|| format!("reading back [{at:#x}, +{len:#x})"))?;
        Ok(v)
    };
    let mut img = Image::new(ram);
    let gdt: Vec<u8> = BOOT_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    img.add("boot GDT", GDT, gdt)?;
    img.add(
        "boot_params",
        ZERO_PAGE,
        read(ZERO_PAGE, std::mem::size_of::<boot_params>() as u64)?,
    )?;
    img.add("kernel command line", CMDLINE, read(CMDLINE, cmdline_len)?)?;
    let name = path
        .file_name()
        .map_or("bzImage".into(), |n| n.to_string_lossy().into_owned());
    img.add(
        &format!("{name} (protected-mode kernel)"),
        kernel_start,
        read(kernel_start, kernel_end - kernel_start)?,
    )?;
    if let (Some(at), Some(bytes)) = (initrd_at, initrd) {
        img.add("initrd", at, bytes.to_vec())?;
    }
    if let Some(tables) = acpi {
        img.add(
            &format!("ACPI RSDP, XSDT, MADT ({cpus} CPUs)"),
            ACPI_TABLES,
            tables,
        )?;
    }
    let mut regs = protected_entry(kernel_start as u32, GDT);
    regs.seg[CS].selector = BOOT_CS;
    for s in [DS, ES, SS, FS, GS] {
        regs.seg[s].selector = BOOT_DS;
    }
    regs.gdtr.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    regs.gpr[RSI] = ZERO_PAGE;
    Ok(img.into_spec(
        regs,
        format!("linux {}", path.display()),
        append.to_string(),
    ))
}

/// The e820 map of RAM `0..ram`, as the backends provide it.
fn e820_map(ram: u64) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, end: u64, type_: u32| boot_e820_entry {
        addr,
        size: end - addr,
        r#type: type_,
    };
    vec![
        entry(0, EBDA, E820_RAM),
        entry(EBDA, HIGH_MEMORY, E820_RESERVED),
        entry(HIGH_MEMORY, ram, E820_RAM),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: boot sector + 4 setup sectors with a 2.15 setup header, then
    /// `kernel` as the protected-mode part.
    fn bzimage(kernel: &[u8], init_size: u32) -> tempfile::NamedTempFile {
        let mut b = vec![0u8; 5 * 512];
        b[0x1f1] = 4; // setup_sects
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        b[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes()); // cmdline_size
        b[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        b.extend_from_slice(kernel);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &b).unwrap();
        f
    }

    fn blob_at(spec: &traces::GuestSpec, gpa: u64) -> &[u8] {
        let l = spec.loads.iter().find(|l| l.gpa == gpa).unwrap();
        &spec.blobs[l.blob as usize].data
    }

    #[test]
    fn the_boot_protocol_state_and_structures() {
        let kernel = vec![0x90u8; 0x3000];
        let f = bzimage(&kernel, 0x40_0000);
        let initrd = vec![7u8; 0x2345];
        let ram = 64 << 20;
        let g = load(f.path(), "console=ttyS0", Some(&initrd), ram, 1).unwrap();
        // 32-bit entry at code32_start: flat protected mode, __BOOT_CS/__BOOT_DS, ESI.
        let r = &g.entry;
        assert_eq!(r.rip, 0x10_0000);
        assert_eq!(r.cr0 & 0x8000_0001, 1);
        assert_eq!(r.seg[CS].selector, BOOT_CS);
        assert_eq!(r.seg[DS].selector, BOOT_DS);
        assert_eq!(r.seg[SS].selector, BOOT_DS);
        assert_eq!(r.gpr[RSI], ZERO_PAGE);
        assert_eq!((r.gdtr.base, r.gdtr.limit), (GDT, 31));
        assert_eq!(blob_at(&g, 0x10_0000), &kernel[..]);
        assert_eq!(blob_at(&g, CMDLINE), b"console=ttyS0\0");
        // The initrd is page-aligned at the top of RAM.
        let initrd_at = (ram - initrd.len() as u64) & !0xfff;
        assert_eq!(blob_at(&g, initrd_at), &initrd[..]);
        // boot_params: the loader's fields and the e820 map of 64 MiB.
        let zp = blob_at(&g, ZERO_PAGE);
        let u32_at = |o: usize| u32::from_le_bytes(zp[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(zp[o..o + 8].try_into().unwrap());
        assert_eq!(zp[0x210], LOADER_OTHER);
        assert_eq!(u32_at(0x228), CMDLINE as u32);
        assert_eq!(u32_at(0x218), initrd_at as u32);
        assert_eq!(u32_at(0x21c), initrd.len() as u32);
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(zp[0x1e8], 3);
        let e820: Vec<(u64, u64, u32)> = (0..3)
            .map(|i| {
                let o = 0x2d0 + 20 * i;
                (u64_at(o), u64_at(o + 8), u32_at(o + 16))
            })
            .collect();
        assert_eq!(
            e820,
            [
                (0, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x6_0400, E820_RESERVED),
                (0x10_0000, ram - 0x10_0000, E820_RAM)
            ]
        );
    }

    #[test]
    fn several_cpus_get_acpi_tables_in_reserved_memory() {
        let f = bzimage(&[0x90u8; 0x1000], 0x40_0000);
        let rsdp_addr = |g: &traces::GuestSpec| {
            let zp = blob_at(g, ZERO_PAGE);
            u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap())
        };
        let one = load(f.path(), "", None, 64 << 20, 1).unwrap();
        assert!(one.loads.iter().all(|l| l.gpa != ACPI_TABLES));
        assert_eq!(rsdp_addr(&one), 0);
        let two = load(f.path(), "", None, 64 << 20, 2).unwrap();
        let tables = blob_at(&two, ACPI_TABLES);
        assert_eq!(tables, platform::madt::tables(2, ACPI_TABLES).unwrap());
        assert_eq!(&tables[..8], b"RSD PTR ");
        assert_eq!(rsdp_addr(&two), ACPI_TABLES);
        // Inside the e820 map's reserved [EBDA, 1 MiB).
        let end = ACPI_TABLES + tables.len() as u64;
        assert!(EBDA <= ACPI_TABLES && end <= HIGH_MEMORY, "{end:#x}");
    }

    #[test]
    fn too_little_ram_for_the_decompressor_is_refused() {
        let f = bzimage(&[0u8; 0x1000], 0x800_0000);
        let err = load(f.path(), "", None, 64 << 20, 1).unwrap_err();
        assert!(format!("{err:#}").contains("give more --memory"), "{err:#}");
    }
}
