//! IntegrationFlow, one step per module:
//! [`dereference`] (read what the flow names) → judge and render (pure, `millrace-render`) →
//! [`apply`] (children, then topology) → [`observe`] (rollout, queue health) → [`status`].
//! [`cleanup`] honours the deletion policy.

mod apply;
mod cleanup;
mod dereference;
mod migrate;
mod observe;
mod status;

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use millrace_crds::flow::{
    IntegrationFlow, IntegrationFlowSpec, QueueFigures, ReplicaCounts, reason,
};
use millrace_render::{Verdict, judge_flow, verify_release};

use super::{apply_pause, measured, now, write_status};
use crate::context::Context;
use crate::error::{Error, Result};

/// How soon a flow with retiring queues or a queued rollout is reconciled again.
const SOON: std::time::Duration = std::time::Duration::from_secs(3);

/// Finalizer that lets deletion honour `deletionPolicy`.
pub const FINALIZER: &str = "millrace.dev/topology";

/// Reconciles one IntegrationFlow.
pub async fn reconcile(flow: Arc<IntegrationFlow>, ctx: Arc<Context>) -> Result<Action> {
    let key = flow.clone();
    measured(&ctx, key.as_ref(), async {
        let ns = flow
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<IntegrationFlow> = Api::namespaced(ctx.client.clone(), &ns);
        let old = flow.status.clone().unwrap_or_default();
        let mut status = old.clone();
        // A paused flow still honours a deletion: pausing stops changes, not a person's delete.
        let deleting = flow.metadata.deletion_timestamp.is_some();
        if !deleting && apply_pause(&flow.metadata, &mut status) {
            write_status(&ctx, &api, flow.as_ref(), &old, &status).await?;
            return Ok(Action::await_change());
        }
        finalizer(&api, FINALIZER, flow, |event| async {
            match event {
                Finalizer::Apply(flow) => apply(&flow, &ctx, &api).await,
                Finalizer::Cleanup(flow) => cleanup::cleanup(&flow, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

/// One pass over a live flow, top to bottom.
async fn apply(
    flow: &IntegrationFlow,
    ctx: &Context,
    api: &Api<IntegrationFlow>,
) -> Result<Action> {
    let ns = flow
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = flow.name_any();
    let generation = flow.metadata.generation;
    let old = flow.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let flow_ref = ObjectRef::from_obj(flow);

    // 1. Dereference: the only reads of what the flow names.
    let catalog = dereference::dereference(ctx, &ns, &flow.spec).await?;

    // 2.-3. Validate and build: pure, the same call as `millrace validate` and `millrace render`.
    let judgement = judge_flow(flow, &catalog, &ctx.settings.render);

    // 4. Apply: topology (migrated from what the workers run), children, then retired queues.
    let mut topology = Verdict::pending("the flow to be accepted and its references to resolve");
    let mut deployment = None;
    // A refused child is reported in status, then retried with backoff.
    let mut apply_error = None;
    // A refused migration applies nothing: the workers keep the previous revision.
    let mut held = false;
    // A changed pod template waiting for a rollout slot.
    let mut queued = None;
    if let Some(r) = &judgement.rendered {
        let step = apply::topology(ctx, flow, &r.config.flows[0], &catalog, &mut status).await?;
        topology = step.verdict;
        held = !step.apply_children;
        if held {
            deployment = apply::live_deployment(ctx, &ns, &name).await?;
        } else {
            match apply::apply_children(ctx, flow, r).await {
                Ok(children) => {
                    deployment = children.deployment;
                    queued = children.queued;
                }
                Err(e) => apply_error = Some(e),
            }
        }
        if let Some((uri, wanted)) = &step.declared {
            apply::retire(ctx, uri, wanted, &mut status, &mut topology).await;
        }
    }

    // 5. Observe: workers, queue health.
    let desired = judgement
        .rendered
        .as_ref()
        .and_then(|r| r.deployment.spec.replicas)
        .unwrap_or(0);
    let workers = match (&judgement.rendered, &apply_error, &queued) {
        (Some(_), Some(e), _) => Verdict::fail(
            reason::APPLY_FAILED,
            None,
            format!("applying the worker objects failed: {e}"),
        ),
        (Some(_), None, Some(q)) => Verdict::fail(reason::ROLLOUT_QUEUED, None, q.to_string()),
        (Some(_), None, None) => observe::workers(flow, desired, deployment.as_ref()),
        (None, _, _) => Verdict::pending("the worker Deployment"),
    };
    // A finished rollout gives its slot back.
    if workers.ok {
        ctx.rollouts.done(&flow_ref);
    }
    // Workers that are not available: say what the pods show. Pods are read only then, so a
    // steady flow costs no extra reads.
    let mut workers = workers;
    if !workers.ok
        && apply_error.is_none()
        && workers.reason != reason::SUSPENDED
        && workers.reason != reason::BLOCKED
        && workers.reason != reason::ROLLOUT_QUEUED
        && let Some(problem) = observe::pod_problem(ctx, &ns, &name).await
    {
        workers.message = format!("{}; {problem}", workers.message);
    }
    let (healthy, figures) = observe::health(ctx, &flow_ref, topology.ok).await;
    if let Some(f) = figures {
        let unchanged = old.queue.as_ref().is_some_and(|q| {
            q.backlog == f.backlog && q.dead_letters == f.dead_letters && q.consumers == f.consumers
        });
        if !unchanged {
            status.queue = Some(QueueFigures {
                sampled_at: Some(now()),
                ..f
            });
        }
    }

    // 6. Status.
    let verdicts = status::Verdicts {
        accepted: &judgement.accepted,
        contracts: &judgement.contracts,
        connections: &judgement.connections,
        topology: &topology,
        workers: &workers,
        healthy: &healthy,
    };
    let t = now();
    status
        .conditions
        .retain(|c| c.type_ != super::PAUSED_CONDITION);
    status::set_conditions(&mut status, &verdicts, generation, &t);
    status.observed_generation = generation;
    status::set_contract(&mut status, judgement.input.as_ref());
    let rollout = status::Rollout::from_verdict(&workers);
    // A revision that is refused or waits for a rollout slot is not the applied one.
    if let Some(r) = judgement
        .rendered
        .as_ref()
        .filter(|_| !held && queued.is_none())
    {
        let replicas = ReplicaCounts {
            desired,
            ready: observe::available_replicas(deployment.as_ref()),
        };
        status::set_revision(&mut status, flow, r, replicas, rollout, &t);
    }
    // The release: what promotion annotated, proved against the live spec. It never stops
    // the flow: a hand edit keeps running, and is reported.
    status::set_release(&mut status, flow, rollout, &t);
    status::set_release_verified(&mut status, verify_release(flow).as_ref(), generation, &t);
    ctx.metrics
        .flow_ready
        .get_or_create(&crate::metrics::FlowLabels {
            namespace: ns.clone(),
            flow: name.clone(),
        })
        .set(i64::from(verdicts.ready()));
    write_status(ctx, api, flow, &old, &status).await?;
    match apply_error {
        Some(e) => Err(e),
        // Retired queues and queued rollouts are looked at again soon.
        None if !status.retiring_queues.is_empty() || queued.is_some() => Ok(Action::requeue(SOON)),
        None => Ok(Action::requeue(ctx.settings.drift_interval)),
    }
}

/// Maps a changed contract, connection or ConfigMap to the flows in its namespace that use it.
pub fn flows_using(
    ctx: &Context,
    ns: Option<String>,
    pred: impl Fn(&IntegrationFlowSpec) -> bool,
) -> Vec<ObjectRef<IntegrationFlow>> {
    ctx.flows
        .state()
        .iter()
        .filter(|f| f.namespace() == ns)
        .filter(|f| pred(&f.spec))
        .map(|f| ObjectRef::from_obj(f.as_ref()))
        .collect()
}
