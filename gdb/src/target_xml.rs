//! The target description gdb reads (`qXfer:features:read:target.xml`).
//!
//! One fixed x86-64 layout for the whole session, whatever mode the guest is in: gdb cannot
//! change register layouts mid-session, and a 64-bit layout holds every mode's state. Register
//! names and the flag fields of `cr0`, `cr3`, `cr4` and `efer` follow the names QEMU's
//! system-mode stub uses, so `p $cr4` prints `[ PAE PGE ]` and gdb scripts written for QEMU
//! work unchanged. The features are gdb's standard ones where gdb has one
//! (`org.gnu.gdb.i386.core`, `.sse`, `.segments` for fs_base/gs_base, which gdb's amd64 code
//! validates by name), and `org.gnu.gdb.i386.sys` for the system registers gdb only displays.
//!
//! The order of `<reg>` elements is the order of the `g` packet; [`crate::arch`] serializes in
//! exactly this order (a unit test checks that the two agree).

/// Register names in `g`-packet order, with their sizes in bytes. The single source both the
/// XML and the serializer are checked against.
pub const REGISTERS: &[(&str, usize)] = &[
    ("rax", 8),
    ("rbx", 8),
    ("rcx", 8),
    ("rdx", 8),
    ("rsi", 8),
    ("rdi", 8),
    ("rbp", 8),
    ("rsp", 8),
    ("r8", 8),
    ("r9", 8),
    ("r10", 8),
    ("r11", 8),
    ("r12", 8),
    ("r13", 8),
    ("r14", 8),
    ("r15", 8),
    ("rip", 8),
    ("eflags", 4),
    ("cs", 4),
    ("ss", 4),
    ("ds", 4),
    ("es", 4),
    ("fs", 4),
    ("gs", 4),
    ("st0", 10),
    ("st1", 10),
    ("st2", 10),
    ("st3", 10),
    ("st4", 10),
    ("st5", 10),
    ("st6", 10),
    ("st7", 10),
    ("fctrl", 4),
    ("fstat", 4),
    ("ftag", 4),
    ("fiseg", 4),
    ("fioff", 4),
    ("foseg", 4),
    ("fooff", 4),
    ("fop", 4),
    ("xmm0", 16),
    ("xmm1", 16),
    ("xmm2", 16),
    ("xmm3", 16),
    ("xmm4", 16),
    ("xmm5", 16),
    ("xmm6", 16),
    ("xmm7", 16),
    ("xmm8", 16),
    ("xmm9", 16),
    ("xmm10", 16),
    ("xmm11", 16),
    ("xmm12", 16),
    ("xmm13", 16),
    ("xmm14", 16),
    ("xmm15", 16),
    ("mxcsr", 4),
    ("fs_base", 8),
    ("gs_base", 8),
    ("k_gs_base", 8),
    ("cr0", 8),
    ("cr2", 8),
    ("cr3", 8),
    ("cr4", 8),
    ("cr8", 8),
    ("efer", 8),
];

