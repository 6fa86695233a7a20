//! A flow ready to run: its compiled pipeline plus the live pieces it delivers through
//! (publishers, HTTP sinks, dedupe windows, metrics).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use millrace_crds::flow::HttpMethod;
use millrace_crds::worker_config::DestinationConfig;

use millrace_broker::tls::{AmqpConnector, HttpTls};

use crate::budget::TransformBudget;
use crate::config::{CompiledConfig, ConfigError, tls_error};
use crate::dedupe::DedupeWindow;
use crate::metrics::{FlowSeries, Metrics, RouteSeries};
use crate::partial::PartialDeliveries;
use crate::pipeline::CompiledFlow;
use crate::sink::amqp::{ConfirmPublisher, PublisherSettings};
use crate::sink::http::{HostLimits, HttpSink};

/// Longest wait for a flow's publisher lanes to open before its consumers start.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one route delivers.
pub enum RouteSink {
    /// Publish to an exchange.
    Amqp {
        /// Publisher of the route's connection.
        publisher: Arc<ConfirmPublisher>,
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// Send an HTTP request.
    Http {
        /// The connection's sink.
        sink: Arc<HttpSink>,
        /// Method.
        method: HttpMethod,
        /// Path template.
        path: String,
    },
}

/// Everything a flow needs at run time.
pub struct FlowRuntime {
    /// The compiled pipeline.
    pub flow: Arc<CompiledFlow>,
    /// `<namespace>/<name>`, the `flow` label.
    pub label: String,
    /// The flow's broker, with its TLS settings (consumers open their own connections to it).
    pub broker: AmqpConnector,
    /// Publisher on the flow's broker: retries, dead-letters, ingress, the ordering splitter.
    pub publisher: Arc<ConfirmPublisher>,
    /// One sink per route, in route order.
    pub sinks: Vec<RouteSink>,
    /// One dedupe window per route, when the flow has an idempotency window.
    pub dedupe: Vec<Option<DedupeWindow>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Routes already delivered for messages that had to be requeued.
    pub partial: PartialDeliveries,
    /// See [`Limits::max_redeliveries`].
    pub max_redeliveries: u32,
    /// The flow's per-message series.
    pub series: FlowSeries,
    /// Each route's per-delivery series, in route order.
    pub route_series: Vec<RouteSeries>,
    /// Where the pipeline runs when its programs may loop (see [`crate::budget`]).
    pub budget: TransformBudget,
    /// The flow's prefetch byte budget: one permit per byte of the bodies in process.
    bytes: Arc<Semaphore>,
    prefetch_bytes: usize,
    bytes_gauge: Gauge,
}

impl FlowRuntime {
    /// Opens every publisher lane the flow delivers through (its routes' exchanges, its own
    /// exchange for retries and dead-letters, its partition exchange), all at once. A lane
    /// that cannot open now opens at its first publish instead.
    pub async fn warm_up(&self) {
        let mut lanes: Vec<(&ConfirmPublisher, String)> =
            vec![(&self.publisher, self.flow.names.exchange())];
        if self.flow.is_ordered() {
            lanes.push((&self.publisher, self.flow.names.partition_exchange()));
        }
        for sink in &self.sinks {
            if let RouteSink::Amqp {
                publisher,
                exchange,
                ..
            } = sink
            {
                lanes.push((publisher, exchange.clone()));
            }
        }
        let opening = futures::future::join_all(lanes.iter().map(|(p, e)| p.prepare(e)));
        // A broker that does not answer is not waited for: its lanes open lazily.
        let _ = tokio::time::timeout(WARM_UP_TIMEOUT, opening).await;
    }

