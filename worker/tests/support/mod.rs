//! Shared helpers for the worker's pipeline tests: configs, a recording HTTP destination,
//! publishing and collecting messages on a test vhost.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use millrace_crds::common::Backoff;
use millrace_crds::connection::{HttpAuthType, PartnerSystem};
use millrace_crds::flow::HttpMethod;
use millrace_crds::worker_config::*;
use millrace_testkit::TestVhost;
use millrace_worker::{RunningWorker, SecretResolver, WorkerOptions};
use serde_json::{Value, json};

/// Env var name of the broker URI secret in test configs.
pub const BUS_URI: &str = "TEST_BUS_URI";
/// Source exchange of test flows.
pub const SOURCE_EXCHANGE: &str = "mes.events";
/// Exchange AMQP routes deliver to.
pub const SINK_EXCHANGE: &str = "canonical.events";
/// Contract event type.
pub const EVENT_TYPE: &str = "com.acme.mfg.production.completed.v1";
/// Output contract event type.
pub const OUTPUT_TYPE: &str = "com.acme.erp.production.confirmation.v1";

/// A flow with two AMQP routes (`canonical` always, `big` when qty > 10) and one HTTP route
/// (`erp` when plant is 1000) to `http_base`.
pub fn config(namespace: &str, flow: &str, http_base: &str) -> WorkerConfig {
    let retry = RetryConfig {
        max_attempts: 5,
        backoff: Backoff::Exponential,
        initial_delay_ms: 500,
        max_delay_ms: 4_000,
    };
    WorkerConfig {
        api_version: WORKER_CONFIG_API_VERSION.into(),
        connections: BTreeMap::from([
            (
                "bus".to_string(),
                ConnectionConfig {
                    system: PartnerSystem::Mes,
                    amqp: Some(AmqpConnectionConfig {
                        uri: SecretSource {
                            env: BUS_URI.into(),
                            secret_name: "bus".into(),
                            secret_key: "uri".into(),
                        },
                        ca: None,
                        server_name: None,
                    }),
                    http: None,
                },
            ),
            (
                "erp".to_string(),
                ConnectionConfig {
                    system: PartnerSystem::Erp,
                    amqp: None,
                    http: Some(HttpConnectionConfig {
                        base_url: http_base.into(),
                        auth: HttpAuthType::Bearer,
                        secret: Some(SecretSource {
                            env: "TEST_ERP_TOKEN".into(),
                            secret_name: "erp".into(),
                            secret_key: "token".into(),
                        }),
                        token_url: None,
                        header: None,
                        timeout_ms: 5_000,
                        rate_limit_per_second: Some(500),
                        rate_limit_burst: Some(100),
                        ca: None,
                        server_name: None,
                    }),
                },
            ),
        ]),
        flows: vec![FlowConfig {
            namespace: namespace.into(),
            name: flow.into(),
            version: "1.0.0".into(),
            broker: "bus".into(),
            source: SourceConfig::Amqp {
                connection: "bus".into(),
                exchange: SOURCE_EXCHANGE.into(),
                routing_keys: vec!["production.#".into()],
            },
            contract: ContractConfig {
                name: "production-completed".into(),
                version: 1,
                event_type: EVENT_TYPE.into(),
                schema: json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "required": ["orderId", "site", "qty"],
                    "properties": {
                        "orderId": {"type": "string"},
                        "site": {"type": "string"},
                        "qty": {"type": "number"}
                    }
                }),
            },
            transform: Some(TransformConfig {
                jq: Some(
                    "{order: .orderId, plant: $plants[.site], qty: (.qty * $factor), lot: ((.lot // \"0\") | tonumber)}"
                        .into(),
                ),
                lookups: BTreeMap::from([(
                    "plants".into(),
                    BTreeMap::from([
                        ("berlin".into(), "1000".into()),
                        ("lyon".into(), "2000".into()),
                    ]),
                )]),
                args: BTreeMap::from([("factor".into(), json!(1))]),
                output_contract: Some(ContractConfig {
                    name: "erp-confirmation".into(),
                    version: 1,
                    event_type: OUTPUT_TYPE.into(),
                    schema: json!({
                        "type": "object",
                        "required": ["order", "plant", "qty"],
                        "properties": {
                            "order": {"type": "string"},
                            "plant": {"type": "string"},
                            "qty": {"type": "number", "maximum": 100000}
                        }
                    }),
                }),
            }),
            routes: vec![
                RouteConfig {
                    name: "canonical".into(),
                    when: None,
                    connection: "bus".into(),
                    destination: DestinationConfig::Amqp {
                        exchange: SINK_EXCHANGE.into(),
                        routing_key: "canonical".into(),
                    },
                    retry: retry.clone(),
                },
                RouteConfig {
                    name: "big".into(),
                    when: Some(".qty > 10".into()),
                    connection: "bus".into(),
                    destination: DestinationConfig::Amqp {
                        exchange: SINK_EXCHANGE.into(),
                        routing_key: "big".into(),
                    },
                    retry: retry.clone(),
                },
                RouteConfig {
                    name: "erp".into(),
                    when: Some(".plant == \"1000\"".into()),
                    connection: "erp".into(),
                    destination: DestinationConfig::Http {
                        method: HttpMethod::Post,
                        path: "/confirmations/{order}".into(),
                    },
                    retry,
                },
            ],
            delivery: DeliveryConfig {
                dead_letter: true,
                idempotency: Some(IdempotencyConfig {
                    key: ".orderId".into(),
                    window_ms: 600_000,
                }),
                ordering: None,
                retry_tiers_ms: vec![500, 1_000, 2_000, 4_000],
            },
            archive_retention_ms: 3_600_000,
            sla_max_latency_ms: Some(30_000),
            prefetch: 50,
        }],
    }
}

