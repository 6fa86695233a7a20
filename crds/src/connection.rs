//! PartnerConnection: an endpoint of a partner system, plus delivery defaults.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, RetryPolicy, SecretKeyRef};

/// The kind of partner system, used for dashboards and labels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PartnerSystem {
    /// Enterprise resource planning (orders, purchasing, inventory valuation, finance).
    #[serde(rename = "ERP")]
    Erp,
    /// Warehouse management.
    #[serde(rename = "WMS")]
    Wms,
    /// Transport management.
    #[serde(rename = "TMS")]
    Tms,
    /// Manufacturing execution.
    #[serde(rename = "MES")]
    Mes,
    /// A supplier portal.
    Supplier,
    /// A carrier.
    Carrier,
    /// A third-party logistics provider.
    ThreePL,
    /// Anything else.
    Other,
}

/// A PartnerConnection describes how to reach one partner system: an AMQP broker or an
/// HTTP API, its credentials (by Secret reference only) and default delivery behaviour.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "millrace.dev",
    version = "v1alpha1",
    kind = "PartnerConnection",
    namespaced,
    status = "PartnerConnectionStatus",
    shortname = "conn",
    shortname = "pconn",
    category = "millrace",
    printcolumn(name = "System", type_ = "string", json_path = ".spec.system"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
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
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.amqp) != has(self.http)").message("set exactly one of spec.amqp or spec.http"))]
#[serde(rename_all = "camelCase")]
pub struct PartnerConnectionSpec {
    /// Kind of system: ERP, WMS, TMS, MES, Supplier, Carrier, ThreePL or Other.
    pub system: PartnerSystem,
    /// Product name, free text, for example `SAP S/4HANA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub vendor: Option<String>,
    /// Plant or site this endpoint serves, for example `plant-berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub site: Option<String>,
    /// An AMQP 0-9-1 broker (RabbitMQ). Exactly one of `amqp` and `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpEndpoint>,
    /// An HTTP API. Exactly one of `amqp` and `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEndpoint>,
    /// Delivery defaults for flows that deliver to this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryDefaults>,
    /// How often and how the operator checks that the endpoint answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
}

/// An AMQP broker endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpEndpoint {
    /// Secret key holding the URI `amqp(s)://user:pass@host:port/vhost`.
    pub uri_secret_ref: SecretKeyRef,
    /// TLS settings for `amqps://` (the URI must be `amqps://` when they are set). Certificates
    /// are always verified: against the system's roots plus `caSecretRef`, for the URI host or
    /// `serverName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AmqpTls>,
}

/// TLS settings of an AMQP connection, honoured by the operator's probes and topology connection
/// and by the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmqpTls {
    /// Secret key holding the PEM CA bundle that signs the broker's certificate (for a private
    /// CA). Trusted in addition to the system's roots. Workers receive it like the URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Name the broker's certificate is verified against, and sent as SNI, instead of the URI
    /// host: for example `rabbitmq.plant.example.com` when the URI names an IP address or an
    /// alias. A DNS name or an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub server_name: Option<String>,
}

/// An HTTP API endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpEndpoint {
    /// Base URL; route paths are appended to it. For example `https://erp.example.com/api`.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/$.?#][^\s]*$"))]
    pub base_url: String,
    /// How requests authenticate. Defaults to no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// Per-request timeout, for example `10s`. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Client-side rate limit for all workers' requests to this endpoint, per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// TLS settings for an `https://` base URL (which it must be when they are set).
    /// Certificates are always verified: against the built-in roots plus `caSecretRef`, for the
    /// URL host or `serverName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpTls>,
}

/// TLS settings of an HTTP connection, honoured by the operator's probe and by the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTls {
    /// Secret key holding the PEM CA bundle that signs the endpoint's certificate (for a private
    /// CA). Trusted in addition to the built-in roots, for every request of this connection
    /// (an OAuth2 token request included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// DNS name the endpoint's certificate is verified against, and sent as SNI and `Host`,
    /// instead of the `baseUrl` host, which is still what is connected to: for example
    /// `erp.plant.example.com` when `baseUrl` names an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub server_name: Option<String>,
}

/// Authentication scheme of outbound HTTP requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum HttpAuthType {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic; the Secret value is `user:password`.
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// An API key in the header named by `header`.
    ApiKey,
    /// OAuth 2.0 client credentials against `tokenUrl`; the Secret value is `clientId:clientSecret`.
    OAuth2ClientCredentials,
}

/// Authentication of outbound HTTP requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'None' || has(self.secretRef)").message("auth.secretRef is required unless auth.type is None"),
    validation = Rule::new("self.type != 'OAuth2ClientCredentials' || has(self.tokenUrl)").message("auth.tokenUrl is required for OAuth2ClientCredentials"),
    validation = Rule::new("self.type != 'ApiKey' || has(self.header)").message("auth.header is required for ApiKey")
)]
pub struct HttpAuth {
    /// None, Basic, Bearer, ApiKey or OAuth2ClientCredentials.
    #[serde(rename = "type", default)]
    pub type_: HttpAuthType,
    /// Secret key holding the credential (see `type` for its format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Token endpoint for OAuth2ClientCredentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub token_url: Option<String>,
    /// Header that carries the key, for ApiKey, for example `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub header: Option<String>,
}

/// A token-bucket rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: u32,
    /// Extra requests allowed in a burst. Defaults to `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<u32>,
}

/// Delivery defaults of a connection; a flow's own `delivery` overrides them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDefaults {
    /// Default retry policy for deliveries to this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// Reachability probing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Time between probes. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// The HTTP request to send, for HTTP connections. Default `GET /` (any answer below 500 counts as reachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
}

/// The request an HTTP probe sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Method: GET, HEAD or OPTIONS.
    #[serde(default = "default_probe_method")]
    #[schemars(regex(pattern = r"^(GET|HEAD|OPTIONS)$"))]
    pub method: String,
    /// Path appended to `baseUrl`, for example `/health`.
    #[serde(default = "default_probe_path")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path: String,
}

fn default_probe_method() -> String {
    "GET".into()
}

fn default_probe_path() -> String {
    "/".into()
}

/// Observed state of a PartnerConnection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartnerConnectionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CredentialsResolved, Reachable and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Outcome of the most recent probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeResult>,
    /// Flows (in this namespace) that use this connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// Outcome of one probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// When the probe ran.
    pub time: Time,
    /// Round-trip time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The error, when the probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Condition types of a connection.
pub mod condition {
    /// Every referenced Secret and key exists.
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    /// The last probe reached the endpoint.
    pub const REACHABLE: &str = "Reachable";
    /// Credentials resolve and the endpoint is reachable.
    pub const READY: &str = "Ready";
}

/// Reasons of a connection's conditions (besides the Secret reasons of [`crate::secret::SecretError`]).
pub mod reason {
    /// CredentialsResolved: every referenced Secret key exists.
    pub const RESOLVED: &str = "Resolved";
    /// Reachable, Ready: the endpoint answered.
    pub const REACHABLE: &str = "Reachable";
    /// Reachable=False, Ready=False: the endpoint did not answer.
    pub const UNREACHABLE: &str = "Unreachable";
    /// Ready: credentials resolve and the endpoint answers.
    pub const READY: &str = "Ready";
    /// Reachable=False, Ready=False: the TLS settings cannot be used (a CA bundle that is not
    /// PEM, TLS settings on a plain-text endpoint), so the endpoint is not probed.
    pub const TLS_INVALID: &str = "TLSInvalid";
}
