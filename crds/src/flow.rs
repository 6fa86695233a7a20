//! IntegrationFlow: a governed path from one source to one or more destinations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, LocalObjectRef, RetryPolicy, SecretKeyRef, SemVer};

/// An IntegrationFlow consumes business events from one source, validates them against a
/// contract, transforms them with jq, and delivers them to every route whose predicate holds,
/// at least once. The operator declares its RabbitMQ topology and runs its workers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "millrace.dev",
    version = "v1alpha1",
    kind = "IntegrationFlow",
    namespaced,
    status = "IntegrationFlowStatus",
    shortname = "flow",
    shortname = "iflow",
    category = "millrace",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Release",
        type_ = "string",
        json_path = ".status.release.ref",
        description = "Released version and digest in force"
    ),
    printcolumn(
        name = "Contract",
        type_ = "string",
        json_path = ".status.contract.ref",
        description = "Contract and version in use"
    ),
    printcolumn(
        name = "Backlog",
        type_ = "integer",
        json_path = ".status.queue.backlog",
        description = "Messages waiting in the main queue"
    ),
    printcolumn(
        name = "DLQ",
        type_ = "integer",
        json_path = ".status.queue.deadLetters",
        description = "Messages in the dead-letter queue"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.source.amqp) || has(self.broker)").message("spec.broker is required when the source is http: name the AMQP connection that holds the flow's queues"),
    validation = Rule::new("!has(self.source.amqp) || self.routes.all(r, !has(r.destination.amqp) || r.destination.connection != self.source.amqp.connection || r.destination.amqp.exchange != self.source.amqp.exchange || !(r.destination.amqp.routingKey in self.source.amqp.routingKeys))").message("a route publishes to the source exchange with a routing key the source binds: the flow would consume its own output; use another exchange or routing key")
)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationFlowSpec {
    /// Version of this flow, chosen by people (semver, for example `1.4.0`). Shown in status and
    /// history, and used by promotion.
    pub version: SemVer,
    /// Where events come from: exactly one of `amqp` or `http`.
    pub source: FlowSource,
    /// The AMQP connection whose broker holds this flow's queues (main, retry tiers, DLQ,
    /// archive). Defaults to the source connection; required for an HTTP source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerRef>,
    /// The contract inbound events must satisfy.
    pub contract: ContractRef,
    /// Optional jq transform applied after validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// Where transformed events go. Each route is delivered and retried on its own.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub routes: Vec<Route>,
    /// Retries, dead-lettering, idempotency and ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<FlowDelivery>,
    /// Keep every inbound event in an archive stream for replay, for `retention`. Omitted means
    /// the flow has no archive stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,
    /// Service level: the longest acceptable time from an event's time to its confirmed delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaSpec>,
    /// Worker pods that run this flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersSpec>,
    /// What deletion does to the queues: Retain (default) keeps queues that hold data; Delete removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stops the workers (replicas 0) while keeping the topology and queued messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Where a flow's events come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.amqp) != has(self.http)").message("set exactly one of spec.source.amqp or spec.source.http"))]
pub struct FlowSource {
    /// Consume from an exchange on a partner's broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpSource>,
    /// Accept events over HTTP at `POST /ingest/<flow>`; answered 202 only once durably queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
}

/// An AMQP source: the flow's queue is bound to `exchange` with `routingKeys`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpSource {
    /// Name of an AMQP PartnerConnection in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub connection: String,
    /// Exchange the partner publishes to (a topic exchange, declared if missing).
    #[schemars(length(min = 1, max = 255))]
    pub exchange: String,
    /// Binding keys, for example `production.completed.#`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 255)))]
    pub routing_keys: Vec<String>,
}

/// An HTTP ingress source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// Ingress path, for example `/ingest/tms`.
    #[schemars(length(max = 256), regex(pattern = r"^/[A-Za-z0-9._~/-]*$"))]
    pub path: String,
    /// How senders authenticate. Required: ingress is never open.
    pub auth: IngressAuth,
}

