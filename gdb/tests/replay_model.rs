//! The replay server on a model-level scenario's trace (`init-long-mode`, committed as
//! `traces/corpus/recorded/init-long-mode.model.mmurr`), driven by the real gdb: its one step
//! is the INIT host action, and `monitor role` shows each policy's context after it.

mod common;

use common::{after, expect, run_gdb, start_replay_server};
use std::path::Path;

#[test]
fn monitor_role_after_a_host_action() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/corpus/recorded/init-long-mode.model.mmurr");
    let port = start_replay_server(&trace);
    let out = run_gdb(
        port,
        "p $cr0
monitor events
monitor role v4.20
stepi
p $cr0
monitor role v4.20
monitor role v5.14
monitor check",
    );
    // At entry: long mode (PG, PE).
    expect(&out, "$1 = [ PE ET PG ]");
    expect(&out, "host: INIT");
    let stepped = after(&out, "$2 = [ ET NW CD ]");
    let old = after(stepped, "at step 1:");
    expect(old, "last write: #0 step 1 rip 0x0: host: INIT");
    expect(old, "v4.20 decided: no trigger");
    let fixed = after(old, "v5.14 decided:");
    expect(fixed, "reinit");
    expect(stepped, "v4.20: STALE context");
}
