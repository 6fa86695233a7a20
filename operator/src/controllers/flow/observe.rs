//! Step 5: observe what runs: the worker Deployment's rollout and the queues' health.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use millrace_crds::flow::{IntegrationFlow, QueueFigures, reason};
use millrace_render::{FLOW_LABEL, Verdict};

use crate::context::Context;

/// The `WorkersAvailable` verdict from the live Deployment. Workers are available only when the
/// Deployment has seen its latest spec, every replica runs the new revision, no old replica is
/// left, and enough of them are available; a rollout past its progress deadline is stuck.
pub fn workers(flow: &IntegrationFlow, desired: i32, deployment: Option<&Deployment>) -> Verdict {
    let status = deployment.and_then(|d| d.status.as_ref());
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    let generation = deployment.and_then(|d| d.metadata.generation).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0);
    let total = status.and_then(|s| s.replicas).unwrap_or(0);
    let stuck = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Progressing")))
        .filter(|c| {
            c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    if flow.spec.suspend {
        Verdict::fail(
            reason::SUSPENDED,
            None,
            "spec.suspend is true; no worker runs and messages wait in the queue",
        )
    } else if let Some(c) = stuck {
        Verdict::fail(
            reason::ROLLOUT_STUCK,
            None,
            format!(
                "the rollout passed its progress deadline with {updated}/{desired} workers on the new revision: {}; see the worker pods' events",
                c.message.as_deref().unwrap_or("no progress")
            ),
        )
    } else if observed < generation || updated < desired || total > updated {
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

/// What keeps the flow's worker pods from running, read from the pods when the workers are not
/// available: `pod NAME: Reason: message` for the first pod that shows a problem (unschedulable,
/// an image that cannot be pulled, a crash loop, a container that cannot be created).
pub async fn pod_problem(ctx: &Context, ns: &str, flow: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{FLOW_LABEL}={flow}");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    list.items.iter().find_map(problem_of)
}

/// The problem one pod shows, if any.
pub fn problem_of(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let quote = |reason: &str, message: Option<&str>| {
        let message = message.unwrap_or_default();
        let message: String = message.chars().take(300).collect();
        if message.is_empty() {
            format!("pod {name}: {reason}")
        } else {
            format!("pod {name}: {reason}: {message}")
        }
    };
    for c in status.container_statuses.iter().flatten() {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting
            && let Some(reason) = w.reason.as_deref()
            && reason != "ContainerCreating"
            && reason != "PodInitializing"
        {
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        " (last exit {}{})",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Some(format!("{}{last}", quote(reason, w.message.as_deref())));
        }
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            quote(
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_deref(),
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn flow() -> IntegrationFlow {
        serde_yaml::from_str(include_str!(
            "../../../../examples/basic/integration-flow.yaml"
        ))
        .expect("the example parses")
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        d
    }

    fn status(observed: i64, total: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(total),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn workers_are_available_only_when_the_new_revision_runs_everywhere() {
        let f = flow();
        let reason_of = |d: Deployment| workers(&f, 2, Some(&d)).reason;
        assert_eq!(
            reason_of(deployment(3, status(3, 2, 2, 2))),
            reason::AVAILABLE
        );
        // The controller has not seen the new spec yet.
        assert_eq!(
            reason_of(deployment(4, status(3, 2, 2, 2))),
            reason::ROLLING_OUT
        );
        // Surge: new pods exist, old pods still serve and make the count look available.
        assert_eq!(
            reason_of(deployment(3, status(3, 4, 2, 2))),
            reason::ROLLING_OUT
        );
        assert_eq!(
            reason_of(deployment(3, status(3, 2, 1, 2))),
            reason::ROLLING_OUT
        );
        assert_eq!(
            reason_of(deployment(3, status(3, 2, 2, 1))),
            reason::WORKERS_UNAVAILABLE
        );
        assert_eq!(workers(&f, 2, None).reason, reason::ROLLING_OUT);
    }

    #[test]
    fn a_rollout_past_its_deadline_is_stuck() {
        let mut s = status(3, 3, 1, 2);
        s.conditions = Some(vec![DeploymentCondition {
            type_: Some("Progressing".into()),
            status: Some("False".into()),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"orders-worker-5d9\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        let v = workers(&flow(), 2, Some(&deployment(3, s)));
        assert!(!v.ok);
        assert_eq!(v.reason, reason::ROLLOUT_STUCK);
        assert!(v.message.contains("timed out progressing"), "{}", v.message);
    }
}
