//! `monitor` commands: parsing and help, shared by the replay and live servers (each answers
//! the commands it can; the live server says which ones need a trace).

use crate::breakpoints::{Breakpoints, CatchKind, Catchpoint, WatchOrigin, Watchpoint};

pub const HELP: &str = "\
mmurr monitor commands:
  help                      this text
  mode                      paging mode, code size, CS:RIP and CR0/CR4/EFER flags
  disas [N]                 N instructions (default 8) from pc, decoded in the current
                            mode's code size (gdb's x/i always decodes as 64-bit code)
  phys | virt               gdb memory accesses use guest-physical / virtual addresses
  role [POLICY]             cpu_role and root_role field by field, and the kept MMU context
  walk ADDR [POLICY]        page walk level by level: architecture vs POLICY's kept context
                            (without POLICY: every policy whose context is stale)
  host                      the recording host's own KVM: its current root role field by
                            field and its recent MMU events (traces recorded with
                            --host-events)
  policies                  the policies analysed, with their summaries
  check                     MMU-context findings at this point
  events [N]                N events (default 20) from the current point
  when                      current step and the events around it
  seek STEP                 move to a step (replay)
  goto-event N              move to the step of event N (replay)
  break-on KIND [POLICY]    continue / reverse-continue stop at the next / previous KIND:
                            transition reset cr0 cr3 cr4 efer divergence
  break-on clear            remove every break-on
  break-on                  list them
  watch-phys ADDR [LEN]     continue / reverse-continue stop where guest-physical
                            [ADDR, ADDR+LEN) is written (LEN 8 by default); gdb's own
                            `watch` works too, on virtual addresses
  info mem | info tlb       every mapping of the current address space (QEMU's `info mem`:
                            ranges coalesced; `info tlb`: one line per leaf entry), with
                            user/read/write/execute rights and the physical address
  watch-phys clear          remove every watch-phys
  watch-phys                list the watchpoints (gdb's and watch-phys)
After seek / goto-event, gdb still shows its cached registers: run
`maintenance flush register-cache` (or `flushregs`).";

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Mode,
    Disas(usize),
    Phys,
    Virt,
    Role(Option<String>),
    Walk(u64, Option<String>),
    Policies,
    Host,
    Check,
    Events(usize),
    When,
    Seek(u64),
    GotoEvent(u64),
    BreakOn(Catchpoint),
    BreakOnClear,
    BreakOnList,
    WatchPhys(u64, u64),
    WatchPhysClear,
    WatchList,
    /// `info mem` (coalesced) or `info tlb` (every leaf).
    Mappings {
        coalesce: bool,
    },
}

/// `watch-phys` (both servers): sets, clears or lists watchpoints; the text to print.
pub fn watch_phys(bps: &mut Breakpoints, cmd: &Command) -> String {
    match *cmd {
        Command::WatchPhys(addr, len) => {
            let w = Watchpoint {
                addr,
                len,
                origin: WatchOrigin::Monitor,
                pieces: vec![(addr, len as usize)],
            };
            let text = format!("continue and reverse-continue stop where {w} is written");
            bps.add_watch(w);
            text
        }
        Command::WatchPhysClear => {
            bps.remove_watch(WatchOrigin::Monitor, None);
            "watch-phys cleared".into()
        }
        _ => {
            let list: Vec<String> = bps.watches().iter().map(|w| format!("  {w}")).collect();
            if list.is_empty() {
                "no watchpoints".into()
            } else {
                format!("watchpoints:\n{}", list.join("\n"))
            }
        }
    }
}

/// Lines of `info mem` / `info tlb` at the most.
const MAPPING_LINES: usize = 4096;

/// `info mem` / `info tlb` (both servers): the mappings of the address space of `regs`.
pub fn mappings_text(
    regs: &traces::Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    coalesce: bool,
) -> String {
    let cr = insn::control_regs(regs);
    let mode = mmu::PagingMode::of_regs(&cr);
    if !mode.is_paged() {
        return format!(
            "{}: paging is off, linear addresses are physical",
            mode.name()
        );
    }
    let all = match mmu::mappings(&cr, cpu, mem, coalesce, 1 << 16) {
        Ok(m) => m,
        Err(mmu::TooManyTables(n)) => {
            return format!("more than {n} page-table pages: too many to list")
        }
    };
    let mut out = vec![format!(
        "{} paging, CR3 {:#x}: {} {}",
        mode.name(),
        cr.cr3,
        all.len(),
        if coalesce { "ranges" } else { "leaf entries" }
    )];
    for m in all.iter().take(MAPPING_LINES) {
        let r = m.rights;
        out.push(format!(
            "{:016x}-{:016x} {:016x} {}r{}{} -> {:#x}",
            m.linear,
            m.linear.wrapping_add(m.len),
            m.len,
            if r.user { 'u' } else { '-' },
            if r.write { 'w' } else { '-' },
            if r.execute { 'x' } else { '-' },
            m.phys
        ));
    }
    if all.len() > MAPPING_LINES {
        out.push(format!("... and {} more", all.len() - MAPPING_LINES));
    }
    out.join("\n")
}

