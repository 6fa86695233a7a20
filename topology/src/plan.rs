//! The pure description of a flow's topology.

use std::collections::BTreeMap;

use millrace_crds::naming::FlowNames;
use millrace_crds::worker_config::{FlowConfig, SourceConfig};

/// Routing key on the flow exchange that feeds the main queue and the archive (HTTP ingress,
/// redrives).
pub const ROUTING_KEY_INGEST: &str = "ingest";
/// Routing key on the flow exchange that returns expired retry messages to the main queue
/// (and not to the archive, which already holds the original).
pub const ROUTING_KEY_RETRY: &str = "retry";
/// Routing key on the flow exchange that reaches the dead-letter queue.
pub const ROUTING_KEY_DEAD_LETTER: &str = "dlq";
/// Header that carries the partition key of an ordered flow; the consistent-hash exchange
/// hashes its value.
pub const PARTITION_KEY_HEADER: &str = "x-millrace-partition-key";

/// Routing key on the flow exchange of the retry queue of delay `delay_ms`. Keyed by the delay,
/// not by the tier's index, so that a worker still running an older config never parks a
/// message in a queue of another delay: its key is either bound to the queue it means, or
/// unbound, and then the broker returns the message and the worker requeues it.
pub fn retry_routing_key(delay_ms: u64) -> String {
    format!("{ROUTING_KEY_RETRY}.{delay_ms}ms")
}

/// A queue or exchange argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgumentValue {
    /// A string (`x-queue-type`, `x-max-age`, ...).
    Str(String),
    /// An integer (`x-message-ttl`, ...).
    Int(i64),
    /// A boolean (`x-single-active-consumer`).
    Bool(bool),
}

/// Exchange types Millrace uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeType {
    /// Topic exchange (source exchanges of partners).
    Topic,
    /// Direct exchange (the flow's own exchange).
    Direct,
    /// `x-consistent-hash` from the `rabbitmq_consistent_hash_exchange` plugin.
    ConsistentHash,
}

impl ExchangeType {
    /// The AMQP type name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeType::Topic => "topic",
            ExchangeType::Direct => "direct",
            ExchangeType::ConsistentHash => "x-consistent-hash",
        }
    }
}

/// One exchange to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    pub kind: ExchangeType,
    /// Declaration arguments.
    pub arguments: BTreeMap<String, ArgumentValue>,
    /// `true` when the exchange belongs to a partner: it is created when missing but never
    /// deleted with the flow.
    pub shared: bool,
}

/// What a queue is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRole {
    /// The main quorum queue the source feeds.
    Main,
    /// Retry delay tier `n` (0-based).
    RetryTier(usize),
    /// The dead-letter queue.
    DeadLetter,
    /// The archive stream.
    Archive,
    /// Partition `i` of an ordered flow.
    Partition(u32),
}

/// One queue to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// What the queue is for.
    pub role: QueueRole,
    /// Declaration arguments (`x-queue-type` and the rest).
    pub arguments: BTreeMap<String, ArgumentValue>,
}

/// One queue binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSpec {
    /// Bound queue.
    pub queue: String,
    /// Exchange.
    pub exchange: String,
    /// Binding key (for `x-consistent-hash`, the weight).
    pub routing_key: String,
}

/// Everything one flow needs on its broker, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyPlan {
    /// Derived names.
    pub names: FlowNames,
    /// Exchanges, declared first.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues.
    pub queues: Vec<QueueSpec>,
    /// Bindings, declared last.
    pub bindings: Vec<BindingSpec>,
}

impl TopologyPlan {
    /// The queue with `role`, if the plan has one.
    pub fn queue(&self, role: QueueRole) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.role == role)
    }
}

fn args<const N: usize>(pairs: [(&str, ArgumentValue); N]) -> BTreeMap<String, ArgumentValue> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn str_arg(s: &str) -> ArgumentValue {
    ArgumentValue::Str(s.to_string())
}

/// How many times the broker delivers a message of a main or partition queue before it
/// dead-letters the message itself. The worker dead-letters a message redelivered
/// `--max-redeliveries` times (default 10) first, with the reason `delivery_limit_exceeded`;
/// this limit is the broker's backstop for a message that crashes the worker before it can.
pub const QUEUE_DELIVERY_LIMIT: i64 = 50;

/// Arguments that RabbitMQ checks on redeclare but that a queue may lack when it was declared
/// by an earlier release. A queue that lacks them keeps working (the worker enforces the
/// delivery limit itself), so a difference in these alone never blocks a migration, and
/// `millrace-broker` declares such a queue without them when the broker reports it
/// inequivalent.
pub const TOLERATED_ARGUMENTS: [&str; 3] =
    ["x-delivery-limit", "x-dead-letter-strategy", "x-overflow"];

