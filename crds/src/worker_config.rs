//! The rendered worker configuration: the contract between operator and worker.
//!
//! The operator resolves references (contracts, connections, lookup ConfigMaps) and defaults,
//! and writes one `WorkerConfig` per flow into a ConfigMap. The worker needs nothing else,
//! except secret values, which it receives only by reference ([`SecretSource`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::Backoff;
use crate::connection::{HttpAuthType, PartnerSystem};
use crate::flow::{HttpMethod, IngressAuthType};

/// The only format version this build reads and writes.
pub const WORKER_CONFIG_API_VERSION: &str = "millrace.dev/worker-config.v1";

/// Key of the config inside the rendered ConfigMap.
pub const CONFIG_MAP_KEY: &str = "worker-config.json";

/// Everything one worker process runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerConfig {
    /// Always [`WORKER_CONFIG_API_VERSION`].
    pub api_version: String,
    /// The flows this worker runs.
    pub flows: Vec<FlowConfig>,
    /// Connections the flows use, by PartnerConnection name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
}

/// A secret value, by reference only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable the pod receives it in (through `secretKeyRef`).
    pub env: String,
    /// The Secret and key, in the flow's namespace, for workers that read it through the API.
    pub secret_name: String,
    /// Key in the Secret.
    pub secret_key: String,
}

/// One flow, fully resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowConfig {
    /// Namespace of the IntegrationFlow.
    pub namespace: String,
    /// Name of the IntegrationFlow.
    pub name: String,
    /// `spec.version`.
    pub version: String,
    /// Connection whose broker holds the flow's queues.
    pub broker: String,
    /// Where events come from.
    pub source: SourceConfig,
    /// Inbound contract.
    pub contract: ContractConfig,
    /// Transform, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformConfig>,
    /// Routes, in spec order.
    pub routes: Vec<RouteConfig>,
    /// Delivery policy.
    pub delivery: DeliveryConfig,
    /// Archive stream retention in milliseconds; 0 means the flow keeps no archive (no `spec.replay`).
    pub archive_retention_ms: u64,
    /// SLA: longest acceptable event-time-to-delivery, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_max_latency_ms: Option<u64>,
    /// Unacknowledged messages the worker may hold.
    pub prefetch: u16,
}

/// Where a flow's events come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum SourceConfig {
    /// The main queue is bound to `exchange` on the broker of `connection` with `routingKeys`.
    Amqp {
        /// Connection name.
        connection: String,
        /// Source exchange (topic).
        exchange: String,
        /// Binding keys. (`routing_keys` is read too: configs rendered before every key was
        /// camelCase.)
        #[serde(alias = "routing_keys")]
        routing_keys: Vec<String>,
    },
    /// HTTP ingress at `POST /ingest/<flow>` (also served at `path`).
    Http {
        /// Ingress path.
        path: String,
        /// Scheme.
        auth: IngressAuthType,
        /// HMAC key or bearer token.
        secret: SecretSource,
    },
}

/// A resolved contract version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractConfig {
    /// EventContract name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// CloudEvents `type` events must carry (when they carry one).
    pub event_type: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
}

/// A resolved transform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformConfig {
    /// jq program; `None` passes the event through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jq: Option<String>,
    /// Lookup tables by variable name (ConfigMap data, already read).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
    /// Plain variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, serde_json::Value>,
    /// Output contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<ContractConfig>,
}

/// One route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name.
    pub name: String,
    /// jq predicate; `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Connection name.
    pub connection: String,
    /// What to do there.
    pub destination: DestinationConfig,
    /// Retry policy of this route (flow's, else connection's, else the default).
    pub retry: RetryConfig,
}

/// A delivery target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum DestinationConfig {
    /// Publish to an exchange.
    Amqp {
        /// Exchange.
        exchange: String,
        /// Routing key. (`routing_key` is read too, as above.)
        #[serde(alias = "routing_key")]
        routing_key: String,
    },
    /// Send an HTTP request.
    Http {
        /// Method.
        method: HttpMethod,
        /// Path template appended to the base URL.
        path: String,
    },
}

/// A resolved retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts including the first.
    pub max_attempts: u32,
    /// Growth.
    pub backoff: Backoff,
    /// First delay in milliseconds.
    pub initial_delay_ms: u64,
    /// Largest delay in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            initial_delay_ms: 1_000,
            max_delay_ms: 300_000,
        }
    }
}

impl RetryConfig {
    /// Delay before attempt `attempt` (2 = the first retry), capped at `max_delay_ms`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let n = attempt.saturating_sub(2);
        let raw = match self.backoff {
            Backoff::Exponential => self.initial_delay_ms.saturating_mul(1u64 << n.min(40)),
            Backoff::Linear => self.initial_delay_ms.saturating_mul(u64::from(n) + 1),
        };
        raw.min(self.max_delay_ms)
    }
}

