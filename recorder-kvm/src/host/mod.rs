//! Host truth: what this host's own KVM does while mmurr records a guest on it. Its MMU facts
//! go into the trace header; its `kvm`/`kvmmmu` tracepoint events (roots built and reused,
//! zaps, syncs, software walks, faults, injected exceptions, MSR writes, emulated
//! instructions) are read from a trace instance of our own and attributed to steps, for
//! `mmurr check --host` to hold the model against.

mod attribute;
mod clock;
mod format;
mod ring;
mod tracefs;

use crate::probe::HostReport;
use attribute::Attribution;
use recorder::{HostEventsChoice, HostWatch};
use traces::{HostEventsStatus, HostMmu, HostRecord};

pub use format::TRACEPOINTS;

/// The kvm backend's [`HostWatch`].
pub struct HostEvents {
    facts: HostMmu,
    session: Option<(tracefs::Instance, Attribution)>,
}

impl HostEvents {
    pub fn new(report: &HostReport) -> HostEvents {
        let (flavour, evidence) = report.flavour();
        HostEvents {
            facts: HostMmu {
                flavour: flavour.name().to_string(),
                flavour_evidence: evidence,
                params: report.mmu_params(),
                events: HostEventsStatus::Off,
            },
            session: None,
        }
    }
}

impl HostWatch for HostEvents {
    fn start(&mut self, choice: HostEventsChoice) -> HostMmu {
        self.session = None;
        self.facts.events = match choice {
            HostEventsChoice::Off => HostEventsStatus::Off,
            HostEventsChoice::Auto | HostEventsChoice::On => match tracefs::Instance::create() {
                Ok(instance) => {
                    let status = HostEventsStatus::Recorded {
                        tracepoints: instance.tracepoints.clone(),
                    };
                    self.session = Some((instance, Attribution::new(clock::now())));
                    status
                }
                Err(why) => HostEventsStatus::Unavailable(why),
            },
        };
        self.facts.clone()
    }

    fn step_ended(&mut self, step: u64) {
        if let Some((_, a)) = &mut self.session {
            a.step_ended(step, clock::now());
        }
    }

    fn take(&mut self) -> Result<Vec<HostRecord>, String> {
        let Some((instance, a)) = &mut self.session else {
            return Ok(Vec::new());
        };
        match instance.read() {
            Ok(events) => Ok(a.take(events)),
            Err(e) => {
                self.session = None;
                Err(e)
            }
        }
    }
}
