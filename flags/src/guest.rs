//! Which guest to run ([`GuestArgs`]) and the one function that builds it ([`GuestArgs::build`]).

use clap::{Args, ValueEnum};
use guests::loader::{EntryMode, LoadError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use traces::{CpuidEntry, GuestSpec, Header, PagingMode};

/// The largest `--memory` accepted: RAM is guest-physical `0..size` on both backends, and the
/// top of the 4 GiB space belongs to firmware and device MMIO.
pub const MAX_MEMORY_MIB: u64 = 3 << 10;

/// CPU mode at entry for `--image`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryModeChoice {
    Real,
    Protected,
    Long,
}

impl From<EntryModeChoice> for EntryMode {
    fn from(m: EntryModeChoice) -> EntryMode {
        match m {
            EntryModeChoice::Real => EntryMode::Real,
            EntryModeChoice::Protected => EntryMode::Protected,
            EntryModeChoice::Long => EntryMode::Long,
        }
    }
}

/// Which guest to run.
#[derive(Args, Debug, Clone, PartialEq, Serialize)]
pub struct GuestArgs {
    /// A built-in scenario (see `mmurr scenarios`).
    #[arg(long, group = "guest")]
    pub scenario: Option<String>,
    /// A kernel: a multiboot (v1) ELF, or a Linux bzImage (booted with the x86 boot protocol by
    /// `mmurr`; `mmurr-emu` gets it as a guest file).
    #[arg(long, group = "guest")]
    pub kernel: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "")]
    pub append: String,
    /// An initrd for a Linux --kernel, or multiboot modules (repeatable).
    #[arg(long = "initrd", alias = "module", requires = "kernel")]
    pub initrd: Vec<PathBuf>,
    /// A raw image loaded at a guest-physical address: FILE@ADDR.
    #[arg(long, group = "guest")]
    pub image: Option<String>,
    /// Entry point for --image (defaults to the load address); real mode unless --entry-mode.
    #[arg(long, requires = "image")]
    pub entry: Option<String>,
    /// CPU mode at entry for --image.
    #[arg(long, value_enum, requires = "image", default_value = "real")]
    pub entry_mode: EntryModeChoice,
    /// The guest of an existing trace (images, loads, entry registers, CPUID, RAM size) and its
    /// scenario name: what `mmurr verify` re-executes, and how `mmurr` hands a guest it built
    /// (a Linux bzImage) to `mmurr-emu`.
    #[arg(long, group = "guest", value_name = "TRACE")]
    pub guest_from: Option<PathBuf>,
    /// A PC firmware ROM (e.g. SeaBIOS's bios.bin), at the top of 4 GiB and its last 128 KiB
    /// below 1 MiB, started at the reset vector F000:FFF0 in real mode.
    #[arg(long, group = "guest", value_name = "ROM")]
    pub firmware: Option<PathBuf>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory: u64,
}

impl Default for GuestArgs {
    fn default() -> Self {
        GuestArgs {
            scenario: None,
            kernel: None,
            append: String::new(),
            initrd: Vec::new(),
            image: None,
            entry: None,
            entry_mode: EntryModeChoice::Real,
            guest_from: None,
            firmware: None,
            memory: 64,
        }
    }
}

/// A guest ready to record, with the paging modes it needs when they are known.
#[derive(Clone, Debug)]
pub struct BuiltGuest {
    pub spec: GuestSpec,
    pub scenario: Option<String>,
    /// For a built-in scenario: the paging modes it enters (to pick a backend that runs them).
    pub needs: Option<Vec<PagingMode>>,
    /// What to call it in messages: `scenario NAME`, `kernel FILE`, ...
    pub label: String,
    /// What the VMM does to the vCPU, and when (a scenario's).
    pub host_actions: Vec<guests::host_actions::HostActionAt>,
    /// The MMU flavour a scenario is about when it is not TDP (a record's default).
    pub flavour: Option<mmu::Flavour>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("say which guest to run: --scenario NAME, --kernel FILE, --image FILE@ADDR, --firmware ROM or --guest-from TRACE")]
    NoGuest,
    #[error("no built-in scenario {name:?}; `mmurr scenarios` lists them ({known})")]
    UnknownScenario { name: String, known: String },
    #[error("scenario {name} does not build: {why}")]
    Scenario { name: String, why: String },
    #[error("--memory {0}: give 1..={MAX_MEMORY_MIB} MiB")]
    Memory(u64),
    #[error("cannot read {what} {path}: {err}")]
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot load {what}: {err}")]
    Load { what: String, err: LoadError },
    #[error("--image {0:?}: give FILE@ADDR, e.g. boot.bin@0x7c00")]
    ImageSyntax(String),
    #[error("{what}: {value:?} is not an address (decimal, 0x... or ...h hex)")]
    Address { what: &'static str, value: String },
    #[error("{path} is a Linux bzImage: it is loaded with the x86 boot protocol on the `mmurr` side (`mmurr record --kernel {path} --backend emu`), which hands mmurr-emu a guest file")]
    LinuxKernel { path: String },
    #[error("cannot read the guest of the trace {path}: {err}")]
    Trace { path: PathBuf, err: traces::Error },
    #[error("cannot write the guest file {path}: {err}")]
    WriteGuest { path: PathBuf, err: traces::Error },
}

