//! The WorkerConfig of a flow: every reference resolved, every default applied. This is the
//! contract between operator and worker; its digest is the flow's revision.

use std::collections::BTreeMap;

use millrace_crds::FieldError;
use millrace_crds::common::SecretKeyRef;
use millrace_crds::connection::PartnerConnection;
use millrace_crds::flow::IntegrationFlow;
use millrace_crds::worker_config::{
    AmqpConnectionConfig, ConnectionConfig, ContractConfig, DeliveryConfig, DestinationConfig,
    FlowConfig, HttpConnectionConfig, IdempotencyConfig, OrderingConfig, RetryConfig, RouteConfig,
    SecretSource, SourceConfig, TransformConfig, WORKER_CONFIG_API_VERSION, WorkerConfig,
};

/// Default HTTP timeout of a connection.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
/// Default dedupe window when `idempotency.window` is omitted.
pub const DEFAULT_IDEMPOTENCY_WINDOW_MS: u64 = 86_400_000;
/// Default prefetch of a worker.
pub const DEFAULT_PREFETCH: u16 = 100;

/// A contract version resolved from an EventContract.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedContract {
    /// EventContract name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// CloudEvents type.
    pub event_type: String,
    /// JSON Schema.
    pub schema: serde_json::Value,
}

/// Everything a flow references, resolved.
#[derive(Clone, Debug)]
pub struct FlowInputs<'a> {
    /// The flow.
    pub flow: &'a IntegrationFlow,
    /// Inbound contract.
    pub contract: ResolvedContract,
    /// Output contract, when the transform declares one.
    pub output_contract: Option<ResolvedContract>,
    /// Every connection the flow names, by name.
    pub connections: BTreeMap<String, &'a PartnerConnection>,
    /// Lookup tables by variable name.
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
    /// The `resourceVersion` of each Secret the workers read, when known (see
    /// [`crate::Catalog::secret_versions`]); they shape the pod template, not the config.
    pub secret_versions: Option<&'a BTreeMap<String, String>>,
}

/// The environment variable a pod gets a secret key in. Stable and unique per (secret, key).
pub fn secret_env_name(secret: &SecretKeyRef) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "MILLRACE_SECRET_{}__{}",
        clean(&secret.name),
        clean(&secret.key)
    )
}

fn secret_source(secret: &SecretKeyRef) -> SecretSource {
    SecretSource {
        env: secret_env_name(secret),
        secret_name: secret.name.clone(),
        secret_key: secret.key.clone(),
    }
}

fn duration_ms(d: &millrace_crds::Duration, field: &str) -> Result<u64, FieldError> {
    d.to_std()
        .map(|d| d.as_millis() as u64)
        .map_err(|e| FieldError::new(field, e.to_string()))
}

fn connection_config(name: &str, conn: &PartnerConnection) -> Result<ConnectionConfig, FieldError> {
    let field = format!("connection {name}");
    let amqp = conn.spec.amqp.as_ref().map(|a| AmqpConnectionConfig {
        uri: secret_source(&a.uri_secret_ref),
        ca: a
            .tls
            .as_ref()
            .and_then(|t| t.ca_secret_ref.as_ref())
            .map(secret_source),
        server_name: a.tls.as_ref().and_then(|t| t.server_name.clone()),
    });
    let http = match &conn.spec.http {
        Some(h) => {
            let auth = h
                .auth
                .clone()
                .unwrap_or(millrace_crds::connection::HttpAuth {
                    type_: Default::default(),
                    secret_ref: None,
                    token_url: None,
                    header: None,
                });
            Some(HttpConnectionConfig {
                base_url: h.base_url.trim_end_matches('/').to_string(),
                auth: auth.type_,
                secret: auth.secret_ref.as_ref().map(secret_source),
                token_url: auth.token_url.clone(),
                header: auth.header.clone(),
                timeout_ms: match &h.timeout {
                    Some(t) => duration_ms(t, &format!("{field} spec.http.timeout"))?,
                    None => DEFAULT_HTTP_TIMEOUT_MS,
                },
                rate_limit_per_second: h.rate_limit.as_ref().map(|r| r.requests_per_second),
                rate_limit_burst: h.rate_limit.as_ref().and_then(|r| r.burst),
                ca: h
                    .tls
                    .as_ref()
                    .and_then(|t| t.ca_secret_ref.as_ref())
                    .map(secret_source),
                server_name: h.tls.as_ref().and_then(|t| t.server_name.clone()),
            })
        }
        None => None,
    };
    Ok(ConnectionConfig {
        system: conn.spec.system,
        amqp,
        http,
    })
}