    /// Waits until the flow may take a body of `len` bytes into process within its prefetch
    /// byte budget; the reservation lasts as long as the value returned. A body larger than
    /// the whole budget waits until nothing else is in process, then runs alone.
    pub async fn reserve_bytes(&self, len: usize) -> BytesInProcess {
        let wanted = len.clamp(1, self.prefetch_bytes) as u32;
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(wanted)
            .await
            .expect("the byte budget is never closed");
        self.bytes_gauge.inc_by(i64::from(wanted));
        BytesInProcess {
            _permit: permit,
            gauge: self.bytes_gauge.clone(),
            bytes: i64::from(wanted),
        }
    }
}

/// Bytes a message holds of its flow's prefetch byte budget, given back when dropped.
pub struct BytesInProcess {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
    bytes: i64,
}

impl Drop for BytesInProcess {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// The live pieces of one config: a runtime per flow and the publishers they share.
pub struct Runtimes {
    /// Flows, in config order.
    pub flows: Vec<Arc<FlowRuntime>>,
    /// Publishers by connection name.
    pub publishers: Vec<Arc<ConfirmPublisher>>,
}

/// The worker-wide bounds every flow runs within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Settings of every broker publisher.
    pub publisher: PublisherSettings,
    /// Most HTTP requests in flight per destination host.
    pub http_max_in_flight_per_host: usize,
    /// Deliveries of one message (as counted by its queue) before it is dead-lettered
    /// without running the pipeline.
    pub max_redeliveries: u32,
    /// Time budget of one message's pipeline when its jq programs may loop.
    pub transform_budget: Duration,
    /// Most bytes of message bodies one flow holds in process at once.
    pub prefetch_bytes: usize,
}

/// Builds the runtimes of a compiled config within `limits`. Nothing connects yet.
pub fn build(
    config: &CompiledConfig,
    metrics: &Arc<Metrics>,
    limits: Limits,
) -> Result<Runtimes, ConfigError> {
    let mut publishers: HashMap<String, Arc<ConfirmPublisher>> = HashMap::new();
    let mut http_sinks: HashMap<String, Arc<HttpSink>> = HashMap::new();
    let http_hosts = HostLimits::new(limits.http_max_in_flight_per_host);
    let raw = &config.raw;
    let broker_of = |name: &str, field: String| -> Result<AmqpConnector, ConfigError> {
        let conn = raw
            .connections
            .get(name)
            .and_then(|c| c.amqp.as_ref())
            .ok_or_else(|| {
                ConfigError::new(field.clone(), format!("{name:?} is not an AMQP connection"))
            })?;
        let uri = config.secret(&conn.uri).ok_or_else(|| {
            ConfigError::new(
                field,
                format!("the URI secret {} is not resolved", conn.uri.env),
            )
        })?;
        let tls = config.tls_options(&conn.ca, &conn.server_name);
        AmqpConnector::new(uri, &tls).map_err(|e| tls_error(name, "amqp", conn.ca.as_ref(), e))
    };
    let mut publisher_for =
        |name: &str, field: String| -> Result<Arc<ConfirmPublisher>, ConfigError> {
            if let Some(p) = publishers.get(name) {
                return Ok(p.clone());
            }
            let broker = broker_of(name, field)?;
            let p = Arc::new(ConfirmPublisher::new(
                broker,
                format!("millrace-worker publisher {name}"),
                limits.publisher,
            ));
            publishers.insert(name.to_string(), p.clone());
            Ok(p)
        };

    // Permits are counted in u32 per acquisition, so one body reserves at most 4 GiB.
    let prefetch_bytes = limits.prefetch_bytes.clamp(1, u32::MAX as usize);
    let mut flows = Vec::new();
    for (i, flow) in config.flows.iter().enumerate() {
        let fc = &flow.config;
        let broker = broker_of(&fc.broker, format!("flows[{i}].broker"))?;
        let publisher = publisher_for(&fc.broker, format!("flows[{i}].broker"))?;
        let mut sinks = Vec::new();
        for (j, route) in fc.routes.iter().enumerate() {
            let field = format!("flows[{i}].routes[{j}].connection");
            let sink = match &route.destination {
                DestinationConfig::Amqp {
                    exchange,
                    routing_key,
                } => RouteSink::Amqp {
                    publisher: publisher_for(&route.connection, field)?,
                    exchange: exchange.clone(),
                    routing_key: routing_key.clone(),
                },
                DestinationConfig::Http { method, path } => {
                    let sink = match http_sinks.get(&route.connection) {
                        Some(s) => s.clone(),
                        None => {
                            let conn = raw
                                .connections
                                .get(&route.connection)
                                .and_then(|c| c.http.as_ref())
                                .ok_or_else(|| {
                                    ConfigError::new(field.clone(), "is not an HTTP connection")
                                })?;
                            let secret = conn.secret.as_ref().and_then(|s| config.secret(s));
                            let tls = HttpTls::new(
                                &conn.base_url,
                                &config.tls_options(&conn.ca, &conn.server_name),
                            )
                            .map_err(|e| {
                                tls_error(&route.connection, "http", conn.ca.as_ref(), e)
                            })?;
                            let reread = conn.secret.as_ref().map(|s| config.secret_reread(s));
                            let s = Arc::new(HttpSink::new(
                                &route.connection,
                                conn,
                                secret,
                                &tls,
                                reread,
                                &http_hosts,
                            )?);
                            http_sinks.insert(route.connection.clone(), s.clone());
                            s
                        }
                    };
                    RouteSink::Http {
                        sink,
                        method: *method,
                        path: path.clone(),
                    }
                }
            };
            sinks.push(sink);
        }
        let dedupe = fc
            .routes
            .iter()
            .map(|route| {
                fc.delivery
                    .idempotency
                    .as_ref()
                    .filter(|i| i.window_ms > 0)
                    .map(|i| {
                        let evictions = metrics
                            .dedupe_evictions
                            .get_or_create(&Metrics::route(&flow.label(), &route.name))
                            .clone();
                        DedupeWindow::new_with(
                            Duration::from_millis(i.window_ms),
                            crate::dedupe::DEFAULT_MAX_BYTES,
                            Some(evictions),
                        )
                    })
            })
            .collect();
        flows.push(Arc::new(FlowRuntime {
            label: flow.label(),
            flow: flow.clone(),
            broker,
            publisher,
            sinks,
            dedupe,
            metrics: metrics.clone(),
            partial: PartialDeliveries::default(),
            max_redeliveries: limits.max_redeliveries,
            series: metrics.flow_series(&flow.label()),
            route_series: fc
                .routes
                .iter()
                .map(|r| metrics.route_series(&flow.label(), &r.name))
                .collect(),
            budget: TransformBudget::new(
                limits.transform_budget,
                metrics.transform_runaways.clone(),
            ),
            bytes: Arc::new(Semaphore::new(prefetch_bytes)),
            prefetch_bytes,
            bytes_gauge: metrics
                .inflight_bytes
                .get_or_create(&Metrics::flow(&flow.label()))
                .clone(),
        }));
    }
    Ok(Runtimes {
        flows,
        publishers: publishers.into_values().collect(),
    })
}
