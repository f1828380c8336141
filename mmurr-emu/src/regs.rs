//! Conversions between QEMU's CPU state and the trace's [`Regs`].
//!
//! Segment hidden state is read exactly from the saved context (QEMU's segment cache), not
//! re-derived from descriptor tables, so a guest that edits its GDT after loading a selector
//! is still recorded the way the CPU sees it.

use crate::ctx::{SegCache, DESC_P_MASK};
use traces::Segment;

/// QEMU descriptor flags (high dword of the descriptor) -> VMX access rights.
/// A segment whose P bit is clear is reported unusable (bit 16), as VMX does for null selectors.
pub fn attrs_from_flags(flags: u32) -> u32 {
    let ar = (flags >> 8) & 0xf0ff;
    if flags & DESC_P_MASK == 0 {
        ar | 0x1_0000
    } else {
        ar
    }
}

/// VMX access rights -> QEMU descriptor flags. An unusable segment gets flags 0 (QEMU's null
/// segment) unless it carries other rights, which are kept with P cleared.
pub fn flags_from_attrs(attrs: u32) -> u32 {
    let mut flags = (attrs & 0xf0ff) << 8;
    if attrs & 0x1_0000 != 0 {
        flags &= !DESC_P_MASK;
    }
    flags
}

pub fn segment_from_cache(c: SegCache) -> Segment {
    Segment {
        selector: c.selector,
        base: c.base,
        limit: c.limit,
        attrs: attrs_from_flags(c.flags),
    }
}

pub fn cache_from_segment(s: &Segment) -> SegCache {
    SegCache {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        flags: flags_from_attrs(s.attrs),
    }
}

/// The descriptor (8 bytes) that loads `s` into a segment cache: base, limit (granularity from
/// attrs G) and access rights. None if the limit cannot be expressed with that granularity or
/// the base does not fit a legacy descriptor.
pub fn descriptor_for(s: &Segment) -> Option<u64> {
    if s.base > u32::MAX as u64 {
        return None;
    }
    let g = s.attrs & (1 << 15) != 0;
    let raw_limit = if g {
        if s.limit & 0xfff != 0xfff {
            return None;
        }
        s.limit >> 12
    } else {
        if s.limit > 0xf_ffff {
            return None;
        }
        s.limit
    };
    let base = s.base;
    let ar = (s.attrs & 0xf0ff) as u64;
    Some(
        (raw_limit as u64 & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | ((ar & 0xff) << 40)
            | (((raw_limit as u64 >> 16) & 0xf) << 48)
            | (((ar >> 12) & 0xf) << 52)
            | (((base >> 24) & 0xff) << 56),
    )
}

/// Decodes an 8-byte legacy descriptor into (base, limit, QEMU flags).
pub fn decode_descriptor(d: u64) -> (u64, u32, u32) {
    let e1 = d as u32;
    let e2 = (d >> 32) as u32;
    let base = ((e1 >> 16) | ((e2 & 0xff) << 16) | (e2 & 0xff00_0000)) as u64;
    let mut limit = (e1 & 0xffff) | (e2 & 0x000f_0000);
    if e2 & (1 << 23) != 0 {
        limit = (limit << 12) | 0xfff;
    }
    (base, limit, e2 & 0x00f0_ff00)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_round_trip() {
        let s = Segment {
            selector: 0x10,
            base: 0x0012_3450,
            limit: 0xffff_ffff,
            attrs: 0xc093,
        };
        let d = descriptor_for(&s).unwrap();
        let (base, limit, flags) = decode_descriptor(d);
        assert_eq!(
            (base, limit, attrs_from_flags(flags)),
            (s.base, s.limit, s.attrs)
        );
        let r = Segment {
            selector: 0x7c0,
            base: 0x7c00,
            limit: 0xffff,
            attrs: 0x93,
        };
        let (base, limit, flags) = decode_descriptor(descriptor_for(&r).unwrap());
        assert_eq!(
            (base, limit, attrs_from_flags(flags)),
            (r.base, r.limit, r.attrs)
        );
        assert_eq!(attrs_from_flags(0), 0x1_0000);
    }
}
