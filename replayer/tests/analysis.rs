//! An analysis that keeps only checkpoints (the TUI's, for bounded memory) gives, for every
//! write, exactly the decisions and trackers of one that keeps everything.

use mmu::Flavour;
use replayer::{Analysis, Retain, Timeline};
use std::io::Cursor;
use traces::{FindingKind, Reader, Record, Writer};

#[test]
fn checkpoints_recompute_every_write_as_it_was() {
    // 4 000 steps with a CR write every 20: 200 writes, several checkpoints apart.
    let header = traces::synth::header("synth", 7);
    let records: Vec<Record> = traces::synth::Synth::new(7, 4_000, 100, 20).collect();
    let mut w = Writer::new(Cursor::new(Vec::new()), &header).unwrap();
    for r in &records {
        w.append(r).unwrap();
    }
    let bytes = w.finish().unwrap().0.into_inner();
    let writes: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some((e.clone(), history::Cause::of(&e.kind)?)),
            _ => None,
        })
        .collect();
    let open = || Timeline::new(Reader::from_bytes(bytes.clone()).unwrap()).unwrap();
    let run = |retain| {
        Analysis::from_writes(
            &mut open(),
            writes.clone(),
            &[],
            Flavour::Tdp,
            retain,
            |_, _| true,
        )
        .unwrap()
        .unwrap()
    };
    let all = run(Retain::Everything);
    let some = run(Retain::Checkpoints);
    assert!(all.writes.len() > 2 * replayer::analysis::CHECKPOINT_WRITES);
    // Only the stale contexts are kept as findings; the others follow from the verdicts.
    let stale: Vec<_> = all
        .findings
        .iter()
        .filter(|f| f.finding.kind == FindingKind::StaleContext)
        .cloned()
        .collect();
    assert_eq!(stale, some.findings);
    let mut others: Vec<_> = all
        .findings
        .iter()
        .filter(|f| f.finding.kind != FindingKind::StaleContext)
        .map(|f| {
            (
                f.finding.cause,
                usize::from(f.finding.policy),
                f.finding.kind,
            )
        })
        .collect();
    let mut derived = Vec::new();
    for w in &some.writes {
        for (p, v) in w.verdicts.iter().enumerate() {
            if w.gp_mismatch(p) {
                derived.push((w.event.id, p, FindingKind::GpMismatch));
            }
            if v.needless_reset {
                derived.push((w.event.id, p, FindingKind::NeedlessReset));
            }
        }
    }
    others.sort_by_key(|o| (o.0, o.1, o.2 as u8));
    derived.sort_by_key(|o| (o.0, o.1, o.2 as u8));
    assert!(!derived.is_empty());
    assert_eq!(others, derived);
    assert!(some
        .writes
        .iter()
        .all(|w| w.decisions.is_empty() && w.after.is_empty()));
    let mut timeline = open();
    // Backwards too: a recompute must not depend on where the timeline stood.
    for i in (0..all.writes.len()).rev().chain([0, 33, 1]) {
        assert_eq!(all.writes[i].verdicts, some.writes[i].verdicts, "write {i}");
        let kept = all.detail(&mut timeline, i).unwrap().unwrap();
        let again = some.detail(&mut timeline, i).unwrap().unwrap();
        assert_eq!(kept.decisions, again.decisions, "write {i}");
        assert_eq!(kept.stale_before, again.stale_before, "write {i}");
        assert_eq!(format!("{:?}", kept.before), format!("{:?}", again.before));
        assert_eq!(format!("{:?}", kept.after), format!("{:?}", again.after));
    }
    assert!(some
        .detail(&mut timeline, all.writes.len())
        .unwrap()
        .is_none());
}
