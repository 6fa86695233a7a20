//! What a flow references, and the catalog of referenced objects a judgement reads.
//!
//! The operator fills a [`Catalog`] from the API (contracts with the verdicts in their status,
//! connections with their Ready condition); the CLI fills it from files (contracts judged on the
//! spot, connections unjudged). Everything after that is the same code.

use std::collections::BTreeMap;

use millrace_crds::conditions::{find, is_true};
use millrace_crds::connection::{PartnerConnection, condition as conn_condition};
use millrace_crds::contract::{ContractVersionStatus, EventContract};
use millrace_crds::flow::IntegrationFlowSpec;

use crate::contract::{VersionVerdict, judge_contract, mode};

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
