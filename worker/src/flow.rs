//! A flow ready to run: its compiled pipeline plus the live pieces it delivers through
//! (publishers, HTTP sinks, dedupe windows, metrics).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use millrace_crds::flow::HttpMethod;
use millrace_crds::worker_config::DestinationConfig;

use millrace_broker::tls::{AmqpConnector, HttpTls};

use crate::config::{CompiledConfig, ConfigError, tls_error};
use crate::dedupe::DedupeWindow;
use crate::metrics::Metrics;
use crate::partial::PartialDeliveries;
use crate::pipeline::CompiledFlow;
use crate::sink::amqp::{ConfirmPublisher, PublisherSettings};
use crate::sink::http::{HostLimits, HttpSink};

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
}

/// Builds the runtimes of a compiled config within `limits`. Nothing connects yet.
pub fn build(
    config: &CompiledConfig,
    metrics: &Arc<Metrics>,
    limits: Limits,
) -> Result<Runtimes, ConfigError> {
    let publisher_settings = limits.publisher;
    let http_max_in_flight_per_host = limits.http_max_in_flight_per_host;
    let mut publishers: HashMap<String, Arc<ConfirmPublisher>> = HashMap::new();
    let mut http_sinks: HashMap<String, Arc<HttpSink>> = HashMap::new();
    let http_hosts = HostLimits::new(http_max_in_flight_per_host);
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
                publisher_settings,
            ));
            publishers.insert(name.to_string(), p.clone());
            Ok(p)
        };

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
            .map(|_| {
                fc.delivery
                    .idempotency
                    .as_ref()
                    .filter(|i| i.window_ms > 0)
                    .map(|i| DedupeWindow::new(Duration::from_millis(i.window_ms)))
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
        }));
    }
    Ok(Runtimes {
        flows,
        publishers: publishers.into_values().collect(),
    })
}
