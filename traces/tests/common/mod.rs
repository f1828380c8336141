//! Shared test helpers: proptest strategies for records and a reference of what a reader
//! should answer, computed naively from the record list.

#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use traces::*;

pub fn regs() -> impl Strategy<Value = Regs> {
    (any::<[u64; 16]>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(gpr, rip, cr0, cr3)| Regs {
            gpr,
            rip,
            cr0,
            cr3,
            ..Regs::default()
        },
    )
}

fn reg_id() -> impl Strategy<Value = RegId> {
    prop_oneof![
        (0u8..16).prop_map(RegId::Gpr),
        Just(RegId::Rip),
        Just(RegId::Rflags),
        (0u8..8).prop_map(RegId::SegBase),
        Just(RegId::Cr4),
        (0u8..4).prop_map(RegId::Pdptr),
    ]
}

fn step_record() -> impl Strategy<Value = StepRecord> {
    (
        any::<u64>(),
        vec((reg_id(), any::<u64>()), 0..4),
        vec((any::<u64>(), vec(any::<u8>(), 0..16)), 0..3),
    )
        .prop_map(|(rip, regs, mem)| StepRecord {
            step: 0,
            rip,
            regs,
            mem: mem
                .into_iter()
                .map(|(gpa, data)| MemWrite { gpa, data })
                .collect(),
        })
}

fn keyframe() -> impl Strategy<Value = Keyframe> {
    (
        regs(),
        vec((any::<u64>(), vec(any::<u8>(), 0..64)), 0..3),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(regs, pages, carries_pages, memory_hash)| Keyframe {
            step: 0,
            regs,
            pages: pages
                .into_iter()
                .map(|(gpa, data)| Page { gpa, data })
                .collect(),
            carries_pages,
            memory_hash,
        })
}

fn paging_mode() -> impl Strategy<Value = PagingMode> {
    prop_oneof![
        Just(PagingMode::Real),
        Just(PagingMode::Unpaged),
        Just(PagingMode::Bits32),
        Just(PagingMode::Pae),
        Just(PagingMode::Level4),
        Just(PagingMode::Level5),
    ]
}

fn control_reg() -> impl Strategy<Value = ControlReg> {
    prop_oneof![
        Just(ControlReg::Cr0),
        Just(ControlReg::Cr3),
        Just(ControlReg::Cr4),
        Just(ControlReg::Efer),
        Just(ControlReg::Xcr0),
    ]
}

fn outcome() -> impl Strategy<Value = MmuOutcome> {
    prop_oneof![
        Just(MmuOutcome::Reinit),
        Just(MmuOutcome::SkippedRoleUnchanged),
        Just(MmuOutcome::NoTrigger),
        Just(MmuOutcome::Gp),
        Just(MmuOutcome::InitOnly),
        Just(MmuOutcome::NewPgd),
    ]
}

fn translation() -> impl Strategy<Value = Translation> {
    prop_oneof![
        any::<u64>().prop_map(Translation::Phys),
        any::<u32>().prop_map(Translation::PageFault),
        Just(Translation::GeneralProtection),
    ]
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (control_reg(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(reg, old, new, faulted)| {
                EventKind::CrWrite(CrWrite {
                    reg,
                    old,
                    new,
                    via: WriteVia::MovCr,
                    faulted,
                })
            }
        ),
        (paging_mode(), paging_mode()).prop_map(|(from, to)| EventKind::Transition { from, to }),
        (
            any::<u16>(),
            any::<u64>(),
            outcome(),
            any::<u64>(),
            any::<u32>(),
            any::<Option<(bool, Option<u8>)>>()
        )
            .prop_map(|(policy, cause, outcome, cpu_role, root_role, cache)| {
                EventKind::Mmu(MmuDecision {
                    policy: policy % 4,
                    cause,
                    outcome,
                    trigger_bits: cpu_role >> 3,
                    old_cpu_role: cpu_role,
                    new_cpu_role: cpu_role ^ 1,
                    old_root_role: root_role,
                    new_root_role: root_role.rotate_left(3),
                    context_changes: vec!["root_level".into()],
                    root_cache: cache.map(|(hit, slot)| RootCacheLookup {
                        hit,
                        slot,
                        role: root_role,
                    }),
                    tlb_flush: TlbFlush::Guest,
                })
            }),
        (any::<u64>(), ".{0,12}", translation(), translation()).prop_map(
            |(gva, detail, kept, correct)| {
                EventKind::Finding(Finding {
                    policy: 1,
                    cause: gva % 100,
                    kind: FindingKind::StaleContext,
                    attributes: vec![("walker".into(), "32".into(), "pae".into())],
                    translations: vec![TranslationDiff {
                        gva,
                        access: 'w',
                        kept,
                        correct,
                    }],
                    detail,
                })
            }
        ),
        (any::<u16>(), any::<bool>(), any::<u32>()).prop_map(|(port, write, data)| EventKind::Io(
            IoAccess {
                port,
                write,
                size: 4,
                data,
            }
        )),
        (any::<u64>(), any::<u64>()).prop_map(|(gpa, data)| EventKind::Mmio(MmioAccess {
            gpa,
            write: false,
            size: 8,
            data,
        })),
        (any::<u8>(), any::<Option<u32>>(), any::<Option<u64>>()).prop_map(
            |(vector, error_code, cr2)| {
                EventKind::Exception(ExceptionInfo {
                    vector,
                    error_code,
                    cr2,
                })
            }
        ),
        (any::<u64>(), ".{0,8}").prop_map(|(gva, engine)| EventKind::EngineDivergence {
            gva,
            engine,
            reference: "phys 0x1000".into(),
        }),
    ]
}