/// Numbers as gdb users type them: decimal, or hex with `0x`.
pub fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `disas`'s text: `=>` marks the instruction at pc; addresses are CS:RIP offsets as the CPU
/// decodes them, followed by the bytes.
pub fn disassembly(
    regs: &traces::Regs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    n: usize,
) -> String {
    let lines = replayer::views::disasm::around(regs, cpu, mem, &[], n.saturating_sub(1));
    let mut out = vec![format!("{}-bit code:", insn::bitness(regs))];
    for l in lines {
        out.push(format!(
            "{} {:#x}:  {:<24} {}",
            if l.current { "=>" } else { "  " },
            l.rip,
            l.bytes,
            l.text
        ));
    }
    out.join("\n")
}

/// The last control-register write at or before the current point: its event line, its
/// event id and every policy's decision, in the session's policy order.
pub struct LastWrite<'a> {
    pub line: String,
    pub id: u64,
    pub decisions: &'a [mmu::Decision],
}

/// `monitor role`'s text: policy `p`'s tracker, and what it decided at the last write. Both
/// servers answer with it (the live one from the recorder's model as the guest runs, the
/// replay one from the trace's analysis), so the same point gives the same text.
pub fn role_text(step: u64, t: &mmu::Tracker, p: usize, last: Option<&LastWrite<'_>>) -> String {
    let mut out = format!("at step {step}: {}", replayer::views::mmu_role::describe(t));
    if let Some(w) = last {
        if let Some(d) = w.decisions.get(p) {
            out += &format!(
                "\nlast write: {}\n  {} decided: {}",
                w.line,
                t.policy().name,
                d.describe()
            );
        }
    }
    out
}

/// `monitor check`'s text: every stale context at this point, and needless resets of the
/// last write.
pub fn check_text(step: u64, trackers: &[&mmu::Tracker], last: Option<&LastWrite<'_>>) -> String {
    let mut out = vec![format!("at step {step}:")];
    let mut any = false;
    for t in trackers {
        if let Some(st) = t.stale() {
            any = true;
            let what: Vec<String> = st
                .attributes
                .iter()
                .map(|a| format!("{} kept {} required {}", a.attribute, a.kept, a.correct))
                .collect();
            out.push(format!(
                "  {}: STALE context: {}",
                t.policy().name,
                what.join(", ")
            ));
        }
    }
    if !any {
        out.push("  every policy's MMU context matches the architecture".into());
    }
    if let Some(w) = last {
        for (t, d) in trackers.iter().zip(w.decisions) {
            if d.needless_reset {
                out.push(format!(
                    "  {}: the last write (event #{}) caused a needless reset",
                    t.policy().name,
                    w.id
                ));
            }
        }
    }
    out.join("\n")
}

