//! The browser on a recording whose VMM acted on the vCPU: `init-long-mode` recorded on kvm
//! (`traces/corpus/recorded/init-long-mode.kvm.mmurr`, KVM itself performing the INIT). The
//! INIT is a timeline row of its own with its decisions and the stale context it left, and
//! the instructions after it are the reset vector's and the real-mode code's, with the
//! addresses the kept 64-bit context translates differently.

mod common;

use common::{press, screen};

#[test]
fn the_init_kvm_performed_is_a_row_with_the_stale_context_it_left() {
    let mut app = common::open_recorded("init-long-mode.kvm.mmurr");
    assert!(app.complete && app.events_loaded && app.history.is_some());
    let row = app.row_text(app.selected().unwrap());
    assert!(row.contains("host") && row.contains("INIT"), "{row}");
    let s = screen(&app, 160, 48);
    for text in [
        "⚠ STALE v4.20",
        "INIT (host action) at step 2",
        "decision: no trigger",
        "STALE CONTEXT",
        // The host's own KVM built a nonpaging root at the next KVM_RUN (host events).
        "level=3 direct=1",
        // After INIT: real mode at F000:FFF0, CR0 as KVM left it, the ROM's far jump.
        "cr0 0x00000010 [ ET ]",
        "jmp far",
        // The last instruction before the INIT (the jump into its section) is the last one
        // that touched anything: the INIT's step ran none.
        "last touched, by the instruction of step 1 (x)",
        "translations DIFFER",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
    // `P`: the policies before 0aa1837533e5 kept the 4-level context, v5.14 on re-initialised.
    press(&mut app, "P");
    let s = screen(&app, 160, 48);
    for text in [
        "v5.9      no trigger",
        "STALE",
        "v5.14     re-init",
        "root_level 0 nonpaging",
    ] {
        assert!(s.contains(text), "{text:?} missing:\n{s}");
    }
}
