//! Harness of the reliability tests: the built `millrace-worker` binary run as child processes against
//! a flow on a fresh vhost of the local RabbitMQ, a confirmed publisher, and collectors that record
//! every message reaching the destinations and the dead-letter queue, by message id.
//!
//! Every wait is bounded in time; on failure the tests print what they saw and the end of each
//! worker's log.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use millrace_crds::common::Backoff;
use millrace_crds::connection::PartnerSystem;
use millrace_crds::naming::FlowNames;
use millrace_crds::worker_config::{
    AmqpConnectionConfig, ConnectionConfig, ContractConfig, DeliveryConfig, DestinationConfig,
    FlowConfig, OrderingConfig, RetryConfig, RouteConfig, SecretSource, SourceConfig,
    TransformConfig, WORKER_CONFIG_API_VERSION, WorkerConfig,
};
use millrace_testkit::TestVhost;
use serde_json::{Value, json};

/// The worker binary Cargo built for these tests.
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_millrace-worker");

/// Environment variable that carries the broker URI to the worker.
const BROKER_URI_ENV: &str = "MILLRACE_TEST_BUS_URI";
/// Source exchange of the test flows (a partner's topic exchange).
pub const SOURCE_EXCHANGE: &str = "mes.events";
/// Routing key of the test events.
pub const SOURCE_ROUTING_KEY: &str = "production.completed.berlin";
/// CloudEvents type of the test events.
pub const EVENT_TYPE: &str = "com.acme.mfg.production.completed.v1";

/// What a test flow looks like.
pub struct FlowSpec {
    /// Flow name (namespace is `reliability`).
    pub name: &'static str,
    /// Route names; each publishes to an exchange of the same name, bound to a queue of that name.
    pub routes: &'static [&'static str],
    /// `ordering.key` = `.key` with this many partitions.
    pub partitions: Option<u32>,
    /// Worker prefetch.
    pub prefetch: u16,
}

/// A test flow on a fresh vhost: the topology outside the flow (source exchange, destinations), the
/// worker config, and a directory for configs and logs.
pub struct Fixture {
    pub vhost: TestVhost,
    pub spec: FlowSpec,
    pub names: FlowNames,
    pub config_path: PathBuf,
    pub dir: PathBuf,
}

impl Fixture {
    /// Creates the vhost, the source exchange and the destination queues, and writes the config.
    pub async fn create(spec: FlowSpec) -> Self {
        assert!(
            Path::new(WORKER_BIN).is_file(),
            "the worker binary {WORKER_BIN} is missing; build it with `cargo build -p millrace-worker`"
        );
        let vhost = TestVhost::create(&format!("reliability-{}", spec.name)).await;
        let dir = std::env::temp_dir().join(format!("millrace-{}", vhost.name()));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let channel = vhost.connection().create_channel().await.expect("channel");
        declare_exchange(&channel, SOURCE_EXCHANGE, ExchangeKind::Topic).await;
        for route in spec.routes {
            declare_exchange(&channel, route, ExchangeKind::Direct).await;
            declare_quorum_queue(&channel, route).await;
            channel
                .queue_bind(
                    (*route).into(),
                    (*route).into(),
                    "confirmation".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("binding a destination queue");
        }
        let names = FlowNames::new("reliability", spec.name);
        let config_path = dir.join("worker-config.json");
        let config = worker_config(&spec);
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("config serializes"),
        )
        .expect("writing the worker config");
        Self {
            vhost,
            spec,
            names,
            config_path,
            dir,
        }
    }

    /// Starts a worker on this flow; `label` names its log file.
    pub fn start_worker(&self, label: &str) -> WorkerProcess {
        WorkerProcess::start(self, label)
    }

    /// Declares the flow's own topology (main queue, tiers, DLQ) with the module the worker uses,
    /// so that events can be queued before any worker runs.
    pub async fn declare_flow_topology(&self) {
        let config = worker_config(&self.spec);
        let plan = millrace_topology::plan(&config.flows[0]);
        let channel = self
            .vhost
            .connection()
            .create_channel()
            .await
            .expect("channel");
        millrace_broker::declare(&channel, &plan)
            .await
            .expect("declaring the flow's topology");
        let _ = channel.close(200, "declared".into()).await;
    }

