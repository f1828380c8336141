//! The replay server driven by the real gdb (`gdb -batch`), on the committed recording of the
//! seed scenario (pae-toggle on the emu backend: real mode -> protected mode -> 32-bit paging
//! -> CR4.PAE set with CR0.PG=1 at step 34 -> PAE cleared at step 52 -> debug exit at 59).

mod common;

use common::{after, expect, line_starting, run_gdb, seed_trace, start_replay_server};

#[test]
fn registers_disassembly_stepping_and_breakpoints() {
    let port = start_replay_server(&seed_trace());
    let out = run_gdb(
        port,
        "info registers
monitor disas 3
p $cr0
p $cr4
p/x $efer
x/4i $pc
stepi
p $pc
reverse-stepi
reverse-stepi
break *0x1017
continue
p $cr0
stepi
p $cr0
delete
continue",
    );
    // The system registers with QEMU's flag decoding.
    assert!(
        line_starting(&out, "cr0 ").contains("0x60000010")
            && line_starting(&out, "cr0 ").contains("[ ET NW CD ]")
    );
    assert!(line_starting(&out, "efer ").contains("[ ]"));
    assert!(line_starting(&out, "rip ").contains("0x1000"));
    for reg in [
        "rax ",
        "r15 ",
        "eflags ",
        "cs ",
        "gs ",
        "fs_base ",
        "k_gs_base ",
        "cr2 ",
        "cr3 ",
        "cr4 ",
        "cr8 ",
    ] {
        line_starting(&out, reg);
    }
    // The real-mode code decoded as the CPU sees it (16-bit), which gdb's x/i cannot do.
    expect(&out, "16-bit code:");
    expect(&out, "=> 0x1000:  fa                       cli");
    expect(&out, "0x1001:  31 c0                    xor ax,ax");
    expect(&out, "$1 = [ ET NW CD ]");
    expect(&out, "$2 = [ ]");
    expect(&out, "$3 = 0x0");
    expect(&out, "=> 0x1000:\tcli");
    // stepi moves one instruction; reverse-stepi comes back, then hits the start of history.
    expect(&out, "$4 = (void (*)()) 0x1001");
    let back = after(&out, "$4 = ");
    expect(back, "0x0000000000001000 in ?? ()");
    expect(back, "No more reverse-execution history.");
    // A breakpoint on the CR0 write that enters protected mode; stepping across it sets PE.
    let bp = after(&out, "Breakpoint 1 at 0x1017");
    expect(bp, "Breakpoint 1, 0x0000000000001017 in ?? ()");
    expect(bp, "$5 = [ ET NW CD ]");
    expect(bp, "$6 = [ PE ET ]");
    // Continuing with nothing in the way runs into the end of the recording.
    expect(after(bp, "$6 = "), "No more reverse-execution history.");
}

