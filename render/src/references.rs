//! What a flow references, and the catalog of referenced objects a judgement reads.
//!
//! The operator fills a [`Catalog`] from the API (contracts with the verdicts in their status,
//! connections with their Ready condition); the CLI fills it from files (contracts judged on the
//! spot, connections unjudged). Everything after that is the same code.

use std::collections::{BTreeMap, BTreeSet};

use millrace_crds::common::SecretKeyRef;
use millrace_crds::conditions::{find, is_true};
use millrace_crds::connection::{PartnerConnection, condition as conn_condition};
use millrace_crds::contract::{ContractVersionStatus, EventContract};
use millrace_crds::flow::IntegrationFlowSpec;

use crate::contract::{VersionVerdict, judge_contract, mode};

/// Label that marks a ConfigMap as a lookup table (any value, for example `plant`). The operator
/// watches the metadata of labelled ConfigMaps only, so a change to an unlabelled lookup reaches
/// its flows at the periodic re-check rather than at once.
pub const LOOKUP_LABEL: &str = "millrace.dev/lookup";

/// Annotation on a PartnerConnection naming, comma-separated, the Secrets that flows using the
/// connection may name as their HTTP ingress key (`spec.source.http.auth.secretRef`). A flow may
/// reference only Secrets its connections name, and the connection's owner decides which.
pub const INGRESS_SECRETS_ANNOTATION: &str = "millrace.dev/ingress-secrets";

/// Every PartnerConnection a flow spec names, each with the first field that names it, sorted
/// by name.
pub fn connection_fields(spec: &IntegrationFlowSpec) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, field: String| {
        if !found.iter().any(|(n, _)| n == name) {
            found.push((name.to_string(), field));
        }
    };
    if let Some(a) = &spec.source.amqp {
        add(&a.connection, "spec.source.amqp.connection".into());
    }
    if let Some(b) = &spec.broker {
        add(&b.connection, "spec.broker.connection".into());
    }
    for (i, r) in spec.routes.iter().enumerate() {
        add(
            &r.destination.connection,
            format!("spec.routes[{i}].destination.connection"),
        );
    }
    found.sort();
    found
}

/// Every PartnerConnection name a flow spec refers to, sorted and deduplicated.
pub fn connection_names(spec: &IntegrationFlowSpec) -> Vec<String> {
    connection_fields(spec)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// True when the flow uses contract `name` for input or output.
pub fn uses_contract(spec: &IntegrationFlowSpec, name: &str) -> bool {
    contract_names(spec).iter().any(|c| c == name)
}

/// The contracts a flow uses: its input contract, then its output contract.
pub fn contract_names(spec: &IntegrationFlowSpec) -> Vec<String> {
    let mut names = vec![spec.contract.name.clone()];
    if let Some(o) = spec
        .transform
        .as_ref()
        .and_then(|t| t.output_contract.as_ref())
        && o.name != spec.contract.name
    {
        names.push(o.name.clone());
    }
    names
}

/// Every ConfigMap name a flow's lookups refer to.
pub fn lookup_names(spec: &IntegrationFlowSpec) -> Vec<String> {
    spec.transform
        .iter()
        .flat_map(|t| t.lookups.iter().map(|l| l.config_map_ref.name.clone()))
        .collect()
}

/// The Secrets a connection's spec names: the AMQP URI, CA bundles, HTTP credentials. Found by
/// walking the spec for `secretRef`/`*SecretRef` fields rather than field by field, so that a
/// Secret field added to PartnerConnection counts the day it is added (for a rotation to roll
/// the workers, every Secret they read must count).
pub fn connection_spec_secret_names(connection: &PartnerConnection) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    if (key == "secretRef" || key.ends_with("SecretRef"))
                        && let Some(name) = child.get("name").and_then(|n| n.as_str())
                    {
                        out.insert(name.to_string());
                    }
                    walk(child, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    if let Ok(spec) = serde_json::to_value(&connection.spec) {
        walk(&spec, &mut names);
    }
    names
}

/// Every Secret a connection names: those of its spec, then those its owner lends to flows
/// through [`INGRESS_SECRETS_ANNOTATION`].
pub fn connection_secret_names(connection: &PartnerConnection) -> BTreeSet<String> {
    let lent = connection
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INGRESS_SECRETS_ANNOTATION))
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    connection_spec_secret_names(connection)
        .into_iter()
        .chain(lent)
        .collect()
}

/// The Secret a flow spec names itself: the key of its HTTP ingress. Every other Secret a flow's
/// workers get comes from its connections.
pub fn flow_secret_ref(spec: &IntegrationFlowSpec) -> Option<(&SecretKeyRef, &'static str)> {
    spec.source
        .http
        .as_ref()
        .map(|h| (&h.auth.secret_ref, "spec.source.http.auth.secretRef"))
}

/// The Secrets the flow's connections in `catalog` name, or `None` while one of its connections
/// is not in the catalog (then what they name is not known yet).
pub fn allowed_secret_names(
    spec: &IntegrationFlowSpec,
    catalog: &Catalog,
) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for connection in connection_names(spec) {
        let entry = catalog.connections.get(&connection)?;
        names.extend(connection_secret_names(&entry.connection));
    }
    Some(names)
}

