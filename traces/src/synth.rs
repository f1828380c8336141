//! Deterministic synthetic traces: the golden corpus, the tests, the benchmarks and the fuzz
//! seeds are all made from these, so they never need a VM.
//!
//! The golden files in `traces/corpus/` were written from [`golden`]; its output is frozen
//! (the golden test compares the files against it), so never change what it produces.

use crate::record::*;
use crate::regs::{RegId, Regs, Segment};

/// splitmix64: tiny, deterministic, good enough for synthetic data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub const POLICIES: [&str; 4] = [
    "v5.0",
    "v5.1-rc3 (47c42e6b4192)",
    "v5.1 (cr4_pae fix)",
    "upstream",
];

/// A plausible header: an emu recording of a scenario with one small image blob.
pub fn header(scenario: &str, seed: u64) -> Header {
    let mut rng = Rng::new(seed);
    let image: Vec<u8> = (0..512).map(|_| rng.next_u64() as u8).collect();
    let mut seg = [Segment::default(); 6];
    seg[crate::regs::CS] = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attrs: 0x9b,
    };
    let entry = Regs {
        rip: 0x7c00,
        rflags: 0x2,
        cr0: 0x10,
        seg,
        ..Regs::default()
    };
    Header {
        tool_version: "0.1.0".into(),
        created_unix: 1_764_000_000,
        backend: BackendInfo {
            kind: BackendKind::Emu,
            engine: "unicorn 2.1.3".into(),
            host_kernel: "6.8.0-synthetic".into(),
            cpu_vendor: "AuthenticAMD".into(),
            cpu_model_name: "AMD EPYC (synthetic)".into(),
            cpu_family: 25,
            cpu_model: 1,
            cpu_stepping: 1,
            kvm_facts: vec![("tdp_mmu".into(), "Y".into())],
        },
        guest: GuestSpec {
            ram_size: 16 << 20,
            regions: vec![MemRegion {
                gpa: 0,
                size: 16 << 20,
                kind: RegionKind::Ram,
                name: "ram".into(),
            }],
            blobs: vec![Blob {
                hash: xxhash_rust::xxh3::xxh3_64(&image),
                name: format!("{scenario}.bin"),
                data: image,
            }],
            loads: vec![Load {
                blob: 0,
                gpa: 0x7c00,
            }],
            entry,
            cpuid: vec![CpuidEntry {
                function: 0x8000_0008,
                index: 0,
                eax: 0x30,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }],
            origin: format!("scenario {scenario}"),
            cmdline: String::new(),
            maxphyaddr: 48,
        },
        policies: POLICIES.iter().map(|s| s.to_string()).collect(),
        mmu_flavour: "tdp".into(),
        scenario: Some(scenario.into()),
        command_line: vec![
            "mmurr".into(),
            "record".into(),
            "--scenario".into(),
            scenario.into(),
        ],
        keyframe_interval: 100,
        host: None,
        vcpus: 0,
    }
}

/// A step record as a tracer makes them: RIP advances, one or two GPRs change, every eighth
/// step writes a few bytes of memory.
pub fn step(rng: &mut Rng, step: Step, rip: u64) -> StepRecord {
    let mut regs = vec![(RegId::Rip, rip + 1 + rng.below(6))];
    for _ in 0..1 + rng.below(2) {
        regs.push((RegId::Gpr(rng.below(16) as u8), rng.below(1 << 20)));
    }
    let mem = if rng.below(8) == 0 {
        vec![MemWrite {
            gpa: 0x10_0000 + rng.below(1 << 16) * 8,
            data: rng.next_u64().to_le_bytes()[..1 + rng.below(8) as usize].to_vec(),
        }]
    } else {
        Vec::new()
    };
    StepRecord {
        step,
        rip,
        regs,
        mem,
    }
}

