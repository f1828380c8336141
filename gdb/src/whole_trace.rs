//! What the replay server reads from the whole trace — every event, every modelled policy's
//! MMU history, the host's own events — read on a thread of its own from the moment the trace
//! is opened, so gdb connects, reads registers and steps at once. On a Linux boot (1.4 G steps,
//! 535 k events, 18 k CR3 loads) this reading took half a minute before gdb could connect; now
//! only the first command that needs it (`monitor role`, `check`, `when`, catchpoints...) waits
//! for what is left of it.

use replayer::{Analysis, HostHistory, Retain, Timeline};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use traces::{Event, Record};

/// The whole trace's events and models.
pub struct WholeTrace {
    pub analysis: Analysis,
    /// Every event, in order (by step, then id).
    pub events: Vec<Event>,
    /// The recording host's own KVM events (`monitor host`).
    pub host: HostHistory,
}

/// A [`WholeTrace`] being read in the background.
pub struct Background {
    pending: Mutex<Option<Receiver<Result<WholeTrace, String>>>>,
    done: OnceLock<Result<WholeTrace, String>>,
}

impl Background {
    /// Starts reading `path` on a new thread.
    pub fn start(path: &Path) -> Background {
        let (tx, rx) = mpsc::channel();
        let path: PathBuf = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read(&path).map_err(|e| format!("{e:#}")));
        });
        Background {
            pending: Mutex::new(Some(rx)),
            done: OnceLock::new(),
        }
    }

    /// The whole trace, waiting for the reading to finish if it has not.
    pub fn get(&self) -> Result<&WholeTrace, String> {
        self.done
            .get_or_init(|| {
                let rx = self.pending.lock().ok().and_then(|mut p| p.take());
                match rx.map(|rx| rx.recv()) {
                    Some(Ok(whole)) => whole,
                    _ => Err("reading the whole trace ended without an answer".into()),
                }
            })
            .as_ref()
            .map_err(|e| format!("reading the whole trace failed: {e}"))
    }
}

/// One pass over the records for the events and the host's events, then every policy over
/// the control-register writes among the events.
fn read(path: &Path) -> anyhow::Result<WholeTrace> {
    let mut timeline = Timeline::open(path)?;
    let flavour = mmu::Flavour::parse(&timeline.header().mmu_flavour).unwrap_or(mmu::Flavour::Tdp);
    let mut events = Vec::new();
    let mut writes = Vec::new();
    let mut host = Vec::new();
    for record in timeline.reader().records() {
        match record? {
            Record::Event(e) => {
                if let Some(c) = history::Cause::of(&e.kind) {
                    writes.push((e.clone(), c));
                }
                events.push(e);
            }
            Record::Host(h) => host.push(h),
            _ => {}
        }
    }
    let analysis = Analysis::from_writes(
        &mut timeline,
        writes,
        &[],
        flavour,
        Retain::Everything,
        |_, _| true,
    )?
    .ok_or_else(|| anyhow::anyhow!("the analysis gave up"))?;
    let host = HostHistory::new(host, replayer::host_layout(timeline.header()));
    Ok(WholeTrace {
        analysis,
        events,
        host,
    })
}
