//! The time budget of flows whose jq programs may loop.
//!
//! A flow whose programs [may loop](crate::pipeline::CompiledFlow::may_loop) runs its pipeline
//! on a thread of its own, never on the async executor, so a runaway program stalls neither the
//! consumers, the publishers nor `/healthz`. Past the budget the message is dead-lettered with
//! `transform_budget_exceeded`. Nothing can stop a thread from outside: it runs on (a
//! "runaway") until its program ends, and `millrace_transform_runaways` counts those running.
//! Once [`RUNAWAY_LIMIT`] run at once, `/healthz` fails so that the pod is restarted with its
//! CPU back. Each runaway's message was dead-lettered first, so none of them comes back.
//!
//! Programs that cannot loop finish in time proportional to their event and run inline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

/// Default budget of one message's pipeline when its programs may loop.
pub const DEFAULT_TRANSFORM_BUDGET: Duration = Duration::from_secs(1);

/// Runaways at once past which the worker reports itself unhealthy.
pub const RUNAWAY_LIMIT: i64 = 4;

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// Runs work on its own thread within a time budget.
#[derive(Clone, Debug)]
pub struct TransformBudget {
    limit: Duration,
    runaways: Gauge,
}

/// Why budgeted work has no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// It ran past the budget and was abandoned.
    OverBudget,
    /// It panicked.
    Panicked,
    /// No thread could be started for it (the process is out of threads or memory).
    NoThread(String),
}

impl TransformBudget {
    /// A budget of `limit` per run; abandoned runs are counted in `runaways`.
    pub fn new(limit: Duration, runaways: Gauge) -> Self {
        Self { limit, runaways }
    }

    /// The budget of one run.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether so many runs are past their budget at once that the worker should be restarted.
    pub fn exhausted(&self) -> bool {
        self.runaways.get() >= RUNAWAY_LIMIT
    }

    /// Runs `work` on a new thread and waits for it up to the budget.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unfinished> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let thread_state = state.clone();
        let runaways = self.runaways.clone();
        std::thread::Builder::new()
            .name("millrace-jq".into())
            .spawn(move || {
                let out = work();
                if thread_state.swap(FINISHED, Ordering::AcqRel) == ABANDONED {
                    runaways.dec();
                    tracing::info!("a jq run abandoned past its budget has finished");
                }
                // The waiter may be gone (abandoned, or its task cancelled).
                let _ = tx.send(out);
            })
            .map_err(|e| Unfinished::NoThread(e.to_string()))?;
        match tokio::time::timeout(self.limit, rx).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(Unfinished::Panicked),
            Err(_) => {
                if state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.runaways.inc();
                }
                Err(Unfinished::OverBudget)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Work that runs until `release` is set.
    fn spin_until(release: &Arc<AtomicBool>) -> impl FnOnce() + Send + 'static {
        let held = release.clone();
        move || {
            while !held.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[tokio::test]
    async fn work_within_the_budget_answers() {
        let budget = TransformBudget::new(Duration::from_secs(5), Gauge::default());
        assert_eq!(budget.run(|| 6 * 7).await, Ok(42));
        assert_eq!(budget.runaways.get(), 0);
    }

    #[tokio::test]
    async fn work_past_the_budget_is_abandoned_counted_and_uncounted_when_it_ends() {
        let runaways = Gauge::default();
        let budget = TransformBudget::new(Duration::from_millis(20), runaways.clone());
        let release = Arc::new(AtomicBool::new(false));
        let started = std::time::Instant::now();
        let out = budget.run(spin_until(&release)).await;
        assert_eq!(out, Err(Unfinished::OverBudget));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the wait is bounded"
        );
        assert_eq!(runaways.get(), 1);
        assert!(!budget.exhausted());
        release.store(true, Ordering::Release);
        for _ in 0..500 {
            if runaways.get() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the finished runaway is still counted");
    }

    #[tokio::test]
    async fn enough_runaways_at_once_exhaust_the_worker() {
        let runaways = Gauge::default();
        let budget = TransformBudget::new(Duration::from_millis(5), runaways.clone());
        let release = Arc::new(AtomicBool::new(false));
        for _ in 0..RUNAWAY_LIMIT {
            let out = budget.run(spin_until(&release)).await;
            assert_eq!(out, Err(Unfinished::OverBudget));
        }
        assert!(budget.exhausted());
        release.store(true, Ordering::Release);
    }

    #[tokio::test]
    async fn a_panic_is_never_an_answer() {
        let budget = TransformBudget::new(Duration::from_secs(5), Gauge::default());
        let out: Result<(), _> = budget.run(|| panic!("boom")).await;
        assert_eq!(out, Err(Unfinished::Panicked));
    }
}
