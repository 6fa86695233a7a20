//! Deletion: honour `deletionPolicy` for the flow's queues.

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use millrace_crds::connection::PartnerConnection;
use millrace_crds::flow::{DeletionPolicy, IntegrationFlow};
use millrace_crds::naming::FlowNames;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::secrets;

/// Removes what the flow's deletion policy says to remove.
pub async fn cleanup(flow: &IntegrationFlow, ctx: &Context) -> Result<Action> {
    let flow_ref = ObjectRef::from_obj(flow);
    let queues = ctx.queues.lock().await.remove(&flow_ref);
    ctx.samples.lock().await.remove(&flow_ref);
    // A deleted flow has no readiness, backlog or dead-letters any more.
    ctx.metrics.forget_flow(&crate::metrics::FlowLabels {
        namespace: flow_ref.namespace.clone().unwrap_or_default(),
        flow: flow_ref.name.clone(),
    });
    // The broker URI comes from the remembered queues, or is resolved again after an
    // operator restart.
    let ns = flow
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let broker = flow
        .spec
        .broker
        .as_ref()
        .map(|b| b.connection.clone())
        .or_else(|| flow.spec.source.amqp.as_ref().map(|a| a.connection.clone()));
    let uri = match queues {
        Some(q) => Some(q.uri),
        None => match broker {
            Some(b) => {
                let api: Api<PartnerConnection> = Api::namespaced(ctx.client.clone(), &ns);
                match api.get_opt(&b).await?.and_then(|c| c.spec.amqp) {
                    Some(a) => secrets::read(&ctx.client, &ns, &a.uri_secret_ref)
                        .await
                        .ok(),
                    None => None,
                }
            }
            None => None,
        },
    };
    let Some(uri) = uri else {
        tracing::warn!(flow = %flow_ref, policy = ?flow.spec.deletion_policy, "the broker cannot be resolved; queues and bindings are left in place");
        return Ok(Action::await_change());
    };
    let names = FlowNames::new(&ns, &flow.name_any());
    if flow.spec.deletion_policy == DeletionPolicy::Retain {
        // Keep the queues and their messages, but let nothing new arrive.
        let sources: Vec<(String, String)> = flow
            .spec
            .source
            .amqp
            .iter()
            .flat_map(|a| {
                a.routing_keys
                    .iter()
                    .map(|k| (a.exchange.clone(), k.clone()))
            })
            .collect();
        let removed = ctx.brokers.unbind_sources(&uri, &names, &sources).await?;
        tracing::info!(flow = %flow_ref, bindings_removed = removed, "deletionPolicy Retain: queues and their messages are kept; source bindings removed");
        return Ok(Action::await_change());
    }
    let partitions = flow
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.ordering.as_ref())
        .map_or(0, |o| o.partitions);
    ctx.brokers.delete_flow(&uri, &names, partitions).await?;
    tracing::info!(flow = %flow_ref, "deletionPolicy Delete: topology removed");
    Ok(Action::await_change())
}
