//! Tracepoint formats: the `events/GROUP/NAME/format` files of tracefs (id and field offsets,
//! read from the running kernel rather than assumed) and the decoding of one raw event into a
//! [`HostEvent`]. Pure: text and bytes in, values out.

use traces::{HostEvent, ShadowPage};

/// The tracepoints recorded, as `group/name`. Left out because they fire for every instruction
/// on a host that emulates ring-0 code (PVM) and cost ≈ 17 % of the step rate there (measured
/// with the step_rate bench): `kvm_mmu_pagetable_walk` (its failures are `walker_error`) and
/// `kvm_mmu_paging_element` (the guest's own tables, which the trace has). `kvm_emulate_insn`
/// is kept with a kernel filter ([`FILTERS`]) that passes only failed emulations.
pub const TRACEPOINTS: &[&str] = &[
    "kvmmmu/kvm_mmu_get_page",
    "kvmmmu/kvm_mmu_prepare_zap_page",
    "kvmmmu/kvm_mmu_sync_page",
    "kvmmmu/kvm_mmu_unsync_page",
    "kvmmmu/kvm_mmu_zap_all_fast",
    "kvmmmu/kvm_mmu_walker_error",
    "kvm/kvm_page_fault",
    "kvm/kvm_inj_exception",
    "kvm/kvm_msr",
    "kvm/kvm_cr",
    "kvm/kvm_emulate_insn",
];

/// Kernel-side filters (tracefs `filter` files) of the tracepoints that would otherwise fire for
/// every instruction.
pub const FILTERS: &[(&str, &str)] = &[("kvm/kvm_emulate_insn", "failed != 0")];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// One tracepoint's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    /// `group/name`.
    pub tracepoint: String,
    /// The `common_type` the kernel writes at offset 0 of every event of this tracepoint.
    pub id: u16,
    pub fields: Vec<Field>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{tracepoint}: no `ID:` line in its format file")]
    NoId { tracepoint: String },
    #[error("{tracepoint}: field `{field}` is missing from its format file")]
    MissingField { tracepoint: String, field: String },
    #[error("{tracepoint}: field `{field}` is {size} bytes, not the {expected} mmurr reads")]
    FieldSize {
        tracepoint: String,
        field: String,
        size: usize,
        expected: String,
    },
    #[error("{0}: mmurr does not know this tracepoint")]
    Unknown(String),
}

/// Parses a tracefs `format` file.
pub fn parse(tracepoint: &str, text: &str) -> Result<EventFormat, FormatError> {
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = v.trim().parse::<u16>().ok();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        // `field:__u64 gfn;	offset:16;	size:8;	signed:0;`
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().unwrap_or_default();
        let name = decl
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .split('[')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut offset = None;
        let mut size = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        if let (Some(offset), Some(size)) = (offset, size) {
            fields.push(Field { name, offset, size });
        }
    }
    let id = id.ok_or_else(|| FormatError::NoId {
        tracepoint: tracepoint.to_string(),
    })?;
    let format = EventFormat {
        tracepoint: tracepoint.to_string(),
        id,
        fields,
    };
    format.check()?;
    Ok(format)
}

