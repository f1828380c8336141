//! `diff`: the first divergence between two traces, with `rep` iterations folded.

use replayer::{diff, diff_with, Compare, Side};
use std::io::Cursor;
use traces::{
    ControlReg, CrWrite, Event, EventKind, GuestSpec, Header, MemWrite, MmuDecision, MmuOutcome,
    Reader, Record, Regs, StepRecord, TlbFlush, WriteVia, Writer,
};

/// A trace builder: each step is (rip, rax after, optional memory write, optional CR4 write
/// with the new cpu_role one policy's model gave it, instructions the step retired).
struct Step {
    rip: u64,
    rax: u64,
    write: Option<(u64, u8)>,
    cr4: Option<u64>,
    role: u64,
    retired: u32,
}

fn step(rip: u64, rax: u64) -> Step {
    Step {
        rip,
        rax,
        write: None,
        cr4: None,
        role: 0,
        retired: 1,
    }
}

fn trace(steps: &[Step]) -> Reader<Cursor<Vec<u8>>> {
    let guest = GuestSpec {
        ram_size: 1 << 16,
        ..Default::default()
    };
    let header = Header {
        guest,
        ..Default::default()
    };
    let mut w = Writer::new(Cursor::new(Vec::new()), &header).unwrap();
    let mut regs = Regs::default();
    let mut event = 0;
    for (i, s) in steps.iter().enumerate() {
        let before = regs.clone();
        regs.gpr[0] = s.rax;
        regs.rip = steps.get(i + 1).map_or(s.rip + 1, |n| n.rip);
        if let Some(v) = s.cr4 {
            regs.cr4 = v;
        }
        let mem = s
            .write
            .iter()
            .map(|&(gpa, b)| MemWrite { gpa, data: vec![b] })
            .collect();
        let n = i as u64 + 1;
        w.append(&Record::Step(StepRecord {
            step: n,
            rip: s.rip,
            regs: regs.delta_from(&before),
            mem,
        }))
        .unwrap();
        let mut kinds = Vec::new();
        if s.retired > 1 {
            kinds.push(EventKind::Retired { count: s.retired });
        }
        if let Some(v) = s.cr4 {
            kinds.push(EventKind::CrWrite(CrWrite {
                reg: ControlReg::Cr4,
                old: before.cr4,
                new: v,
                via: WriteVia::MovCr,
                faulted: false,
            }));
            kinds.push(EventKind::Mmu(MmuDecision {
                policy: 0,
                cause: event,
                outcome: MmuOutcome::Reinit,
                trigger_bits: v ^ before.cr4,
                old_cpu_role: 0,
                new_cpu_role: s.role,
                old_root_role: 0,
                new_root_role: 0,
                context_changes: Vec::new(),
                root_cache: None,
                tlb_flush: TlbFlush::None,
            }));
        }
        for kind in kinds {
            w.append(&Record::Event(Event {
                id: event,
                step: n,
                rip: s.rip,
                kind,
            }))
            .unwrap();
            event += 1;
        }
    }
    let (out, _) = w.finish().unwrap();
    Reader::from_bytes(out.into_inner()).unwrap()
}

#[test]
fn identical_traces_do_not_diverge() {
    let steps = || {
        vec![
            step(0x1000, 1),
            Step {
                cr4: Some(0x20),
                ..step(0x1001, 2)
            },
            step(0x1002, 3),
        ]
    };
    let report = diff(&mut trace(&steps()), &mut trace(&steps())).unwrap();
    assert_eq!(report.divergence, None);
    assert_eq!(report.instructions, 3);
}

#[test]
fn names_the_first_register_that_differs() {
    let a = vec![step(0x1000, 1), step(0x1001, 2), step(0x1002, 3)];
    let b = vec![step(0x1000, 1), step(0x1001, 7), step(0x1002, 3)];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!(
        (d.instruction, d.step_a, d.step_b, d.rip),
        (1, Some(2), Some(2), Some(0x1001))
    );
    assert_eq!(d.differences, ["rax: 0x2 vs 0x7"]);
    assert_eq!(d.context, ["step 1 rip 0x1000"]);
}

#[test]
fn rep_iterations_are_folded() {
    // Trace A single-steps every iteration of a rep instruction at 0x1001; trace B executes it
    // as one step. Same final state: no divergence.
    let a = vec![
        step(0x1000, 1),
        step(0x1001, 2),
        step(0x1001, 3),
        step(0x1001, 4),
        step(0x1003, 5),
    ];
    let b = vec![step(0x1000, 1), step(0x1001, 4), step(0x1003, 5)];
    let report = diff(&mut trace(&a), &mut trace(&b)).unwrap();
    assert_eq!(report.divergence, None, "{report:?}");
    assert_eq!(report.instructions, 3);
}

