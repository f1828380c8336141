//! A page walk told level by level, and the same address walked by a policy's kept MMU
//! context next to the architecture's: how a stale context (the seed bug's 2-level walker over
//! PAE tables) shows up as a different translation. Plain text, shared by the gdb server's
//! `monitor walk` and anything else that prints walks.

use mmu::{
    translate_with_context, walk, Access, AccessRequest, ControlRegs, CpuModel, Fault, GuestMemory,
    MmuContext, PagingMode, Walk, WalkLevel,
};

/// Name of the paging-structure entry a walk reads at `level` in `mode`.
pub fn entry_name(mode: PagingMode, level: u8) -> &'static str {
    match (mode, level) {
        (PagingMode::Bits32, 2) => "PDE",
        (PagingMode::Bits32, 1) => "PTE",
        (_, 5) => "PML5E",
        (_, 4) => "PML4E",
        (_, 3) => "PDPTE",
        (_, 2) => "PDE",
        (_, 1) => "PTE",
        _ => "entry",
    }
}

/// Index of the entry for `gva` at `level` (4-byte entries in 32-bit paging, 8-byte otherwise).
pub fn entry_index(mode: PagingMode, level: u8, gva: u64) -> u64 {
    match mode {
        PagingMode::Bits32 => (gva >> (12 + 10 * (u32::from(level) - 1))) & 0x3ff,
        PagingMode::Pae if level == 3 => (gva >> 30) & 3,
        _ => (gva >> (12 + 9 * (u32::from(level.max(1)) - 1))) & 0x1ff,
    }
}

fn level_line(mode: PagingMode, gva: u64, l: &WalkLevel) -> String {
    let name = entry_name(mode, l.level);
    let index = entry_index(mode, l.level, gva);
    let at = if l.from_register {
        "PDPTE register".to_string()
    } else {
        format!("@{:#x}", l.entry_gpa)
    };
    let width = usize::from(l.entry_bytes) * 2;
    let mut flags = Vec::new();
    if !l.present {
        flags.push("not-present".to_string());
    } else {
        flags.push("P".into());
        if l.writable {
            flags.push("W".into());
        }
        if l.user {
            flags.push("U".into());
        }
        if l.nx {
            flags.push("NX".into());
        }
        if let Some(pk) = l.pk {
            flags.push(format!("PK={pk}"));
        }
        if let Some(size) = l.page_size {
            flags.push(format!("leaf {}", page_size_name(size)));
        }
        if l.reserved != 0 {
            flags.push(format!("RESERVED bits {:#x}", l.reserved));
        }
    }
    format!(
        "  {name}[{index}] {at} = {:#0w$x}  {}",
        l.entry,
        flags.join(" "),
        w = width + 2
    )
}

/// `4 KiB`, `2 MiB`, `4 MiB`, `1 GiB`.
pub fn page_size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{} GiB", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

/// The outcome line of a walk: `=> gpa 0x8000 (4 KiB page)` or the fault.
pub fn outcome(w: &Walk) -> String {
    match &w.result {
        Ok(t) => format!(
            "  => gpa {:#x} ({} page)",
            t.gpa,
            page_size_name(t.page_size)
        ),
        Err(f) => format!("  => {}", fault_text(f)),
    }
}

fn fault_text(f: &Fault) -> String {
    match f {
        Fault::EntryUnreadable { gpa, level } => {
            format!("entry at {gpa:#x} (level {level}) lies outside guest RAM")
        }
        other => other.to_string(),
    }
}

/// Every level of a walk, then its outcome.
pub fn describe(w: &Walk) -> Vec<String> {
    let mut out: Vec<String> = w
        .levels
        .iter()
        .map(|l| level_line(w.mode, w.gva, l))
        .collect();
    if w.levels.is_empty() && w.result.is_ok() {
        out.push("  (no paging: linear = physical)".into());
    }
    out.push(outcome(w));
    out
}

/// The request a debugger's look at memory makes: supervisor, AC set so SMAP does not hide
/// user pages, no A/D updates.
pub fn debugger_request(access: Access) -> AccessRequest {
    AccessRequest {
        access,
        cpl: 0,
        implicit_supervisor: false,
        rflags_ac: true,
    }
}

/// One address walked by the architecture and, when given, by a policy's kept context:
/// the text of `monitor walk`.
pub fn compare(
    regs: &ControlRegs,
    cpu: &CpuModel,
    mem: &dyn GuestMemory,
    gva: u64,
    kept: Option<(&str, &MmuContext)>,
) -> String {
    let req = debugger_request(Access::Read);
    let arch = walk(regs, cpu, mem, gva, &req);
    let mut out = vec![format!(
        "walk {gva:#x}: architecture, {} paging (CR3 {:#x})",
        arch.mode.name(),
        regs.cr3
    )];
    out.extend(describe(&arch));
    if let Some((policy, ctx)) = kept {
        let theirs = translate_with_context(ctx, regs, mem, gva, &req);
        out.push(format!(
            "{policy}'s kept context: root_level {}, walker {}",
            ctx.root_level,
            ctx.walker.name()
        ));
        out.extend(describe(&theirs));
        let same = match (&arch.result, &theirs.result) {
            (Ok(a), Ok(b)) => a.gpa == b.gpa,
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        out.push(if same {
            format!("translations agree under {policy}")
        } else {
            format!(
                "translations DIFFER: architecture {}, {policy} {}",
                short(&arch),
                short(&theirs)
            )
        });
    }
    out.join("\n")
}

fn short(w: &Walk) -> String {
    match &w.result {
        Ok(t) => format!("{:#x}", t.gpa),
        Err(f) => fault_text(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu::FlatMemory;

    #[test]
    fn names_and_indices_follow_the_mode() {
        assert_eq!(entry_name(PagingMode::Bits32, 2), "PDE");
        assert_eq!(entry_name(PagingMode::Pae, 3), "PDPTE");
        assert_eq!(entry_name(PagingMode::Level4, 4), "PML4E");
        assert_eq!(entry_index(PagingMode::Bits32, 2, 0x0040_7000), 1);
        assert_eq!(entry_index(PagingMode::Bits32, 1, 0x0040_7000), 7);
        assert_eq!(entry_index(PagingMode::Pae, 3, 0xc000_0000), 3);
        assert_eq!(entry_index(PagingMode::Pae, 1, 0x7000), 7);
        assert_eq!(page_size_name(4096), "4 KiB");
        assert_eq!(page_size_name(4 << 20), "4 MiB");
    }

    #[test]
    fn unpaged_walk_is_identity() {
        let regs = ControlRegs {
            cr0: 0x11,
            ..Default::default()
        };
        let mem = FlatMemory::new(0, 0x10000);
        let text = compare(&regs, &CpuModel::default_x86_64(), &mem, 0x1234, None);
        assert!(text.contains("=> gpa 0x1234"), "{text}");
    }
}
