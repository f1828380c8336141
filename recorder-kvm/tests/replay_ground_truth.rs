//! The replayer rebuilds what KVM really did: record built-in scenarios on /dev/kvm with a
//! keyframe every few steps, then seek the replayer to every keyframe (forward, backward, in
//! random order) and compare registers and the hash of all guest RAM with what the recorder
//! read from the real vCPU and memory there.
mod common;

use recorder::{record, RecordOptions};
use recorder_kvm::{probe, KvmBackend};
use replayer::Timeline;
use traces::{Keyframe, Reader, Record};

fn keyframes(path: &std::path::Path) -> Vec<Keyframe> {
    let mut reader = Reader::open(path).unwrap();
    reader
        .records()
        .filter_map(|r| match r.unwrap() {
            Record::Keyframe(k) => Some(k),
            _ => None,
        })
        .collect()
}

#[test]
fn every_keyframe_is_rebuilt_exactly() {
    require_kvm!();
    let host = probe();
    let features = guests::CpuFeatures::default();
    for name in ["long-mode-toggles", "cr3-switch", "smap-pke-toggle"] {
        let s = guests::scenario(name, &features).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut opts = RecordOptions::new(dir.path().join("t.mmurr"));
        opts.keyframe_interval = 7;
        opts.self_check_every = 3;
        opts.progress = false;
        opts.serial = recorder::SerialSink::Capture;
        let mut backend = KvmBackend::new(host.clone()).unwrap();
        let summary = record(&mut backend, &s.guest, &opts).unwrap();
        assert!(
            summary.end.self_check_failures.is_empty(),
            "{name}: {:?}",
            summary.end.self_check_failures
        );

        let kfs = keyframes(&opts.output);
        assert!(kfs.len() > 10, "{name}: only {} keyframes", kfs.len());
        let mut timeline = Timeline::open(&opts.output).unwrap();
        // Backward, forward, then a scrambled order: each seek starts from a different place.
        let mut order: Vec<usize> = (0..kfs.len()).rev().collect();
        order.extend(0..kfs.len());
        order.extend((0..kfs.len()).map(|i| (i * 7919) % kfs.len()));
        for i in order {
            let k = &kfs[i];
            let snap = timeline.seek(k.step).unwrap();
            assert_eq!(
                snap.memory.hash(),
                k.memory_hash,
                "{name}: memory at step {}",
                k.step
            );
            assert_eq!(snap.regs, k.regs, "{name}: registers at step {}", k.step);
        }
    }
}