    /// Queues the collectors watch: every destination, then the dead-letter queue.
    pub fn watched_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.spec.routes.iter().map(|r| r.to_string()).collect();
        queues.push(self.names.dead_letter_queue());
        queues
    }
}

fn worker_config(spec: &FlowSpec) -> WorkerConfig {
    let retry = RetryConfig {
        max_attempts: 5,
        backoff: Backoff::Exponential,
        initial_delay_ms: 500,
        max_delay_ms: 5_000,
    };
    let routes = spec
        .routes
        .iter()
        .map(|route| RouteConfig {
            name: route.to_string(),
            when: None,
            connection: "bus".into(),
            destination: DestinationConfig::Amqp {
                exchange: route.to_string(),
                routing_key: "confirmation".into(),
            },
            retry: retry.clone(),
        })
        .collect();
    WorkerConfig {
        api_version: WORKER_CONFIG_API_VERSION.into(),
        connections: BTreeMap::from([(
            "bus".into(),
            ConnectionConfig {
                system: PartnerSystem::Mes,
                amqp: Some(AmqpConnectionConfig {
                    uri: SecretSource {
                        env: BROKER_URI_ENV.into(),
                        secret_name: "bus".into(),
                        secret_key: "uri".into(),
                    },
                    ca: None,
                    server_name: None,
                }),
                http: None,
            },
        )]),
        flows: vec![FlowConfig {
            namespace: "reliability".into(),
            name: spec.name.into(),
            version: "1.0.0".into(),
            broker: "bus".into(),
            source: SourceConfig::Amqp {
                connection: "bus".into(),
                exchange: SOURCE_EXCHANGE.into(),
                routing_keys: vec!["production.completed.#".into()],
            },
            contract: ContractConfig {
                name: "production-completed".into(),
                version: 1,
                event_type: EVENT_TYPE.into(),
                schema: json!({
                    "type": "object",
                    "required": ["id", "key", "seq"],
                    "properties": {
                        "id": {"type": "string"},
                        "key": {"type": "string"},
                        "seq": {"type": "integer", "minimum": 0}
                    }
                }),
            },
            transform: Some(TransformConfig {
                jq: Some("{id: .id, key: .key, seq: .seq, plant: $plants[.site]}".into()),
                lookups: BTreeMap::from([(
                    "plants".into(),
                    BTreeMap::from([("berlin".into(), "1000".into())]),
                )]),
                args: BTreeMap::new(),
                output_contract: None,
            }),
            routes,
            delivery: DeliveryConfig {
                dead_letter: true,
                idempotency: None,
                ordering: spec.partitions.map(|partitions| OrderingConfig {
                    key: ".key".into(),
                    partitions,
                }),
                retry_tiers_ms: vec![500, 2_000, 5_000],
            },
            archive_retention_ms: 3_600_000,
            sla_max_latency_ms: None,
            prefetch: spec.prefetch,
        }],
    }
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"));
}

async fn declare_quorum_queue(channel: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap_or_else(|e| panic!("declaring queue {name}: {e}"));
}

/// One test event.
#[derive(Clone, Debug)]
pub struct TestEvent {
    /// Its id (`ce-id`, and `id` in the body).
    pub id: String,
    /// Ordering key.
    pub key: String,
    /// Sequence number within the key.
    pub seq: u64,
    /// A poison event breaks the contract (its `seq` is a string) and must be dead-lettered.
    pub poison: bool,
}

impl TestEvent {
    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let seq = if self.poison {
            json!(format!("not-a-number-{}", self.seq))
        } else {
            json!(self.seq)
        };
        serde_json::to_vec(&json!({
            "id": self.id,
            "key": self.key,
            "seq": seq,
            "site": "berlin",
        }))
        .expect("JSON serializes")
    }

    /// Persistent, JSON, with CloudEvents headers.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in [
            ("ce-id", self.id.as_str()),
            ("ce-source", "mes/berlin"),
            ("ce-type", EVENT_TYPE),
            ("ce-time", "2026-11-26T08:00:00Z"),
        ] {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers)
    }
}

