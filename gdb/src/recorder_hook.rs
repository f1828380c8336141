//! The live server in the recorder's stepping loop: [`LiveControl`] as a
//! `recorder::StepControl`, and [`start_live`], which binds the socket and starts the gdb
//! thread for `mmurr record --gdb`, `mmurr run --gdb` and `mmurr-emu`.

use crate::live_target::{self, LiveControl, Verdict};
use recorder::{Backend, StepControl, StepVerdict, StepView};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use traces::EndRecord;

impl StepControl for LiveControl {
    fn before_step(&mut self, view: &StepView<'_>, backend: &mut dyn Backend) -> StepVerdict {
        match LiveControl::before_step(self, view, backend) {
            Verdict::Run => StepVerdict::Run,
            Verdict::RunModified => StepVerdict::RunModified,
            Verdict::Stop(why) => StepVerdict::Stop(why),
        }
    }

    fn finished(&mut self, end: &EndRecord, exit_code: Option<u8>) {
        LiveControl::finished(
            self,
            &format!("{}: {}", end.reason.name(), end.message),
            exit_code,
        );
    }
}

/// What a live session needs to know.
pub struct LiveOptions<'a> {
    /// `HOST:PORT` to listen on.
    pub listen: &'a str,
    pub allow_remote: bool,
    /// What is being served, for the "listening" line.
    pub what: &'a str,
    /// gdb may change registers and memory (`run`), or not (`record`).
    pub allow_writes: bool,
    /// The guest's vCPUs (`--cpus`): with several, gdb sees one thread per vCPU.
    pub vcpus: u32,
    /// Set by SIGINT/SIGTERM: ends a wait for gdb.
    pub interrupted: Arc<AtomicBool>,
}

/// Binds, starts the gdb thread, and returns the hook for the stepping loop. The guest waits
/// for gdb before its first instruction. The session answers from the recorder's own MMU
/// model (its policies, flavour and CPU model), handed over before every instruction.
pub fn start_live(o: LiveOptions<'_>) -> anyhow::Result<LiveControl> {
    let addr = crate::listen_addr(o.listen, o.allow_remote)?;
    let listener = crate::bind(addr, o.what)?;
    eprintln!("mmurr: the guest waits for gdb before its first instruction");
    let (mut control, target) = live_target::pair(o.allow_writes, o.vcpus, o.interrupted);
    control.set_server(live_target::spawn_server(listener, target));
    Ok(control)
}
