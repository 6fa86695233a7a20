//! Prometheus metrics (prefix `millrace_`). Labels are bounded: flow, route, outcome, reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of flow-level series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// `<namespace>/<name>`.
    pub flow: String,
}

/// Labels of route-level series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `<namespace>/<name>`.
    pub flow: String,
    /// Route name.
    pub route: String,
}

/// Labels of dead-letter and validation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `<namespace>/<name>`.
    pub flow: String,
    /// Route name, or `none` when the whole message failed before routing.
    pub route: String,
    /// Reason class.
    pub reason: String,
}

/// Labels of the processing histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `<namespace>/<name>`.
    pub flow: String,
    /// `acked`, `dead_lettered`, `filtered`, `requeued`.
    pub outcome: String,
}

/// Labels of config reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub outcome: String,
}

/// Every metric the worker exports.
pub struct Metrics {
    /// Registry to encode.
    pub registry: Registry,
    /// Messages taken from a source.
    pub events_received: Family<FlowLabels, Counter>,
    /// Confirmed deliveries per route.
    pub events_delivered: Family<RouteLabels, Counter>,
    /// Transient failures parked for a retry.
    pub events_retried: Family<RouteLabels, Counter>,
    /// Repeats dropped by the dedupe window.
    pub events_deduplicated: Family<RouteLabels, Counter>,
    /// Keys the dedupe window forgot before their time because its memory budget was full.
    pub dedupe_evictions: Family<RouteLabels, Counter>,
    /// Messages written to the DLQ.
    pub events_dead_lettered: Family<ReasonLabels, Counter>,
    /// Contract and output-contract failures.
    pub validation_failures: Family<ReasonLabels, Counter>,
    /// Time from receive to ack.
    pub processing_duration: Family<OutcomeLabels, Histogram>,
    /// Event time to confirmed delivery.
    pub end_to_end_latency: Family<RouteLabels, Histogram>,
    /// Deliveries later than the flow's SLA.
    pub sla_breaches: Family<RouteLabels, Counter>,
    /// Messages received and not yet acknowledged.
    pub inflight_events: Family<FlowLabels, Gauge>,
    /// Broker (re)connections that failed.
    pub broker_connection_failures: Family<FlowLabels, Counter>,
    /// Config reloads.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Waits before trying again to settle a route whose retry park or dead-letter could not
    /// be written (the broker refused or was gone).
    pub settle_retries: Family<FlowLabels, Counter>,
    /// Messages requeued because a route could not be settled even after those waits.
    pub events_requeued: Family<FlowLabels, Counter>,
    /// jq runs abandoned past their time budget and still running.
    pub transform_runaways: Gauge,
    /// Bytes of message bodies in process, against the flow's prefetch byte budget.
    pub inflight_bytes: Family<FlowLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("millrace");
        let events_received = Family::default();
        registry.register(
            "events_received",
            "Messages taken from a source",
            events_received.clone(),
        );
        let events_delivered = Family::default();
        registry.register(
            "events_delivered",
            "Deliveries confirmed by a route's destination",
            events_delivered.clone(),
        );
        let events_retried = Family::default();
        registry.register(
            "events_retried",
            "Transient delivery failures parked in a retry tier or retried in place",
            events_retried.clone(),
        );
        let events_deduplicated = Family::default();
        registry.register(
            "events_deduplicated",
            "Deliveries skipped because the idempotency key was delivered recently",
            events_deduplicated.clone(),
        );
        let dedupe_evictions = Family::default();
        registry.register(
            "dedupe_evictions",
            "Idempotency keys the dedupe window forgot before their time because its memory budget was full",
            dedupe_evictions.clone(),
        );
        let events_dead_lettered = Family::default();
        registry.register(
            "events_dead_lettered",
            "Messages written to the dead-letter queue, by reason class",
            events_dead_lettered.clone(),
        );
        let validation_failures = Family::default();
        registry.register(
            "validation_failures",
            "Events refused by the contract or the output contract",
            validation_failures.clone(),
        );
        let processing_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "processing_duration_seconds",
            "Time from receiving a message to acknowledging it",
            processing_duration.clone(),
        );
        let end_to_end_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 20))
        });
        registry.register(
            "end_to_end_latency_seconds",
            "Time from the event's time to its confirmed delivery (sync lag)",
            end_to_end_latency.clone(),
        );
        let sla_breaches = Family::default();
        registry.register(
            "sla_breaches",
            "Deliveries whose end-to-end latency exceeded the flow's SLA",
            sla_breaches.clone(),
        );
        let inflight_events = Family::default();
        registry.register(
            "inflight_events",
            "Messages received and not yet acknowledged",
            inflight_events.clone(),
        );
        let broker_connection_failures = Family::default();
        registry.register(
            "broker_connection_failures",
            "Broker sessions that failed or could not be opened",
            broker_connection_failures.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Config reloads, applied or rejected",
            config_reloads.clone(),
        );
        let settle_retries = Family::default();
        registry.register(
            "settle_retries",
            "Waits before trying again to park a retry or write a dead-letter that failed",
            settle_retries.clone(),
        );
        let events_requeued = Family::default();
        registry.register(
            "events_requeued",
            "Messages given back to the broker because a route could not be settled",
            events_requeued.clone(),
        );
        let transform_runaways = Gauge::default();
        registry.register(
            "transform_runaways",
            "jq runs abandoned past their time budget that are still running on their thread",
            transform_runaways.clone(),
        );
        let inflight_bytes = Family::default();
        registry.register(
            "inflight_bytes",
            "Bytes of message bodies received and not yet settled (bounded by --prefetch-bytes)",
            inflight_bytes.clone(),
        );
        Self {
            registry,
            inflight_bytes,
            transform_runaways,
            settle_retries,
            events_requeued,
            events_received,
            events_delivered,
            events_retried,
            events_deduplicated,
            dedupe_evictions,
            events_dead_lettered,
            validation_failures,
            processing_duration,
            end_to_end_latency,
            sla_breaches,
            inflight_events,
            broker_connection_failures,
            config_reloads,
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Route labels.
    pub fn route(flow: &str, route: &str) -> RouteLabels {
        RouteLabels {
            flow: flow.to_string(),
            route: route.to_string(),
        }
    }

    /// Flow labels.
    pub fn flow(flow: &str) -> FlowLabels {
        FlowLabels {
            flow: flow.to_string(),
        }
    }

    /// The series flow `flow` updates for every message, looked up once.
    pub fn flow_series(&self, flow: &str) -> FlowSeries {
        let labels = Self::flow(flow);
        let processed = |outcome: &str| {
            self.processing_duration
                .get_or_create(&OutcomeLabels {
                    flow: flow.to_string(),
                    outcome: outcome.to_string(),
                })
                .clone()
        };
        FlowSeries {
            received: self.events_received.get_or_create(&labels).clone(),
            inflight: self.inflight_events.get_or_create(&labels).clone(),
            acked: processed("acked"),
            dead_lettered: processed("dead_lettered"),
            filtered: processed("filtered"),
            requeued: processed("requeued"),
        }
    }

    /// The series route `route` of flow `flow` updates for every delivery, looked up once.
    pub fn route_series(&self, flow: &str, route: &str) -> RouteSeries {
        let labels = Self::route(flow, route);
        RouteSeries {
            delivered: self.events_delivered.get_or_create(&labels).clone(),
            deduplicated: self.events_deduplicated.get_or_create(&labels).clone(),
            retried: self.events_retried.get_or_create(&labels).clone(),
            latency: self.end_to_end_latency.get_or_create(&labels).clone(),
            sla_breaches: self.sla_breaches.get_or_create(&labels).clone(),
        }
    }
}

