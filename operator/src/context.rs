//! Shared state of the controllers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use millrace_crds::IntegrationFlow;
use tokio::sync::Mutex;

use crate::broker::{Brokers, QueueCounts};
use crate::metrics::Metrics;
use millrace_render::RenderSettings;

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How rendered objects look.
    pub render: RenderSettings,
    /// How often each flow is re-checked for drift (a queue deleted by hand, say).
    pub drift_interval: Duration,
    /// How often queue figures are sampled.
    pub sample_interval: Duration,
    /// Dead-letters per minute above which a flow is not Healthy.
    pub dlq_growth_per_minute: f64,
    /// Default probe interval of connections.
    pub probe_interval: Duration,
    /// How many flows may roll their worker pods at once.
    pub worker_rollout_max_concurrent: crate::rollouts::MaxConcurrent,
}

/// Where a flow's queues live, remembered from its last reconcile so the sampler can read them.
#[derive(Clone, Debug)]
pub struct FlowQueues {
    /// Broker URI (kept in memory only).
    pub uri: String,
    /// Main queue, or the partition queues of an ordered flow.
    pub main: Vec<String>,
    /// Dead-letter queue.
    pub dlq: String,
}

/// Sampled figures of one flow, with a short history to judge dead-letter growth.
#[derive(Clone, Debug, Default)]
pub struct FlowSamples {
    /// Latest figures.
    pub latest: Option<QueueCounts>,
    /// (when, dead letters) over the last few minutes.
    pub history: VecDeque<(Instant, u64)>,
}

impl FlowSamples {
    /// Window over which dead-letter growth is measured.
    pub const WINDOW: Duration = Duration::from_secs(300);

    /// Records a sample.
    pub fn record(&mut self, counts: QueueCounts, now: Instant) {
        self.latest = Some(counts);
        self.history.push_back((now, counts.dead_letters));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW)
        {
            self.history.pop_front();
        }
    }

    /// The latest figures, when sampled less than `max_age` ago.
    pub fn latest_if_newer_than(&self, max_age: Duration) -> Option<QueueCounts> {
        let (at, _) = self.history.back()?;
        (at.elapsed() < max_age).then_some(self.latest?)
    }

    /// Dead-letters added per minute over the window (0 with fewer than two samples).
    pub fn dead_letter_growth_per_minute(&self) -> f64 {
        match (self.history.front(), self.history.back()) {
            (Some((t0, d0)), Some((t1, d1))) if t1 > t0 && d1 > d0 => {
                (d1 - d0) as f64 / t1.duration_since(*t0).as_secs_f64().max(1.0) * 60.0
            }
            _ => 0.0,
        }
    }
}

/// Last probe outcome of a connection, kept in memory between reconciles.
#[derive(Clone, Debug)]
pub struct ProbeMemo {
    /// When it ran.
    pub at: Instant,
    /// Round trip in milliseconds, or the error.
    pub outcome: Result<u64, String>,
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// AMQP connections.
    pub brokers: Brokers,
    /// Cache of every IntegrationFlow, for reverse look-ups (usedBy, watches).
    pub flows: Store<IntegrationFlow>,
    /// Queue locations by flow.
    pub queues: Mutex<HashMap<ObjectRef<IntegrationFlow>, FlowQueues>>,
    /// Queue samples by flow.
    pub samples: Mutex<HashMap<ObjectRef<IntegrationFlow>, FlowSamples>>,
    /// Probe outcomes by connection (namespace/name).
    pub probes: Mutex<HashMap<(String, String), ProbeMemo>>,
    /// Consecutive reconcile failures per object, for the error policy's backoff.
    pub backoff: crate::backoff::ErrorBackoff,
    /// Flows rolling their worker pods now, for rollout pacing.
    pub rollouts: crate::rollouts::Rollouts,
}

impl Context {
    /// Samples a flow's queues now, records the sample, and returns it with the dead-letter
    /// growth per minute.
    pub async fn sample(
        &self,
        flow: &ObjectRef<IntegrationFlow>,
        queues: &FlowQueues,
    ) -> crate::error::Result<(QueueCounts, f64)> {
        let counts = self
            .brokers
            .counts(&queues.uri, &queues.main, &queues.dlq)
            .await?;
        let mut samples = self.samples.lock().await;
        let entry = samples.entry(flow.clone()).or_default();
        entry.record(counts, Instant::now());
        Ok((counts, entry.dead_letter_growth_per_minute()))
    }
}