/// Options of an in-process test worker on `vhost`: free loopback ports, the test configs'
/// secrets, defaults otherwise.
pub fn test_options(vhost: &TestVhost) -> WorkerOptions {
    WorkerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        secrets: SecretResolver {
            values: [
                (BUS_URI.to_string(), vhost.amqp_uri()),
                ("TEST_ERP_TOKEN".to_string(), "erp-token".to_string()),
                ("TEST_INGRESS_KEY".to_string(), "ingress-key".to_string()),
            ]
            .into(),
            kube: None,
        },
        ..WorkerOptions::default()
    }
}

/// Starts a worker on `vhost` with `config`, on free loopback ports, and waits until it
/// consumes.
pub async fn start_worker(vhost: &TestVhost, config: WorkerConfig) -> RunningWorker {
    start_worker_with(config, test_options(vhost)).await
}

/// Starts a worker with `config` and `options`, and waits until it consumes.
pub async fn start_worker_with(config: WorkerConfig, options: WorkerOptions) -> RunningWorker {
    let worker = millrace_worker::start(config, options)
        .await
        .expect("worker starts");
    wait_ready(worker.addr).await;
    worker
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one metric sample (exact series text, e.g. `millrace_events_received_total{flow="a/b"}`).
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A confirm channel on the vhost.
pub async fn confirm_channel(vhost: &TestVhost) -> Channel {
    let ch = vhost.connection().create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// Declares a queue bound to the sink exchange with `key` and returns its name.
pub async fn sink_queue(ch: &Channel, key: &str) -> String {
    bound_queue(ch, SINK_EXCHANGE, key, &format!("test.sink.{key}")).await
}

/// Declares the durable topic exchange `exchange` and the durable queue `queue` bound to it
/// with `key`; returns the queue's name.
pub async fn bound_queue(ch: &Channel, exchange: &str, key: &str, queue: &str) -> String {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue.to_string()
}

/// Properties of a well-formed source event with id `id`.
pub fn event_properties(id: &str) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("ce-id".into(), AMQPValue::LongString(id.into()));
    h.insert("ce-type".into(), AMQPValue::LongString(EVENT_TYPE.into()));
    h.insert(
        "ce-source".into(),
        AMQPValue::LongString("/mes/berlin".into()),
    );
    h.insert(
        "ce-time".into(),
        AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
    );
    h.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(h)
}

/// Publishes to the source exchange and waits for the confirm.
pub async fn publish(ch: &Channel, routing_key: &str, body: &[u8], props: BasicProperties) {
    publish_to(ch, SOURCE_EXCHANGE, routing_key, body, props).await;
}

/// Publishes to `exchange` (mandatory) and asserts that the broker took and routed it.
pub async fn publish_to(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, lapin::Confirmation::Ack(None)),
        "publish to {exchange:?} not routed: {confirm:?}"
    );
}

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// Body.
    pub body: Vec<u8>,
    /// Properties.
    pub properties: BasicProperties,
}

