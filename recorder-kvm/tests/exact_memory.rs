//! Exact memory on kvm: the `accessed-dirty` scenario (hundreds of pages whose accessed and
//! dirty bits the CPU sets and the guest clears again, `inc`/`pop` to memory) recorded with
//! KVM's dirty log passes every keyframe's self-check, carries the A/D bytes the page walks
//! wrote, and the replayer rebuilds the live guest's RAM at steps all over the recording.
//! And an MMIO read-modify-write (`and dword [mmio], imm`) is one step with both accesses
//! (`recorder::test_support::check_mmio_read_modify_write`, the same check as on emu).
mod common;

use recorder::{record_with, Backend, RecordOptions, StepControl, StepVerdict, StepView};
use recorder_kvm::{probe, KvmBackend};
use replayer::Timeline;
use std::collections::BTreeMap;
use traces::{EndReason, Reader, Record, Regs};

/// Hashes the live guest's RAM (and keeps the registers) before every `every`-th step.
struct Sampler {
    every: u64,
    samples: BTreeMap<u64, (u64, Regs)>,
}

impl StepControl for Sampler {
    fn before_step(&mut self, view: &StepView<'_>, backend: &mut dyn Backend) -> StepVerdict {
        let (step, regs) = (view.step, view.regs);
        if step.is_multiple_of(self.every) {
            let ram = backend.ram().expect("the kvm backend maps its RAM");
            self.samples
                .insert(step, (xxhash_rust::xxh3::xxh3_64(ram), regs.clone()));
        }
        StepVerdict::Run
    }
}

fn options(dir: &std::path::Path, name: &str) -> RecordOptions {
    let mut opts = RecordOptions::new(dir.join(name));
    opts.keyframe_interval = 1000;
    opts.self_check_every = 1;
    opts.max_steps = 200_000;
    opts
}

#[test]
fn accessed_and_dirty_bits_are_recorded_exactly() {
    require_kvm!();
    let s = guests::scenario("accessed-dirty", &guests::CpuFeatures::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), "ad.mmurr");
    let mut sampler = Sampler {
        every: 53,
        samples: BTreeMap::new(),
    };
    let mut backend = KvmBackend::new(probe()).unwrap();
    let summary = record_with(&mut backend, &s.guest, &opts, Some(&mut sampler)).unwrap();
    assert_eq!(
        summary.end.reason,
        EndReason::DebugExit { status: 0 },
        "{}",
        summary.end.message
    );
    assert!(
        summary.end.self_check_failures.is_empty(),
        "{:?}",
        summary.end.self_check_failures
    );
    assert!(
        summary.steps > 3 * opts.keyframe_interval,
        "only {} steps",
        summary.steps
    );

    let mut reader = Reader::open(&opts.output).unwrap();
    let facts = &reader.header().backend.kvm_facts;
    let memory = facts.iter().find(|(k, _)| k == "memory_writes");
    assert!(
        memory.is_some_and(|(_, v)| v.starts_with("exact")),
        "{memory:?}"
    );
    // The CPU's own writes are in the trace: the accessed/dirty bits the walks set again in
    // the touched pages' PTEs after each round cleared them (no instruction names them).
    let ptes = guests::scenarios::accessed_dirty::pte_range();
    let mut set_by_walks = 0;
    for r in reader.records() {
        if let Record::Step(st) = r.unwrap() {
            for w in &st.mem {
                let ad = w.data.iter().enumerate().any(|(i, b)| {
                    let at = w.gpa + i as u64;
                    ptes.contains(&at) && at.is_multiple_of(8) && b & 0x60 != 0
                });
                set_by_walks += usize::from(ad);
            }
        }
    }
    let rounds = guests::scenarios::accessed_dirty::ROUNDS as usize;
    let pages = guests::scenarios::accessed_dirty::PAGES as usize;
    assert!(
        set_by_walks >= rounds * pages,
        "{set_by_walks} writes of A/D bits to the PTEs (at least {} expected)",
        rounds * pages
    );

    // The replayer rebuilds the live RAM and registers, seeking in a scrambled order.
    let mut timeline = Timeline::open(&opts.output).unwrap();
    let steps: Vec<u64> = sampler.samples.keys().copied().collect();
    assert!(steps.len() > 100, "only {} samples", steps.len());
    for i in 0..steps.len() {
        let step = steps[(i * 7919) % steps.len()];
        let (hash, regs) = &sampler.samples[&step];
        let snap = timeline.seek(step).unwrap();
        assert_eq!(snap.memory.hash(), *hash, "memory at step {step}");
        assert_eq!(snap.regs.rip, regs.rip, "rip at step {step}");
        assert_eq!(snap.regs.gpr, regs.gpr, "registers at step {step}");
    }
}

#[test]
fn mmio_read_modify_write_is_one_step_with_a_read_and_a_write() {
    require_kvm!();
    let mut backend = KvmBackend::new(probe()).unwrap();
    recorder::test_support::check_mmio_read_modify_write(&mut backend);
}