/// The whole description, one annex (`target.xml`); no `xi:include`, so one read serves it.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
  <feature name="org.gnu.gdb.i386.core">
    <flags id="i386_eflags" size="4">
      <field name="CF" start="0" end="0"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
      <field name="NT" start="14" end="14"/>
      <field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/>
      <field name="AC" start="18" end="18"/>
      <field name="VIF" start="19" end="19"/>
      <field name="VIP" start="20" end="20"/>
      <field name="ID" start="21" end="21"/>
    </flags>
    <reg name="rax" bitsize="64" type="int64"/>
    <reg name="rbx" bitsize="64" type="int64"/>
    <reg name="rcx" bitsize="64" type="int64"/>
    <reg name="rdx" bitsize="64" type="int64"/>
    <reg name="rsi" bitsize="64" type="int64"/>
    <reg name="rdi" bitsize="64" type="int64"/>
    <reg name="rbp" bitsize="64" type="data_ptr"/>
    <reg name="rsp" bitsize="64" type="data_ptr"/>
    <reg name="r8" bitsize="64" type="int64"/>
    <reg name="r9" bitsize="64" type="int64"/>
    <reg name="r10" bitsize="64" type="int64"/>
    <reg name="r11" bitsize="64" type="int64"/>
    <reg name="r12" bitsize="64" type="int64"/>
    <reg name="r13" bitsize="64" type="int64"/>
    <reg name="r14" bitsize="64" type="int64"/>
    <reg name="r15" bitsize="64" type="int64"/>
    <reg name="rip" bitsize="64" type="code_ptr"/>
    <reg name="eflags" bitsize="32" type="i386_eflags"/>
    <reg name="cs" bitsize="32" type="int32"/>
    <reg name="ss" bitsize="32" type="int32"/>
    <reg name="ds" bitsize="32" type="int32"/>
    <reg name="es" bitsize="32" type="int32"/>
    <reg name="fs" bitsize="32" type="int32"/>
    <reg name="gs" bitsize="32" type="int32"/>
    <reg name="st0" bitsize="80" type="i387_ext"/>
    <reg name="st1" bitsize="80" type="i387_ext"/>
    <reg name="st2" bitsize="80" type="i387_ext"/>
    <reg name="st3" bitsize="80" type="i387_ext"/>
    <reg name="st4" bitsize="80" type="i387_ext"/>
    <reg name="st5" bitsize="80" type="i387_ext"/>
    <reg name="st6" bitsize="80" type="i387_ext"/>
    <reg name="st7" bitsize="80" type="i387_ext"/>
    <reg name="fctrl" bitsize="32" type="int" group="float"/>
    <reg name="fstat" bitsize="32" type="int" group="float"/>
    <reg name="ftag" bitsize="32" type="int" group="float"/>
    <reg name="fiseg" bitsize="32" type="int" group="float"/>
    <reg name="fioff" bitsize="32" type="int" group="float"/>
    <reg name="foseg" bitsize="32" type="int" group="float"/>
    <reg name="fooff" bitsize="32" type="int" group="float"/>
    <reg name="fop" bitsize="32" type="int" group="float"/>
  </feature>
  <feature name="org.gnu.gdb.i386.sse">
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>
    <flags id="i386_mxcsr" size="4">
      <field name="IE" start="0" end="0"/>
      <field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/>
      <field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/>
      <field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/>
      <field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/>
      <field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/>
      <field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/>
      <field name="FZ" start="15" end="15"/>
    </flags>
    <reg name="xmm0" bitsize="128" type="vec128"/>
    <reg name="xmm1" bitsize="128" type="vec128"/>
    <reg name="xmm2" bitsize="128" type="vec128"/>
    <reg name="xmm3" bitsize="128" type="vec128"/>
    <reg name="xmm4" bitsize="128" type="vec128"/>
    <reg name="xmm5" bitsize="128" type="vec128"/>
    <reg name="xmm6" bitsize="128" type="vec128"/>
    <reg name="xmm7" bitsize="128" type="vec128"/>
    <reg name="xmm8" bitsize="128" type="vec128"/>
    <reg name="xmm9" bitsize="128" type="vec128"/>
    <reg name="xmm10" bitsize="128" type="vec128"/>
    <reg name="xmm11" bitsize="128" type="vec128"/>
    <reg name="xmm12" bitsize="128" type="vec128"/>
    <reg name="xmm13" bitsize="128" type="vec128"/>
    <reg name="xmm14" bitsize="128" type="vec128"/>
    <reg name="xmm15" bitsize="128" type="vec128"/>
    <reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
  </feature>
  <feature name="org.gnu.gdb.i386.segments">
    <reg name="fs_base" bitsize="64" type="int"/>
    <reg name="gs_base" bitsize="64" type="int"/>
  </feature>
  <feature name="org.gnu.gdb.i386.sys">
    <flags id="i386_cr0" size="8">
      <field name="PE" start="0" end="0"/>
      <field name="MP" start="1" end="1"/>
      <field name="EM" start="2" end="2"/>
      <field name="TS" start="3" end="3"/>
      <field name="ET" start="4" end="4"/>
      <field name="NE" start="5" end="5"/>
      <field name="WP" start="16" end="16"/>
      <field name="AM" start="18" end="18"/>
      <field name="NW" start="29" end="29"/>
      <field name="CD" start="30" end="30"/>
      <field name="PG" start="31" end="31"/>
    </flags>
    <flags id="i386_cr3" size="8">
      <field name="PCID" start="0" end="11"/>
      <field name="PDBR" start="12" end="63"/>
    </flags>
    <flags id="i386_cr4" size="8">
      <field name="VME" start="0" end="0"/>
      <field name="PVI" start="1" end="1"/>
      <field name="TSD" start="2" end="2"/>
      <field name="DE" start="3" end="3"/>
      <field name="PSE" start="4" end="4"/>
      <field name="PAE" start="5" end="5"/>
      <field name="MCE" start="6" end="6"/>
      <field name="PGE" start="7" end="7"/>
      <field name="PCE" start="8" end="8"/>
      <field name="OSFXSR" start="9" end="9"/>
      <field name="OSXMMEXCPT" start="10" end="10"/>
      <field name="UMIP" start="11" end="11"/>
      <field name="LA57" start="12" end="12"/>
      <field name="VMXE" start="13" end="13"/>
      <field name="SMXE" start="14" end="14"/>
      <field name="FSGSBASE" start="16" end="16"/>
      <field name="PCIDE" start="17" end="17"/>
      <field name="OSXSAVE" start="18" end="18"/>
      <field name="SMEP" start="20" end="20"/>
      <field name="SMAP" start="21" end="21"/>
      <field name="PKE" start="22" end="22"/>
    </flags>
    <flags id="i386_efer" size="8">
      <field name="SCE" start="0" end="0"/>
      <field name="LME" start="8" end="8"/>
      <field name="LMA" start="10" end="10"/>
      <field name="NXE" start="11" end="11"/>
      <field name="SVME" start="12" end="12"/>
      <field name="LMSLE" start="13" end="13"/>
      <field name="FFXSR" start="14" end="14"/>
      <field name="TCE" start="15" end="15"/>
    </flags>
    <reg name="k_gs_base" bitsize="64" type="int"/>
    <reg name="cr0" bitsize="64" type="i386_cr0"/>
    <reg name="cr2" bitsize="64" type="int"/>
    <reg name="cr3" bitsize="64" type="i386_cr3"/>
    <reg name="cr4" bitsize="64" type="i386_cr4"/>
    <reg name="cr8" bitsize="64" type="int"/>
    <reg name="efer" bitsize="64" type="i386_efer"/>
  </feature>
