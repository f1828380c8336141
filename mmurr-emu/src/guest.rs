//! Building the `GuestSpec` from the command line, as `mmurr record` does.

use crate::cli::GuestArgs;
use anyhow::{anyhow, bail};
use traces::{CpuidEntry, GuestSpec};

/// The guest and, for a built-in scenario, its name.
pub fn build(a: &GuestArgs, cpuid: &[CpuidEntry]) -> anyhow::Result<(GuestSpec, Option<String>)> {
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
        let _ = (ram, k);
        bail!("--kernel needs guests::loader, which this build of mmurr-emu does not have yet");
    }
    if let Some(i) = &a.image {
        let _ = i;
        bail!("--image needs guests::loader, which this build of mmurr-emu does not have yet");
    }
    bail!("say which guest to run: --scenario NAME, --kernel ELF or --image FILE@ADDR")
}
