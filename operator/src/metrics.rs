//! Operator metrics: reconciles, durations and errors by kind, API writes, and flow gauges.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// EventContract, PartnerConnection or IntegrationFlow.
    pub kind: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Kind being reconciled.
    pub kind: String,
    /// Bounded error category.
    pub category: String,
}

/// Labels of API write counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Kind of the object written (ConfigMap, Deployment, IntegrationFlow/status, ...).
    pub resource: String,
    /// apply, delete, event.
    pub verb: String,
}

/// Labels of per-flow gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// Namespace of the flow.
    pub namespace: String,
    /// Name of the flow.
    pub flow: String,
}

/// All operator metrics.
pub struct Metrics {
    /// The registry served at `/metrics`.
    pub registry: Registry,
    /// Reconcile passes by kind.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconcile failures by kind and category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration by kind.
    pub duration: Family<KindLabels, Histogram>,
    /// Write requests made to the API server, by resource and verb.
    pub api_writes: Family<WriteLabels, Counter>,
    /// 1 when a flow is Ready, else 0.
    pub flow_ready: Family<FlowLabels, Gauge>,
    /// Messages in a flow's dead-letter queue.
    pub flow_dead_letters: Family<FlowLabels, Gauge<i64, AtomicI64>>,
    /// Messages waiting in a flow's main queue.
    pub flow_backlog: Family<FlowLabels, Gauge<i64, AtomicI64>>,
    /// Objects managed, by kind.
    pub managed: Family<KindLabels, Gauge>,
    /// Sum of `api_writes` over all labels, for tests and logs.
    writes: AtomicU64,
}

impl Metrics {
    /// Drops every per-flow series of a deleted flow, so dashboards stop showing it.
    pub fn forget_flow(&self, labels: &FlowLabels) {
        self.flow_ready.remove(labels);
        self.flow_backlog.remove(labels);
        self.flow_dead_letters.remove(labels);
    }

    /// Sets `objects_managed{kind}`.
    pub fn set_managed(&self, kind: &str, count: usize) {
        self.managed
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(count as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("millrace_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let api_writes = Family::<WriteLabels, Counter>::default();
        let flow_ready = Family::<FlowLabels, Gauge>::default();
        let flow_dead_letters = Family::<FlowLabels, Gauge<i64, AtomicI64>>::default();
        let flow_backlog = Family::<FlowLabels, Gauge<i64, AtomicI64>>::default();
        let managed = Family::<KindLabels, Gauge>::default();
        registry.register("reconciles", "Reconcile passes by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by kind and error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            duration.clone(),
        );
        registry.register(
            "api_writes",
            "Write requests to the Kubernetes API by resource and verb",
            api_writes.clone(),
        );
        registry.register("flow_ready", "1 when the flow is Ready", flow_ready.clone());
        registry.register(
            "flow_dead_letters",
            "Messages in the flow's dead-letter queue",
            flow_dead_letters.clone(),
        );
        registry.register(
            "flow_backlog",
            "Messages waiting in the flow's main queue",
            flow_backlog.clone(),
        );
        registry.register(
            "objects_managed",
            "Objects reconciled, by kind",
            managed.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            api_writes,
            flow_ready,
            flow_dead_letters,
            flow_backlog,
            managed,
            writes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one API write.
    pub fn write(&self, resource: &str, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                resource: resource.into(),
                verb: verb.into(),
            })
            .inc();
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Total API writes so far (all resources and verbs).
    pub fn total_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Renders the registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