/// Resolves a retry policy: the flow's fields win, then the connection's, then the defaults.
fn retry_config(
    flow: &IntegrationFlow,
    conn: &PartnerConnection,
) -> Result<RetryConfig, FieldError> {
    let d = RetryConfig::default();
    let f = flow
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.retry.clone())
        .unwrap_or_default();
    let c = conn
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.retry.clone())
        .unwrap_or_default();
    let ms = |a: &Option<millrace_crds::Duration>,
              b: &Option<millrace_crds::Duration>,
              field: &str,
              default: u64| {
        match a.as_ref().or(b.as_ref()) {
            Some(v) => duration_ms(v, field),
            None => Ok(default),
        }
    };
    Ok(RetryConfig {
        max_attempts: f.max_attempts.or(c.max_attempts).unwrap_or(d.max_attempts),
        backoff: f.backoff.or(c.backoff).unwrap_or(d.backoff),
        initial_delay_ms: ms(
            &f.initial_delay,
            &c.initial_delay,
            "spec.delivery.retry.initialDelay",
            d.initial_delay_ms,
        )?,
        max_delay_ms: ms(
            &f.max_delay,
            &c.max_delay,
            "spec.delivery.retry.maxDelay",
            d.max_delay_ms,
        )?,
    })
}

/// The distinct retry delays any route can need, shortest first: one delay queue each.
pub fn retry_tiers(routes: &[RouteConfig]) -> Vec<u64> {
    let mut tiers: Vec<u64> = routes
        .iter()
        .flat_map(|r| (2..=r.retry.max_attempts.max(1)).map(move |a| r.retry.delay_ms(a)))
        .filter(|ms| *ms > 0)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    tiers
}