/// Authentication of inbound HTTP requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressAuth {
    /// HmacSha256 (header `X-Millrace-Signature: sha256=<hex>` over the body) or Bearer.
    #[serde(rename = "type")]
    pub type_: IngressAuthType,
    /// Secret key holding the HMAC key or the bearer token.
    pub secret_ref: SecretKeyRef,
}

/// Inbound HTTP authentication schemes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IngressAuthType {
    /// HMAC-SHA256 signature of the body.
    HmacSha256,
    /// A shared bearer token.
    Bearer,
}

/// The AMQP connection that holds a flow's queues.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerRef {
    /// Name of an AMQP PartnerConnection in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub connection: String,
}

/// Reference to an EventContract version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractRef {
    /// Name of the EventContract in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Version to pin. Omitted means the latest accepted version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub version: Option<u32>,
}

/// A jq transform.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct Transform {
    /// jq program run on the event's data; its single output is what routes receive.
    /// Lookups and args are available as `$name` variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub jq: Option<String>,
    /// Master-data maps (ConfigMaps), exposed to jq as `$<name>` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub lookups: Vec<Lookup>,
    /// Plain string values exposed to jq as `$<name>` variables (use `tonumber` for numbers).
    /// Templates fill these; text is never spliced into jq.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "args_schema")]
    pub args: BTreeMap<String, String>,
    /// Contract the transformed event must satisfy before delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<ContractRef>,
}

fn args_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 4096 },
        "x-kubernetes-validations": [{
            "rule": "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",
            "message": "transform.args names must be jq identifiers (letters, digits, underscore; not starting with a digit)"
        }]
    })
}

/// A lookup table from a ConfigMap's data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lookup {
    /// Variable name in jq (`$<name>`): letters, digits and underscore.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// ConfigMap whose `data` becomes the lookup object.
    pub config_map_ref: LocalObjectRef,
}

/// One destination of a flow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Route name, unique in the flow (lower-case letters, digits and dashes).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// jq predicate on the transformed event; the route receives it when true. Omitted means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub when: Option<String>,
    /// Where to deliver.
    pub destination: Destination,
}

/// A delivery target: a connection plus either an AMQP publish or an HTTP request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.amqp) != has(self.http)").message("set exactly one of destination.amqp or destination.http"))]
pub struct Destination {
    /// Name of a PartnerConnection in this namespace; its kind (AMQP/HTTP) must match.
    #[schemars(length(min = 1, max = 253))]
    pub connection: String,
    /// Publish to an exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpDestination>,
    /// Send an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDestination>,
}

/// Publish to an AMQP exchange, persistent and mandatory, with publisher confirms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpDestination {
    /// Exchange to publish to. It must exist (it is the partner's).
    #[schemars(length(min = 1, max = 255))]
    pub exchange: String,
    /// Routing key.
    #[serde(default)]
    #[schemars(length(max = 255), transform = no_server_default)]
    pub routing_key: String,
}

/// Keeps a default out of the CRD schema: inside `routes[]` the apiserver would write it into
/// the stored object, and GitOps tools would show the flow as out of sync with its file. The
/// default applies when the worker config is rendered instead.
fn no_server_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Send an HTTP request with the event as JSON body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpDestination {
    /// POST (default), PUT or PATCH.
    #[serde(default)]
    #[schemars(transform = no_server_default)]
    pub method: HttpMethod,
    /// Path appended to the connection's baseUrl. `{field}` placeholders are filled from the
    /// transformed event's top-level fields, URL-encoded.
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path: String,
}

/// HTTP methods a destination may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum HttpMethod {
    /// POST.
    #[default]
    #[serde(rename = "POST")]
    Post,
    /// PUT.
    #[serde(rename = "PUT")]
    Put,
    /// PATCH.
    #[serde(rename = "PATCH")]
    Patch,
}

/// Delivery guarantees of a flow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowDelivery {
    /// Retry policy; overrides the destination connection's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Dead-lettering of permanent failures and exhausted retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Deterministic delivery keys and an in-process dedupe window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencySpec>,
    /// Per-key ordering through partition queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
}

