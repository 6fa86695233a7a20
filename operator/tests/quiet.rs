//! With 200 flows applied and nothing changing, the operator makes zero write requests.
//! Writes are counted by the operator's own `millrace_operator_api_writes_total`, which every
//! apply, status patch, delete and Event passes through.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::ListParams;
use millrace_crds::IntegrationFlow;
use millrace_operator::context::Settings;
use millrace_operator::metrics::Metrics;
use millrace_render::RenderSettings;
mod support;
use support::apply;

use millrace_testkit::{TestNamespace, TestVhost};
use serde_json::json;

const FLOWS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_steady_flows_cause_no_api_writes() {
    let ns = TestNamespace::create("op-quiet").await;
    let broker = TestVhost::create("op-quiet").await;
    let client = ns.client();
    let n = ns.name();
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        render: RenderSettings {
            worker_image: "millrace-worker:test".into(),
        },
        drift_interval: Duration::from_secs(20),
        sample_interval: Duration::from_secs(5),
        dlq_growth_per_minute: 30.0,
        probe_interval: Duration::from_secs(10),
        worker_rollout_max_concurrent: Default::default(),
    };
    let op = {
        let (client, ns, m) = (client.clone(), n.to_string(), metrics.clone());
        tokio::spawn(async move {
            let _ = millrace_operator::run::run_controllers(
                client,
                settings,
                Some(ns),
                m,
                Arc::new(AtomicBool::new(false)),
            )
            .await;
        })
    };

    apply(&client, n, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"}, "stringData": {"uri": broker.amqp_uri()}})).await;
    apply(&client, n, json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": "bus"},
        "spec": {"system": "MES", "amqp": {"uriSecretRef": {"name": "broker", "key": "uri"}}, "probe": {"interval": "10s"}}})).await;
    apply(&client, n, json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": "orders"},
        "spec": {"type": "com.acme.test.order.v1", "versions": [{"version": 1, "schema": {"type": "object"}}]}})).await;
    for i in 0..FLOWS {
        apply(&client, n, json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": format!("flow-{i:03}")},
            "spec": {"version": "1.0.0",
                     "source": {"amqp": {"connection": "bus", "exchange": "mes.events", "routingKeys": [format!("order.{i}")]}},
                     "contract": {"name": "orders"},
                     "routes": [{"name": "out", "destination": {"connection": "bus", "amqp": {"exchange": "out", "routingKey": "x"}}}],
                     "delivery": {"retry": {"maxAttempts": 1}},
                     "deletionPolicy": "Delete"}})).await;
    }

    // Wait until every flow has declared its topology and the write counter has been still for 15 s.
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), n);
    let start = Instant::now();
    loop {
        let list = flows.list(&ListParams::default()).await.unwrap();
        let declared = list
            .items
            .iter()
            .filter(|f| {
                f.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "TopologyReady" && c.status == "True")
                })
            })
            .count();
        if declared == FLOWS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {declared}/{FLOWS} flows declared their topology in 300 s"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut last = metrics.total_writes();
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(15) {
        assert!(
            start.elapsed() < Duration::from_secs(480),
            "the operator never settled: {} writes so far",
            metrics.total_writes()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = metrics.total_writes();
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }

    let before = metrics.total_writes();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = metrics.total_writes();
    let writes: Vec<&str> = Vec::new();
    assert_eq!(
        after - before,
        0,
        "{} API writes in 60 s with nothing changing{writes:?}:\n{}",
        after - before,
        metrics.encode()
    );
    op.abort();
}