#[test]
fn seed_bug_backwards_through_the_pae_write() {
    let port = start_replay_server(&seed_trace());
    let out = run_gdb(
        port,
        "monitor break-on transition
continue
continue
continue
p $cr4
continue
continue
reverse-continue
reverse-continue
monitor when
monitor role v5.1-rc3
reverse-stepi
p $cr4
x/i $pc
monitor role v5.1-rc3
stepi
p $cr4
monitor walk 0x400000 v5.1-rc3
monitor check",
    );
    expect(
        &out,
        "continue and reverse-continue stop at every transition",
    );
    // Forward: real -> unpaged -> 32-bit -> pae, each a SIGTRAP with the event on the console.
    let fwd = after(&out, "transition real -> unpaged");
    expect(
        fwd,
        "Program received signal SIGTRAP, Trace/breakpoint trap.",
    );
    let fwd = after(fwd, "transition unpaged -> 32-bit");
    let fwd = after(fwd, "mmurr: break-on stop at step 34:");
    expect(fwd, "transition 32-bit -> pae");
    expect(fwd, "0x0000000000001462 in ?? ()");
    expect(fwd, "$1 = [ PAE ]");
    let fwd = after(fwd, "transition pae -> 32-bit");
    expect(fwd, "No more reverse-execution history.");
    // Backward: to the PAE clear, then to the PAE set.
    let back = after(fwd, "No more reverse-execution history.");
    let back = after(back, "mmurr: break-on stop at step 52:");
    let back = after(back, "mmurr: break-on stop at step 34:");
    expect(back, "0x0000000000001462 in ?? ()");
    expect(back, "step 34 of 59");
    // At step 34 (after the write): v5.1-rc3 skipped the re-init and its context is stale.
    let role_after = after(back, "at step 34: policy v5.1-rc3");
    let cpu_role_after = line_starting(role_after, "cpu_role =");
    expect(
        role_after,
        "skipped (role unchanged) trigger=0x20 STALE[root_level,walker]",
    );
    expect(role_after, "STALE: the architecture requires");
    expect(role_after, "kept 2, required 3");
    // reverse-stepi across the write: CR4.PAE back off, pc on the mov to CR4.
    let before = after(role_after, "$2 = ");
    assert!(before.starts_with("[ ]"), "{out}");
    expect(before, "=> 0x145f:\tmov    %rax,%cr4");
    // The role before the write is the same word: the write changed no role bit.
    let role_before = after(before, "at step 33: policy v5.1-rc3");
    assert_eq!(line_starting(role_before, "cpu_role ="), cpu_role_after);
    expect(role_before, "context matches the architecture");
    expect(role_before, "$3 = [ PAE ]");
    // The two translations of the address the guest touches next.
    let walk = after(role_before, "walk 0x400000: architecture, PAE paging");
    expect(walk, "PDPTE[0] PDPTE register");
    expect(walk, "=> gpa 0x11000 (4 KiB page)");
    expect(
        walk,
        "v5.1-rc3's kept context: root_level 2, walker paging32",
    );
    expect(walk, "=> gpa 0x10000 (4 KiB page)");
    expect(
        walk,
        "translations DIFFER: architecture 0x11000, v5.1-rc3 0x10000",
    );
    expect(
        walk,
        "v5.1-rc3: STALE context: root_level kept 2 required 3",
    );
}

#[test]
fn catchpoints_per_policy_events_and_physical_memory() {
    let port = start_replay_server(&seed_trace());
    let out = run_gdb(
        port,
        "monitor break-on divergence v5.1-rc3
continue
monitor break-on
monitor break-on clear
monitor break-on cr4
continue
monitor events 3
monitor seek 40
maintenance flush register-cache
p $pc
monitor phys
x/wx 0x11000
monitor virt
x/wx 0x400000
monitor seek 0
maintenance flush register-cache
x/wx 0x11000
monitor break-on cr4 v5.1
monitor frobnicate
monitor walk
monitor role nosuchpolicy
x/wx 0x400000",
    );
    let div = after(&out, "mmurr: break-on stop at step 34:");
    expect(
        div,
        "v5.1-rc3: MMU context diverges from the architecture (root_level kept 2 required 3",
    );
    expect(div, "break-on: divergence v5.1-rc3");
    expect(div, "break-on cleared");
    // The next CR4 write after step 34 is the one clearing PAE.
    let cr4 = after(div, "mmurr: break-on stop at step 52:");
    expect(cr4, "cr4 0x20 -> 0x0 (-PAE) via MovCr");
    expect(
        cr4,
        "> #59 step 52 rip 0x14af: cr4 0x20 -> 0x0 (-PAE) via MovCr",
    );
    // The stale-context sample is settled when PAE is cleared again (the guest touches fewer
    // than 8 pages in between).
    expect(
        cr4,
        "> #61 step 52 rip 0x14af: finding v5.1-rc3: stale-context (event #44); 0x400000 kept 0x10000 correct 0x11000",
    );
    let ev = after(cr4, "at step 40;");
    // The same data seen physically and through the PAE tables.
    expect(ev, "0x11000:\t0x6d6d7502");
    expect(ev, "0x400000:\t0x6d6d7502");
    // At step 0 the guest has not written the page yet (memory goes back in time too), and
    // with paging off 0x400000 is a physical address beyond the guest's RAM.
    let start = after(ev, "at step 0;");
    expect(start, "0x11000:\t0x00000000");
    expect(start, "Cannot access memory at address 0x400000");
    expect(start, "error: break-on cr4 takes no policy");
    expect(start, "error: unknown command \"frobnicate\"");
    expect(start, "error: walk needs an address");
    expect(start, "error: unknown policy \"nosuchpolicy\"");
}

