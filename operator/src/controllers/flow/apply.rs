//! Step 4: apply what the render produced: the worker objects (skipping unchanged ones), then
//! the flow's RabbitMQ topology.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::reflector::ObjectRef;
use millrace_crds::flow::{IntegrationFlow, reason};
use millrace_crds::naming::{FlowNames, worker_object_name};
use millrace_crds::worker_config::FlowConfig;
use millrace_render::{Catalog, RenderedFlow, Verdict};

use super::super::apply_if_changed;
use crate::context::{Context, FlowQueues};
use crate::error::Result;
use crate::secrets;

/// Applies the worker objects and returns the live Deployment (for its status).
pub async fn apply_children(
    ctx: &Context,
    ns: &str,
    name: &str,
    rendered: &RenderedFlow,
) -> Result<Option<Deployment>> {
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let dep_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    apply_if_changed(ctx, &cm_api, &rendered.config_map).await?;
    apply_if_changed(ctx, &dep_api, &rendered.deployment).await?;
    apply_if_changed(ctx, &svc_api, &rendered.service).await?;
    let object = worker_object_name(name);
    match &rendered.pdb {
        Some(pdb) => {
            apply_if_changed(ctx, &pdb_api, pdb).await?;
        }
        None => {
            if pdb_api.get_opt(&object).await?.is_some() {
                pdb_api.delete(&object, &DeleteParams::default()).await?;
                ctx.metrics.write("PodDisruptionBudget", "delete");
            }
        }
    }
    Ok(dep_api.get_opt(&object).await?)
}

/// Declares the flow's topology on its broker and remembers where its queues are.
pub async fn declare_topology(
    ctx: &Context,
    ns: &str,
    flow_ref: &ObjectRef<IntegrationFlow>,
    flow_config: &FlowConfig,
    catalog: &Catalog,
) -> Verdict {
    let Some(secret) = catalog
        .connections
        .get(&flow_config.broker)
        .and_then(|c| c.connection.spec.amqp.as_ref())
        .map(|a| a.uri_secret_ref.clone())
    else {
        return Verdict::fail(
            reason::BROKER_NOT_FOUND,
            None,
            format!(
                "PartnerConnection {:?} is not an AMQP connection",
                flow_config.broker
            ),
        );
    };
    let uri = match secrets::read(&ctx.client, ns, &secret).await {
        Ok(uri) => uri,
        Err(e) => {
            return Verdict::fail(
                e.reason(),
                None,
                format!("broker connection {:?}: {e}", flow_config.broker),
            );
        }
    };
    let plan = millrace_render::topology_plan(flow_config);
    if let Err(e) = ctx.brokers.declare(&uri, &plan).await {
        return Verdict::fail(
            reason::BROKER_UNAVAILABLE,
            None,
            format!("declaring the topology on {:?}: {e}", flow_config.broker),
        );
    }
    let names = FlowNames::new(&flow_config.namespace, &flow_config.name);
    // An ordered flow's events wait in the main queue until the splitter moves them to their
    // partition, so the backlog counts the main queue and every partition.
    let main = match &flow_config.delivery.ordering {
        Some(o) => std::iter::once(names.main_queue())
            .chain((0..o.partitions).map(|i| names.partition_queue(i)))
            .collect(),
        None => vec![names.main_queue()],
    };
    ctx.queues.lock().await.insert(
        flow_ref.clone(),
        FlowQueues {
            uri,
            main,
            dlq: names.dead_letter_queue(),
        },
    );
    Verdict::ok(
        reason::DECLARED,
        format!(
            "queues, retry tiers, DLQ and archive are declared on {:?}",
            flow_config.broker
        ),
    )
}
