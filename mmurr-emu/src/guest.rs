//! Building the `GuestSpec` from the command line, as `mmurr record` does.

use crate::cli::GuestArgs;
use anyhow::{anyhow, bail, Context};
use traces::{CpuidEntry, GuestSpec};

/// The guest and, for a built-in scenario, its name.
pub fn build(a: &GuestArgs, cpuid: &[CpuidEntry]) -> anyhow::Result<(GuestSpec, Option<String>)> {
    if let Some(path) = &a.guest_from {
        return from_trace(path);
    }
    if let Some(name) = &a.scenario {
        let features = guests::CpuFeatures::from_cpuid(cpuid);
        let s = guests::try_scenario(name, &features)
            .map_err(|e| anyhow!("scenario {name} does not build: {e}"))?
            .ok_or_else(|| {
                anyhow!(
                    "unknown scenario {name:?}; built-in scenarios: {}",
                    guests::scenario_names().join(", ")
                )
            })?;
        let mut g = s.guest;
        if g.cpuid.is_empty() {
            g.cpuid = cpuid.to_vec();
        }
        return Ok((g, Some(name.clone())));
    }
    if a.memory == 0 || a.memory > 4096 {
        bail!("--memory {}: give 1..=4096 MiB", a.memory);
    }
    let ram = a.memory << 20;
    if let Some(k) = &a.kernel {
        let elf =
            std::fs::read(k).with_context(|| format!("reading the kernel {}", k.display()))?;
        let mut modules = Vec::new();
        for m in &a.modules {
            let bytes =
                std::fs::read(m).with_context(|| format!("reading the module {}", m.display()))?;
            modules.push((m.display().to_string(), bytes));
        }
        let mut g = guests::loader::load_multiboot(
            &elf,
            &k.display().to_string(),
            &a.append,
            &modules,
            ram,
        )
        .with_context(|| format!("loading the multiboot kernel {}", k.display()))?;
        g.origin = format!("multiboot {}", k.display());
        if g.cpuid.is_empty() {
            g.cpuid = cpuid.to_vec();
        }
        return Ok((g, None));
    }
    if let Some(i) = &a.image {
        let (file, addr) = i
            .rsplit_once('@')
            .ok_or_else(|| anyhow!("--image {i}: give FILE@ADDR, e.g. boot.bin@0x7c00"))?;
        let gpa = parse_addr(addr).with_context(|| format!("--image {i}: load address"))?;
        let entry = match &a.entry {
            Some(e) => parse_addr(e).context("--entry")?,
            None => gpa,
        };
        let mode = match a.entry_mode.as_str() {
            "real" => guests::loader::EntryMode::Real,
            "protected" => guests::loader::EntryMode::Protected,
            "long" => guests::loader::EntryMode::Long,
            m => bail!("--entry-mode {m}: give real, protected or long"),
        };
        let bytes = std::fs::read(file).with_context(|| format!("reading the image {file}"))?;
        let mut g = guests::loader::load_raw(&bytes, gpa, entry, mode, ram)
            .with_context(|| format!("loading the raw image {file}"))?;
        g.origin = format!("raw {file}@{gpa:#x}");
        if g.cpuid.is_empty() {
            g.cpuid = cpuid.to_vec();
        }
        return Ok((g, None));
    }
    bail!("say which guest to run: --scenario NAME, --kernel ELF or --image FILE@ADDR")
}

/// The guest spec and scenario name in a trace's header, unchanged: its CPUID table (if any)
/// is what the guest sees here too, whichever engine recorded it.
fn from_trace(path: &std::path::Path) -> anyhow::Result<(GuestSpec, Option<String>)> {
    let reader = traces::Reader::open(path)
        .with_context(|| format!("--guest-from: cannot read the trace {}", path.display()))?;
    let h = reader.header();
    Ok((h.guest.clone(), h.scenario.clone()))
}

/// `0x7c00`, `7c00h` or `31744`.
fn parse_addr(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().replace('_', "");
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(h) = t.strip_suffix('h') {
        u64::from_str_radix(h, 16)
    } else {
        t.parse::<u64>()
    };
    v.map_err(|_| anyhow!("{s:?} is not an address (use 0x... for hex)"))
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("0x7c00").unwrap(), 0x7c00);
        assert_eq!(parse_addr("7c00h").unwrap(), 0x7c00);
        assert_eq!(parse_addr("1_048_576").unwrap(), 1 << 20);
        assert!(parse_addr("zz").is_err());
    }
}
