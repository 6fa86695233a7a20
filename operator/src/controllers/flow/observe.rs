//! Step 5: observe what runs: the worker Deployment's rollout and the queues' health.

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use millrace_crds::flow::{IntegrationFlow, QueueFigures, reason};
use millrace_render::Verdict;

use crate::context::Context;

/// The `WorkersAvailable` verdict from the live Deployment.
pub fn workers(flow: &IntegrationFlow, desired: i32, deployment: Option<&Deployment>) -> Verdict {
    let status = deployment.and_then(|d| d.status.as_ref());
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    let generation = deployment.and_then(|d| d.metadata.generation).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0);
    if flow.spec.suspend {
        Verdict::fail(
            reason::SUSPENDED,
            None,
            "spec.suspend is true; no worker runs and messages wait in the queue",
        )
    } else if observed < generation || updated < desired {
        Verdict::fail(
            reason::ROLLING_OUT,
            None,
            format!("{updated}/{desired} workers run the new revision"),
        )
    } else if available >= desired {
        Verdict::ok(
            reason::AVAILABLE,
            format!("{available}/{desired} workers available"),
        )
    } else {
        Verdict::fail(
            reason::WORKERS_UNAVAILABLE,
            None,
            format!("{available}/{desired} workers available"),
        )
    }
}

/// Available replicas of the live Deployment.
pub fn available_replicas(deployment: Option<&Deployment>) -> i32 {
    deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Samples the flow's queues now and judges health from consumers and dead-letter growth.
pub async fn health(
    ctx: &Context,
    flow_ref: &ObjectRef<IntegrationFlow>,
    declared: bool,
) -> (Verdict, Option<QueueFigures>) {
    if !declared {
        return (Verdict::pending("the topology"), None);
    }
    let Some(queues) = ctx.queues.lock().await.get(flow_ref).cloned() else {
        return (Verdict::pending("the topology"), None);
    };
    // Reuse a fresh sample: a reconcile started by our own status write must not sample anew,
    // or a busy queue would keep the flow reconciling.
    let fresh = {
        let samples = ctx.samples.lock().await;
        samples.get(flow_ref).and_then(|s| {
            s.latest_if_newer_than(ctx.settings.sample_interval)
                .map(|c| (c, s.dead_letter_growth_per_minute()))
        })
    };
    let (counts, growth) = match fresh {
        Some(found) => found,
        None => match ctx.sample(flow_ref, &queues).await {
            Ok(found) => found,
            Err(e) => {
                return (
                    Verdict::fail(reason::QUEUE_UNAVAILABLE, None, e.to_string()),
                    None,
                );
            }
        },
    };
    let labels = crate::metrics::FlowLabels {
        namespace: flow_ref.namespace.clone().unwrap_or_default(),
        flow: flow_ref.name.clone(),
    };
    ctx.metrics
        .flow_dead_letters
        .get_or_create(&labels)
        .set(counts.dead_letters as i64);
    ctx.metrics
        .flow_backlog
        .get_or_create(&labels)
        .set(counts.backlog as i64);
    let figures = QueueFigures {
        backlog: counts.backlog,
        dead_letters: counts.dead_letters,
        consumers: counts.consumers,
        sampled_at: None,
    };
    let verdict = if counts.consumers == 0 {
        Verdict::fail(
            reason::NO_CONSUMERS,
            None,
            "nothing consumes the flow's queue",
        )
    } else if growth > ctx.settings.dlq_growth_per_minute {
        Verdict::fail(
            reason::DEAD_LETTERS_GROWING,
            None,
            format!(
                "dead-letters grow by {growth:.0}/min, above the threshold of {}/min",
                ctx.settings.dlq_growth_per_minute
            ),
        )
    } else {
        Verdict::ok(
            reason::HEALTHY,
            "the queue has consumers and dead-letters are not growing",
        )
    };
    (verdict, Some(figures))
}