/// Every Secret the flow's workers would read, as far as `catalog` knows its connections: the
/// Secrets in their specs, and the flow's own ingress key when a connection allows it. A Secret
/// the judgement refuses is not in the list, so nothing reads it.
pub fn used_secret_names(spec: &IntegrationFlowSpec, catalog: &Catalog) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = connection_names(spec)
        .iter()
        .filter_map(|c| catalog.connections.get(c))
        .flat_map(|e| connection_spec_secret_names(&e.connection))
        .collect();
    if let Some((r, _)) = flow_secret_ref(spec)
        && allowed_secret_names(spec, catalog).is_some_and(|a| a.contains(&r.name))
    {
        names.insert(r.name.clone());
    }
    names
}

/// A contract and the verdict on each of its versions.
#[derive(Clone, Debug)]
pub struct ContractEntry {
    /// The contract.
    pub contract: EventContract,
    /// One verdict per version.
    pub versions: Vec<ContractVersionStatus>,
    /// The newest accepted version.
    pub latest_accepted: Option<u32>,
}

impl ContractEntry {
    /// A contract as the cluster judged it: the verdicts in its status.
    pub fn from_status(contract: EventContract) -> Self {
        let status = contract.status.clone().unwrap_or_default();
        Self {
            contract,
            versions: status.versions,
            latest_accepted: status.latest_accepted_version,
        }
    }

    /// A contract judged now, as the operator would judge it (offline use).
    pub fn judged(contract: EventContract) -> Self {
        let verdicts = judge_contract(&contract.spec);
        Self::from_verdicts(contract, &verdicts)
    }

    /// A contract with the verdicts of [`judge_contract`] on its spec.
    pub fn from_verdicts(contract: EventContract, verdicts: &[VersionVerdict]) -> Self {
        let m = mode(contract.spec.compatibility);
        let versions: Vec<ContractVersionStatus> = verdicts.iter().map(|v| v.status(m)).collect();
        let latest_accepted = versions
            .iter()
            .filter(|v| v.accepted)
            .map(|v| v.version)
            .max();
        Self {
            contract,
            versions,
            latest_accepted,
        }
    }
}

/// Whether a connection is Ready, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Its Ready condition is True.
    Ready,
    /// Its Ready condition is not True, with the condition's message.
    NotReady(String),
    /// Not judged: offline, nothing probes endpoints.
    Unjudged,
}

/// A connection and whether it is Ready.
#[derive(Clone, Debug)]
pub struct ConnectionEntry {
    /// The connection.
    pub connection: PartnerConnection,
    /// Its readiness.
    pub readiness: Readiness,
}

impl ConnectionEntry {
    /// A connection as the cluster sees it: its Ready condition.
    pub fn from_status(connection: PartnerConnection) -> Self {
        let conditions = connection
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let readiness = if is_true(conditions, conn_condition::READY) {
            Readiness::Ready
        } else {
            Readiness::NotReady(
                find(conditions, conn_condition::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "not probed yet".into()),
            )
        };
        Self {
            connection,
            readiness,
        }
    }

    /// A connection read from a file: its readiness is not known.
    pub fn unjudged(connection: PartnerConnection) -> Self {
        Self {
            connection,
            readiness: Readiness::Unjudged,
        }
    }
}

/// The objects of one namespace that flows may reference, by name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// The namespace.
    pub namespace: String,
    /// EventContracts.
    pub contracts: BTreeMap<String, ContractEntry>,
    /// PartnerConnections.
    pub connections: BTreeMap<String, ConnectionEntry>,
    /// The `data` of ConfigMaps.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Lookup ConfigMaps without [`LOOKUP_LABEL`], whose changes the operator sees only at its
    /// periodic re-check. Offline nothing watches, so the CLI leaves it empty.
    pub unlabelled_lookups: BTreeSet<String>,
    /// The `resourceVersion` of each Secret the flow's workers read, by name, or `None` where
    /// they are not known (offline: files carry no versions). A Secret missing from a known map
    /// does not exist yet.
    pub secret_versions: Option<BTreeMap<String, String>>,
}

impl Catalog {
    /// An empty catalog of `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(yaml: &str) -> PartnerConnection {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_connection_names_every_secret_of_its_spec_and_those_it_lends() {
        let amqp = connection(
            "metadata: {name: bus, annotations: {millrace.dev/ingress-secrets: ' erp-hmac, ,tms-hmac'}}\nspec: {system: Other, amqp: {uriSecretRef: {name: bus-amqp, key: uri}, tls: {caSecretRef: {name: bus-ca, key: ca.crt}}}}",
        );
        let names = |s: &[&str]| s.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            connection_spec_secret_names(&amqp),
            names(&["bus-amqp", "bus-ca"])
        );
        assert_eq!(
            connection_secret_names(&amqp),
            names(&["bus-amqp", "bus-ca", "erp-hmac", "tms-hmac"])
        );
        let http = connection(
            "metadata: {name: erp}\nspec: {system: ERP, http: {baseUrl: https://erp.example.com, auth: {type: Basic, secretRef: {name: erp-api, key: credentials}}}}",
        );
        assert_eq!(connection_secret_names(&http), names(&["erp-api"]));
    }
}
