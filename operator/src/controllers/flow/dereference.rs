//! Step 1: read every object a flow references into a [`Catalog`]. The only API reads of a
//! flow's judgement happen here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};
use millrace_crds::connection::PartnerConnection;
use millrace_crds::contract::EventContract;
use millrace_crds::flow::IntegrationFlowSpec;
use millrace_render::references::{
    LOOKUP_LABEL, connection_names, contract_names, lookup_names, used_secret_names,
};
use millrace_render::{Catalog, ConnectionEntry, ContractEntry};

use crate::context::Context;
use crate::error::Result;
use crate::secrets;

/// The contracts, connections and lookup ConfigMaps a flow spec names, as they are now, and the
/// `resourceVersion` of every Secret its workers read. Absent objects are simply not in the
/// catalog; the judgement says what is missing.
pub async fn dereference(ctx: &Context, ns: &str, spec: &IntegrationFlowSpec) -> Result<Catalog> {
    let mut catalog = Catalog::new(ns);
    let contracts: Api<EventContract> = Api::namespaced(ctx.client.clone(), ns);
    for name in contract_names(spec) {
        if let Some(c) = contracts.get_opt(&name).await? {
            catalog
                .contracts
                .insert(name, ContractEntry::from_status(c));
        }
    }
    let connections: Api<PartnerConnection> = Api::namespaced(ctx.client.clone(), ns);
    for name in connection_names(spec) {
        if let Some(c) = connections.get_opt(&name).await? {
            catalog
                .connections
                .insert(name, ConnectionEntry::from_status(c));
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    for name in lookup_names(spec) {
        if let Some(cm) = config_maps.get_opt(&name).await? {
            if !cm.labels().contains_key(LOOKUP_LABEL) {
                catalog.unlabelled_lookups.insert(name.clone());
            }
            catalog
                .config_maps
                .insert(name, cm.data.unwrap_or_default());
        }
    }
    // Versions, not values: a rotated Secret changes the pod template and rolls the workers.
    // Only Secrets the flow's connections name are read, so a refused reference reads nothing.
    let mut versions = BTreeMap::new();
    for name in used_secret_names(spec, &catalog) {
        if let Some(v) = secrets::version(&ctx.client, ns, &name).await? {
            versions.insert(name, v);
        }
    }
    catalog.secret_versions = Some(versions);
    Ok(catalog)
}