impl GuestArgs {
    /// Guest RAM in bytes, checked.
    pub fn ram_size(&self) -> Result<u64, GuestError> {
        if self.memory == 0 || self.memory > MAX_MEMORY_MIB {
            return Err(GuestError::Memory(self.memory));
        }
        Ok(self.memory << 20)
    }

    /// The guest. `cpuid`, when the engine's table is known, is what a scenario adapts to and
    /// what a guest without its own table gets; without it (kvm, which installs its own), the
    /// scenario is built for the default feature set.
    ///
    /// A Linux bzImage is refused here ([`GuestError::LinuxKernel`]): its loader is on the
    /// `mmurr` side (see [`is_bzimage`]).
    pub fn build(&self, cpuid: Option<&[CpuidEntry]>) -> Result<BuiltGuest, GuestError> {
        let mut built = self.build_spec(cpuid)?;
        if let Some(table) = cpuid {
            if built.spec.cpuid.is_empty() {
                built.spec.cpuid = table.to_vec();
            }
        }
        Ok(built)
    }

    fn build_spec(&self, cpuid: Option<&[CpuidEntry]>) -> Result<BuiltGuest, GuestError> {
        if let Some(path) = &self.guest_from {
            let (spec, scenario) = read_guest_file(path)?;
            return Ok(BuiltGuest {
                label: format!("the guest of {}", path.display()),
                spec,
                scenario,
                needs: None,
                host_actions: Vec::new(),
                flavour: None,
            });
        }
        if let Some(name) = &self.scenario {
            let features = match cpuid {
                Some(t) => guests::CpuFeatures::from_cpuid(t),
                None => guests::CpuFeatures::default(),
            };
            let s = guests::try_scenario(name, &features)
                .map_err(|e| GuestError::Scenario {
                    name: name.clone(),
                    why: e.to_string(),
                })?
                .ok_or_else(|| GuestError::UnknownScenario {
                    name: name.clone(),
                    known: guests::scenario_names().join(", "),
                })?;
            return Ok(BuiltGuest {
                spec: s.guest,
                scenario: Some(s.name.to_string()),
                needs: Some(s.needs),
                label: format!("scenario {}", s.name),
                host_actions: s.host_actions,
                flavour: s.flavour,
            });
        }
        let ram = self.ram_size()?;
        if let Some(k) = &self.kernel {
            let bytes = read("the kernel", k)?;
            if is_bzimage(&bytes) {
                return Err(GuestError::LinuxKernel {
                    path: k.display().to_string(),
                });
            }
            let mut modules = Vec::new();
            for m in &self.initrd {
                modules.push((m.display().to_string(), read("the module", m)?));
            }
            let mut spec = guests::loader::load_multiboot(
                &bytes,
                &k.display().to_string(),
                &self.append,
                &modules,
                ram,
            )
            .map_err(|err| GuestError::Load {
                what: format!("the multiboot kernel {}", k.display()),
                err,
            })?;
            spec.origin = format!("multiboot {}", k.display());
            return Ok(BuiltGuest {
                spec,
                scenario: None,
                needs: None,
                label: format!("kernel {}", k.display()),
                host_actions: Vec::new(),
                flavour: None,
            });
        }
        if let Some(f) = &self.firmware {
            let rom = read("the firmware", f)?;
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let spec = guests::loader::load_firmware(&rom, &name, ram).map_err(|err| {
                GuestError::Load {
                    what: format!("the firmware {}", f.display()),
                    err,
                }
            })?;
            return Ok(BuiltGuest {
                spec,
                scenario: None,
                needs: None,
                label: format!("firmware {}", f.display()),
                host_actions: Vec::new(),
                flavour: None,
            });
        }
        if let Some(i) = &self.image {
            let (file, addr) = i
                .rsplit_once('@')
                .ok_or_else(|| GuestError::ImageSyntax(i.clone()))?;
            let gpa = parse_addr("--image load address", addr)?;
            let entry = match &self.entry {
                Some(e) => parse_addr("--entry", e)?,
                None => gpa,
            };
            let bytes = read("the image", Path::new(file))?;
            let mut spec =
                guests::loader::load_raw(&bytes, gpa, entry, self.entry_mode.into(), ram).map_err(
                    |err| GuestError::Load {
                        what: format!("the raw image {file} at {gpa:#x}"),
                        err,
                    },
                )?;
            spec.origin = format!("raw {file}@{gpa:#x}");
            return Ok(BuiltGuest {
                label: spec.origin.clone(),
                spec,
                scenario: None,
                needs: None,
                host_actions: Vec::new(),
                flavour: None,
            });
        }
        Err(GuestError::NoGuest)
    }
}