/// Publishes `events` to the source exchange with confirms (a bounded window of 500), panicking on
/// any nack or return.
pub async fn publish(connection: &Connection, events: &[TestEvent]) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let mut pending = std::collections::VecDeque::new();
    for event in events {
        let confirm = channel
            .basic_publish(
                SOURCE_EXCHANGE.into(),
                SOURCE_ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &event.body(),
                event.properties(),
            )
            .await
            .unwrap_or_else(|e| panic!("publishing {}: {e}", event.id));
        pending.push_back((event.id.clone(), confirm));
        if pending.len() >= 500 {
            let (id, confirm) = pending.pop_front().expect("non-empty");
            expect_ack(&id, confirm.await);
        }
    }
    for (id, confirm) in pending {
        expect_ack(&id, confirm.await);
    }
    let _ = channel.close(200, "published".into()).await;
}

fn expect_ack(id: &str, confirmation: lapin::Result<Confirmation>) {
    match confirmation {
        Ok(Confirmation::Ack(None)) => {}
        other => panic!("the broker did not confirm {id}: {other:?}"),
    }
}

/// Opens a connection of the test's own to `uri`, bounded the way the worker's are.
pub use millrace_worker::sink::amqp::connect;

/// One message as a collector saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Event id from the body (or `ce-id` when the body is not the transformed event).
    pub id: String,
    /// AMQP `message_id`.
    pub message_id: Option<String>,
    /// `key` and `seq` from the body, when present.
    pub key: Option<String>,
    pub seq: Option<u64>,
    /// Dead-letter reason header.
    pub reason: Option<String>,
    /// The broker delivered this message to the collector before (its ack was lost, for example
    /// when the broker stopped): the same message seen again, not a new copy.
    pub redelivered: bool,
}

/// Messages per queue, shared between the collectors and the test.
pub type Observed = Arc<Mutex<BTreeMap<String, Vec<Seen>>>>;