/// `monitor walk`'s text: the architecture's walk of `addr`, and each `kept` context's walk
/// where it differs (the architecture's printed once).
pub fn walk_text(
    cr: &mmu::ControlRegs,
    cpu: &mmu::CpuModel,
    mem: &dyn mmu::GuestMemory,
    addr: u64,
    kept: &[&mmu::Tracker],
) -> String {
    use replayer::views::page_walk;
    if kept.is_empty() {
        let mut out = page_walk::compare(cr, cpu, mem, addr, None);
        out += "\nevery policy's kept context matches the architecture here";
        return out;
    }
    let mut parts = Vec::new();
    for (n, t) in kept.iter().enumerate() {
        let text = page_walk::compare(cr, cpu, mem, addr, Some((t.policy().name, t.context())));
        parts.push(if n == 0 {
            text
        } else {
            text.lines()
                .skip_while(|l| !l.contains("kept context"))
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    parts.join("\n")
}

/// Parses a command line; the error is the message to show.
pub fn parse(bytes: &[u8]) -> Result<Command, String> {
    let line = String::from_utf8_lossy(bytes);
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| words.get(i).map(|s| s.to_string());
    let need_number = |i: usize, what: &str| -> Result<u64, String> {
        let w = words
            .get(i)
            .ok_or_else(|| format!("{} needs {what}", words[0]))?;
        parse_number(w).ok_or_else(|| format!("not a number: {w}"))
    };
    let Some(&cmd) = words.first() else {
        return Ok(Command::Help);
    };
    let max_args = |n: usize| -> Result<(), String> {
        if words.len() > n + 1 {
            Err(format!("too many arguments for {cmd}"))
        } else {
            Ok(())
        }
    };
    let c = match cmd {
        "help" => Command::Help,
        "mode" => Command::Mode,
        "disas" => {
            max_args(1)?;
            let n = if words.len() > 1 {
                need_number(1, "a count")?
            } else {
                8
            };
            Command::Disas(n.clamp(1, 1000) as usize)
        }
        "phys" => Command::Phys,
        "virt" => Command::Virt,
        "role" => {
            max_args(1)?;
            Command::Role(arg(1))
        }
        "walk" => {
            max_args(2)?;
            Command::Walk(need_number(1, "an address")?, arg(2))
        }
        "policies" => Command::Policies,
        "host" => Command::Host,
        "check" => Command::Check,
        "events" => {
            max_args(1)?;
            let n = if words.len() > 1 {
                need_number(1, "a count")?
            } else {
                20
            };
            Command::Events(n.min(10_000) as usize)
        }
        "when" => Command::When,
        "seek" => {
            max_args(1)?;
            Command::Seek(need_number(1, "a step")?)
        }
        "goto-event" => {
            max_args(1)?;
            Command::GotoEvent(need_number(1, "an event number")?)
        }
        "break-on" => match words.get(1) {
            None => Command::BreakOnList,
            Some(&"clear") => {
                max_args(1)?;
                Command::BreakOnClear
            }
            Some(kind) => {
                max_args(2)?;
                let kind = CatchKind::parse(kind).ok_or_else(|| {
                    let all: Vec<&str> = CatchKind::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown break-on kind {kind:?}; one of: {}", all.join(" "))
                })?;
                let policy = arg(2);
                if policy.is_some() && !kind.per_policy() {
                    return Err(format!(
                        "break-on {} takes no policy (only reset and divergence do)",
                        kind.name()
                    ));
                }
                Command::BreakOn(Catchpoint { kind, policy })
            }
        },
        "info" => {
            max_args(1)?;
            match words.get(1) {
                Some(&"mem") => Command::Mappings { coalesce: true },
                Some(&"tlb") => Command::Mappings { coalesce: false },
                _ => return Err("info takes mem or tlb".into()),
            }
        }
        "watch-phys" => match words.get(1) {
            None => Command::WatchList,
            Some(&"clear") => {
                max_args(1)?;
                Command::WatchPhysClear
            }
            Some(_) => {
                max_args(2)?;
                let len = if words.len() > 2 {
                    need_number(2, "a length")?
                } else {
                    8
                };
                if len == 0 || len > 1 << 20 {
                    return Err(format!("watch-phys length {len}: 1 to 1 MiB"));
                }
                Command::WatchPhys(need_number(1, "an address")?, len)
            }
        },
        other => return Err(format!("unknown command {other:?}; try `monitor help`")),
    };
    if matches!(
        c,
        Command::Help
            | Command::Mode
            | Command::Phys
            | Command::Virt
            | Command::Policies
            | Command::Host
            | Command::Check
            | Command::When
    ) {
        max_args(0)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(b"walk 0x7000 v5.1-rc3").unwrap(),
            Command::Walk(0x7000, Some("v5.1-rc3".into()))
        );
        assert_eq!(parse(b"  events  ").unwrap(), Command::Events(20));
        assert_eq!(parse(b"seek 12").unwrap(), Command::Seek(12));
        assert_eq!(parse(b"host").unwrap(), Command::Host);
        assert!(parse(b"host v6.14").is_err());
        assert_eq!(parse(b"break-on clear").unwrap(), Command::BreakOnClear);
        assert_eq!(
            parse(b"break-on divergence v5.1-rc3").unwrap(),
            Command::BreakOn(Catchpoint {
                kind: CatchKind::Divergence,
                policy: Some("v5.1-rc3".into())
            })
        );
        assert!(parse(b"break-on cr4 v5.0").is_err());
        assert_eq!(
            parse(b"watch-phys 0x3000").unwrap(),
            Command::WatchPhys(0x3000, 8)
        );
        assert_eq!(
            parse(b"watch-phys 0x3000 4").unwrap(),
            Command::WatchPhys(0x3000, 4)
        );
        assert_eq!(parse(b"watch-phys").unwrap(), Command::WatchList);
        assert!(parse(b"watch-phys 0x3000 0").is_err());
        let mut b = Breakpoints::default();
        watch_phys(&mut b, &parse(b"watch-phys 0x3000 4").unwrap());
        assert!(watch_phys(&mut b, &Command::WatchList).contains("physical 0x3000 (4 bytes)"));
        watch_phys(&mut b, &Command::WatchPhysClear);
        assert_eq!(watch_phys(&mut b, &Command::WatchList), "no watchpoints");
        assert!(parse(b"walk").is_err());
        assert!(parse(b"walk zz").is_err());
        assert!(parse(b"mode extra").is_err());
        assert!(parse(b"frobnicate").is_err());
        assert!(parse(&[0xff, 0xfe, b' ', 0]).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x1_000"), Some(0x1000));
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0xzz"), None);
    }
}
