//! Test traces made without a VM: the seed scenario (pae-toggle) as a small 32-bit guest
//! whose steps, events and memory are produced the way the recorder produces them, with the
//! MMU decisions of the recorded policies computed by the real `mmu::Tracker`.
//!
//! Guest-physical layout (as in `guests`' pae-toggle):
//!
//! | gpa      | contents |
//! |----------|----------|
//! | `0x1000` | code |
//! | `0x4000` | 32-bit page directory: PDE 0 → `0x5000`, PDE 1 → `0x6000` |
//! | `0x4800` | PAE PDPT (PDEs 512.. of the 32-bit directory): PDPTE 0 → `0x7000` |
//! | `0x5000` | 32-bit page table: identity map of 0..2 MiB |
//! | `0x6000` | 32-bit page table: PTE 0 → `0x10000` (page A) |
//! | `0x7000` | PAE page directory: PDE 0 → `0x8000`, PDE 2 → `0x9000` |
//! | `0x8000` | PAE page table: identity map of 0..2 MiB |
//! | `0x9000` | PAE page table: PTE 0 → `0x11000` (page B) |
//!
//! Linear `0x400000` is page A under 32-bit paging and page B under PAE paging: a policy that
//! keeps the 2-level context after CR4.PAE is set translates it to the wrong page.

#![allow(dead_code)]

use mmu::{Flavour, Tracker};
use replayer::MemoryImage;
use std::path::{Path, PathBuf};
use traces::regs::{CS, DS, ES, SS};
use traces::*;

pub const RAM: u64 = 2 << 20;
pub const CODE: u64 = 0x1000;
pub const MARKER: u64 = 0x40_0000;
pub const POLICIES: [&str; 2] = ["v5.1-rc3", "v5.1"];

/// What an instruction does, as far as the trace can see.
#[derive(Clone, Copy, Debug)]
enum Op {
    SetGpr(usize, u64),
    SetAl(u8),
    MovToCr(ControlReg),
    Cr4ToEax,
    StoreEax(u64),
    OutDxAl,
    Hlt,
}

/// The seed program: paging on, CR4.PAE set with CR0.PG=1, marker written, serial output,
/// PAE cleared again, halt.
fn program() -> Vec<(Vec<u8>, Op)> {
    let mov_eax = |v: u32| {
        let mut b = vec![0xb8];
        b.extend(v.to_le_bytes());
        (b, Op::SetGpr(0, u64::from(v)))
    };
    let mov_dx = |v: u16| {
        let mut b = vec![0x66, 0xba];
        b.extend(v.to_le_bytes());
        (b, Op::SetGpr(2, u64::from(v)))
    };
    let mov_al = |v: u8| (vec![0xb0, v], Op::SetAl(v));
    let store = |lin: u32| {
        let mut b = vec![0xa3];
        b.extend(lin.to_le_bytes());
        (b, Op::StoreEax(u64::from(lin)))
    };
    let out = || (vec![0xee], Op::OutDxAl);
    let mut p = vec![
        mov_eax(0x4800),
        (vec![0x0f, 0x22, 0xd8], Op::MovToCr(ControlReg::Cr3)),
        mov_eax(0x8000_0011),
        (vec![0x0f, 0x22, 0xc0], Op::MovToCr(ControlReg::Cr0)),
        mov_eax(0x314d),
        store(MARKER as u32),
        (vec![0x0f, 0x20, 0xe0], Op::Cr4ToEax),
        (vec![0x83, 0xc8, 0x20], Op::SetGpr(0, 0x20)),
        (vec![0x0f, 0x22, 0xe0], Op::MovToCr(ControlReg::Cr4)),
        mov_eax(0x324d),
        store(MARKER as u32),
        mov_dx(0x3f8),
    ];
    for c in b"OK\n" {
        p.push(mov_al(*c));
        p.push(out());
    }
    p.extend([
        (vec![0x0f, 0x20, 0xe0], Op::Cr4ToEax),
        (vec![0x83, 0xe0, 0xdf], Op::SetGpr(0, 0)),
        (vec![0x0f, 0x22, 0xe0], Op::MovToCr(ControlReg::Cr4)),
        mov_dx(0xe9),
        mov_al(b'!'),
        out(),
        (vec![0xf4], Op::Hlt),
    ]);
    p
}