/// The arguments that bound redeliveries of a consumed queue and make its dead-lettering
/// at-least-once (which RabbitMQ allows only with `reject-publish` overflow).
fn delivery_guard() -> [(String, ArgumentValue); 3] {
    [
        (
            "x-delivery-limit".into(),
            ArgumentValue::Int(QUEUE_DELIVERY_LIMIT),
        ),
        ("x-dead-letter-strategy".into(), str_arg("at-least-once")),
        ("x-overflow".into(), str_arg("reject-publish")),
    ]
}

/// `x-max-age` for a retention in milliseconds: whole seconds, rounded up, at least one.
fn max_age(retention_ms: u64) -> String {
    format!("{}s", retention_ms.div_ceil(1000).max(1))
}

/// Works out the topology of `flow`. Pure: no I/O, deterministic.
pub fn plan(flow: &FlowConfig) -> TopologyPlan {
    let names = FlowNames::new(&flow.namespace, &flow.name);
    let flow_exchange = names.exchange();
    let main = names.main_queue();
    let ordered = flow.delivery.ordering.as_ref();

    let mut exchanges = Vec::new();
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    let bind = |queue: &str, exchange: &str, key: &str| BindingSpec {
        queue: queue.to_string(),
        exchange: exchange.to_string(),
        routing_key: key.to_string(),
    };

    let source_keys: Vec<(String, String)> = match &flow.source {
        SourceConfig::Amqp {
            exchange,
            routing_keys,
            ..
        } => {
            exchanges.push(ExchangeSpec {
                name: exchange.clone(),
                kind: ExchangeType::Topic,
                arguments: BTreeMap::new(),
                shared: true,
            });
            routing_keys
                .iter()
                .map(|k| (exchange.clone(), k.clone()))
                .collect()
        }
        SourceConfig::Http { .. } => Vec::new(),
    };
    exchanges.push(ExchangeSpec {
        name: flow_exchange.clone(),
        kind: ExchangeType::Direct,
        arguments: BTreeMap::new(),
        shared: false,
    });

    let mut main_args = args([
        ("x-queue-type", str_arg("quorum")),
        ("x-dead-letter-exchange", str_arg(&flow_exchange)),
        (
            "x-dead-letter-routing-key",
            str_arg(ROUTING_KEY_DEAD_LETTER),
        ),
    ]);
    main_args.extend(delivery_guard());
    if ordered.is_some() {
        // One splitter at a time keeps the per-key order of the main queue.
        main_args.insert("x-single-active-consumer".into(), ArgumentValue::Bool(true));
    }
    queues.push(QueueSpec {
        name: main.clone(),
        role: QueueRole::Main,
        arguments: main_args,
    });
    for (exchange, key) in &source_keys {
        bindings.push(bind(&main, exchange, key));
    }
    bindings.push(bind(&main, &flow_exchange, ROUTING_KEY_INGEST));
    bindings.push(bind(&main, &flow_exchange, ROUTING_KEY_RETRY));

    for (tier, ttl) in flow.delivery.retry_tiers_ms.iter().enumerate() {
        let name = names.retry_queue(*ttl);
        queues.push(QueueSpec {
            name: name.clone(),
            role: QueueRole::RetryTier(tier),
            // A quorum queue, replicated like the main queue, that dead-letters expired
            // messages at least once: a retry waiting here is as safe as it was there.
            arguments: args([
                ("x-queue-type", str_arg("quorum")),
                (
                    "x-message-ttl",
                    ArgumentValue::Int(i64::try_from(*ttl).unwrap_or(i64::MAX)),
                ),
                ("x-dead-letter-exchange", str_arg(&flow_exchange)),
                ("x-dead-letter-routing-key", str_arg(ROUTING_KEY_RETRY)),
                ("x-dead-letter-strategy", str_arg("at-least-once")),
                ("x-overflow", str_arg("reject-publish")),
            ]),
        });
        bindings.push(bind(&name, &flow_exchange, &retry_routing_key(*ttl)));
    }

    let dlq = names.dead_letter_queue();
    queues.push(QueueSpec {
        name: dlq.clone(),
        role: QueueRole::DeadLetter,
        arguments: args([("x-queue-type", str_arg("quorum"))]),
    });
    bindings.push(bind(&dlq, &flow_exchange, ROUTING_KEY_DEAD_LETTER));

    // The archive stream exists only for flows that keep events for replay (`spec.replay`).
    if flow.archive_retention_ms > 0 {
        let archive = names.archive_stream();
        queues.push(QueueSpec {
            name: archive.clone(),
            role: QueueRole::Archive,
            arguments: args([
                ("x-queue-type", str_arg("stream")),
                ("x-max-age", str_arg(&max_age(flow.archive_retention_ms))),
            ]),
        });
        for (exchange, key) in &source_keys {
            bindings.push(bind(&archive, exchange, key));
        }
        bindings.push(bind(&archive, &flow_exchange, ROUTING_KEY_INGEST));
    }

    if let Some(ordering) = ordered {
        let partition_exchange = names.partition_exchange();
        exchanges.push(ExchangeSpec {
            name: partition_exchange.clone(),
            kind: ExchangeType::ConsistentHash,
            arguments: args([("hash-header", str_arg(PARTITION_KEY_HEADER))]),
            shared: false,
        });
        for i in 0..ordering.partitions.max(1) {
            let name = names.partition_queue(i);
            queues.push(QueueSpec {
                name: name.clone(),
                role: QueueRole::Partition(i),
                arguments: args([
                    ("x-queue-type", str_arg("quorum")),
                    ("x-single-active-consumer", ArgumentValue::Bool(true)),
                    ("x-dead-letter-exchange", str_arg(&flow_exchange)),
                    (
                        "x-dead-letter-routing-key",
                        str_arg(ROUTING_KEY_DEAD_LETTER),
                    ),
                ]),
            });
            if let Some(q) = queues.last_mut() {
                q.arguments.extend(delivery_guard());
            }
            // For x-consistent-hash the binding key is the partition's weight.
            bindings.push(bind(&name, &partition_exchange, "1"));
        }
    }

    TopologyPlan {
        names,
        exchanges,
        queues,
        bindings,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use millrace_crds::worker_config::{ContractConfig, DeliveryConfig, OrderingConfig};

    /// A flow of plant-berlin with two retry tiers, an archive and `ordering`.
    pub(crate) fn flow(ordering: Option<OrderingConfig>) -> FlowConfig {
        FlowConfig {
            namespace: "plant-berlin".into(),
            name: "production".into(),
            version: "1.0.0".into(),
            broker: "core".into(),
            source: SourceConfig::Amqp {
                connection: "core".into(),
                exchange: "mes.events".into(),
                routing_keys: vec!["production.#".into(), "scrap.#".into()],
            },
            contract: ContractConfig {
                name: "c".into(),
                version: 1,
                event_type: "t".into(),
                schema: serde_json::json!({"type": "object"}),
            },
            transform: None,
            routes: vec![],
            delivery: DeliveryConfig {
                dead_letter: true,
                idempotency: None,
                ordering,
                retry_tiers_ms: vec![1_000, 10_000],
            },
            archive_retention_ms: 7 * 86_400_000 + 1,
            sla_max_latency_ms: None,
            prefetch: 10,
        }
    }

    #[test]
    fn unordered_flow_has_main_tiers_dlq_and_archive() {
        let p = plan(&flow(None));
        let names: Vec<&str> = p.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "millrace.plant-berlin.production",
                "millrace.plant-berlin.production.delay.1000ms",
                "millrace.plant-berlin.production.delay.10000ms",
                "millrace.plant-berlin.production.dlq",
                "millrace.plant-berlin.production.archive",
            ]
        );
        let tier = p.queue(QueueRole::RetryTier(1)).unwrap();
        assert_eq!(tier.arguments["x-message-ttl"], ArgumentValue::Int(10_000));
        assert_eq!(
            tier.arguments["x-dead-letter-routing-key"],
            ArgumentValue::Str(ROUTING_KEY_RETRY.into())
        );
        let archive = p.queue(QueueRole::Archive).unwrap();
        assert_eq!(
            archive.arguments["x-max-age"],
            ArgumentValue::Str("604801s".into())
        );
        // The archive receives exactly what the source sends, not retries.
        let archive_keys: Vec<&str> = p
            .bindings
            .iter()
            .filter(|b| b.queue == archive.name)
            .map(|b| b.routing_key.as_str())
            .collect();
        assert_eq!(
            archive_keys,
            ["production.#", "scrap.#", ROUTING_KEY_INGEST]
        );
        assert!(
            p.exchanges
                .iter()
                .any(|e| e.name == "mes.events" && e.shared)
        );
        assert!(p.queue(QueueRole::Partition(0)).is_none());
    }

    #[test]
    fn ordered_flow_adds_partitions_behind_a_hash_exchange() {
        let p = plan(&flow(Some(OrderingConfig {
            key: ".order".into(),
            partitions: 4,
        })));
        let main = p.queue(QueueRole::Main).unwrap();
        assert_eq!(
            main.arguments["x-single-active-consumer"],
            ArgumentValue::Bool(true)
        );
        for i in 0..4 {
            let q = p.queue(QueueRole::Partition(i)).unwrap();
            assert_eq!(q.name, format!("millrace.plant-berlin.production.p{i}"));
            assert_eq!(
                q.arguments["x-single-active-consumer"],
                ArgumentValue::Bool(true)
            );
        }
        let hash = p
            .exchanges
            .iter()
            .find(|e| e.kind == ExchangeType::ConsistentHash)
            .unwrap();
        assert_eq!(
            hash.arguments["hash-header"],
            ArgumentValue::Str(PARTITION_KEY_HEADER.into())
        );
    }

    #[test]
    fn plans_are_deterministic() {
        assert_eq!(plan(&flow(None)), plan(&flow(None)));
    }
}