/// Records every message of `queues` until dropped. Each collector acks after recording and
/// reconnects when the broker goes away, so a message is never lost from view (it may be seen twice).
pub struct Collectors {
    pub observed: Observed,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Collectors {
    pub fn start(uri: &str, queues: &[String]) -> Self {
        let observed: Observed = Arc::new(Mutex::new(
            queues.iter().map(|q| (q.clone(), Vec::new())).collect(),
        ));
        let tasks = queues
            .iter()
            .map(|queue| tokio::spawn(collect(uri.to_string(), queue.clone(), observed.clone())))
            .collect();
        Self { observed, tasks }
    }

    /// Distinct ids seen on `queue`.
    pub fn distinct(&self, queue: &str) -> usize {
        let observed = self.observed.lock().expect("lock");
        let mut ids: Vec<&str> = observed
            .get(queue)
            .map(|v| v.iter().map(|s| s.id.as_str()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// A copy of what was seen.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<Seen>> {
        self.observed.lock().expect("lock").clone()
    }

    /// Waits (at most `timeout`) until `queues` hold no ready message and the collectors' counts
    /// have stopped moving, so a snapshot taken next holds everything published so far. Returns
    /// false on timeout. Only meaningful while nothing publishes to `queues`.
    pub async fn settle(&self, uri: &str, queues: &[&str], timeout: Duration) -> bool {
        let connection = connect(uri, "collector settle")
            .await
            .expect("settle connection");
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        let channel = connection.create_channel().await.expect("settle channel");
        while Instant::now() < deadline {
            let mut ready = 0;
            for queue in queues {
                let declared = channel
                    .queue_declare(
                        (*queue).into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("inspecting queue {queue}: {e}"));
                ready += declared.message_count();
            }
            let counts: Vec<usize> = {
                let observed = self.observed.lock().expect("lock");
                queues
                    .iter()
                    .map(|q| observed.get(*q).map_or(0, Vec::len))
                    .collect()
            };
            if ready == 0 && counts == last {
                let _ = connection.close(200, "done".into()).await;
                return true;
            }
            last = counts;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let _ = connection.close(200, "done".into()).await;
        false
    }

    /// One line per queue: messages and distinct ids.
    pub fn describe(&self) -> String {
        let observed = self.observed.lock().expect("lock");
        observed
            .iter()
            .map(|(queue, seen)| {
                let mut ids: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                format!(
                    "{queue}: {} messages, {} distinct ids",
                    seen.len(),
                    ids.len()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for Collectors {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn collect(uri: String, queue: String, observed: Observed) {
    let mut failures = 0u64;
    loop {
        if let Err(e) = collect_once(&uri, &queue, &observed).await {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(20) {
                eprintln!("collector of {queue}: {e}; reconnecting (attempt {failures})");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn collect_once(uri: &str, queue: &str, observed: &Observed) -> lapin::Result<()> {
    let connection = connect(uri, &format!("collector {queue}")).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(500, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "reliability-collector".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let seen = describe_message(&delivery);
        observed
            .lock()
            .expect("lock")
            .entry(queue.to_string())
            .or_default()
            .push(seen);
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn describe_message(delivery: &Delivery) -> Seen {
    let (body, properties) = (&delivery.data, &delivery.properties);
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| header(properties, "ce-id"))
        .or_else(|| properties.message_id().as_ref().map(|m| m.to_string()))
        .unwrap_or_else(|| "<no id>".to_string());
    Seen {
        id,
        message_id: properties.message_id().as_ref().map(|m| m.to_string()),
        key: value.get("key").and_then(Value::as_str).map(str::to_string),
        seq: value.get("seq").and_then(Value::as_u64),
        reason: header(properties, "x-millrace-reason"),
        redelivered: delivery.redelivered,
    }
}

/// A running `millrace-worker` whose output goes to a log file.
pub struct WorkerProcess {
    label: String,
    child: Child,
    log: PathBuf,
    /// Address of its /healthz, /readyz and /metrics.
    pub http: SocketAddr,
}

impl WorkerProcess {
    fn start(fixture: &Fixture, label: &str) -> Self {
        let http = free_loopback_address();
        let log = fixture.dir.join(format!("{label}.log"));
        let out = std::fs::File::create(&log).expect("creating the worker log");
        let err = out.try_clone().expect("cloning the log handle");
        let child = Command::new(WORKER_BIN)
            .arg("--config")
            .arg(&fixture.config_path)
            .arg("--listen")
            .arg(http.to_string())
            .env(BROKER_URI_ENV, fixture.vhost.amqp_uri())
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {WORKER_BIN}: {e}"));
        Self {
            label: label.to_string(),
            child,
            log,
            http,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics, with the log, when the worker has exited.
    pub fn assert_running(&mut self, context: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{context}: worker {} exited ({status}); its log:\n{}",
                self.label,
                self.log_tail(40)
            );
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.last_log_lines(lines, |_| true)
    }

    /// Every warning and error the worker logged (at most `lines`, the latest).
    pub fn log_warnings(&self, lines: usize) -> String {
        self.last_log_lines(lines, |l| l.contains("WARN") || l.contains("ERROR"))
    }

    fn last_log_lines(&self, lines: usize, keep: impl Fn(&str) -> bool) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let kept: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits (at most `timeout`) until /readyz answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let url = format!("http://{}/readyz", self.http);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running("waiting for readiness");
            if let Ok(response) = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} not ready after {timeout:?}; its log:\n{}",
                self.label,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The sum of every series of counter `name` on /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://{}/metrics", self.http);
        let Ok(response) = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        sum_metric(&text, name)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Sums the samples of metric `name` (any labels) in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

fn free_loopback_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("local address")
}

/// Polls `done` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// Groups what a queue saw by id.
pub fn by_id(seen: &[Seen]) -> HashMap<&str, Vec<&Seen>> {
    let mut map: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in seen {
        map.entry(s.id.as_str()).or_default().push(s);
    }
    map
}