/// "Who wrote this PTE?": the 32-bit page-table entry that maps the marker page (`0x6000`,
/// PTE 0 of the table for linear 0x400000) gets its accessed and dirty bits from the CPU's
/// page walk when the guest first writes 0x400000. A gdb watchpoint on it, set at the end of
/// the recording, is found by reverse-continue at the state before that instruction; forward
/// `continue` from the start stops right after it. `monitor watch-phys` does the same on a
/// physical address (the PAE PTE of page B at `0x9000`), reported as a SIGTRAP with the write.
#[test]
fn watchpoints_find_the_walk_that_set_a_ptes_accessed_and_dirty_bits() {
    let port = start_replay_server(&seed_trace());
    let out = run_gdb(
        port,
        "watch *(unsigned int *)0x6000
continue
monitor when
p/x *(unsigned int *)0x6000
continue
reverse-continue
monitor when
x/i $pc
p/x $rbx
p/x *(unsigned int *)0x6000
delete
monitor watch-phys 0x9000 8
monitor watch-phys
monitor seek 59
reverse-continue
monitor when
monitor watch-phys clear
rwatch *(unsigned int *)0x6000
continue",
    );
    // Forward: the state right after the write that set A and D (0x10003 -> 0x10063).
    let fwd = after(&out, "Hardware watchpoint 1: *(unsigned int *)0x6000");
    expect(fwd, "Old value = 65539");
    expect(fwd, "New value = 65635");
    let step = step_of(after(fwd, "New value = 65635"));
    expect(fwd, "$1 = 0x10063");
    // Continuing again: nothing else writes it, so the replay ends.
    expect(fwd, "No more reverse-execution history.");
    // Backward from the end: the state before the writing instruction, which is about to
    // store to 0x400000.
    let back = after(fwd, "No more reverse-execution history.");
    expect(back, "Hardware watchpoint 1: *(unsigned int *)0x6000");
    assert_eq!(step_of(back), step - 1, "{back}");
    expect(back, "movl   $0x6d6d7501,(%rbx)");
    expect(back, "$2 = 0x400000");
    expect(back, "$3 = 0x10003");
    // Physical: the PAE PTE of page B is written (A, D) by the PAE walk of the second marker.
    let phys = after(back, "$3 = 0x10003");
    expect(phys, "stop where physical 0x9000 (8 bytes) is written");
    expect(phys, "watchpoints:\n  physical 0x9000 (8 bytes)");
    expect(
        phys,
        "mmurr: watch-phys stop: physical 0x9000 (8 bytes) written by step",
    );
    assert!(step_of(after(phys, "watch-phys stop")) > step, "{phys}");
    // Reads are not recorded: gdb is told it cannot have a read watchpoint.
    expect(phys, "watch-phys cleared");
    expect(
        after(phys, "watch-phys cleared"),
        "Could not insert hardware watchpoint",
    );
}

/// The step of the first `monitor when` answer (`step N of M`) in `text`.
fn step_of(text: &str) -> u64 {
    let at = text.find("step ").expect("a `monitor when` answer") + 5;
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step number in {text}"))
}

/// QEMU-style `info mem` / `info tlb`: the address space of the moment, in its paging mode. The
/// seed scenario's marker 0x400000 maps page A under 32-bit paging and page B under PAE, and
/// 32-bit paging also sees the PDPT's entries as PDEs 512.. (linear 0x8000_0000, read-only).
#[test]
fn info_mem_lists_the_address_space_of_each_paging_mode() {
    let port = start_replay_server(&seed_trace());
    let out = run_gdb(
        port,
        "monitor info mem
monitor seek 25
monitor info mem
monitor seek 40
monitor info mem
monitor info tlb
monitor info frob",
    );
    expect(&out, "real: paging is off, linear addresses are physical");
    let bits32 = after(&out, "at step 25;");
    expect(bits32, "32-bit paging, CR3 0x4800: 4 ranges");
    expect(
        bits32,
        "0000000000400000-0000000000401000 0000000000001000 -rwx -> 0x10000",
    );
    expect(
        bits32,
        "0000000080000000-0000000080001000 0000000000001000 -r-x -> 0x8000",
    );
    let pae = after(bits32, "at step 40;");
    expect(pae, "PAE paging, CR3 0x4800: 2 ranges");
    expect(
        pae,
        "0000000000000000-0000000000200000 0000000000200000 -rwx -> 0x0",
    );
    expect(
        pae,
        "0000000000400000-0000000000401000 0000000000001000 -rwx -> 0x11000",
    );
    expect(pae, "PAE paging, CR3 0x4800: 513 leaf entries");
    expect(pae, "error: info takes mem or tlb");
}