/// One flow's per-message series (handles into [`Metrics`], so updating them takes no lookup).
#[derive(Clone, Debug)]
pub struct FlowSeries {
    /// `events_received`.
    pub received: Counter,
    /// `inflight_events`.
    pub inflight: Gauge,
    acked: Histogram,
    dead_lettered: Histogram,
    filtered: Histogram,
    requeued: Histogram,
}

impl FlowSeries {
    /// `processing_duration_seconds` of `outcome` (`acked`, `dead_lettered`, `filtered`,
    /// `requeued`).
    pub fn processing(&self, outcome: Outcome) -> &Histogram {
        match outcome {
            Outcome::Acked => &self.acked,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Filtered => &self.filtered,
            Outcome::Requeued => &self.requeued,
        }
    }
}

/// How a message ended, the `outcome` label of `processing_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every route settled.
    Acked,
    /// Dead-lettered before any route.
    DeadLettered,
    /// No output, or no route left to attempt.
    Filtered,
    /// Given back to the broker.
    Requeued,
}

/// One route's per-delivery series.
#[derive(Clone, Debug)]
pub struct RouteSeries {
    /// `events_delivered`.
    pub delivered: Counter,
    /// `events_deduplicated`.
    pub deduplicated: Counter,
    /// `events_retried`.
    pub retried: Counter,
    /// `end_to_end_latency_seconds`.
    pub latency: Histogram,
    /// `sla_breaches`.
    pub sla_breaches: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_prefix_and_units() {
        let m = Metrics::new();
        m.events_received
            .get_or_create(&Metrics::flow("ns/f"))
            .inc();
        m.processing_duration
            .get_or_create(&OutcomeLabels {
                flow: "ns/f".into(),
                outcome: "acked".into(),
            })
            .observe(0.01);
        m.inflight_events
            .get_or_create(&Metrics::flow("ns/f"))
            .set(2);
        m.dedupe_evictions
            .get_or_create(&Metrics::route("ns/f", "erp"))
            .inc();
        let text = m.encode();
        assert!(
            text.contains("millrace_events_received_total{flow=\"ns/f\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("millrace_dedupe_evictions_total{flow=\"ns/f\",route=\"erp\"} 1"),
            "{text}"
        );
        assert!(text.contains("millrace_processing_duration_seconds_bucket"));
        assert!(
            text.contains("millrace_inflight_events{flow=\"ns/f\"} 2"),
            "{text}"
        );
    }
}