/// Dead-letter settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Keep failed messages in the flow's DLQ (default true). When false they are dropped
    /// after being counted and logged: only for events that may be lost.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Idempotency settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencySpec {
    /// jq expression on the inbound event giving its key, for example `.prodOrderId + ":" + .segment`.
    #[schemars(length(min = 1, max = 4096))]
    pub key: String,
    /// How long a delivered key is remembered to drop repeats, for example `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Ordering settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderingSpec {
    /// jq expression on the inbound event giving the ordering key, for example `.prodOrderId`.
    #[schemars(length(min = 1, max = 4096))]
    pub key: String,
    /// Number of partition queues (1-64), each with a single active consumer.
    #[schemars(range(min = 1, max = 64))]
    pub partitions: u32,
}

/// Replay settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySpec {
    /// How long the archive stream keeps events, for example `7d`.
    pub retention: Duration,
}

/// Service level settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlaSpec {
    /// Longest acceptable time from the event's `time` to its confirmed delivery, for example `30s`.
    pub max_latency: Duration,
}

/// Worker pod settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// Number of worker pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Unacknowledged messages each worker may hold (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub prefetch: Option<u16>,
    /// CPU and memory for each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What deleting a flow does to its queues.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the queues, and the messages in them.
    #[default]
    Retain,
    /// Remove the flow's queues, tiers, DLQ and archive.
    Delete,
}

/// Observed state of an IntegrationFlow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationFlowStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` digest of the rendered worker config now applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `spec.version` of the applied revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Accepted, ContractsResolved, ConnectionsReady, TopologyReady, WorkersAvailable, Healthy and
    /// Ready; ReleaseVerified on a promoted flow (it does not take part in Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The contract version in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ResolvedContract>,
    /// Worker replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaCounts>,
    /// Queue figures, sampled on their own timer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueFigures>,
    /// The release in force: its version and digest, the promotion that brought it, and when
    /// it was rolled out. Set on every flow, promoted or authored in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseStatus>,
    /// The last 10 revisions, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// Queues of an earlier topology that the flow no longer has (fewer partitions, a changed
    /// retry delay): nothing new reaches them, and each is deleted once it is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_queues: Vec<RetiringQueue>,
}

/// A queue being emptied before it is deleted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringQueue {
    /// The queue's name on the broker.
    pub name: String,
    /// How it is emptied: `MoveToPartitions` (its messages are moved to the remaining
    /// partitions), `WaitUntilEmpty` (retries return to the main queue when due) or `Discard`
    /// (archive copies).
    pub drain: String,
    /// Messages it held when last looked at.
    #[serde(default)]
    pub messages: u64,
    /// When it was retired.
    pub since: Time,
}

/// The release a flow runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// `spec.version`.
    pub version: String,
    /// The release digest the operator computed from the live spec (see `millrace render`).
    pub digest: String,
    /// `VERSION@` and the first six hex digits of the digest, for display: `1.4.0@1f2e9a`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The promotion that brought this release (annotation `millrace.dev/promotion-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<String>,
    /// When every worker replica ran this release and was available. Unset while it rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_at: Option<Time>,
}

impl ReleaseStatus {
    /// `1.4.0@1f2e9a`: the version and the first six hex digits of the digest.
    pub fn reference(version: &str, digest: &str) -> String {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        format!("{version}@{}", &hex[..hex.len().min(6)])
    }
}

/// The contract version a flow resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedContract {
    /// Contract name.
    pub name: String,
    /// Version in use.
    pub version: u32,
    /// `name@vN`, for display.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// Desired and ready worker replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas available.
    pub ready: i32,
}

/// Sampled queue figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueFigures {
    /// Messages ready in the main queue (all partitions of an ordered flow).
    pub backlog: u64,
    /// Messages in the dead-letter queue.
    pub dead_letters: u64,
    /// Consumers on the main queue (or partitions).
    pub consumers: u32,
    /// When these figures were sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
}