/// Builds a record stream of `steps` steps with a keyframe every `keyframe_interval` steps
/// and, every `event_interval` steps, a control-register write with one MMU decision per
/// policy (and a paging-mode transition or a finding now and then). Ends with an End record.
pub struct Synth {
    rng: Rng,
    steps: Step,
    keyframe_interval: u64,
    event_interval: u64,
    step: Step,
    rip: u64,
    next_event: EventId,
    regs: Regs,
    mode: usize,
    pending: std::collections::VecDeque<Record>,
    done: bool,
}

const MODES: [PagingMode; 4] = [
    PagingMode::Real,
    PagingMode::Unpaged,
    PagingMode::Pae,
    PagingMode::Level4,
];

impl Synth {
    pub fn new(seed: u64, steps: Step, keyframe_interval: u64, event_interval: u64) -> Self {
        let mut s = Synth {
            rng: Rng::new(seed),
            steps,
            keyframe_interval: keyframe_interval.max(1),
            event_interval: event_interval.max(1),
            step: 0,
            rip: 0x7c00,
            next_event: 0,
            regs: header("synth", seed).guest.entry,
            mode: 0,
            pending: Default::default(),
            done: false,
        };
        let entry = s.keyframe(true);
        s.pending.push_back(Record::Keyframe(entry));
        s
    }

    fn keyframe(&mut self, carries_pages: bool) -> Keyframe {
        let pages = if carries_pages && self.step > 0 {
            vec![Page {
                gpa: 0x10_0000,
                data: (0..4096).map(|i| (i as u64 ^ self.step) as u8).collect(),
            }]
        } else {
            Vec::new()
        };
        Keyframe {
            step: self.step,
            regs: self.regs.clone(),
            pages,
            carries_pages,
            memory_hash: self.rng.next_u64(),
        }
    }

    fn event(&mut self, kind: EventKind) -> Record {
        let e = Event {
            id: self.next_event,
            step: self.step,
            rip: self.rip,
            kind,
        };
        self.next_event += 1;
        Record::Event(e)
    }

    fn events(&mut self) {
        let n = self.step / self.event_interval;
        let cause = self.next_event;
        let reg = [
            ControlReg::Cr0,
            ControlReg::Cr3,
            ControlReg::Cr4,
            ControlReg::Efer,
            ControlReg::Xcr0,
        ][(n % 5) as usize];
        let old = self.regs.cr4;
        let new = old ^ (1 << (n % 8));
        let write = self.event(EventKind::CrWrite(CrWrite {
            reg,
            old,
            new,
            via: if reg == ControlReg::Efer {
                WriteVia::Wrmsr
            } else {
                WriteVia::MovCr
            },
            faulted: false,
        }));
        self.pending.push_back(write);
        if n.is_multiple_of(3) {
            let from = MODES[self.mode % MODES.len()];
            self.mode += 1;
            let to = MODES[self.mode % MODES.len()];
            let t = self.event(EventKind::Transition { from, to });
            self.pending.push_back(t);
        }
        for policy in 0..POLICIES.len() as u16 {
            let outcome = [
                MmuOutcome::Reinit,
                MmuOutcome::SkippedRoleUnchanged,
                MmuOutcome::NoTrigger,
                MmuOutcome::NewPgd,
                MmuOutcome::InitOnly,
            ][((n + policy as u64) % 5) as usize];
            let d = self.event(EventKind::Mmu(MmuDecision {
                policy,
                cause,
                outcome,
                trigger_bits: new ^ old,
                old_cpu_role: 0x1_0000 + n,
                new_cpu_role: 0x1_0000 + n + (outcome == MmuOutcome::Reinit) as u64,
                old_root_role: 0x300 + n as u32,
                new_root_role: 0x300 + n as u32,
                context_changes: if outcome == MmuOutcome::Reinit {
                    vec!["root_level".into()]
                } else {
                    Vec::new()
                },
                root_cache: (reg == ControlReg::Cr3).then_some(RootCacheLookup {
                    hit: n.is_multiple_of(2),
                    slot: n.is_multiple_of(2).then_some(0),
                    role: 0x300,
                }),
                tlb_flush: TlbFlush::Current,
            }));
            self.pending.push_back(d);
        }
        if n % 7 == 3 {
            let f = self.event(EventKind::Finding(Finding {
                policy: 1,
                cause,
                kind: FindingKind::StaleContext,
                attributes: vec![("root_level".into(), "2".into(), "3".into())],
                translations: vec![TranslationDiff {
                    gva: 0x40_0000,
                    access: 'r',
                    kept: Translation::Phys(0x1000),
                    correct: Translation::PageFault(0),
                }],
                detail: "CR4.PAE set with paging on; the role did not change".into(),
            }));
            self.pending.push_back(f);
        }
        if n % 4 == 1 {
            let io = self.event(EventKind::Io(IoAccess {
                port: 0x3f8,
                write: true,
                size: 1,
                data: b'a' as u32 + (n % 26) as u32,
            }));
            self.pending.push_back(io);
        }
        self.regs.cr4 = new;
    }
}

