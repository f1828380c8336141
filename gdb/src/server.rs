//! Listening, sessions and the event loop of the replay server.
//!
//! One gdb at a time; when a session ends (gdb detaches or disconnects, or sends something
//! the packet parser rejects) the server accepts the next one, so a bad client never takes
//! the server down. `kill` from gdb ends the server.

use crate::replay_target::{ReplayTarget, RunOutcome};
use anyhow::Context;
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason, SingleThreadStopReason};
use gdbstub::target::Target;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;

/// The address the servers listen on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1234";

/// Resolves a listen address. A non-loopback address is refused unless `allow_remote`, and
/// then warned about: the gdb protocol has no authentication, and a gdb client can read and
/// write all guest memory.
pub fn listen_addr(addr: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("bad listen address {addr:?} (expected HOST:PORT)"))?
        .collect();
    let first = *resolved
        .first()
        .with_context(|| format!("listen address {addr:?} resolves to nothing"))?;
    if !first.ip().is_loopback() {
        if !allow_remote {
            anyhow::bail!(
                "refusing to listen on non-loopback address {first}: anyone who can reach it \
                 can read and write guest memory; pass --allow-remote if you mean it"
            );
        }
        eprintln!(
            "mmurr: warning: the gdb server listens on {first}, reachable from other machines; \
             the gdb protocol has no authentication"
        );
    }
    Ok(first)
}

/// Binds and says where, on stderr, with the command to connect (the port may be 0 =
/// ephemeral, so the line carries the real one; tests read it).
pub fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("mmurr: {what}: gdb server listening on {local}");
    eprintln!("mmurr: connect with: gdb -ex 'target remote {local}'");
    Ok(listener)
}

/// `$O<hex>#cs`: console output gdb prints while it waits for a stop. Written straight to the
/// socket before the stop reply, which gdbstub's API offers no way to send.
pub fn console_packet(text: &str) -> Vec<u8> {
    let mut body = String::from("O");
    for b in text.bytes() {
        body += &format!("{b:02x}");
    }
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

enum ReplayLoop {}

impl BlockingEventLoop for ReplayLoop {
    type Target = ReplayTarget;
    type Connection = TcpStream;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut ReplayTarget,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<
            <ReplayTarget as Target>::Error,
            <TcpStream as Connection>::Error,
        >,
    > {
        let outcome = {
            let poll = || conn.peek().map(|b| b.is_some()).unwrap_or(true);
            target
                .run(poll)
                .map_err(run_blocking::WaitForStopReasonError::Target)?
        };
        match outcome {
            RunOutcome::Interrupted => {
                let byte = ConnectionExt::read(conn)
                    .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                Ok(run_blocking::Event::IncomingData(byte))
            }
            RunOutcome::Stop(reason, note) => {
                if let Some(note) = note {
                    Write::write_all(conn, &console_packet(&note))
                        .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                }
                Ok(run_blocking::Event::TargetStopped(
                    target.stop_reason(reason),
                ))
            }
        }
    }

    fn on_interrupt(
        target: &mut ReplayTarget,
    ) -> Result<Option<Self::StopReason>, <ReplayTarget as Target>::Error> {
        target.cancel_pending();
        Ok(Some(target.stop_reason(SingleThreadStopReason::Signal(
            Signal::SIGINT,
        ))))
    }
}

/// How one session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached or went away: wait for the next one.
    Disconnected,
    /// gdb sent `kill`: stop serving.
    Killed,
    /// The connection or the packet stream broke (malformed packets end up here).
    Failed(String),
}

/// Serves one gdb connection.
pub fn serve_replay_session(target: &mut ReplayTarget, stream: TcpStream) -> SessionEnd {
    if let Err(e) = target.reset_session() {
        return SessionEnd::Failed(e);
    }
    // Packets are small and latency matters more than throughput.
    let _ = stream.set_nodelay(true);
    let stub = GdbStub::new(stream);
    // gdbstub reports bad input as errors, not panics; the catch is a last line of defence so
    // one session's bug cannot take the server (and the next session) down.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stub.run_blocking::<ReplayLoop>(target)
    }));
    match result {
        Ok(Ok(DisconnectReason::Kill)) => SessionEnd::Killed,
        Ok(Ok(_)) => SessionEnd::Disconnected,
        Ok(Err(e)) => SessionEnd::Failed(e.to_string()),
        Err(_) => SessionEnd::Failed("the session panicked".into()),
    }
}

/// `mmurr gdb TRACE --listen ADDR`: serves the trace until gdb sends `kill`.
pub fn serve_trace(trace: &Path, listener: TcpListener) -> anyhow::Result<()> {
    let target = ReplayTarget::open(trace)
        .with_context(|| format!("cannot open trace {}", trace.display()))?;
    serve_target(target, listener)
}

/// Serves an opened trace until gdb sends `kill`. Open the trace before binding: a gdb that
/// connects while a big trace loads then retries its connection (gdb's `tcp auto-retry`)
/// instead of timing out on a server that accepted but does not answer.
pub fn serve_target(mut target: ReplayTarget, listener: TcpListener) -> anyhow::Result<()> {
    eprintln!(
        "mmurr: {} steps, {} events; reverse execution on (reverse-stepi, reverse-continue)",
        target.last_step(),
        target.event_count()
    );
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mmurr: accept failed: {e}");
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        eprintln!("mmurr: gdb connected from {peer}");
        match serve_replay_session(&mut target, stream) {
            SessionEnd::Killed => {
                eprintln!("mmurr: gdb sent kill; exiting");
                return Ok(());
            }
            SessionEnd::Disconnected => eprintln!("mmurr: gdb disconnected; waiting for the next"),
            SessionEnd::Failed(e) => {
                eprintln!("mmurr: session ended: {e}; waiting for the next")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(listen_addr("127.0.0.1:1234", false).is_ok());
        assert!(listen_addr("[::1]:0", false).is_ok());
        let e = listen_addr("0.0.0.0:1234", false).unwrap_err().to_string();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(listen_addr("0.0.0.0:1234", true).is_ok());
        assert!(listen_addr("nonsense", false).is_err());
    }

    #[test]
    fn console_packets_are_framed_with_a_checksum() {
        // "O" + hex("hi\n") = "O68690a"; checksum = sum of body bytes mod 256.
        let p = String::from_utf8(console_packet("hi\n")).unwrap();
        let body = "O68690a";
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        assert_eq!(p, format!("${body}#{sum:02x}"));
    }
}