/// One applied revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// `sha256:` digest of the rendered worker config.
    pub revision: String,
    /// `spec.version` at that time.
    pub version: String,
    /// When the operator applied it.
    pub applied_at: Time,
    /// Applied, RolledOut, Failed (the rollout got stuck) or Reverted (a rollback replaced it).
    pub outcome: String,
    /// The promotion that brought this revision, when it came by promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<String>,
}

/// Outcomes of a revision in `status.history`.
pub mod outcome {
    /// The operator applied the revision; workers are rolling out.
    pub const APPLIED: &str = "Applied";
    /// Every worker runs the revision.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// The rollout passed its progress deadline.
    pub const FAILED: &str = "Failed";
    /// A rollback brought back an earlier promotion over this one.
    pub const REVERTED: &str = "Reverted";
}

/// Annotations promotion (`millrace promote`, `millrace rollback`) writes on a released flow.
pub mod annotation {
    /// `NAME@VERSION` of the release.
    pub const RELEASE: &str = "millrace.dev/release";
    /// The release digest computed when the file was promoted; the operator recomputes it.
    pub const RELEASE_DIGEST: &str = "millrace.dev/release-digest";
    /// The environment the release was promoted from.
    pub const PROMOTED_FROM: &str = "millrace.dev/promoted-from";
    /// The promotion's id, also in the commit's `Millrace-Promotion-Id` trailer.
    pub const PROMOTION_ID: &str = "millrace.dev/promotion-id";
}

/// The number of revisions kept in `status.history`.
pub const HISTORY_LIMIT: usize = 10;

/// Condition types of a flow, in the order they are evaluated.
pub mod condition {
    /// The spec is valid (jq compiles, references are well formed).
    pub const ACCEPTED: &str = "Accepted";
    /// Input and output contracts exist and the versions are accepted.
    pub const CONTRACTS_RESOLVED: &str = "ContractsResolved";
    /// Every referenced connection exists, matches its use and is Ready.
    pub const CONNECTIONS_READY: &str = "ConnectionsReady";
    /// Queues, tiers, DLQ, archive and bindings are declared.
    pub const TOPOLOGY_READY: &str = "TopologyReady";
    /// The worker Deployment has its replicas available.
    pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
    /// The queue has consumers and dead-letters are not growing too fast.
    pub const HEALTHY: &str = "Healthy";
    /// The flow works.
    pub const READY: &str = "Ready";
    /// Reconciliation is paused by annotation.
    pub const PAUSED: &str = "ReconciliationPaused";
    /// The live spec has the release digest its promotion annotated (only on promoted flows).
    pub const RELEASE_VERIFIED: &str = "ReleaseVerified";
    /// A deletion cannot finish: the deletion policy's broker work fails (set while deleting).
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
}

/// Set to `"true"` on a flow whose deletion is blocked to finish it without the broker work
/// its deletion policy asks for (the queues are left as they are).
pub const FORCE_DELETE_ANNOTATION: &str = "millrace.dev/force-delete";

/// The rule on a flow's name, at the root of its schema (where CEL sees `metadata.name`).
/// The apiserver assigns a `generateName` name before validation; offline there is none yet.
pub const NAME_RULE: &str = "!has(self.metadata.name) || (self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56)";
/// Why a flow's name is refused.
pub const NAME_RULE_MESSAGE: &str = "metadata.name of a flow must be a DNS label of at most 56 characters that starts with a letter (no dots): its worker Service is named <name>-worker, which Kubernetes limits to 63 characters, and its queue names are built from it with dots as separators";