fn page_tables(image: &mut [u8], base: u64) {
    let mut put32 = |gpa: u64, v: u32| {
        let o = (gpa - base) as usize;
        image[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    put32(0x4000, 0x5000 | 3);
    put32(0x4004, 0x6000 | 3);
    for i in 0..512u64 {
        put32(0x5000 + 4 * i, (i << 12) as u32 | 3);
    }
    put32(0x6000, 0x10000 | 3);
    let mut put64 = |gpa: u64, v: u64| {
        let o = (gpa - base) as usize;
        image[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    put64(0x4800, 0x7000 | 1);
    put64(0x7000, 0x8000 | 3);
    put64(0x7000 + 8 * 2, 0x9000 | 3);
    for i in 0..512u64 {
        put64(0x8000 + 8 * i, (i << 12) | 3);
    }
    put64(0x9000, 0x11000 | 3);
}

fn header(image: Vec<u8>) -> Header {
    let mut entry = Regs {
        rip: CODE,
        rflags: 0x2,
        cr0: 0x11,
        ..Default::default()
    };
    entry.gpr[4] = 0x9_f000;
    let flat = |attrs| Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        attrs,
    };
    entry.seg[CS] = Segment {
        selector: 0x08,
        ..flat(0xc09b)
    };
    for s in [SS, DS, ES] {
        entry.seg[s] = flat(0xc093);
    }
    Header {
        tool_version: "0.1.0".into(),
        created_unix: 1_764_000_000,
        backend: BackendInfo {
            kind: BackendKind::Emu,
            engine: "synthetic (tui tests)".into(),
            ..Default::default()
        },
        guest: GuestSpec {
            ram_size: RAM,
            regions: vec![MemRegion {
                gpa: 0,
                size: RAM,
                kind: RegionKind::Ram,
                name: "ram".into(),
            }],
            blobs: vec![Blob {
                hash: 0,
                name: "pae-toggle.bin".into(),
                data: image,
            }],
            loads: vec![Load { blob: 0, gpa: CODE }],
            entry,
            origin: "scenario pae-toggle".into(),
            ..Default::default()
        },
        policies: POLICIES.iter().map(|s| s.to_string()).collect(),
        mmu_flavour: "tdp".into(),
        scenario: Some("pae-toggle".into()),
        command_line: vec!["mmurr".into(), "record".into()],
        keyframe_interval: 10,
        host: None,
        vcpus: 0,
    }
}

fn outcome(o: mmu::Outcome) -> MmuOutcome {
    match o {
        mmu::Outcome::Reinit => MmuOutcome::Reinit,
        mmu::Outcome::SkippedRoleUnchanged => MmuOutcome::SkippedRoleUnchanged,
        mmu::Outcome::NoTrigger => MmuOutcome::NoTrigger,
        mmu::Outcome::Gp => MmuOutcome::Gp,
        mmu::Outcome::InitOnly => MmuOutcome::InitOnly,
        mmu::Outcome::NewPgd => MmuOutcome::NewPgd,
    }
}

fn translation(t: &mmu::TranslationResult) -> Translation {
    match t {
        mmu::TranslationResult::Phys { gpa } => Translation::Phys(*gpa),
        mmu::TranslationResult::PageFault { error_code } => Translation::PageFault(*error_code),
        _ => Translation::GeneralProtection,
    }
}

/// The guest being "recorded".
struct Machine {
    regs: Regs,
    mem: MemoryImage,
    trackers: Vec<Tracker>,
    records: Vec<Record>,
    next_event: EventId,
    dirty: std::collections::BTreeSet<u64>,
}

impl Machine {
    fn event(&mut self, step: Step, rip: u64, kind: EventKind) -> EventId {
        let id = self.next_event;
        self.next_event += 1;
        self.records.push(Record::Event(Event {
            id,
            step,
            rip,
            kind,
        }));
        id
    }

    fn keyframe(&mut self, step: Step, pages: bool) {
        let pages = if pages {
            let out = self
                .dirty
                .iter()
                .map(|&p| {
                    let mut data = vec![0; 4096];
                    self.mem.read(p, &mut data);
                    Page { gpa: p, data }
                })
                .collect();
            self.dirty.clear();
            out
        } else {
            Vec::new()
        };
        self.records.push(Record::Keyframe(Keyframe {
            step,
            regs: self.regs.clone(),
            carries_pages: true,
            pages,
            memory_hash: self.mem.hash(),
        }));
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> MemWrite {
        assert!(self.mem.write(gpa, data));
        self.dirty.insert(gpa & !0xfff);
        MemWrite {
            gpa,
            data: data.to_vec(),
        }
    }

    fn cr_write(&mut self, step: Step, rip: u64, reg: ControlReg) {
        let value = self.regs.gpr[0];
        let old_mode = tui::events::paging_mode(&self.regs);
        let old = match reg {
            ControlReg::Cr0 => std::mem::replace(&mut self.regs.cr0, value),
            ControlReg::Cr3 => std::mem::replace(&mut self.regs.cr3, value),
            ControlReg::Cr4 => std::mem::replace(&mut self.regs.cr4, value),
            _ => unreachable!("the seed program writes CR0, CR3 and CR4 only"),
        };
        let cr = insn::control_regs(&self.regs);
        if cr.is_pae_paging() {
            self.regs.pdptrs = mmu::load_pdptrs(cr.cr3, &self.mem, 46).expect("valid PDPTEs");
        }
        let write = CrWrite {
            reg,
            old,
            new: value,
            via: WriteVia::MovCr,
            faulted: false,
        };
        let cause = self.event(step, rip, EventKind::CrWrite(write.clone()));
        let new_mode = tui::events::paging_mode(&self.regs);
        if new_mode != old_mode {
            self.event(
                step,
                rip,
                EventKind::Transition {
                    from: old_mode,
                    to: new_mode,
                },
            );
        }
        let input = history::model_input(&write).expect("an MMU input");
        let after = insn::control_regs(&self.regs);
        let mut trackers = std::mem::take(&mut self.trackers);
        for (p, t) in trackers.iter_mut().enumerate() {
            let d = t.apply(&input, &after, &self.mem);
            self.event(
                step,
                rip,
                EventKind::Mmu(MmuDecision {
                    policy: p as u16,
                    cause,
                    outcome: outcome(d.outcome),
                    trigger_bits: d.trigger_bits,
                    old_cpu_role: d.old_cpu_role.as_u64(),
                    new_cpu_role: d.new_cpu_role.as_u64(),
                    old_root_role: d.old_root_role.0,
                    new_root_role: d.new_root_role.0,
                    context_changes: d.context_changes.clone(),
                    root_cache: None,
                    tlb_flush: TlbFlush::None,
                }),
            );
            if let Some(stale) = &d.stale {
                let diffs = mmu::compare_translations(
                    &stale.kept,
                    &stale.correct,
                    &after,
                    &mmu::CpuModel::default_x86_64(),
                    &self.mem,
                    &[(MARKER, mmu::Access::Write)],
                );
                self.event(
                    step,
                    rip,
                    EventKind::Finding(Finding {
                        policy: p as u16,
                        cause,
                        kind: FindingKind::StaleContext,
                        attributes: stale
                            .attributes
                            .iter()
                            .map(|a| (a.attribute.to_string(), a.kept.clone(), a.correct.clone()))
                            .collect(),
                        translations: diffs
                            .iter()
                            .map(|x| TranslationDiff {
                                gva: x.gva,
                                access: 'w',
                                kept: translation(&x.kept),
                                correct: translation(&x.correct),
                            })
                            .collect(),
                        detail: "the 2-level context was kept after CR4.PAE".into(),
                    }),
                );
            }
        }
        self.trackers = trackers;
    }
}

/// The seed trace's records and header.
pub fn seed() -> (Header, Vec<Record>) {
    let program = program();
    let code: Vec<u8> = program.iter().flat_map(|(b, _)| b.clone()).collect();
    let mut image = vec![0u8; 0xa000 - CODE as usize];
    image[..code.len()].copy_from_slice(&code);
    page_tables(&mut image, CODE);
    let mut header = header(image);
    header.guest.blobs[0].hash = xxhash(&header.guest.blobs[0].data);
    let cpu = replayer::cpu_model(&header.guest);
    let entry = insn::control_regs(&header.guest.entry);
    let mut m = Machine {
        regs: header.guest.entry.clone(),
        mem: MemoryImage::from_guest(&header.guest).unwrap(),
        trackers: POLICIES
            .iter()
            .map(|p| Tracker::new(mmu::policy(p).unwrap(), Flavour::Tdp, cpu, &entry))
            .collect(),
        records: Vec::new(),
        next_event: 0,
        dirty: Default::default(),
    };
    m.keyframe(0, true);
    let mut step = 0;
    let mut halted = false;
    for (bytes, op) in program {
        step += 1;
        let before = m.regs.clone();
        let rip = before.rip;
        m.regs.rip += bytes.len() as u64;
        let mut mem = Vec::new();
        let mut after_events: Vec<Op> = Vec::new();
        match op {
            Op::SetGpr(r, v) => m.regs.gpr[r] = v,
            Op::SetAl(v) => m.regs.gpr[0] = (m.regs.gpr[0] & !0xff) | u64::from(v),
            Op::Cr4ToEax => m.regs.gpr[0] = m.regs.cr4,
            Op::StoreEax(lin) => {
                let gpa = insn::translate(&before, &cpu, &m.mem, lin, mmu::Access::Write)
                    .expect("the marker is mapped");
                let v = (m.regs.gpr[0] as u32).to_le_bytes();
                mem.push(m.write(gpa, &v));
            }
            Op::MovToCr(_) | Op::OutDxAl => after_events.push(op),
            Op::Hlt => halted = true,
        }
        let regs_now = m.regs.clone();
        m.records.push(Record::Step(StepRecord {
            step,
            rip,
            regs: regs_now.delta_from(&before),
            mem,
        }));
        for op in after_events {
            match op {
                Op::MovToCr(reg) => {
                    m.cr_write(step, rip, reg);
                    // CR writes change the registers after the step record was taken.
                    if let Some(Record::Step(s)) = m
                        .records
                        .iter_mut()
                        .rev()
                        .find(|r| matches!(r, Record::Step(_)))
                    {
                        s.regs = m.regs.delta_from(&before);
                    }
                }
                Op::OutDxAl => {
                    m.event(
                        step,
                        rip,
                        EventKind::Io(IoAccess {
                            port: m.regs.gpr[2] as u16,
                            write: true,
                            size: 1,
                            data: (m.regs.gpr[0] & 0xff) as u32,
                        }),
                    );
                }
                _ => {}
            }
        }
        if halted {
            break;
        }
        if step % 10 == 0 {
            m.keyframe(step, true);
        }
    }
    m.keyframe(step, true);
    m.records.push(Record::End(EndRecord {
        step,
        reason: EndReason::Halted,
        message: "HLT with interrupts disabled".into(),
        self_check_failures: vec![],
    }));
    (header, m.records)
}

fn xxhash(data: &[u8]) -> u64 {
    // Content hashes only deduplicate blobs; any stable value will do for a test trace.
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Writes `records` under `header` to `path`.
pub fn write(path: &Path, header: &Header, records: &[Record]) {
    let mut w = Writer::create(path, header).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
    w.finish().unwrap();
}

/// The seed trace written into `dir`.
pub fn seed_file(dir: &Path) -> PathBuf {
    let path = dir.join("pae-toggle.mmurr");
    let (header, records) = seed();
    write(&path, &header, &records);
    path
}

/// The committed recording `traces/corpus/recorded/NAME`, opened and loaded.
pub fn open_recorded(name: &str) -> tui::app::App {
    open(&recorded(name))
}

/// The path of the committed recording `traces/corpus/recorded/NAME`.
pub fn recorded(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/corpus/recorded")
        .join(name)
}

/// The browser on `path`, every event loaded.
pub fn open(path: &Path) -> tui::app::App {
    let mut app = tui::app::App::open(path).unwrap();
    app.finish_loading();
    app
}

/// The screen drawn at `w` × `h` on ratatui's test backend, as text.
pub fn screen(app: &tui::app::App, w: u16, h: u16) -> String {
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
    t.draw(|f| tui::ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Each character of `keys` pressed.
pub fn press(app: &mut tui::app::App, keys: &str) {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}
