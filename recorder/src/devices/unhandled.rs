//! Accesses no device answers: counted for the end summary, and watched for a guest that
//! polls an absent device forever.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnhandledAccess {
    PortRead(u16),
    PortWrite(u16),
    MmioRead(u64),
    MmioWrite(u64),
}

impl std::fmt::Display for UnhandledAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnhandledAccess::PortRead(p) => write!(f, "read of port {p:#x}"),
            UnhandledAccess::PortWrite(p) => write!(f, "write to port {p:#x}"),
            UnhandledAccess::MmioRead(a) => write!(f, "MMIO read at {a:#x}"),
            UnhandledAccess::MmioWrite(a) => write!(f, "MMIO write at {a:#x}"),
        }
    }
}

#[derive(Default)]
pub struct Unhandled {
    counts: BTreeMap<UnhandledAccess, u64>,
    /// The same unhandled read, repeated with no other I/O in between.
    streak: Option<(UnhandledAccess, u64)>,
}

impl Unhandled {
    pub fn record(&mut self, access: UnhandledAccess) {
        *self.counts.entry(access).or_default() += 1;
        let is_read = matches!(
            access,
            UnhandledAccess::PortRead(_) | UnhandledAccess::MmioRead(_)
        );
        self.streak = match self.streak {
            Some((a, n)) if a == access => Some((a, n + 1)),
            _ if is_read => Some((access, 1)),
            _ => None,
        };
    }

    /// Any handled access breaks a polling streak.
    pub fn handled(&mut self) {
        self.streak = None;
    }

    /// The access the guest has been repeating `limit` times or more in a row.
    pub fn polling(&self, limit: u64) -> Option<(UnhandledAccess, u64)> {
        self.streak.filter(|&(_, n)| n >= limit)
    }

    /// Every unhandled access kind with its count, most frequent first.
    pub fn summary(&self) -> Vec<(UnhandledAccess, u64)> {
        let mut v: Vec<_> = self.counts.iter().map(|(&a, &n)| (a, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_of_the_same_read_is_polling() {
        let mut u = Unhandled::default();
        for _ in 0..5 {
            u.record(UnhandledAccess::PortRead(0x64));
        }
        assert_eq!(u.polling(5), Some((UnhandledAccess::PortRead(0x64), 5)));
        u.handled();
        assert_eq!(u.polling(1), None);
        u.record(UnhandledAccess::PortRead(0x64));
        u.record(UnhandledAccess::PortRead(0x60));
        assert_eq!(u.polling(2), None);
    }
}
