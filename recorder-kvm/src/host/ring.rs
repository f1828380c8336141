//! The kernel's ring-buffer pages as `per_cpu/cpuN/trace_pipe_raw` hands them out
//! (kernel/trace/ring_buffer.c; the layout tracefs describes in `events/header_page` and
//! `events/header_event`): a page header (time stamp, commit = bytes of data and the
//! missed-events flags), then events, each a 32-bit header (type_len:5, time_delta:27) and its
//! payload. Pure: bytes in, time-stamped payloads out.

/// Offsets of the page header (x86-64: `u64 timestamp`, `local_t commit`, then data).
const COMMIT_OFFSET: usize = 8;
const DATA_OFFSET: usize = 16;
/// Flags in the commit word (RB_MISSED_EVENTS, RB_MISSED_STORED).
const MISSED_EVENTS: u64 = 1 << 31;
const MISSED_STORED: u64 = 1 << 30;
const COMMIT_MASK: u64 = (1 << 30) - 1;
/// type_len values (RINGBUF_TYPE_*).
const TYPE_PADDING: u32 = 29;
const TYPE_TIME_EXTEND: u32 = 30;
const TYPE_TIME_STAMP: u32 = 31;
/// An absolute time stamp holds 59 bits; the rest comes from the running time (rb_fix_abs_ts).
const TS_MSB: u64 = 0x1f << 59;

/// One event: its time stamp (in the instance's trace clock) and payload (common fields first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub ts: u64,
    pub data: &'a [u8],
}

/// A parsed page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page<'a> {
    pub events: Vec<RawEvent<'a>>,
    /// The kernel dropped events before this page (buffer full): how many, when it says.
    pub missed: Option<u64>,
}

