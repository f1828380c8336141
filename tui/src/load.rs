//! Loading in the background: the event index first (only event-holding chunks are read),
//! then the MMU history (every policy over every control-register write). The UI is up and
//! navigable by step before either finishes; it shows the progress these messages carry.

use crate::events::EventIndex;
use crate::history::MmuHistory;
use mmu::Flavour;
use replayer::Timeline;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};
use traces::Event;
use traces::Reader;

/// What is being loaded, and how far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Events,
    Mmu,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Events => "reading events",
            Stage::Mmu => "modelling MMU policies",
        }
    }
}

impl Progress {
    pub fn percent(&self) -> u16 {
        self.done
            .saturating_mul(100)
            .checked_div(self.total)
            .map_or(100, |p| p.min(100) as u16)
    }
}

pub enum LoadMsg {
    Progress(Progress),
    /// Events in file order with their vCPUs, sent as they are read so the list grows
    /// while loading.
    EventBatch(Vec<(Event, u32)>),
    /// Every event has been sent; damaged chunks that were skipped.
    EventsDone(Vec<String>),
    Mmu(Box<MmuHistory>),
    /// The MMU history could not be built (the events stay usable).
    Failed(String),
}

/// Starts loading `path` on a thread of its own (with its own reader).
pub fn spawn(path: PathBuf, flavour: Flavour) -> Receiver<LoadMsg> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new().name("mmurr-load".into()).spawn({
        let tx = tx.clone();
        move || load(&path, flavour, &tx)
    });
    if let Err(e) = spawned {
        let _ = tx.send(LoadMsg::Failed(format!(
            "cannot start the loader thread: {e}"
        )));
    }
    rx
}

/// Decoded chunks the loader's reader keeps (the trace library keeps 8; the browser's own
/// reader does, for fast steps back): a busy trace's chunk decodes to several megabytes, and
/// the loader reads the event chunks once, then replays forward for the MMU model.
const CACHE_CHUNKS: usize = 2;

/// How often the event list is sent on while it loads.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Events sent at once at most: a batch is decoded events (112 bytes each and their strings)
/// until the UI encodes them, and a fast disk reads 200 000 in `BATCH_EVERY`.
const BATCH_MAX: usize = 16_384;

/// A failed send means the UI has gone (quit, or a benchmark dropped it): stop working.
fn load(path: &PathBuf, flavour: Flavour, tx: &Sender<LoadMsg>) {
    let mut reader = match Reader::open(path) {
        Ok(mut r) => {
            r.set_cache_chunks(CACHE_CHUNKS);
            r
        }
        Err(e) => {
            let _ = tx.send(LoadMsg::Failed(e.to_string()));
            return;
        }
    };
    let mut batch: Vec<(Event, u32)> = Vec::new();
    // The loader keeps only the CR writes (for the MMU model); the events move to the UI.
    let mut writes = Vec::new();
    let mut sent = Instant::now();
    let errors = EventIndex::read(&mut reader, |mut new, done, total| {
        writes.extend(
            new.iter()
                .filter_map(|(e, _)| Some((e.clone(), history::Cause::of(&e.kind)?))),
        );
        batch.append(&mut new);
        // Batches a few times a second: the list grows visibly without flooding the UI.
        if sent.elapsed() < BATCH_EVERY && batch.len() < BATCH_MAX && done < total {
            return true;
        }
        sent = Instant::now();
        let progress = LoadMsg::Progress(Progress {
            stage: Stage::Events,
            done,
            total,
        });
        tx.send(LoadMsg::EventBatch(std::mem::take(&mut batch)))
            .is_ok()
            && tx.send(progress).is_ok()
    });
    let Some(errors) = errors else { return };
    // It grew by doubling; the MMU model runs beside it, so give back the slack (~40%).
    writes.shrink_to_fit();
    if !batch.is_empty() && tx.send(LoadMsg::EventBatch(batch)).is_err() {
        return;
    }
    if tx.send(LoadMsg::EventsDone(errors)).is_err() {
        return;
    }
    let mut timeline = match Timeline::new(reader) {
        Ok(t) => t,
        Err(e) => {
            let _ = tx.send(LoadMsg::Failed(e.to_string()));
            return;
        }
    };
    let history = MmuHistory::build(&mut timeline, writes, flavour, |done, total| {
        tx.send(LoadMsg::Progress(Progress {
            stage: Stage::Mmu,
            done,
            total,
        }))
        .is_ok()
    });
    let _ = match history {
        Ok(Some(h)) => tx.send(LoadMsg::Mmu(Box::new(h))),
        Ok(None) => Ok(()),
        Err(e) => tx.send(LoadMsg::Failed(format!("MMU model: {e}"))),
    };
}
