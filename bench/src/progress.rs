//! Progress lines: which step runs, how far along it is, and the time since the bench started.

use std::time::{Duration, Instant};

/// Prints steps and throttled progress lines to stdout.
pub struct Progress {
    started: Instant,
    steps: usize,
    step: usize,
    last_tick: Option<Instant>,
}

impl Progress {
    /// A bench of `steps` steps, starting now.
    pub fn new(steps: usize) -> Self {
        Self {
            started: Instant::now(),
            steps,
            step: 0,
            last_tick: None,
        }
    }

    /// Starts the next step.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        self.last_tick = None;
        println!(
            "[{}/{}] {what} (elapsed {})",
            self.step,
            self.steps,
            self.elapsed()
        );
    }

    /// Reports `done` of `total`, at most once a second.
    pub fn tick(&mut self, what: &str, done: u64, total: u64) {
        let now = Instant::now();
        if self
            .last_tick
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_tick = Some(now);
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        println!(
            "      {what}: {done}/{total} ({pct:.0}%), elapsed {}",
            self.elapsed()
        );
    }

    /// A free-form line under the current step.
    pub fn note(&self, text: &str) {
        println!("      {text}");
    }

    fn elapsed(&self) -> String {
        format!("{:.1}s", self.started.elapsed().as_secs_f64())
    }
}