</target>
"#;

/// Serves `TARGET_XML` in the pieces gdb asks for (`offset`, `length`); other annexes are not
/// ours to answer.
pub fn read_annex(annex: &[u8], offset: u64, buf: &mut [u8]) -> Option<usize> {
    if annex != b"target.xml" {
        return None;
    }
    let xml = TARGET_XML.as_bytes();
    let start = usize::try_from(offset).ok()?.min(xml.len());
    let n = buf.len().min(xml.len() - start);
    buf[..n].copy_from_slice(&xml[start..start + n]);
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The XML's `<reg>` elements, in order, with their sizes: the `g` packet layout gdb will
    /// expect.
    fn xml_registers() -> Vec<(String, usize)> {
        TARGET_XML
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let rest = l.strip_prefix("<reg name=\"")?;
                let (name, rest) = rest.split_once('"')?;
                let bits = rest.split("bitsize=\"").nth(1)?.split('"').next()?;
                Some((name.to_string(), bits.parse::<usize>().ok()? / 8))
            })
            .collect()
    }

    #[test]
    fn xml_and_register_table_agree() {
        let table: Vec<(String, usize)> =
            REGISTERS.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(xml_registers(), table);
    }

    #[test]
    fn annex_is_served_in_pieces() {
        let mut out = Vec::new();
        let mut buf = [0u8; 100];
        loop {
            let n = read_annex(b"target.xml", out.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, TARGET_XML.as_bytes());
        assert_eq!(read_annex(b"other.xml", 0, &mut buf), None);
        assert_eq!(read_annex(b"target.xml", u64::MAX, &mut buf), Some(0));
    }
}
