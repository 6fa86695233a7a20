//! Deletion: honour `deletionPolicy` for the flow's queues.

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::connection::PartnerConnection;
use millrace_crds::flow::{
    DeletionPolicy, FORCE_DELETE_ANNOTATION, IntegrationFlow, condition, reason,
};
use millrace_crds::naming::FlowNames;

use super::super::{now, patch_status, publish};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::secrets;

/// Honours the deletion policy. When that fails (the broker is unreachable), the flow reports
/// `DeletionBlocked` and the pass is retried with backoff; the annotation
/// `millrace.dev/force-delete: "true"` lets a person finish the deletion without the broker work.
pub async fn cleanup(flow: &IntegrationFlow, ctx: &Context) -> Result<Action> {
    let forced = flow
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    if forced {
        let note = format!(
            "{FORCE_DELETE_ANNOTATION} is set: the deletion finishes without the broker work of deletionPolicy {:?}; queues and bindings are left as they are",
            flow.spec.deletion_policy
        );
        tracing::warn!(flow = %flow.name_any(), "{note}");
        publish(ctx, flow, true, "ForceDeleted", "Delete", note).await;
        return Ok(Action::await_change());
    }
    match honour_policy(flow, ctx).await {
        Ok(action) => Ok(action),
        Err(e) => {
            report_blocked(flow, ctx, &e).await;
            Err(e)
        }
    }
}

/// Sets `DeletionBlocked` with the reason, once per distinct message.
async fn report_blocked(flow: &IntegrationFlow, ctx: &Context, e: &Error) {
    let Some(ns) = flow.namespace() else {
        return;
    };
    let api: Api<IntegrationFlow> = Api::namespaced(ctx.client.clone(), &ns);
    let old = flow.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let message = format!(
        "deletionPolicy {:?} cannot be carried out: {e}; fix the broker connection, or set the annotation {FORCE_DELETE_ANNOTATION}=true to finish the deletion and leave the queues",
        flow.spec.deletion_policy
    );
    let before = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DELETION_BLOCKED)
        .map(|c| c.message.clone());
    set_condition(
        &mut status.conditions,
        condition::DELETION_BLOCKED,
        ConditionStatus::True,
        reason::BROKER_UNAVAILABLE,
        message.clone(),
        flow.metadata.generation,
        now(),
    );
    if before.as_deref() == Some(message.as_str()) {
        return;
    }
    if let Err(err) = patch_status(ctx, &api, &flow.name_any(), &status).await {
        tracing::warn!(flow = %flow.name_any(), error = %err, "reporting DeletionBlocked failed");
    }
    publish(ctx, flow, true, "DeletionBlocked", "Delete", message).await;
}

/// Removes what the flow's deletion policy says to remove.
async fn honour_policy(flow: &IntegrationFlow, ctx: &Context) -> Result<Action> {
    let flow_ref = ObjectRef::from_obj(flow);
    let queues = ctx.queues.lock().await.remove(&flow_ref);
    ctx.rollouts.done(&flow_ref);
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
    // Queues whose names the spec alone does not give: the retry queues (named by their
    // delays) of the config the workers run, and the queues still retiring.
    let mut extra: Vec<String> = super::migrate::live_plan(ctx, &ns, &flow.name_any())
        .await?
        .map(|p| p.queues.into_iter().map(|q| q.name).collect())
        .unwrap_or_default();
    extra.extend(
        flow.status
            .iter()
            .flat_map(|s| s.retiring_queues.iter().map(|q| q.name.clone())),
    );
    ctx.brokers
        .delete_flow(&uri, &names, partitions, &extra)
        .await?;
    tracing::info!(flow = %flow_ref, "deletionPolicy Delete: topology removed");
    Ok(Action::await_change())
}
