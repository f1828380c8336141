//! A trace instance of our own under `/sys/kernel/tracing/instances/` (so no other user of
//! tracefs is disturbed): the kvm/kvmmmu tracepoints of [`format::TRACEPOINTS`] enabled for one
//! thread (`set_event_pid`), stamped with the TSC, read page by page from each CPU's
//! `trace_pipe_raw` without blocking. The instance is removed when dropped.

use super::clock;
use super::format::{self, EventFormat};
use super::ring;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use traces::HostEvent;

const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU buffer: far more than the events of the steps between two reads.
const BUFFER_KB: u32 = 4096;

pub struct Instance {
    dir: PathBuf,
    pipes: Vec<File>,
    formats: HashMap<u16, EventFormat>,
    /// The tracepoints enabled, as `group/name`.
    pub tracepoints: Vec<String>,
    page: Vec<u8>,
}

/// tracefs, mounting it where it is not yet (as root).
fn tracefs() -> Result<PathBuf, String> {
    let root = Path::new(TRACEFS);
    if root.join("instances").is_dir() {
        return Ok(root.to_path_buf());
    }
    if !root.is_dir() {
        return Err(format!(
            "{TRACEFS} does not exist (a kernel without tracefs)"
        ));
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted && root.join("instances").is_dir() {
        Ok(root.to_path_buf())
    } else {
        Err(format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed (it needs root: \
             `mount -t tracefs nodev {TRACEFS}`)"
        ))
    }
}

/// A tracefs text file. Read in one large read: some (events/header_page) answer a small
/// first read, as `fs::read_to_string` makes, with a cut line and then end of file.
fn read(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// The calling thread's id, from `/proc/thread-self` (`PID/task/TID`).
fn thread_id() -> Result<u32, String> {
    let link = fs::read_link("/proc/thread-self")
        .map_err(|e| format!("reading /proc/thread-self: {e}"))?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self -> {} names no thread", link.display()))
}

impl Instance {
    /// Creates the instance and enables the tracepoints for the calling thread.
    pub fn create() -> Result<Instance, String> {
        let root = tracefs()?;
        let events = root.join("events");
        for group in ["kvm", "kvmmmu"] {
            if !events.join(group).is_dir() {
                return Err(format!(
                    "this kernel has no `{group}` trace events ({} is missing)",
                    events.join(group).display()
                ));
            }
        }
        ring::check_header_page(&read(&events.join("header_page")).unwrap_or_default())?;
        let tid = thread_id()?;
        let dir = root
            .join("instances")
            .join(format!("mmurr-{}-{tid}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(format!(
                    "creating a trace instance ({}) was refused: host events need root",
                    dir.display()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "creating the trace instance {}: {e}",
                    dir.display()
                ))
            }
        }
        // From here on, dropping the instance removes the directory.
        let mut instance = Instance {
            dir,
            pipes: Vec::new(),
            formats: HashMap::new(),
            tracepoints: Vec::new(),
            page: Vec::new(),
        };
        instance.configure(&events, tid)?;
        Ok(instance)
    }

    fn configure(&mut self, events: &Path, tid: u32) -> Result<(), String> {
        let dir = self.dir.clone();
        write(&dir.join("trace_clock"), clock::TRACE_CLOCK).map_err(|e| {
            format!(
                "the trace clock {} is not available here ({e})",
                clock::TRACE_CLOCK
            )
        })?;
        write(&dir.join("buffer_size_kb"), &BUFFER_KB.to_string())?;
        write(&dir.join("set_event_pid"), &tid.to_string())?;
        let mut skipped = Vec::new();
        for t in format::TRACEPOINTS {
            let Some(text) = read(&events.join(t).join("format")) else {
                continue; // not a tracepoint of this kernel
            };
            match format::parse(t, &text) {
                Ok(f) => {
                    let event = dir.join("events").join(t);
                    if let Some((_, filter)) = format::FILTERS.iter().find(|(n, _)| n == t) {
                        write(&event.join("filter"), filter)?;
                    }
                    write(&event.join("enable"), "1")?;
                    self.tracepoints.push(t.to_string());
                    self.formats.insert(f.id, f);
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        if self.tracepoints.is_empty() {
            return Err(format!(
                "none of the kvm/kvmmmu tracepoints can be read here: {}",
                skipped.join("; ")
            ));
        }
        let page_kb = read(&dir.join("buffer_subbuf_size_kb"))
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4);
        self.page = vec![0; page_kb * 1024];
        let per_cpu = dir.join("per_cpu");
        let mut cpus: Vec<PathBuf> = fs::read_dir(&per_cpu)
            .map_err(|e| format!("listing {}: {e}", per_cpu.display()))?
            .filter_map(|e| e.ok().map(|e| e.path().join("trace_pipe_raw")))
            .collect();
        cpus.sort();
        for pipe in cpus {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&pipe)
                .map_err(|e| format!("opening {}: {e}", pipe.display()))?;
            self.pipes.push(file);
        }
        write(&dir.join("tracing_on"), "1")
    }

    /// Everything the instance holds now, from every CPU, as (TSC, event).
    pub fn read(&mut self) -> Result<Vec<(u64, HostEvent)>, String> {
        let mut out = Vec::new();
        for pipe in &mut self.pipes {
            loop {
                let n = match pipe.read(&mut self.page) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("reading {}: {e}", self.dir.display())),
                };
                let page = ring::parse(&self.page[..n]);
                if let Some(count) = page.missed {
                    let ts = page.events.first().map_or(0, |e| e.ts);
                    out.push((ts, HostEvent::Lost { count }));
                }
                for e in page.events {
                    let id = e
                        .data
                        .get(..2)
                        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
                    if let Some(event) = self.formats.get(&id).and_then(|f| f.decode(e.data)) {
                        out.push((e.ts, event));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; a left-over instance only costs its buffers
        // and is named after this process.
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        let _ = fs::write(self.dir.join("set_event"), "");
        self.pipes.clear();
        let _ = fs::remove_dir(&self.dir);
    }
}
