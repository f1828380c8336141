//! Reconstruction at any step equals the ground truth the synthetic recorder kept.

use proptest::prelude::*;
use replayer::{MemoryImage, Timeline, TimelineError};
use std::io::Cursor;
use traces::{
    Blob, EndReason, EndRecord, GuestSpec, Header, Keyframe, Load, MemWrite, Page, Reader, Record,
    Regs, StepRecord, Writer,
};

const RAM: u64 = 64 * 4096;

/// A deterministic fake guest: each step bumps RIP and RAX and writes a few bytes somewhere.
/// Returns the trace bytes and the true state after every step.
fn synthetic(
    steps: u64,
    keyframe_every: u64,
    page_keyframe_every: u64,
) -> (Vec<u8>, Vec<(Regs, MemoryImage)>) {
    let mut guest = GuestSpec {
        ram_size: RAM,
        ..Default::default()
    };
    guest.blobs.push(Blob {
        hash: 1,
        name: "code".into(),
        data: vec![0x90; 300],
    });
    guest.loads.push(Load {
        blob: 0,
        gpa: 0x1000,
    });
    guest.entry.rip = 0x1000;
    let header = Header {
        guest: guest.clone(),
        keyframe_interval: keyframe_every,
        ..Default::default()
    };
    let mut w = Writer::new(Cursor::new(Vec::new()), &header).unwrap();

    let mut regs = guest.entry.clone();
    let mut mem = MemoryImage::from_guest(&guest).unwrap();
    let mut truth = vec![(regs.clone(), mem.clone())];
    let mut dirty = std::collections::BTreeSet::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for step in 1..=steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = regs.clone();
        regs.rip += 1;
        regs.gpr[0] = x;
        let gpa = x % (RAM - 16);
        let data = x.to_le_bytes()[..(1 + (x % 8) as usize)].to_vec();
        mem.write(gpa, &data);
        dirty.insert(gpa & !4095);
        dirty.insert((gpa + data.len() as u64 - 1) & !4095);
        w.append(&Record::Step(StepRecord {
            step,
            rip: before.rip,
            regs: regs.delta_from(&before),
            mem: vec![MemWrite { gpa, data }],
        }))
        .unwrap();
        if step % keyframe_every == 0 {
            let carries_pages = step % page_keyframe_every == 0;
            let pages = if carries_pages {
                let pages = dirty
                    .iter()
                    .map(|&p| {
                        let mut d = vec![0; 4096];
                        mem.read(p, &mut d);
                        Page { gpa: p, data: d }
                    })
                    .collect();
                dirty.clear();
                pages
            } else {
                vec![]
            };
            w.append(&Record::Keyframe(Keyframe {
                step,
                regs: regs.clone(),
                pages,
                carries_pages,
                memory_hash: mem.hash(),
            }))
            .unwrap();
        }
        truth.push((regs.clone(), mem.clone()));
    }
    w.append(&Record::End(EndRecord {
        step: steps,
        reason: EndReason::Halted,
        message: String::new(),
        self_check_failures: vec![],
    }))
    .unwrap();
    let (out, _) = w.finish().unwrap();
    (out.into_inner(), truth)
}

fn timeline(bytes: Vec<u8>) -> Timeline<Cursor<Vec<u8>>> {
    Timeline::new(Reader::from_bytes(bytes).unwrap()).unwrap()
}

#[test]
fn every_step_forward_and_backward_matches_the_truth() {
    let (bytes, truth) = synthetic(400, 50, 100);
    let mut t = timeline(bytes);
    assert_eq!(t.last_step(), 400);
    for s in (0..=400).chain((0..=400).rev()) {
        let snap = t.seek(s).unwrap();
        assert_eq!(snap.step, s);
        assert_eq!(snap.regs, truth[s as usize].0, "registers at step {s}");
        assert_eq!(
            snap.memory.hash(),
            truth[s as usize].1.hash(),
            "memory at step {s}"
        );
    }
}

#[test]
fn stepping_back_then_forward_returns_to_the_same_state() {
    let (bytes, _) = synthetic(300, 25, 75);
    let mut t = timeline(bytes);
    let at = t.seek(200).unwrap().clone();
    t.step_by(-37).unwrap();
    assert_eq!(t.current().step, 163);
    let back = t.step_by(37).unwrap();
    assert_eq!(back.regs, at.regs);
    assert_eq!(back.memory.hash(), at.memory.hash());
}

#[test]
fn keyframe_hashes_prove_the_reconstruction() {
    let (bytes, _) = synthetic(500, 40, 80);
    let mut check = Reader::from_bytes(bytes.clone()).unwrap();
    let keyframes: Vec<Keyframe> = check
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Keyframe(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(keyframes.len(), 12);
    let mut t = timeline(bytes);
    for k in keyframes.iter().rev() {
        assert_eq!(
            t.seek(k.step).unwrap().memory.hash(),
            k.memory_hash,
            "step {}",
            k.step
        );
    }
}

#[test]
fn seeking_past_the_end_is_an_error() {
    let (bytes, _) = synthetic(10, 5, 5);
    let mut t = timeline(bytes);
    assert!(matches!(
        t.seek(11),
        Err(TimelineError::PastEnd { step: 11, last: 10 })
    ));
    assert_eq!(t.step_by(100).unwrap().step, 10);
    assert_eq!(t.step_by(-100).unwrap().step, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_seeks_match_the_truth(
        kf in 1u64..40, pk in 1u64..4, seeks in proptest::collection::vec(0u64..=200, 1..30)
    ) {
        let (bytes, truth) = synthetic(200, kf, kf * pk);
        let mut t = timeline(bytes);
        for s in seeks {
            let snap = t.seek(s).unwrap();
            prop_assert_eq!(&snap.regs, &truth[s as usize].0);
            prop_assert_eq!(snap.memory.hash(), truth[s as usize].1.hash());
        }
    }
}

#[test]
fn many_page_keyframes_thin_the_checkpoints_but_seeks_stay_exact() {
    // 300 page keyframes: the checkpoint set is thinned several times.
    let (bytes, truth) = synthetic(3000, 10, 10);
    let mut t = timeline(bytes);
    t.set_checkpoint_limit(16);
    for s in [2999, 5, 1500, 1499, 2001, 0, 3000, 777, 10, 11, 2990] {
        let snap = t.seek(s).unwrap();
        assert_eq!(snap.regs, truth[s as usize].0, "registers at step {s}");
        assert_eq!(
            snap.memory.hash(),
            truth[s as usize].1.hash(),
            "memory at step {s}"
        );
    }
}