#[test]
fn memory_and_events_are_compared() {
    let a = vec![
        step(0x1000, 1),
        Step {
            write: Some((0x500, 0xaa)),
            ..step(0x1001, 2)
        },
    ];
    let b = vec![
        step(0x1000, 1),
        Step {
            write: Some((0x500, 0xbb)),
            ..step(0x1001, 2)
        },
    ];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!(d.differences, ["memory written at 0x500: 0xaa vs 0xbb"]);

    let a = vec![
        step(0x1000, 1),
        Step {
            cr4: Some(0x20),
            ..step(0x1001, 2)
        },
    ];
    let b = vec![
        step(0x1000, 1),
        Step {
            cr4: Some(0x30),
            ..step(0x1001, 2)
        },
    ];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!(d.step_a, Some(2));
    assert!(
        d.differences.contains(&"cr4: 0x20 vs 0x30".to_string()),
        "{:?}",
        d.differences
    );
    assert!(
        d.differences.contains(
            &"event 1 of this instruction: \"cr4 write 0x0 -> 0x20\" vs \"cr4 write 0x0 -> 0x30\""
                .to_string()
        ),
        "{:?}",
        d.differences
    );
}

#[test]
fn a_shorter_trace_diverges_where_it_ends() {
    let a = vec![step(0x1000, 1), step(0x1001, 2)];
    let b = vec![step(0x1000, 1)];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!(d.instruction, 1);
    assert_eq!(d.differences, ["trace B ends here; trace A goes on"]);
}

#[test]
fn a_step_that_retired_two_instructions_meets_two_steps() {
    // Trace A (KVM on a PVM host): one step ran `endbr64` at 0x1000 and `push` at 0x1004
    // together. Trace B stepped them one by one. Same state after both: equal, 4 instructions.
    let a = vec![
        Step {
            write: Some((0x8ff8, 0x42)),
            retired: 2,
            ..step(0x1000, 1)
        },
        step(0x1005, 2),
        step(0x1006, 3),
    ];
    let b = vec![
        step(0x1000, 0),
        Step {
            write: Some((0x8ff8, 0x42)),
            ..step(0x1004, 1)
        },
        step(0x1005, 2),
        step(0x1006, 3),
    ];
    let report = diff(&mut trace(&a), &mut trace(&b)).unwrap();
    assert_eq!(report.divergence, None, "{report:?}");
    assert_eq!(report.instructions, 4);
    // Either way round.
    let report = diff(&mut trace(&b), &mut trace(&a)).unwrap();
    assert_eq!(report.divergence, None, "{report:?}");
    assert_eq!(report.instructions, 4);
}

#[test]
fn a_difference_inside_a_double_step_is_reported_there() {
    let a = vec![
        step(0x1000, 1),
        Step {
            write: Some((0x8ff8, 0x42)),
            retired: 2,
            ..step(0x1001, 2)
        },
        step(0x1006, 3),
    ];
    let b = vec![
        step(0x1000, 1),
        step(0x1001, 2),
        Step {
            write: Some((0x8ff8, 0x43)),
            ..step(0x1005, 2)
        },
        step(0x1006, 3),
    ];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!((d.instruction, d.step_a, d.step_b), (1, Some(2), Some(2)));
    assert_eq!(d.differences, ["memory written at 0x8ff8: 0x42 vs 0x43"]);
    assert_eq!(d.ended, None);

    // B stops inside A's double step: B ended, not a register difference.
    let b = vec![step(0x1000, 1), step(0x1001, 2)];
    let d = diff(&mut trace(&a), &mut trace(&b))
        .unwrap()
        .divergence
        .unwrap();
    assert_eq!(d.ended, Some(Side::B), "{d:?}");
    assert_eq!(
        d.differences[0],
        "trace B ends here; retired instructions 2 vs 1"
    );
}

#[test]
fn guest_only_leaves_out_the_mmu_model_but_not_the_guest() {
    // Same guest, machines whose CPUID differs: the role words differ, the CR4 write does not.
    let steps = |role: u64, cr4: u64| {
        vec![
            step(0x1000, 1),
            Step {
                cr4: Some(cr4),
                role,
                ..step(0x1001, 2)
            },
            step(0x1002, 3),
        ]
    };
    let d = diff(
        &mut trace(&steps(0x1_0000, 0x20)),
        &mut trace(&steps(0x2_0000, 0x20)),
    )
    .unwrap()
    .divergence
    .unwrap();
    assert!(
        d.differences[0].contains("cpu_role 0x0 -> 0x10000"),
        "{:?}",
        d.differences
    );
    let report = diff_with(
        &mut trace(&steps(0x1_0000, 0x20)),
        &mut trace(&steps(0x2_0000, 0x20)),
        Compare::GuestOnly,
    )
    .unwrap();
    assert_eq!(report.divergence, None, "{report:?}");
    // What the guest wrote is still compared.
    let d = diff_with(
        &mut trace(&steps(0x1_0000, 0x20)),
        &mut trace(&steps(0x1_0000, 0x30)),
        Compare::GuestOnly,
    )
    .unwrap()
    .divergence
    .unwrap();
    assert!(
        d.differences
            .iter()
            .any(|l| l.contains("\"cr4 write 0x0 -> 0x20\" vs \"cr4 write 0x0 -> 0x30\"")),
        "{:?}",
        d.differences
    );
}