/// The fields each known tracepoint is decoded from, with the sizes accepted (0: any).
fn wanted(tracepoint: &str) -> Option<&'static [(&'static str, &'static [usize])]> {
    const GET_PAGE: &[(&str, &[usize])] = &[
        ("mmu_valid_gen", &[1]),
        ("gfn", &[8]),
        ("role", &[4]),
        ("root_count", &[4]),
        ("unsync", &[1]),
        ("created", &[1]),
    ];
    // The other page events: the same fields but `created`.
    const PAGE: &[(&str, &[usize])] = GET_PAGE.split_at(5).0;
    Some(match tracepoint {
        "kvmmmu/kvm_mmu_get_page" => GET_PAGE,
        "kvmmmu/kvm_mmu_prepare_zap_page"
        | "kvmmmu/kvm_mmu_sync_page"
        | "kvmmmu/kvm_mmu_unsync_page" => PAGE,
        "kvmmmu/kvm_mmu_zap_all_fast" => &[("mmu_valid_gen", &[1])],
        "kvmmmu/kvm_mmu_pagetable_walk" => &[("addr", &[8]), ("pferr", &[4])],
        "kvmmmu/kvm_mmu_walker_error" => &[("pferr", &[4])],
        "kvm/kvm_page_fault" => &[("fault_address", &[8]), ("error_code", &[4, 8])],
        "kvm/kvm_inj_exception" => &[
            ("exception", &[1]),
            ("has_error", &[1]),
            ("error_code", &[4]),
            ("reinjected", &[1]),
        ],
        "kvm/kvm_msr" => &[
            ("write", &[4]),
            ("ecx", &[4]),
            ("data", &[8]),
            ("exception", &[1]),
        ],
        "kvm/kvm_cr" => &[("rw", &[4]), ("cr", &[4]), ("val", &[8])],
        "kvm/kvm_emulate_insn" => &[
            ("rip", &[8]),
            ("csbase", &[4]),
            ("len", &[1]),
            ("flags", &[1]),
            ("failed", &[1]),
        ],
        _ => return None,
    })
}

impl EventFormat {
    fn check(&self) -> Result<(), FormatError> {
        let wanted = wanted(&self.tracepoint)
            .ok_or_else(|| FormatError::Unknown(self.tracepoint.clone()))?;
        for (name, sizes) in wanted {
            let f = self.field(name).ok_or_else(|| FormatError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_string(),
            })?;
            if !sizes.contains(&f.size) {
                return Err(FormatError::FieldSize {
                    tracepoint: self.tracepoint.clone(),
                    field: name.to_string(),
                    size: f.size,
                    expected: format!("{sizes:?}"),
                });
            }
        }
        Ok(())
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// A field of `data` as an unsigned integer (little endian); 0 when the event is too short.
    fn get(&self, data: &[u8], name: &str) -> u64 {
        let Some(f) = self.field(name) else {
            return 0;
        };
        let mut b = [0u8; 8];
        let n = f.size.min(8);
        if let Some(src) = data.get(f.offset..f.offset + n) {
            b[..n].copy_from_slice(src);
        }
        u64::from_le_bytes(b)
    }