impl Iterator for Synth {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            if self.done {
                return None;
            }
            if self.step >= self.steps {
                self.done = true;
                return Some(Record::End(EndRecord {
                    step: self.step,
                    reason: EndReason::DebugExit { status: 0 },
                    message: "guest wrote 0 to the debug-exit port".into(),
                    self_check_failures: Vec::new(),
                }));
            }
            self.step += 1;
            let s = step(&mut self.rng, self.step, self.rip);
            self.rip = s.regs.first().map_or(self.rip, |r| r.1);
            self.regs.apply_delta(&s.regs);
            self.pending.push_back(Record::Step(s));
            if self.step.is_multiple_of(self.event_interval) {
                self.events();
            }
            if self.step.is_multiple_of(self.keyframe_interval) {
                let carries = self.step.is_multiple_of(self.keyframe_interval * 4);
                let k = self.keyframe(carries);
                self.pending.push_back(Record::Keyframe(k));
            }
        }
    }
}

/// A golden trace: its name, header, records, and after which record indices the writer is
/// told to flush a chunk (so small files still have several chunks).
pub struct Golden {
    pub name: &'static str,
    pub header: Header,
    pub records: Vec<Record>,
    pub flush_every: usize,
    /// The writer "died" halfway through writing the last chunk: no index, no trailer.
    pub killed: bool,
}

/// The golden corpus, format version 1. Frozen: the files in `traces/corpus/` hold exactly this.
pub fn golden() -> Vec<Golden> {
    vec![
        Golden {
            name: "pae-toggle",
            header: header("pae-toggle", 1),
            records: Synth::new(1, 600, 100, 40).collect(),
            flush_every: 150,
            killed: false,
        },
        Golden {
            name: "long-mode",
            header: header("long-mode", 2),
            records: Synth::new(2, 300, 50, 25).collect(),
            flush_every: 100,
            killed: false,
        },
        Golden {
            name: "killed",
            header: header("pae-toggle", 3),
            records: Synth::new(3, 400, 100, 40).collect(),
            flush_every: 120,
            killed: true,
        },
    ]
}

impl Golden {
    /// The file bytes: written with a flush every `flush_every` records; a killed trace is
    /// cut in the middle of its last chunk, as if the recorder died while writing it.
    pub fn write(&self) -> crate::Result<Vec<u8>> {
        let mut w = crate::Writer::new(Vec::new(), &self.header)?;
        for (i, r) in self.records.iter().enumerate() {
            w.append(r)?;
            if (i + 1) % self.flush_every == 0 {
                w.flush_chunk()?;
            }
        }
        let (mut bytes, _) = w.finish()?;
        if self.killed {
            let reader = crate::Reader::from_bytes(bytes.clone())?;
            if let Some(last) = reader.chunks().last() {
                bytes.truncate((last.offset + last.header.file_len() / 2) as usize);
            }
        }
        Ok(bytes)
    }
}