/// Builds the worker config of one flow.
pub fn worker_config(inputs: &FlowInputs<'_>) -> Result<WorkerConfig, FieldError> {
    let flow = inputs.flow;
    let spec = &flow.spec;
    let namespace = flow.metadata.namespace.clone().unwrap_or_default();
    let name = flow.metadata.name.clone().unwrap_or_default();
    let conn = |n: &str, field: &str| -> Result<&PartnerConnection, FieldError> {
        inputs
            .connections
            .get(n)
            .copied()
            .ok_or_else(|| FieldError::new(field, format!("PartnerConnection {n:?} not found")))
    };

    let mut connections = BTreeMap::new();
    let mut add = |n: &str, field: &str| -> Result<(), FieldError> {
        let c = conn(n, field)?;
        connections.insert(n.to_string(), connection_config(n, c)?);
        Ok(())
    };

    let source = match (&spec.source.amqp, &spec.source.http) {
        (Some(a), _) => {
            add(&a.connection, "spec.source.amqp.connection")?;
            SourceConfig::Amqp {
                connection: a.connection.clone(),
                exchange: a.exchange.clone(),
                routing_keys: a.routing_keys.clone(),
            }
        }
        (None, Some(h)) => SourceConfig::Http {
            path: h.path.clone(),
            auth: h.auth.type_,
            secret: secret_source(&h.auth.secret_ref),
        },
        (None, None) => {
            return Err(FieldError::new(
                "spec.source",
                "set exactly one of amqp or http",
            ));
        }
    };
    let broker = match (&spec.broker, &spec.source.amqp) {
        (Some(b), _) => b.connection.clone(),
        (None, Some(a)) => a.connection.clone(),
        (None, None) => {
            return Err(FieldError::new(
                "spec.broker",
                "required for an HTTP source",
            ));
        }
    };
    add(&broker, "spec.broker.connection")?;
    if conn(&broker, "spec.broker.connection")?.spec.amqp.is_none() {
        return Err(FieldError::new(
            "spec.broker.connection",
            format!("PartnerConnection {broker:?} is not an AMQP connection"),
        ));
    }
    if let Some(a) = &spec.source.amqp
        && conn(&a.connection, "spec.source.amqp.connection")?
            .spec
            .amqp
            .is_none()
    {
        return Err(FieldError::new(
            "spec.source.amqp.connection",
            format!(
                "PartnerConnection {:?} is not an AMQP connection",
                a.connection
            ),
        ));
    }

    let mut routes = Vec::with_capacity(spec.routes.len());
    for (i, route) in spec.routes.iter().enumerate() {
        let field = format!("spec.routes[{i}].destination.connection");
        let c = conn(&route.destination.connection, &field)?;
        let destination = match (&route.destination.amqp, &route.destination.http) {
            (Some(a), _) => {
                if c.spec.amqp.is_none() {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "route {:?} publishes over AMQP but PartnerConnection {:?} is HTTP",
                            route.name, route.destination.connection
                        ),
                    ));
                }
                DestinationConfig::Amqp {
                    exchange: a.exchange.clone(),
                    routing_key: a.routing_key.clone(),
                }
            }
            (None, Some(h)) => {
                if c.spec.http.is_none() {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "route {:?} sends HTTP but PartnerConnection {:?} is AMQP",
                            route.name, route.destination.connection
                        ),
                    ));
                }
                DestinationConfig::Http {
                    method: h.method,
                    path: h.path.clone(),
                }
            }
            (None, None) => {
                return Err(FieldError::new(
                    format!("spec.routes[{i}].destination"),
                    "set exactly one of amqp or http",
                ));
            }
        };
        add(&route.destination.connection, &field)?;
        routes.push(RouteConfig {
            name: route.name.clone(),
            when: route.when.clone(),
            connection: route.destination.connection.clone(),
            destination,
            retry: retry_config(flow, c)?,
        });
    }

    let contract_config = |c: &ResolvedContract| ContractConfig {
        name: c.name.clone(),
        version: c.version,
        event_type: c.event_type.clone(),
        schema: c.schema.clone(),
    };
    let transform = spec.transform.as_ref().map(|t| TransformConfig {
        jq: t.jq.clone(),
        lookups: inputs.lookups.clone(),
        args: t
            .args
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
        output_contract: inputs.output_contract.as_ref().map(contract_config),
    });
    let delivery_spec = spec.delivery.clone().unwrap_or_default();
    let idempotency = match &delivery_spec.idempotency {
        Some(i) => Some(IdempotencyConfig {
            key: i.key.clone(),
            window_ms: match &i.window {
                Some(w) => duration_ms(w, "spec.delivery.idempotency.window")?,
                None => DEFAULT_IDEMPOTENCY_WINDOW_MS,
            },
        }),
        None => None,
    };
    let delivery = DeliveryConfig {
        dead_letter: delivery_spec.dead_letter.as_ref().is_none_or(|d| d.enabled),
        idempotency,
        ordering: delivery_spec.ordering.as_ref().map(|o| OrderingConfig {
            key: o.key.clone(),
            partitions: o.partitions,
        }),
        retry_tiers_ms: retry_tiers(&routes),
    };
    let workers = spec.workers.clone().unwrap_or_default();
    let flow_config = FlowConfig {
        namespace,
        name,
        version: spec.version.0.clone(),
        broker,
        source,
        contract: contract_config(&inputs.contract),
        transform,
        routes,
        delivery,
        archive_retention_ms: match &spec.replay {
            Some(r) => duration_ms(&r.retention, "spec.replay.retention")?,
            None => 0,
        },
        sla_max_latency_ms: match &spec.sla {
            Some(s) => Some(duration_ms(&s.max_latency, "spec.sla.maxLatency")?),
            None => None,
        },
        prefetch: workers.prefetch.unwrap_or(DEFAULT_PREFETCH),
    };
    let config = WorkerConfig {
        api_version: WORKER_CONFIG_API_VERSION.into(),
        flows: vec![flow_config],
        connections,
    };
    config.check()?;
    Ok(config)
}