    /// Decodes one event's payload (common fields included) of this tracepoint.
    pub fn decode(&self, data: &[u8]) -> Option<HostEvent> {
        let g = |n| self.get(data, n);
        let page = || ShadowPage {
            gfn: g("gfn"),
            role: g("role") as u32,
            root_count: g("root_count") as u32,
            unsync: g("unsync") != 0,
            created: g("created") != 0,
            mmu_valid_gen: g("mmu_valid_gen") as u8,
        };
        Some(match self.tracepoint.as_str() {
            "kvmmmu/kvm_mmu_get_page" => HostEvent::GetPage(page()),
            "kvmmmu/kvm_mmu_prepare_zap_page" => HostEvent::ZapPage(page()),
            "kvmmmu/kvm_mmu_sync_page" => HostEvent::SyncPage(page()),
            "kvmmmu/kvm_mmu_unsync_page" => HostEvent::UnsyncPage(page()),
            "kvmmmu/kvm_mmu_zap_all_fast" => HostEvent::ZapAllFast {
                mmu_valid_gen: g("mmu_valid_gen") as u8,
            },
            "kvmmmu/kvm_mmu_pagetable_walk" => HostEvent::Walk {
                addr: g("addr"),
                pferr: g("pferr") as u32,
            },
            "kvmmmu/kvm_mmu_walker_error" => HostEvent::WalkerError {
                pferr: g("pferr") as u32,
            },
            "kvm/kvm_page_fault" => HostEvent::PageFault {
                address: g("fault_address"),
                error_code: g("error_code"),
            },
            "kvm/kvm_inj_exception" => HostEvent::InjectedException {
                vector: g("exception") as u8,
                error_code: (g("has_error") != 0).then(|| g("error_code") as u32),
                reinjected: g("reinjected") != 0,
            },
            "kvm/kvm_msr" => HostEvent::Msr {
                write: g("write") != 0,
                index: g("ecx") as u32,
                data: g("data"),
                faulted: g("exception") != 0,
            },
            "kvm/kvm_cr" => HostEvent::Cr {
                write: g("rw") != 0,
                cr: g("cr") as u32,
                value: g("val"),
            },
            "kvm/kvm_emulate_insn" => HostEvent::Emulated {
                csbase: g("csbase") as u32,
                rip: g("rip"),
                len: g("len") as u8,
                mode: g("flags") as u8,
                failed: g("failed") != 0,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format file of this project's hosts (Linux 6.18), as tracefs prints it.
    pub const GET_PAGE: &str = "name: kvm_mmu_get_page\nID: 128\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:__u8 mmu_valid_gen;\toffset:8;\tsize:1;\tsigned:0;\n\
        \tfield:__u64 gfn;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:__u32 role;\toffset:24;\tsize:4;\tsigned:0;\n\
        \tfield:__u32 root_count;\toffset:28;\tsize:4;\tsigned:0;\n\
        \tfield:bool unsync;\toffset:32;\tsize:1;\tsigned:0;\n\
        \tfield:bool created;\toffset:33;\tsize:1;\tsigned:0;\n\n\
        print fmt: \"%s %s\", ...\n";

    #[test]
    fn a_get_page_event_decodes_with_the_offsets_of_its_format_file() {
        let f = parse("kvmmmu/kvm_mmu_get_page", GET_PAGE).unwrap();
        assert_eq!(f.id, 128);
        let mut data = vec![0u8; 40];
        data[0..2].copy_from_slice(&128u16.to_le_bytes());
        data[16..24].copy_from_slice(&0x4u64.to_le_bytes());
        data[24..28].copy_from_slice(&0x3704u32.to_le_bytes());
        data[28..32].copy_from_slice(&2u32.to_le_bytes());
        data[33] = 1;
        assert_eq!(
            f.decode(&data),
            Some(HostEvent::GetPage(ShadowPage {
                gfn: 4,
                role: 0x3704,
                root_count: 2,
                unsync: false,
                created: true,
                mmu_valid_gen: 0,
            }))
        );
        // A short event reads as zeros, never panics.
        assert!(matches!(f.decode(&data[..20]), Some(HostEvent::GetPage(p)) if p.role == 0));
    }

    #[test]
    fn a_format_without_a_needed_field_or_with_another_size_is_refused() {
        let no_role = GET_PAGE.replace("field:__u32 role;", "field:__u32 rol;");
        assert_eq!(
            parse("kvmmmu/kvm_mmu_get_page", &no_role),
            Err(FormatError::MissingField {
                tracepoint: "kvmmmu/kvm_mmu_get_page".into(),
                field: "role".into()
            })
        );
        let wide = GET_PAGE.replace("role;\toffset:24;\tsize:4", "role;\toffset:24;\tsize:8");
        assert!(matches!(
            parse("kvmmmu/kvm_mmu_get_page", &wide),
            Err(FormatError::FieldSize { .. })
        ));
        let no_id = GET_PAGE.replace("ID: 128", "");
        assert!(matches!(
            parse("kvmmmu/kvm_mmu_get_page", &no_id),
            Err(FormatError::NoId { .. })
        ));
        assert!(matches!(
            parse("kvm/kvm_exit", GET_PAGE),
            Err(FormatError::Unknown(_))
        ));
    }

    #[test]
    fn every_recorded_tracepoint_has_a_decoder() {
        for t in TRACEPOINTS {
            assert!(wanted(t).is_some(), "{t}");
        }
    }
}
