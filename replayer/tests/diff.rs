//! `diff`: the first divergence between two traces, with `rep` iterations folded.

use replayer::diff;
use std::io::Cursor;
use traces::{
    ControlReg, CrWrite, Event, EventKind, GuestSpec, Header, MemWrite, Reader, Record, Regs,
    StepRecord, WriteVia, Writer,
};

/// A trace builder: each step is (rip, rax after, optional memory write, optional CR4 write).
struct Step {
    rip: u64,
    rax: u64,
    write: Option<(u64, u8)>,
    cr4: Option<u64>,
}

fn step(rip: u64, rax: u64) -> Step {
    Step {
        rip,
        rax,
        write: None,
        cr4: None,
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
        if let Some(v) = s.cr4 {
            let kind = EventKind::CrWrite(CrWrite {
                reg: ControlReg::Cr4,
                old: before.cr4,
                new: v,
                via: WriteVia::MovCr,
                faulted: false,
            });
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
