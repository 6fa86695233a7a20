//! Rollout pacing against the local control plane: with one rollout slot, a change that rolls
//! the pods of three flows reaches them one at a time, and the others say they wait.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use millrace_crds::IntegrationFlow;
use millrace_operator::rollouts::MaxConcurrent;
use serde_json::json;

mod support;
use support::{apply, start_operator_with, test_settings};

use millrace_testkit::{TestNamespace, TestVhost};

const FLOWS: [&str; 3] = ["orders-a", "orders-b", "orders-c"];

async fn setup(client: &Client, ns: &str, broker: &TestVhost) {
    support::apply_broker(client, ns, broker).await;
    apply(client, ns, json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": "orders"},
        "spec": {"type": "com.acme.test.order.v1", "versions": [{
            "version": 1, "schema": {"type": "object"}, "examples": [{"id": "O-1"}]
        }]}
    })).await;
    for name in FLOWS {
        apply(client, ns, json!({
            "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": name},
            "spec": {
                "version": "1.0.0",
                "source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": [format!("{name}.#")]}},
                "contract": {"name": "orders"},
                "routes": [{"name": "erp", "destination": {"connection": "mes", "amqp": {"exchange": "erp.in"}}}],
                "workers": {"resources": {"requests": {"cpu": "10m"}}},
                "deletionPolicy": "Delete"
            }
        })).await;
    }
}

/// The CPU request of a Deployment's worker container.
fn cpu(d: &Deployment) -> Option<String> {
    let c = d.spec.template.spec.as_ref()?.containers.first()?;
    Some(
        c.resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("cpu")?
            .0
            .clone(),
    )
}

/// The Deployment runs its template on every replica: nothing is rolling.
fn settled(d: &Deployment) -> bool {
    let Some(s) = &d.status else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    s.observed_generation == d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
}

fn workers_reason(f: &IntegrationFlow) -> Option<(String, String)> {
    let c = f
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "WorkersAvailable")?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_change_reaches_flows_one_slot_at_a_time() {
    let ns = TestNamespace::create("op-pacing").await;
    let broker = TestVhost::create("op-pacing").await;
    let client = ns.client();
    let mut settings = test_settings();
    settings.worker_rollout_max_concurrent = MaxConcurrent::Count(1);
    let _op = start_operator_with(&client, ns.name(), settings);
    setup(&client, ns.name(), &broker).await;
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns.name());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());

    // New flows take no slot: all three start at once.
    let start = Instant::now();
    loop {
        let mut available = 0;
        for name in FLOWS {
            let f = flows.get(name).await.unwrap();
            if workers_reason(&f).is_some_and(|(s, _)| s == "True") {
                available += 1;
            }
        }
        if available == FLOWS.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the flows' workers did not become available"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // One change that rolls every flow's pods.
    for name in FLOWS {
        flows
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"workers": {"resources": {"requests": {"cpu": "20m"}}}}}),
                ),
            )
            .await
            .unwrap();
    }
    let mut queued_seen = false;
    let start = Instant::now();
    loop {
        let mut rolling = 0;
        let mut done = 0;
        for name in FLOWS {
            let d = deployments.get(&format!("{name}-worker")).await.unwrap();
            let changed = cpu(&d).as_deref() == Some("20m");
            match (changed, settled(&d)) {
                (true, true) => done += 1,
                (true, false) => rolling += 1,
                _ => {}
            }
            let f = flows.get(name).await.unwrap();
            if workers_reason(&f).is_some_and(|(_, r)| r == "RolloutQueued") {
                queued_seen = true;
            }
        }
        assert!(
            rolling <= 1,
            "{rolling} Deployments roll at once with one slot"
        );
        if done == FLOWS.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the change did not reach every flow: {done} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The local nodes finish a rollout within a poll or two, so the count of rolling ones may
    // never be caught above zero; the flows that waited prove the pacing.
    assert!(queued_seen, "no flow reported RolloutQueued");
    // Every flow reports its workers available once its next pass has seen the rollout.
    let start = Instant::now();
    for name in FLOWS {
        loop {
            let f = flows.get(name).await.unwrap();
            if workers_reason(&f).is_some_and(|(s, _)| s == "True") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name}: workers not available after the rollout: {:?}",
                workers_reason(&f)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