/// What one generated operation does to the writer.
#[allow(clippy::large_enum_variant)] // test data, built and dropped one at a time
#[derive(Clone, Debug)]
pub enum Op {
    /// A step record `advance` steps after the previous timeline step.
    Step(u64, StepRecord),
    Keyframe(u64, Keyframe),
    /// An event at `back` steps before the current timeline step (events may look back).
    Event(u64, u64, EventKind),
    Flush,
}

pub fn ops(max: usize) -> impl Strategy<Value = (Vec<Op>, bool)> {
    let op = prop_oneof![
        6 => ((0u64..3), step_record()).prop_map(|(a, s)| Op::Step(a, s)),
        1 => ((0u64..3), keyframe()).prop_map(|(a, k)| Op::Keyframe(a, k)),
        3 => ((0u64..3), any::<u64>(), event_kind()).prop_map(|(b, rip, k)| Op::Event(b, rip, k)),
        1 => Just(Op::Flush),
    ];
    (vec(op, 0..max), any::<bool>())
}

/// Turns operations into a valid record sequence, and the indices after which to flush.
pub fn records_from(ops: &[Op], with_end: bool) -> (Vec<Record>, Vec<usize>) {
    let mut records = Vec::new();
    let mut flushes = Vec::new();
    let mut step = 0u64;
    let mut next_event = 0u64;
    for op in ops {
        match op.clone() {
            Op::Step(a, mut s) => {
                step += a;
                s.step = step;
                records.push(Record::Step(s));
            }
            Op::Keyframe(a, mut k) => {
                step += a;
                k.step = step;
                records.push(Record::Keyframe(k));
            }
            Op::Event(back, rip, kind) => {
                records.push(Record::Event(Event {
                    id: next_event,
                    step: step.saturating_sub(back),
                    rip,
                    kind,
                }));
                next_event += 1;
            }
            Op::Flush => flushes.push(records.len()),
        }
    }
    if with_end {
        records.push(Record::End(EndRecord {
            step: step + 1,
            reason: EndReason::DebugExit { status: 3 },
            message: "done".into(),
            self_check_failures: vec![],
        }));
    }
    (records, flushes)
}

/// Writes `records`, flushing a chunk after each index in `flushes`.
pub fn write(header: &Header, records: &[Record], flushes: &[usize]) -> (Vec<u8>, WriteSummary) {
    let mut w = Writer::new(Vec::new(), header).expect("writer");
    for (i, r) in records.iter().enumerate() {
        if flushes.contains(&i) {
            w.flush_chunk().expect("flush");
        }
        w.append(r).expect("append");
    }
    w.finish().expect("finish")
}

pub fn read_all<R: std::io::Read + std::io::Seek>(reader: &mut Reader<R>) -> Vec<Record> {
    reader
        .records()
        .collect::<Result<Vec<_>>>()
        .expect("records")
}

pub fn counts_of(records: &[Record]) -> EventCounts {
    let mut c = EventCounts::default();
    for r in records {
        if let Record::Event(e) = r {
            c.add(e);
        }
    }
    c
}

/// Checks every random-access answer of `reader` against the naive answers over `records`.
pub fn check_random_access<R: std::io::Read + std::io::Seek>(
    reader: &mut Reader<R>,
    records: &[Record],
) {
    let max_step = records.iter().map(Record::step).max().unwrap_or(0);
    for step in 0..=max_step + 1 {
        let expected: Vec<Record> = records
            .iter()
            .filter(|r| r.step() == step)
            .cloned()
            .collect();
        assert_eq!(
            reader.records_at_step(step).expect("records_at_step"),
            expected,
            "step {step}"
        );
        let kf = records.iter().rev().find_map(|r| match r {
            Record::Keyframe(k) if k.step <= step => Some(k.clone()),
            _ => None,
        });
        assert_eq!(
            reader.keyframe_at_or_before(step).expect("keyframe"),
            kf,
            "keyframe <= {step}"
        );
    }
    let events: Vec<&Event> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    // Backwards, so the cache is exercised out of order too.
    for e in events.iter().rev() {
        assert_eq!(reader.event(e.id).expect("event").as_ref(), Some(*e));
    }
    assert_eq!(
        reader
            .event(events.len() as u64)
            .expect("event past the end"),
        None
    );
}