/// The message ids of `received`, in order.
pub fn message_ids(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter_map(|d| d.properties.message_id().as_ref().map(|s| s.to_string()))
        .collect()
}

/// Waits for exactly one message in the DLQ of the flow whose main queue is `main`, and checks
/// its reason and that its last error names `setting`.
pub async fn the_dead_letter(ch: &Channel, main: &str, reason: &str, setting: &str) -> Received {
    let mut dlq = collect(
        ch,
        &format!("{main}.dlq"),
        1,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(dlq.len(), 1, "one message is dead-lettered");
    let d = dlq.remove(0);
    assert_eq!(d.header("x-millrace-reason").as_deref(), Some(reason));
    let error = d.header("x-millrace-last-error").unwrap_or_default();
    assert!(
        error.contains(setting),
        "the error names {setting}: {error}"
    );
    d
}

impl Received {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        millrace_worker::headers::get_str(self.properties.headers().as_ref(), name)
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Consumes `queue` until `n` messages arrived or `timeout` passed, then keeps listening
/// `settle` longer to catch extras. Returns what arrived.
pub async fn collect(
    ch: &Channel,
    queue: &str,
    n: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Received> {
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            format!("test-{queue}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_deadline: Option<Instant> = None;
    loop {
        let until = settle_deadline.unwrap_or(deadline);
        let now = Instant::now();
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                out.push(Received {
                    body: d.data.clone(),
                    properties: d.properties.clone(),
                });
                if out.len() >= n && settle_deadline.is_none() {
                    settle_deadline = Some(Instant::now() + settle);
                }
            }
            Ok(_) => break,
            Err(_) => break,
        }
    }
    let _ = ch
        .basic_cancel(format!("test-{queue}").as_str().into(), Default::default())
        .await;
    out
}

/// One request the destination received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// Path.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// What the server answered.
    pub status: u16,
}

/// A recording HTTP destination whose answer is chosen per request.
#[derive(Clone)]
pub struct Destination {
    /// Requests so far.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Base URL.
    pub base: String,
}

/// Starts a destination on 127.0.0.1:0; `answer` maps the server's start time to a status.
pub async fn destination(answer: impl Fn(Instant) -> u16 + Send + Sync + 'static) -> Destination {
    let started = Instant::now();
    destination_per_request(move |_, _| answer(started)).await
}

impl Destination {
    /// Requests so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// The source event for order `order` at `site` with `qty`.
pub fn event(order: &str, site: &str, qty: f64) -> Vec<u8> {
    serde_json::to_vec(&json!({"orderId": order, "site": site, "qty": qty})).unwrap()
}

/// Messages ready in a queue (passive declare on a fresh channel).
pub async fn queue_depth(vhost: &TestVhost, queue: &str) -> Option<u32> {
    let ch = vhost.connection().create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    let _ = ch.close(200, "bye".into()).await;
    Some(q.message_count())
}

/// Starts a destination on 127.0.0.1:0 whose answer depends on the request: `answer` gets its
/// path and body (and may keep state of its own, such as how often it saw an event).
pub async fn destination_per_request(
    answer: impl Fn(&str, &[u8]) -> u16 + Send + Sync + 'static,
) -> Destination {
    type PerRequest = Arc<dyn Fn(&str, &[u8]) -> u16 + Send + Sync>;
    #[derive(Clone)]
    struct PerRequestState {
        requests: Arc<Mutex<Vec<Recorded>>>,
        answer: PerRequest,
    }
    async fn handle(
        State(s): State<PerRequestState>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        // Answered and recorded under one lock, so the record's order is the order of the answers.
        let mut requests = s.requests.lock().unwrap();
        let status = (s.answer)(uri.path(), &body);
        requests.push(Recorded {
            at: Instant::now(),
            path: uri.path().to_string(),
            headers,
            body,
            status,
        });
        StatusCode::from_u16(status).unwrap()
    }
    let requests = Arc::new(Mutex::new(Vec::new()));
    let state = PerRequestState {
        requests: requests.clone(),
        answer: Arc::new(answer),
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Destination {
        requests,
        base: format!("http://{addr}/api"),
    }
}