/// Delivery policy of a flow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Keep failures in the DLQ.
    pub dead_letter: bool,
    /// Idempotency key and window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyConfig>,
    /// Ordering key and partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingConfig>,
    /// Retry delay tiers in milliseconds, shortest first (the operator declares one queue per tier).
    pub retry_tiers_ms: Vec<u64>,
}

/// Idempotency settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// jq key expression.
    pub key: String,
    /// Dedupe window in milliseconds.
    pub window_ms: u64,
}

/// Ordering settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderingConfig {
    /// jq key expression.
    pub key: String,
    /// Partition count.
    pub partitions: u32,
}

/// A resolved connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Kind of system.
    pub system: PartnerSystem,
    /// AMQP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpConnectionConfig>,
    /// HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnectionConfig>,
}

/// AMQP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmqpConnectionConfig {
    /// The URI.
    pub uri: SecretSource,
    /// PEM CA bundle trusted in addition to the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretSource>,
    /// Name the certificate is verified against (and sent as SNI) instead of the URI host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// HTTP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConnectionConfig {
    /// Base URL.
    pub base_url: String,
    /// Authentication scheme.
    pub auth: HttpAuthType,
    /// Credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
    /// OAuth2 token URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// API key header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Requests per second (token bucket), if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<u32>,
    /// Burst size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    /// PEM CA bundle trusted in addition to the built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretSource>,
    /// Name the certificate is verified against (and requests are addressed to) instead of the
    /// base URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Why a config cannot be used: the field at fault and what to do.
pub type WorkerConfigError = crate::error::FieldError;

