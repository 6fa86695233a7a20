//! The bench flow: the full pipeline (contract validation, jq transform with a lookup table, output
//! contract, two routes with predicates, confirmed AMQP publishes). The worker runs it; the baseline
//! relay consumes from the topology of a twin of it (same plan, other names), so that both sides read
//! from the same kinds of exchanges and queues.

use std::collections::BTreeMap;

use millrace_crds::common::Backoff;
use millrace_crds::connection::PartnerSystem;
use millrace_crds::naming::FlowNames;
use millrace_crds::worker_config::{
    AmqpConnectionConfig, ConnectionConfig, ContractConfig, DeliveryConfig, DestinationConfig,
    FlowConfig, RetryConfig, RouteConfig, SecretSource, SourceConfig, TransformConfig,
    WORKER_CONFIG_API_VERSION, WorkerConfig,
};

use crate::event;

/// Namespace of the bench flows.
pub const FLOW_NAMESPACE: &str = "bench";
/// Environment variable that carries the broker URI to the worker.
pub const BROKER_URI_ENV: &str = "MILLRACE_BENCH_BUS_URI";
/// Routing key of the confirmations the routes publish.
pub const OUTPUT_ROUTING_KEY: &str = "production.confirmation";

/// Exchanges and queues of one side of the bench.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// The two destination exchanges, each bound to one quorum queue of the same name.
    pub exchanges: [String; 2],
}

impl Outputs {
    /// Destinations named after `side` (`baseline` or `pipeline`).
    pub fn new(side: &str) -> Self {
        Self {
            exchanges: [
                format!("bench.{side}.erp"),
                format!("bench.{side}.canonical"),
            ],
        }
    }

    /// Queue bound to each exchange.
    pub fn queues(&self) -> Vec<String> {
        self.exchanges.to_vec()
    }
}

/// Source exchange of the flow of `side` (a topic exchange, like a partner's).
pub fn source_exchange(side: &str) -> String {
    format!("bench.{side}.mes.events")
}

/// Names of the queues of the flow of `side`.
pub fn flow_names(side: &str) -> FlowNames {
    FlowNames::new(FLOW_NAMESPACE, side)
}

/// The worker config of the bench flow of `side`, publishing to `outputs`.
pub fn worker_config(side: &str, outputs: &Outputs, prefetch: u16) -> WorkerConfig {
    let retry = RetryConfig {
        max_attempts: 5,
        backoff: Backoff::Exponential,
        initial_delay_ms: 1_000,
        max_delay_ms: 60_000,
    };
    let route = |name: &str, when: Option<&str>, exchange: &str| RouteConfig {
        name: name.to_string(),
        when: when.map(str::to_string),
        connection: "bus".to_string(),
        destination: DestinationConfig::Amqp {
            exchange: exchange.to_string(),
            routing_key: OUTPUT_ROUTING_KEY.to_string(),
        },
        retry: retry.clone(),
    };
    WorkerConfig {
        api_version: WORKER_CONFIG_API_VERSION.to_string(),
        connections: BTreeMap::from([(
            "bus".to_string(),
            ConnectionConfig {
                system: PartnerSystem::Mes,
                amqp: Some(AmqpConnectionConfig {
                    uri: SecretSource {
                        env: BROKER_URI_ENV.to_string(),
                        secret_name: "bus".to_string(),
                        secret_key: "uri".to_string(),
                    },
                    ca: None,
                    server_name: None,
                }),
                http: None,
            },
        )]),
        flows: vec![FlowConfig {
            namespace: FLOW_NAMESPACE.to_string(),
            name: side.to_string(),
            version: "1.0.0".to_string(),
            broker: "bus".to_string(),
            source: SourceConfig::Amqp {
                connection: "bus".to_string(),
                exchange: source_exchange(side),
                routing_keys: vec!["production.completed.#".to_string()],
            },
            contract: ContractConfig {
                name: "production-completed".to_string(),
                version: 1,
                event_type: event::EVENT_TYPE.to_string(),
                schema: event::input_schema(),
            },
            transform: Some(TransformConfig {
                jq: Some(event::TRANSFORM.to_string()),
                lookups: BTreeMap::from([("plants".to_string(), event::plant_codes())]),
                args: BTreeMap::new(),
                output_contract: Some(ContractConfig {
                    name: "erp-production-confirmation".to_string(),
                    version: 1,
                    event_type: "com.acme.erp.production.confirmation.v1".to_string(),
                    schema: event::output_schema(),
                }),
            }),
            routes: vec![
                route("erp", Some(r#".plant == "1000""#), &outputs.exchanges[0]),
                route("canonical", None, &outputs.exchanges[1]),
            ],
            delivery: DeliveryConfig {
                dead_letter: true,
                idempotency: None,
                ordering: None,
                retry_tiers_ms: vec![1_000, 10_000, 60_000],
            },
            // No archive: it is a copy the broker makes at publish time, which neither client
            // touches; keeping it would add the same broker work to both sides and only blur the
            // comparison (docs/benchmarks.md, "Method").
            archive_retention_ms: 0,
            sla_max_latency_ms: Some(30_000),
            prefetch,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_config_passes_the_workers_checks() {
        let config = worker_config("pipeline", &Outputs::new("pipeline"), 200);
        let text = serde_json::to_string(&config).unwrap();
        WorkerConfig::from_json(&text).unwrap();
    }
}