/// Reasons of a flow's conditions (CamelCase, stable: alerts and tools match on them).
pub mod reason {
    /// Accepted: the spec is valid and every jq program compiles.
    pub const VALID: &str = "Valid";
    /// Accepted=False: a jq program does not compile.
    pub const INVALID_JQ: &str = "InvalidJq";
    /// Accepted=False: a lookup's ConfigMap does not exist.
    pub const LOOKUP_NOT_FOUND: &str = "LookupNotFound";
    /// Accepted=False: a transform arg has the name of a lookup, so one would hide the other.
    pub const ARG_SHADOWS_LOOKUP: &str = "ArgShadowsLookup";
    /// Accepted=False: the flow names a Secret (its HTTP ingress key) that none of its
    /// PartnerConnections names, so the flow could hand any Secret of the namespace to its workers.
    pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
    /// Accepted=False: a reference does not fit its use (a route to the wrong kind of connection).
    pub const INVALID_REFERENCE: &str = "InvalidReference";
    /// ContractsResolved: every contract version is accepted.
    pub const RESOLVED: &str = "Resolved";
    /// ContractsResolved=False: the EventContract does not exist.
    pub const CONTRACT_NOT_FOUND: &str = "ContractNotFound";
    /// ContractsResolved=False: the pinned version is not accepted.
    pub const CONTRACT_VERSION_NOT_ACCEPTED: &str = "ContractVersionNotAccepted";
    /// ContractsResolved=False: the contract has no accepted version yet.
    pub const CONTRACT_NOT_READY: &str = "ContractNotReady";
    /// ContractsResolved=False: the pinned version does not exist.
    pub const CONTRACT_VERSION_NOT_FOUND: &str = "ContractVersionNotFound";
    /// ConnectionsReady: every connection is Ready.
    pub const CONNECTIONS_READY: &str = "Ready";
    /// ConnectionsReady=False: a connection exists but is not Ready.
    pub const CONNECTION_NOT_READY: &str = "ConnectionNotReady";
    /// ConnectionsReady=False: a connection does not exist.
    pub const CONNECTION_NOT_FOUND: &str = "ConnectionNotFound";
    /// A condition that waits for an earlier one.
    pub const BLOCKED: &str = "Blocked";
    /// TopologyReady: the queues are declared.
    pub const DECLARED: &str = "Declared";
    /// TopologyReady=False: the broker connection is not an AMQP connection.
    pub const BROKER_NOT_FOUND: &str = "BrokerNotFound";
    /// TopologyReady=False: the broker refused or could not be reached.
    pub const BROKER_UNAVAILABLE: &str = "BrokerUnavailable";
    /// TopologyReady: the wanted topology is declared, and queues it no longer has are being
    /// drained (`status.retiringQueues`).
    pub const MIGRATING: &str = "Migrating";
    /// TopologyReady=False: the change needs a queue argument the broker cannot change in
    /// place; the old topology and workers keep running, and the message says what to do.
    pub const MIGRATION_REQUIRED: &str = "MigrationRequired";
    /// WorkersAvailable=False: `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// WorkersAvailable=False: a new revision is rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// WorkersAvailable=False: a changed pod template waits for a rollout slot
    /// (`workerRollout.maxConcurrent`); the workers run the previous revision.
    pub const ROLLOUT_QUEUED: &str = "RolloutQueued";
    /// WorkersAvailable=False: the rollout passed the Deployment's progress deadline.
    pub const ROLLOUT_STUCK: &str = "RolloutStuck";
    /// WorkersAvailable=False: the apiserver refused the worker ConfigMap, Deployment, Service
    /// or PDB (a quota, an admission policy); the message quotes it.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// WorkersAvailable: every replica is available.
    pub const AVAILABLE: &str = "Available";
    /// WorkersAvailable=False: fewer replicas are available than desired.
    pub const WORKERS_UNAVAILABLE: &str = "WorkersUnavailable";
    /// Healthy: the queue has consumers and dead-letters are not growing.
    pub const HEALTHY: &str = "Healthy";
    /// Healthy=False: nothing consumes the queue.
    pub const NO_CONSUMERS: &str = "NoConsumers";
    /// Healthy=False: dead-letters grow faster than the threshold.
    pub const DEAD_LETTERS_GROWING: &str = "DeadLettersGrowing";
    /// Healthy=False: the queues could not be sampled.
    pub const QUEUE_UNAVAILABLE: &str = "QueueUnavailable";
    /// Ready: the flow works.
    pub const READY: &str = "Ready";
    /// ReconciliationPaused: the pause annotation is set.
    pub const PAUSED: &str = "Paused";
    /// ReleaseVerified: the live spec has the promoted digest.
    pub const DIGEST_MATCHES: &str = "DigestMatches";
    /// ReleaseVerified=False: the live spec differs from what was promoted (a hand edit).
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
}
