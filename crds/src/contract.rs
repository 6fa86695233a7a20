//! EventContract: one canonical business event type and its ordered schema versions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{any_object, any_object_list};

/// How the versions of a contract must stay compatible with each other.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CompatibilityMode {
    /// No checks between versions.
    None,
    /// A new version accepts every event the previous version accepted.
    Backward,
    /// A new version accepts every event any earlier version accepted.
    #[default]
    BackwardTransitive,
    /// The previous version accepts every event the new version accepts.
    Forward,
    /// Every earlier version accepts every event the new version accepts.
    ForwardTransitive,
    /// Backward and Forward against the previous version.
    Full,
    /// Backward and Forward against every earlier version.
    FullTransitive,
}

/// An EventContract declares one canonical business event (a CloudEvents `type`) and its
/// schema versions. Versions are append-only; published versions are immutable. A version
/// that breaks the contract's compatibility mode is rejected in status and never served.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "millrace.dev",
    version = "v1alpha1",
    kind = "EventContract",
    namespaced,
    status = "EventContractStatus",
    shortname = "ec",
    shortname = "contract",
    category = "millrace",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Latest",
        type_ = "integer",
        json_path = ".status.latestAcceptedVersion",
        description = "Newest accepted version"
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
#[serde(rename_all = "camelCase")]
pub struct EventContractSpec {
    /// The CloudEvents `type` of this event, for example `com.acme.mfg.production.completed.v1`.
    /// An incompatible change needs a new contract with a new type (ending in `.v2`, say).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type is immutable: create a new EventContract for a new event type"))]
    pub type_: String,
    /// Team that owns the event and approves its changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub owner: Option<String>,
    /// How versions must stay compatible: None, Backward, BackwardTransitive (default),
    /// Forward, ForwardTransitive, Full or FullTransitive.
    #[serde(default)]
    pub compatibility: CompatibilityMode,
    /// Schema versions, numbered 1, 2, 3 ... Append-only: published versions cannot be removed or changed.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["version".into()]),
        validation = Rule::new("self.all(v, v.version <= size(self))").message("spec.versions must be numbered 1, 2, 3 ... without gaps"),
        validation = Rule::new("oldSelf.all(o, self.exists(n, n.version == o.version))").message("spec.versions is append-only: a published version cannot be removed; deprecate it instead")
    )]
    pub versions: Vec<ContractVersion>,
}

/// One schema version of a contract.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.schema == oldSelf.schema && has(self.examples) == has(oldSelf.examples) && (!has(self.examples) || self.examples == oldSelf.examples)").message("a published contract version is immutable: add a new version instead of changing schema or examples"))]
pub struct ContractVersion {
    /// Version number, starting at 1.
    #[schemars(range(min = 1, max = 50))]
    pub version: u32,
    /// JSON Schema (draft-07 or 2020-12) of the event's `data`. Close your objects
    /// (`additionalProperties: false`) so compatibility can be checked precisely.
    #[schemars(schema_with = "any_object")]
    pub schema: serde_json::Value,
    /// Example events. Each must validate against `schema`; the operator checks them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "any_object_list")]
    pub examples: Vec<serde_json::Value>,
    /// Marks the version as deprecated: still served, but flows should move off it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
}

/// Observed state of an EventContract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventContractStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, Compatible and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The newest version that flows may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_accepted_version: Option<u32>,
    /// Verdict per version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ContractVersionStatus>,
    /// Flows (in this namespace) that use this contract, for input or output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// The operator's verdict on one version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractVersionStatus {
    /// Version number.
    pub version: u32,
    /// `sha256:` digest of the canonical schema JSON.
    pub digest: String,
    /// Whether flows may use this version.
    pub accepted: bool,
    /// Why the version is not accepted, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Changes from the previous version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<SchemaChange>,
}

/// One difference between two schema versions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaChange {
    /// What changed, such as `PROPERTY_ADDED_TO_CLOSED_CONTENT_MODEL`.
    pub kind: String,
    /// JSON pointer into the schema where it changed.
    pub path: String,
    /// Whether the change breaks the contract's compatibility mode.
    pub breaking: bool,
}

impl EventContractSpec {
    /// The version with number `n`.
    pub fn version(&self, n: u32) -> Option<&ContractVersion> {
        self.versions.iter().find(|v| v.version == n)
    }
}

/// Condition types of a contract.
pub mod condition {
    /// Every schema compiles and every example validates.
    pub const ACCEPTED: &str = "Accepted";
    /// Every version is compatible with the ones before it under the contract's mode.
    pub const COMPATIBLE: &str = "Compatible";
    /// Every declared version is accepted and served.
    pub const READY: &str = "Ready";
}

/// Reasons of a contract's conditions.
pub mod reason {
    /// Accepted: every schema compiles and every example validates.
    pub const SCHEMAS_VALID: &str = "SchemasValid";
    /// Accepted=False: a schema does not compile or an example does not validate.
    pub const INVALID_SCHEMA: &str = "InvalidSchema";
    /// Compatible: every version is compatible under the mode.
    pub const COMPATIBLE: &str = "Compatible";
    /// Compatible=False: a version breaks the mode.
    pub const INCOMPATIBLE_VERSION: &str = "IncompatibleVersion";
    /// Ready: every version is accepted.
    pub const READY: &str = "Ready";
    /// Ready=False: a version is rejected; flows keep the latest accepted one.
    pub const VERSION_REJECTED: &str = "VersionRejected";
    /// Ready=False: no version is accepted.
    pub const NO_ACCEPTED_VERSION: &str = "NoAcceptedVersion";
}
