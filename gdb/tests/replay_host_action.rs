//! The replay server on a recording whose VMM acted on the vCPU (`init-long-mode` recorded on
//! kvm, committed as `traces/corpus/recorded/init-long-mode.kvm.mmurr`), driven by the real
//! gdb: `stepi` from long mode goes through KVM's INIT into real mode at the reset vector,
//! `monitor role` shows the context each policy kept, and `reverse-stepi` goes back across
//! the INIT into long mode.

mod common;

use common::{after, expect, run_gdb, start_replay_server};
use std::path::Path;

#[test]
fn stepi_and_reverse_stepi_across_an_init_the_host_performed() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/corpus/recorded/init-long-mode.kvm.mmurr");
    let port = start_replay_server(&trace);
    let out = run_gdb(
        port,
        "p $cr0
stepi
stepi
p $cr0
monitor role v4.20
monitor role v5.14
reverse-stepi
p $cr0",
    );
    expect(&out, "$1 = [ PE ET PG ]");
    // The INIT's step: the reset vector's linear address, CR0 as KVM's INIT left it.
    let init = after(&out, "0x00000000fffffff0 in ?? ()");
    let init = after(init, "$2 = [ ET ]");
    let old = after(init, "policy v4.20");
    expect(old, "STALE: the architecture requires");
    expect(old, "root_level             kept 4, required 0");
    expect(old, "last write: #0 step 2 rip 0x180200: host: INIT");
    expect(after(old, "policy v5.14"), "v5.14 decided: reinit");
    // Back across the INIT: long mode again, at the instruction it came before.
    let back = after(old, "0x0000000000180200 in ?? ()");
    expect(back, "$3 = [ PE ET PG ]");
}
