//! The progress line on stderr: steps, rate and events, refreshed about five times a second.

use std::io::Write;
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    start: Instant,
    last: Instant,
    shown: bool,
}

const REFRESH: Duration = Duration::from_millis(200);

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled,
            start: now,
            last: now,
            shown: false,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Called every few hundred steps with the current time.
    pub fn tick(&mut self, now: Instant, steps: u64, events: u64) {
        if !self.enabled || now.duration_since(self.last) < REFRESH {
            return;
        }
        self.last = now;
        self.shown = true;
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-9);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rrecording: {steps} steps, {:.0} steps/s, {events} events   ",
            steps as f64 / secs
        );
        let _ = err.flush();
    }

    /// Ends the line so later output starts on a fresh one.
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