/// Checks that the kernel's page header is the layout [`parse`] reads (`events/header_page`).
pub fn check_header_page(text: &str) -> Result<(), String> {
    let has = |field: &str, offset: usize, size: usize| {
        text.lines().any(|l| {
            l.contains(&format!(" {field};"))
                && l.contains(&format!("offset:{offset};"))
                && l.contains(&format!("size:{size};"))
        })
    };
    if has("timestamp", 0, 8)
        && has("commit", COMMIT_OFFSET, 8)
        && text.contains("data;\toffset:16;")
    {
        Ok(())
    } else {
        Err("the kernel's ring-buffer page header (events/header_page) is not the 64-bit layout mmurr reads".into())
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses one page read from `trace_pipe_raw`. A malformed page yields the events before the
/// damage (never a panic).
pub fn parse(page: &[u8]) -> Page<'_> {
    let mut out = Page::default();
    let (Some(mut ts), Some(commit)) = (u64_at(page, 0), u64_at(page, COMMIT_OFFSET)) else {
        return out;
    };
    let len = ((commit & COMMIT_MASK) as usize).min(page.len().saturating_sub(DATA_OFFSET));
    let data = &page[DATA_OFFSET..DATA_OFFSET + len];
    if commit & MISSED_EVENTS != 0 {
        let count = if commit & MISSED_STORED != 0 {
            u64_at(page, DATA_OFFSET + len)
        } else {
            None
        };
        out.missed = Some(count.unwrap_or(0));
    }
    let mut pos = 0usize;
    while let Some(header) = u32_at(data, pos) {
        let type_len = header & 0x1f;
        let delta = u64::from(header >> 5);
        let next = match type_len {
            TYPE_PADDING if delta == 0 => break, // the rest of the page is empty
            TYPE_PADDING => {
                // A discarded event: its length follows, its delta still counts.
                ts = ts.wrapping_add(delta);
                let Some(n) = u32_at(data, pos + 4) else {
                    break;
                };
                pos + 4 + n as usize
            }
            TYPE_TIME_EXTEND => {
                let Some(hi) = u32_at(data, pos + 4) else {
                    break;
                };
                ts = ts.wrapping_add((u64::from(hi) << 27) | delta);
                pos + 8
            }
            TYPE_TIME_STAMP => {
                let Some(hi) = u32_at(data, pos + 4) else {
                    break;
                };
                let mut abs = (u64::from(hi) << 27) | delta;
                if ts & TS_MSB != 0 {
                    abs |= ts & TS_MSB;
                    if abs < ts {
                        abs = abs.wrapping_add(1 << 59);
                    }
                }
                ts = abs;
                pos + 8
            }
            0 => {
                // Length in the next word, counting itself.
                let Some(n) = u32_at(data, pos + 4) else {
                    break;
                };
                let n = n as usize;
                if n < 4 {
                    break;
                }
                ts = ts.wrapping_add(delta);
                let Some(payload) = data.get(pos + 8..pos + 4 + n) else {
                    break;
                };
                out.events.push(RawEvent { ts, data: payload });
                pos + 4 + n
            }
            words => {
                ts = ts.wrapping_add(delta);
                let n = words as usize * 4;
                let Some(payload) = data.get(pos + 4..pos + 4 + n) else {
                    break;
                };
                out.events.push(RawEvent { ts, data: payload });
                pos + 4 + n
            }
        };
        if next <= pos {
            break;
        }
        pos = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(type_len: u32, delta: u32) -> [u8; 4] {
        ((delta << 5) | type_len).to_le_bytes()
    }

    fn page(ts: u64, commit_flags: u64, body: &[u8]) -> Vec<u8> {
        let mut p = ts.to_le_bytes().to_vec();
        p.extend_from_slice(&(body.len() as u64 | commit_flags).to_le_bytes());
        p.extend_from_slice(body);
        p.resize(4096, 0);
        p
    }

    #[test]
    fn events_of_every_encoding_come_out_with_their_time_stamps() {
        let mut body = Vec::new();
        // A small event: 8 bytes of payload in type_len 2, delta 10.
        body.extend_from_slice(&header(2, 10));
        body.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        // A time extend of (1 << 27) + 5.
        body.extend_from_slice(&header(TYPE_TIME_EXTEND, 5));
        body.extend_from_slice(&1u32.to_le_bytes());
        // A discarded event of 8 bytes, delta 1.
        body.extend_from_slice(&header(TYPE_PADDING, 1));
        body.extend_from_slice(&8u32.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        // A large event: type_len 0, length word 4 + 4, delta 2.
        body.extend_from_slice(&header(0, 2));
        body.extend_from_slice(&8u32.to_le_bytes());
        body.extend_from_slice(&[9, 9, 9, 9]);
        // An absolute time stamp, then an event at it.
        body.extend_from_slice(&header(TYPE_TIME_STAMP, 7));
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&header(1, 0));
        body.extend_from_slice(&[4, 4, 4, 4]);
        let p = page(1000, 0, &body);
        let parsed = parse(&p);
        assert_eq!(parsed.missed, None);
        let got: Vec<(u64, &[u8])> = parsed.events.iter().map(|e| (e.ts, e.data)).collect();
        let extended = 1010 + (1 << 27) + 5;
        assert_eq!(
            got,
            vec![
                (1010, &[1, 2, 3, 4, 5, 6, 7, 8][..]),
                (extended + 1 + 2, &[9, 9, 9, 9][..]),
                ((2 << 27) | 7, &[4, 4, 4, 4][..]),
            ]
        );
    }

    #[test]
    fn missed_events_are_reported_and_damage_stops_the_page_without_panicking() {
        let mut body = header(1, 3).to_vec();
        body.extend_from_slice(&[1, 1, 1, 1]);
        let mut p = page(50, MISSED_EVENTS | MISSED_STORED, &body);
        p[DATA_OFFSET + body.len()..DATA_OFFSET + body.len() + 8]
            .copy_from_slice(&17u64.to_le_bytes());
        let parsed = parse(&p);
        assert_eq!(parsed.missed, Some(17));
        assert_eq!(parsed.events.len(), 1);
        // A length word pointing past the data, a commit past the page, a short page.
        let mut bad = header(0, 1).to_vec();
        bad.extend_from_slice(&4000u32.to_le_bytes());
        assert!(parse(&page(0, 0, &bad)).events.is_empty());
        let mut huge = page(0, 0, &[]);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let _ = parse(&huge);
        assert_eq!(parse(&[1, 2, 3]), Page::default());
    }

    #[test]
    fn the_header_page_of_this_projects_hosts_is_accepted() {
        let text = "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
                    \tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
                    \tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
                    \tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n";
        assert_eq!(check_header_page(text), Ok(()));
        assert!(check_header_page(&text.replace("offset:16", "offset:12")).is_err());
    }
}
