//! The local control plane runs workloads: a Deployment reaches `Available`, its pods scheduled by
//! kube-scheduler onto the kwok node and made Ready there.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use millrace_testkit::TestNamespace;

const REPLICAS: i32 = 2;

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": REPLICAS,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": "registry.invalid/millrace/placeholder:1" }] }
            }
        }
    }))
    .expect("a valid Deployment")
}

fn is_available(deployment: Option<&Deployment>) -> bool {
    let Some(status) = deployment.and_then(|d| d.status.as_ref()) else {
        return false;
    };
    let available =
        status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
        });
    available && status.ready_replicas == Some(REPLICAS)
}

#[tokio::test]
async fn deployment_becomes_available_on_the_kwok_node() {
    let ns = TestNamespace::create("env-deployment").await;
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &deployment("placeholder"))
        .await
        .expect("create the Deployment");

    let waited = tokio::time::timeout(
        Duration::from_secs(90),
        await_condition(deployments.clone(), "placeholder", is_available),
    )
    .await;

    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let seen: Vec<String> = pods
        .items
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            format!(
                "{} on {:?}: phase {:?}, conditions {:?}",
                p.metadata.name.as_deref().unwrap_or("?"),
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                status.and_then(|s| s.phase.as_deref()),
                status.and_then(|s| s.conditions.as_ref()).map(|c| c
                    .iter()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect::<Vec<_>>()),
            )
        })
        .collect();
    let last = deployments
        .get_opt("placeholder")
        .await
        .expect("get the Deployment");
    assert!(
        matches!(waited, Ok(Ok(_))),
        "Deployment did not become Available within 90s.\nstatus: {:?}\npods:\n  {}",
        last.and_then(|d| d.status),
        seen.join("\n  ")
    );
    assert_eq!(pods.items.len(), REPLICAS as usize, "pods: {seen:?}");
    for pod in &pods.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        assert_eq!(node, Some("kwok-node-0"), "pods: {seen:?}");
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        assert_eq!(phase, Some("Running"), "pods: {seen:?}");
    }
}