impl WorkerConfig {
    /// Parses JSON and checks the structure ([`WorkerConfig::check`]).
    pub fn from_json(text: &str) -> Result<Self, WorkerConfigError> {
        let config: Self = serde_json::from_str(text).map_err(|e| WorkerConfigError {
            field: format!("line {} column {}", e.line(), e.column()),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot: the API version, and that every connection a flow names exists
    /// with the right kind.
    pub fn check(&self) -> Result<(), WorkerConfigError> {
        if self.api_version != WORKER_CONFIG_API_VERSION {
            return Err(WorkerConfigError {
                field: "apiVersion".into(),
                message: format!(
                    "is {:?}; this worker reads {WORKER_CONFIG_API_VERSION:?}",
                    self.api_version
                ),
            });
        }
        for (i, flow) in self.flows.iter().enumerate() {
            let amqp = |name: &str, field: String| -> Result<(), WorkerConfigError> {
                match self.connections.get(name) {
                    Some(c) if c.amqp.is_some() => Ok(()),
                    Some(_) => Err(WorkerConfigError {
                        field,
                        message: format!("connection {name:?} is not an AMQP connection"),
                    }),
                    None => Err(WorkerConfigError {
                        field,
                        message: format!("connection {name:?} is not in connections"),
                    }),
                }
            };
            amqp(&flow.broker, format!("flows[{i}].broker"))?;
            if let SourceConfig::Amqp { connection, .. } = &flow.source {
                amqp(connection, format!("flows[{i}].source.amqp.connection"))?;
            }
            if flow.routes.is_empty() {
                return Err(WorkerConfigError {
                    field: format!("flows[{i}].routes"),
                    message: "needs at least one route".into(),
                });
            }
            for (j, route) in flow.routes.iter().enumerate() {
                let field = format!("flows[{i}].routes[{j}].connection");
                let conn =
                    self.connections
                        .get(&route.connection)
                        .ok_or_else(|| WorkerConfigError {
                            field: field.clone(),
                            message: format!(
                                "connection {:?} is not in connections",
                                route.connection
                            ),
                        })?;
                let ok = match route.destination {
                    DestinationConfig::Amqp { .. } => conn.amqp.is_some(),
                    DestinationConfig::Http { .. } => conn.http.is_some(),
                };
                if !ok {
                    return Err(WorkerConfigError {
                        field,
                        message: format!(
                            "connection {:?} does not match the destination's kind (amqp/http)",
                            route.connection
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every secret the config references (deduplicated, in a stable order).
    pub fn secrets(&self) -> Vec<&SecretSource> {
        let mut out: Vec<&SecretSource> = Vec::new();
        for c in self.connections.values() {
            if let Some(a) = &c.amqp {
                out.push(&a.uri);
                out.extend(a.ca.iter());
            }
            if let Some(h) = &c.http {
                out.extend(h.secret.iter());
                out.extend(h.ca.iter());
            }
        }
        for f in &self.flows {
            if let SourceConfig::Http { secret, .. } = &f.source {
                out.push(secret);
            }
        }
        out.sort_by(|a, b| a.env.cmp(&b.env));
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> WorkerConfig {
        let uri = SecretSource {
            env: "MILLRACE_CONN_CORE_BUS_URI".into(),
            secret_name: "core-bus".into(),
            secret_key: "uri".into(),
        };
        WorkerConfig {
            api_version: WORKER_CONFIG_API_VERSION.into(),
            connections: BTreeMap::from([
                (
                    "core-bus".into(),
                    ConnectionConfig {
                        system: PartnerSystem::Mes,
                        amqp: Some(AmqpConnectionConfig {
                            uri,
                            ca: None,
                            server_name: None,
                        }),
                        http: None,
                    },
                ),
                (
                    "s4".into(),
                    ConnectionConfig {
                        system: PartnerSystem::Erp,
                        amqp: None,
                        http: Some(HttpConnectionConfig {
                            base_url: "https://erp.example.com/api".into(),
                            auth: HttpAuthType::Bearer,
                            secret: Some(SecretSource {
                                env: "MILLRACE_CONN_S4_TOKEN".into(),
                                secret_name: "s4".into(),
                                secret_key: "token".into(),
                            }),
                            token_url: None,
                            header: None,
                            timeout_ms: 10_000,
                            rate_limit_per_second: Some(50),
                            rate_limit_burst: None,
                            ca: None,
                            server_name: None,
                        }),
                    },
                ),
            ]),
            flows: vec![FlowConfig {
                namespace: "plant-berlin".into(),
                name: "production-to-erp".into(),
                version: "1.4.0".into(),
                broker: "core-bus".into(),
                source: SourceConfig::Amqp {
                    connection: "core-bus".into(),
                    exchange: "mes.events".into(),
                    routing_keys: vec!["production.completed.#".into()],
                },
                contract: ContractConfig {
                    name: "production-completed".into(),
                    version: 2,
                    event_type: "com.acme.mfg.production.completed.v1".into(),
                    schema: json!({"type": "object"}),
                },
                transform: Some(TransformConfig {
                    jq: Some("{order: .prodOrderId, plant: $plants[.site]}".into()),
                    lookups: BTreeMap::from([(
                        "plants".into(),
                        BTreeMap::from([("berlin".into(), "1000".into())]),
                    )]),
                    args: BTreeMap::from([("plant".into(), json!("1000"))]),
                    output_contract: None,
                }),
                routes: vec![RouteConfig {
                    name: "erp".into(),
                    when: Some(".plant == \"1000\"".into()),
                    connection: "s4".into(),
                    destination: DestinationConfig::Http {
                        method: HttpMethod::Post,
                        path: "/confirmations".into(),
                    },
                    retry: RetryConfig::default(),
                }],
                delivery: DeliveryConfig {
                    dead_letter: true,
                    idempotency: None,
                    ordering: None,
                    retry_tiers_ms: vec![1_000, 10_000, 60_000],
                },
                archive_retention_ms: 7 * 86_400_000,
                sla_max_latency_ms: Some(30_000),
                prefetch: 100,
            }],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let config = sample();
        let text = serde_json::to_string_pretty(&config).unwrap();
        let back = WorkerConfig::from_json(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_fields_and_versions_are_refused() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["flows"][0]["surprise"] = json!(1);
        let e = WorkerConfig::from_json(&value.to_string()).unwrap_err();
        assert!(e.message.contains("surprise"), "{e}");

        let mut config = sample();
        config.api_version = "v0".into();
        let e = config.check().unwrap_err();
        assert_eq!(e.field, "apiVersion");
    }

    #[test]
    fn dangling_connections_name_the_field() {
        let mut config = sample();
        config.flows[0].routes[0].connection = "nope".into();
        let e = config.check().unwrap_err();
        assert_eq!(e.field, "flows[0].routes[0].connection");
        let mut config = sample();
        config.flows[0].routes[0].connection = "core-bus".into();
        assert!(config.check().unwrap_err().message.contains("kind"));
    }

    #[test]
    fn holds_no_secret_values() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(text.contains("secretName"));
        assert_eq!(sample().secrets().len(), 2);
    }

    #[test]
    fn ca_bundles_are_secrets_of_both_kinds_of_connection() {
        let mut config = sample();
        let ca = |name: &str| SecretSource {
            env: format!("MILLRACE_SECRET_{name}__CA_CRT"),
            secret_name: name.into(),
            secret_key: "ca.crt".into(),
        };
        for (name, c) in config.connections.iter_mut() {
            if let Some(a) = c.amqp.as_mut() {
                a.ca = Some(ca(name));
            }
            if let Some(h) = c.http.as_mut() {
                h.ca = Some(ca(name));
            }
        }
        let names: Vec<&str> = config
            .secrets()
            .iter()
            .map(|s| s.secret_name.as_str())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(
            names.contains(&"s4") && names.contains(&"core-bus"),
            "{names:?}"
        );
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        let r = RetryConfig {
            max_attempts: 8,
            backoff: Backoff::Exponential,
            initial_delay_ms: 2_000,
            max_delay_ms: 10_000,
        };
        let d: Vec<u64> = (2..=6).map(|a| r.delay_ms(a)).collect();
        assert_eq!(d, vec![2_000, 4_000, 8_000, 10_000, 10_000]);
        let r = RetryConfig {
            backoff: Backoff::Linear,
            ..r
        };
        let d: Vec<u64> = (2..=5).map(|a| r.delay_ms(a)).collect();
        assert_eq!(d, vec![2_000, 4_000, 6_000, 8_000]);
    }
}
