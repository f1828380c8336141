//! What this host's KVM is and what it can run, found without running a guest.

use kvm_ioctls::{Cap, Kvm};
use traces::{BackendInfo, BackendKind, PagingMode};

/// The guest modes the kvm backend can run on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSupport {
    pub real: bool,
    pub unpaged: bool,
    pub bits32: bool,
    pub pae: bool,
    pub long_mode: bool,
}

impl ModeSupport {
    pub fn runs(&self, mode: PagingMode) -> bool {
        match mode {
            PagingMode::Real => self.real,
            PagingMode::Unpaged => self.unpaged,
            PagingMode::Bits32 => self.bits32,
            PagingMode::Pae => self.pae,
            PagingMode::Level4 | PagingMode::Level5 => self.long_mode,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HostReport {
    /// `Err(why)` when /dev/kvm is missing or cannot be opened.
    pub usable: Result<(), String>,
    pub api_version: i32,
    /// Capabilities the backend uses or reports, with whether the host has them.
    pub caps: Vec<(&'static str, bool)>,
    pub host_kernel: String,
    pub cpu_vendor: String,
    pub cpu_model_name: String,
    pub cpu_family: u32,
    pub cpu_model: u32,
    pub cpu_stepping: u32,
    /// A PVM (pagetable-based virtual machine) KVM, which uses shadow paging.
    pub pvm: bool,
    /// How `pvm` was decided.
    pub pvm_evidence: String,
    /// `/sys/module/kvm/parameters` values that matter to the MMU.
    pub kvm_params: Vec<(String, String)>,
    pub can_run: ModeSupport,
}

impl HostReport {
    pub fn has_cap(&self, name: &str) -> bool {
        self.caps.iter().any(|&(n, v)| n == name && v)
    }

    /// Why this host cannot run `mode`, or `None` if it can.
    pub fn cannot_run(&self, mode: PagingMode) -> Option<String> {
        if let Err(why) = &self.usable {
            return Some(format!("/dev/kvm is not usable: {why}"));
        }
        if self.can_run.runs(mode) {
            return None;
        }
        Some(match mode {
            PagingMode::Bits32 | PagingMode::Pae if self.pvm => format!(
                "this host's KVM (a PVM variant with shadow paging) cannot run {} paging guests",
                mode.name()
            ),
            _ => format!("this host's KVM cannot run {} guests", mode.name()),
        })
    }

    /// Why this host's KVM refuses host action `action` on a vCPU that has run, or `None`
    /// when it performs it: since Linux 5.16 (feb627e8d6f6, relaxed to an identical table by
    /// c6617c61e8fe) KVM_SET_CPUID2 cannot change a vCPU's CPUID after KVM_RUN.
    pub fn refuses(&self, action: &traces::HostAction) -> Option<String> {
        let release: Vec<u32> = self
            .host_kernel
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .filter_map(|n| n.parse().ok())
            .collect();
        let since_5_16 = release.as_slice() >= [5, 16].as_slice();
        match action {
            traces::HostAction::SetCpuid(_) if since_5_16 => Some(format!(
                "Linux {} refuses KVM_SET_CPUID2 once the vCPU has run (since 5.16, feb627e8d6f6)",
                self.host_kernel
            )),
            _ => None,
        }
    }

    /// One line: engine, flavour and what it runs.
    pub fn engine(&self) -> String {
        let flavour = if self.pvm {
            " (PVM, shadow paging)"
        } else {
            ""
        };
        format!("KVM api {}{flavour}", self.api_version)
    }

    pub fn backend_info(&self) -> BackendInfo {
        let mut facts: Vec<(String, String)> = vec![
            ("pvm".into(), self.pvm.to_string()),
            ("pvm_evidence".into(), self.pvm_evidence.clone()),
        ];
        facts.extend(
            self.caps
                .iter()
                .map(|&(n, v)| (n.to_string(), v.to_string())),
        );
        facts.extend(self.kvm_params.iter().cloned());
        facts.push(("runs".into(), self.runs_summary()));
        BackendInfo {
            kind: BackendKind::Kvm,
            engine: self.engine(),
            host_kernel: self.host_kernel.clone(),
            cpu_vendor: self.cpu_vendor.clone(),
            cpu_model_name: self.cpu_model_name.clone(),
            cpu_family: self.cpu_family,
            cpu_model: self.cpu_model,
            cpu_stepping: self.cpu_stepping,
            kvm_facts: facts,
        }
    }

    /// How this host's KVM maps guest memory, and why: PVM and hosts with EPT/NPT off use
    /// shadow paging.
    pub fn flavour(&self) -> (mmu::Flavour, String) {
        if self.pvm {
            return (
                mmu::Flavour::Shadow,
                format!("{}: PVM runs guests on shadow paging", self.pvm_evidence),
            );
        }
        let off = self.kvm_params.iter().find(|(n, v)| {
            (n == "kvm_intel.ept" || n == "kvm_amd.npt") && v.starts_with(['N', '0'])
        });
        match off {
            Some((n, v)) => (mmu::Flavour::Shadow, format!("{n}={v}")),
            None => (
                mmu::Flavour::Tdp,
                self.kvm_params
                    .iter()
                    .find(|(n, _)| n == "kvm_intel.ept" || n == "kvm_amd.npt")
                    .map_or_else(
                        || "two-dimensional paging assumed".into(),
                        |(n, v)| format!("{n}={v}"),
                    ),
            ),
        }
    }

    /// The module parameters that shape KVM's MMU: `kvm.tdp_mmu`, `kvm_intel.ept`,
    /// `kvm_amd.npt`, where present.
    pub fn mmu_params(&self) -> Vec<(String, String)> {
        self.kvm_params
            .iter()
            .filter(|(n, _)| MMU_PARAMS.contains(&n.as_str()))
            .cloned()
            .collect()
    }

    /// e.g. `real unpaged 4-level` .
    pub fn runs_summary(&self) -> String {
        [
            PagingMode::Real,
            PagingMode::Unpaged,
            PagingMode::Bits32,
            PagingMode::Pae,
            PagingMode::Level4,
        ]
        .into_iter()
        .filter(|&m| self.can_run.runs(m))
        .map(PagingMode::name)
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// Probes the host: /dev/kvm, API version, capabilities, CPU, PVM. Fast: no guest is run.
pub fn probe() -> HostReport {
    let (usable, api_version, caps) = match Kvm::new() {
        Ok(kvm) => {
            let mut caps: Vec<(&str, bool)> = CAPS
                .iter()
                .map(|&(name, cap)| (name, kvm.check_extension(cap)))
                .collect();
            // KVM_CAP_SREGS2 (200) has no kvm-ioctls `Cap` variant, nor does
            // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, which answers with the flags it takes.
            caps.push(("sregs2", kvm.check_extension_raw(200) > 0));
            let manual =
                kvm.check_extension_raw(kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.into());
            caps.push((
                "manual_dirty_log_protect2",
                manual > 0
                    && manual as u32 & kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE != 0,
            ));
            // KVM_CAP_DIRTY_LOG_RING answers with the largest ring it takes, in bytes.
            caps.push((
                "dirty_log_ring",
                kvm.check_extension_raw(kvm_bindings::KVM_CAP_DIRTY_LOG_RING.into()) > 0,
            ));
            (Ok(()), kvm.get_api_version(), caps)
        }
        Err(e) => (Err(open_error(e)), 0, Vec::new()),
    };
    let cpu = cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let (pvm, pvm_evidence) = detect_pvm();
    let ok = usable.is_ok();
    HostReport {
        usable,
        api_version,
        caps,
        host_kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu_vendor: cpu.vendor,
        cpu_model_name: cpu.model_name,
        cpu_family: cpu.family,
        cpu_model: cpu.model,
        cpu_stepping: cpu.stepping,
        pvm,
        pvm_evidence,
        kvm_params: kvm_params(),
        // PVM runs guests through its own shadow page tables for 64-bit guests only; legacy
        // 32-bit and PAE paging end in KVM_EXIT_SHUTDOWN (measured on the development hosts).
        can_run: ModeSupport {
            real: ok,
            unpaged: ok,
            bits32: ok && !pvm,
            pae: ok && !pvm,
            long_mode: ok,
        },
    }
}

const CAPS: &[(&str, Cap)] = &[
    ("sync_regs", Cap::SyncRegs),
    ("set_guest_debug", Cap::SetGuestDebug),
    ("immediate_exit", Cap::ImmediateExit),
    ("x86_user_space_msr", Cap::X86UserSpaceMsr),
    ("irqchip", Cap::Irqchip),
    ("pit2", Cap::Pit2),
    ("xcrs", Cap::Xcrs),
    ("vcpu_events", Cap::VcpuEvents),
    ("ext_cpuid", Cap::ExtCpuid),
    // Several vCPUs: KVM_GET_MP_STATE says which can run.
    ("mp_state", Cap::MpState),
];

fn open_error(e: kvm_ioctls::Error) -> String {
    let path = std::path::Path::new("/dev/kvm");
    if !path.exists() {
        "/dev/kvm does not exist (no KVM on this host, or not passed into this container)".into()
    } else if e.errno() == libc::EACCES {
        "permission denied opening /dev/kvm (add yourself to the `kvm` group)".into()
    } else {
        format!("opening /dev/kvm failed: {e}")
    }
}

fn detect_pvm() -> (bool, String) {
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return (true, "/sys/module/kvm_pvm is loaded".into());
    }
    for m in ["kvm_intel", "kvm_amd"] {
        if std::path::Path::new(&format!("/sys/module/{m}")).exists() {
            return (false, format!("/sys/module/{m} is loaded"));
        }
    }
    (false, "no kvm_pvm module found".into())
}

/// Module parameters that shape the MMU (see [`HostReport::mmu_params`]).
const MMU_PARAMS: [&str; 3] = ["kvm.tdp_mmu", "kvm_intel.ept", "kvm_amd.npt"];

fn kvm_params() -> Vec<(String, String)> {
    [
        "kvm.tdp_mmu",
        "kvm.flush_on_reuse",
        "kvm.mmio_caching",
        "kvm.nx_huge_pages",
        "kvm_intel.ept",
        "kvm_amd.npt",
    ]
    .into_iter()
    .filter_map(|p| {
        let (module, param) = p.split_once('.')?;
        let v = std::fs::read_to_string(format!("/sys/module/{module}/parameters/{param}")).ok()?;
        Some((p.to_string(), v.trim().to_string()))
    })
    .collect()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[derive(Default, Debug, PartialEq)]
struct CpuInfo {
    vendor: String,
    model_name: String,
    family: u32,
    model: u32,
    stepping: u32,
}

/// The first processor's identification from /proc/cpuinfo text.
fn cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "vendor_id" => info.vendor = v.to_string(),
            "model name" => info.model_name = v.to_string(),
            "cpu family" => info.family = v.parse().unwrap_or(0),
            "model" => info.model = v.parse().unwrap_or(0),
            "stepping" => info.stepping = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_processor_of_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n\
                    model name\t: Intel(R) Xeon(R) Platinum\nstepping\t: 8\n\nprocessor\t: 1\n\
                    vendor_id\t: Other\n";
        let c = cpuinfo(text);
        assert_eq!(c.vendor, "GenuineIntel");
        assert_eq!((c.family, c.model, c.stepping), (6, 143, 8));
        assert_eq!(c.model_name, "Intel(R) Xeon(R) Platinum");
    }

    #[test]
    fn pvm_hosts_refuse_legacy_paging_with_a_reason() {
        let mut r = probe();
        r.usable = Ok(());
        r.pvm = true;
        r.can_run = ModeSupport {
            real: true,
            unpaged: true,
            bits32: false,
            pae: false,
            long_mode: true,
        };
        assert!(r.cannot_run(PagingMode::Level4).is_none());
        let why = r.cannot_run(PagingMode::Pae).unwrap();
        assert!(why.contains("PVM") && why.contains("pae"), "{why}");
        assert_eq!(r.runs_summary(), "real unpaged 4-level");
    }
}