/// A Linux kernel image with the x86 boot protocol's setup header: "HdrS" at offset 0x202
/// (Documentation/arch/x86/boot.rst, "The real-mode kernel header").
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS")
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, GuestError> {
    std::fs::read(path).map_err(|err| GuestError::Read {
        what,
        path: path.to_path_buf(),
        err,
    })
}

/// `0x7c00`, `7c00h`, `31744` or `1_048_576`.
pub fn parse_addr(what: &'static str, s: &str) -> Result<u64, GuestError> {
    let t = s.trim().replace('_', "");
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(h) = t.strip_suffix('h') {
        u64::from_str_radix(h, 16)
    } else {
        t.parse::<u64>()
    };
    v.map_err(|_| GuestError::Address {
        what,
        value: s.to_string(),
    })
}

/// The guest spec and scenario name in a trace's header, unchanged (a CPUID table in it is what
/// the guest sees, whichever engine recorded it).
pub fn read_guest_file(path: &Path) -> Result<(GuestSpec, Option<String>), GuestError> {
    let reader = traces::Reader::open(path).map_err(|err| GuestError::Trace {
        path: path.to_path_buf(),
        err,
    })?;
    let h = reader.header();
    Ok((h.guest.clone(), h.scenario.clone()))
}

/// A guest file: a trace with only a header (the guest and its scenario name), which
/// `--guest-from` reads. This is how `mmurr` hands a guest that only it can build (a Linux
/// bzImage, loaded with linux-loader, which mmurr-emu must not link) to mmurr-emu.
pub fn write_guest_file(
    path: &Path,
    spec: &GuestSpec,
    scenario: Option<String>,
) -> Result<(), GuestError> {
    let header = Header {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        guest: spec.clone(),
        scenario,
        ..Header::default()
    };
    let wrap = |err| GuestError::WriteGuest {
        path: path.to_path_buf(),
        err,
    };
    let w = traces::Writer::create(path, &header).map_err(wrap)?;
    w.finish().map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("t", "0x7c00").unwrap(), 0x7c00);
        assert_eq!(parse_addr("t", "7c00h").unwrap(), 0x7c00);
        assert_eq!(parse_addr("t", "1_048_576").unwrap(), 1 << 20);
        assert!(parse_addr("t", "zz").is_err());
    }

    #[test]
    fn a_guest_file_gives_back_the_guest() {
        let built = GuestArgs {
            scenario: Some("pae-toggle".into()),
            ..GuestArgs::default()
        }
        .build(None)
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.mmurr");
        write_guest_file(&path, &built.spec, built.scenario.clone()).unwrap();
        let again = GuestArgs {
            guest_from: Some(path),
            ..GuestArgs::default()
        }
        .build(None)
        .unwrap();
        assert_eq!(again.spec, built.spec);
        assert_eq!(again.scenario.as_deref(), Some("pae-toggle"));
    }

    #[test]
    fn bzimages_are_recognised_by_their_setup_header() {
        let mut b = vec![0u8; 0x400];
        assert!(!is_bzimage(&b));
        b[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&b));
        assert!(!is_bzimage(&b[..0x204]));
    }
}
