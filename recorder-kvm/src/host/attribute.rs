//! Which step a host event belongs to. The host's events carry time stamps of the trace clock
//! `x86-tsc`, the recorder notes the TSC when each step ends (its last KVM_RUN returned); an
//! event belongs to the first step that ended after it. While single-stepping every host event
//! between two KVM_RUN returns belongs to that step. Pure: times in, step records out.

use traces::{HostEvent, HostRecord, Step};

#[derive(Debug, Default)]
pub struct Attribution {
    /// Events before this time are not the guest's (loading it, the CPUID probe VM).
    start: u64,
    /// (step, TSC when it ended), not yet closed by a `take`.
    ended: Vec<(Step, u64)>,
    /// Events after the last ended step, waiting for it.
    waiting: Vec<(u64, HostEvent)>,
}

impl Attribution {
    pub fn new(start: u64) -> Attribution {
        Attribution {
            start,
            ..Default::default()
        }
    }

    pub fn step_ended(&mut self, step: Step, at: u64) {
        self.ended.push((step, at));
    }

    /// Attributes `events` (every event the host emitted up to now, from all CPUs, in any
    /// order, read to the end of every CPU's buffer) to the steps ended so far, and returns one record per step that had any.
    pub fn take(&mut self, events: Vec<(u64, HostEvent)>) -> Vec<HostRecord> {
        let mut events: Vec<(u64, HostEvent)> = std::mem::take(&mut self.waiting)
            .into_iter()
            .chain(events.into_iter().filter(|(ts, _)| *ts >= self.start))
            .collect();
        // Stable: events of one CPU keep their order at equal stamps.
        events.sort_by_key(|(ts, _)| *ts);
        let mut out: Vec<HostRecord> = Vec::new();
        let mut steps = self.ended.iter().peekable();
        for (ts, event) in events {
            while steps.peek().is_some_and(|&&(_, end)| end < ts) {
                steps.next();
            }
            let Some(&&(step, _)) = steps.peek() else {
                self.waiting.push((ts, event));
                continue;
            };
            match out.last_mut() {
                Some(r) if r.step == step => r.events.push(event),
                _ => out.push(HostRecord {
                    step,
                    events: vec![event],
                }),
            }
        }
        // Every buffer was read to its end: no event of these steps can still come.
        self.ended.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msr(data: u64) -> HostEvent {
        HostEvent::Msr {
            write: true,
            index: 0xc000_0080,
            data,
            faulted: false,
        }
    }

    #[test]
    fn events_go_to_the_step_that_ended_after_them() {
        let mut a = Attribution::new(100);
        a.step_ended(1, 200);
        a.step_ended(2, 300);
        a.step_ended(3, 400);
        let records = a.take(vec![
            (250, msr(2)),
            (50, msr(0)), // before the recording started: the guest's loading
            (150, msr(1)),
            (260, msr(22)),
            (450, msr(4)), // after the last ended step: waits for step 4
        ]);
        assert_eq!(
            records,
            vec![
                HostRecord {
                    step: 1,
                    events: vec![msr(1)]
                },
                HostRecord {
                    step: 2,
                    events: vec![msr(2), msr(22)]
                },
            ]
        );
        a.step_ended(4, 500);
        assert_eq!(
            a.take(vec![(480, msr(5))]),
            vec![HostRecord {
                step: 4,
                events: vec![msr(4), msr(5)]
            }]
        );
        assert!(a.take(Vec::new()).is_empty());
    }
}
