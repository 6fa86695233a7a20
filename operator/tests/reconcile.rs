//! The operator against the real control plane and RabbitMQ that `make env-up` starts.
//! Each test runs its own operator, scoped to a fresh namespace, on a fresh RabbitMQ vhost.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use millrace_crds::{EventContract, IntegrationFlow, PartnerConnection};
use millrace_operator::metrics::Metrics;
mod support;
use support::{Operator, apply, start_operator, start_worker};

use millrace_testkit::{TestNamespace, TestVhost};
use serde_json::{Value, json};

fn contract(name: &str) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": name},
        "spec": {"type": "com.acme.test.order.v1", "compatibility": "BackwardTransitive", "versions": [{
            "version": 1,
            "schema": {"type": "object", "additionalProperties": false, "required": ["id", "qty"],
                       "properties": {"id": {"type": "string"}, "qty": {"type": "number"}}},
            "examples": [{"id": "A-1", "qty": 3}]
        }]}
    })
}

fn bus(name: &str) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": name},
        "spec": {"system": "MES", "amqp": {"uriSecretRef": {"name": "broker", "key": "uri"}}, "probe": {"interval": "5s"}}
    })
}

fn flow(name: &str, contract: &str, jq: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": name},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": ["order.#"]}},
            "contract": {"name": contract},
            "transform": {"jq": jq},
            "routes": [
                {"name": "erp", "destination": {"connection": "erp-bus", "amqp": {"exchange": "erp.in", "routingKey": "order"}}}
            ],
            "delivery": {"retry": {"maxAttempts": 3, "initialDelay": "1s", "maxDelay": "4s"}},
            "replay": {"retention": "1h"},
            "deletionPolicy": policy
        }
    })
}

/// A fresh namespace and vhost, a broker Secret and two AMQP connections, and an operator.
struct Fixture {
    ns: TestNamespace,
    broker: TestVhost,
    client: Client,
    op: Operator,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        let ns = TestNamespace::create(prefix).await;
        let broker = TestVhost::create(prefix).await;
        let client = ns.client();
        let op = start_operator(&client, ns.name());
        setup(&client, ns.name(), &broker).await;
        Self {
            ns,
            broker,
            client,
            op,
        }
    }
}

async fn setup(client: &Client, ns: &str, broker: &TestVhost) {
    apply(client, ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"}, "stringData": {"uri": broker.amqp_uri()}})).await;
    apply(client, ns, bus("mes")).await;
    apply(client, ns, bus("erp-bus")).await;
}

/// Polls object `name` until `pred` holds; panics with its last status after `timeout`.
async fn wait_for<K>(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let obj = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if pred(&obj) {
            return obj;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what} on {name}; last seen: {obj:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_flow(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&IntegrationFlow) -> bool,
) -> IntegrationFlow {
    wait_for(client, ns, name, timeout, what, pred).await
}

/// Sets the pause annotation on flow `name` and waits until it reports ReconciliationPaused.
async fn pause(client: &Client, ns: &str, name: &str) {
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns);
    let paused = json!({"metadata": {"annotations": {"millrace.dev/paused": "true"}}});
    flows
        .patch(name, &PatchParams::default(), &Patch::Merge(paused))
        .await
        .unwrap();
    wait_flow(
        client,
        ns,
        name,
        Duration::from_secs(20),
        "ReconciliationPaused",
        |f| is(f, "ReconciliationPaused", "True", None),
    )
    .await;
}

/// The message of condition `type_` of a flow.
fn message(flow: IntegrationFlow, type_: &str) -> String {
    flow.status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
        .map(|c| c.message)
        .unwrap_or_default()
}

/// The flow's condition of type `type_`.
fn condition_of(
    flow: &IntegrationFlow,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    flow.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn condition(flow: &IntegrationFlow, type_: &str) -> Option<(String, String)> {
    condition_of(flow, type_).map(|c| (c.status, c.reason))
}

fn is(flow: &IntegrationFlow, type_: &str, status: &str, reason: Option<&str>) -> bool {
    condition(flow, type_).is_some_and(|(s, r)| s == status && reason.is_none_or(|want| want == r))
}

/// The worker container's args of a Deployment.
fn worker_args(d: &Deployment) -> Option<Vec<String>> {
    d.spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .args
        .clone()
}

/// Waits until flow `name` no longer exists; panics with `what` after `secs`.
async fn wait_gone(flows: &Api<IntegrationFlow>, name: &str, secs: u64, what: &str) {
    let start = Instant::now();
    while flows.get_opt(name).await.unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("events list");
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| e.reason.unwrap_or_default())
        .collect()
}

fn reconciles(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("millrace_operator_reconciles_total{kind=\"IntegrationFlow\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_is_rendered_declared_and_ready_only_once_a_worker_consumes() {
    let Fixture {
        ns,
        broker,
        client,
        op: _op,
    } = Fixture::new("op-lifecycle").await;
    apply(&client, ns.name(), contract("orders")).await;
    apply(
        &client,
        ns.name(),
        flow("orders-to-erp", "orders", "{id: .id, qty: .qty}", "Retain"),
    )
    .await;

    let f = wait_flow(
        &client,
        ns.name(),
        "orders-to-erp",
        Duration::from_secs(60),
        "TopologyReady",
        |f| is(f, "TopologyReady", "True", None),
    )
    .await;
    assert!(
        !is(&f, "Ready", "True", None),
        "a flow must not be Ready before anything consumes its queue"
    );
    for name in ["orders-to-erp-worker"] {
        Api::<ConfigMap>::namespaced(client.clone(), ns.name())
            .get(name)
            .await
            .expect("rendered ConfigMap");
        Api::<Deployment>::namespaced(client.clone(), ns.name())
            .get(name)
            .await
            .expect("worker Deployment");
        Api::<Service>::namespaced(client.clone(), ns.name())
            .get(name)
            .await
            .expect("metrics Service");
    }
    let conn = Connection::connect(&broker.amqp_uri(), ConnectionProperties::default())
        .await
        .expect("broker");
    let ch = conn.create_channel().await.unwrap();
    let base = format!("millrace.{}.orders-to-erp", ns.name());
    for q in [
        base.clone(),
        format!("{base}.dlq"),
        format!("{base}.archive"),
        format!("{base}.delay.1000ms"),
    ] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {q} was not declared: {e}"));
    }
    let f = wait_flow(
        &client,
        ns.name(),
        "orders-to-erp",
        Duration::from_secs(30),
        "Healthy=False NoConsumers",
        |f| is(f, "Healthy", "False", Some("NoConsumers")),
    )
    .await;
    assert!(is(&f, "Ready", "False", None));

    // A worker started from the rendered ConfigMap consumes; with its Deployment available, the
    // flow is Ready.
    let worker = start_worker(ns.name(), "orders-to-erp-worker");
    let ready = wait_flow(
        &client,
        ns.name(),
        "orders-to-erp",
        Duration::from_secs(60),
        "Ready=True",
        |f| is(f, "Ready", "True", None),
    )
    .await;

    // kubectl shows the truth in its columns.
    let kubeconfig = millrace_testkit::kubeconfig_path();
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "get",
            "integrationflows",
            "-n",
            ns.name(),
        ])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "READY", "REASON", "VERSION", "RELEASE", "CONTRACT", "BACKLOG", "DLQ", "AGE"
        ],
        "{text}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let queue = ready.status.as_ref().unwrap().queue.clone().unwrap();
    let (backlog, dlq) = (queue.backlog.to_string(), queue.dead_letters.to_string());
    let release = ready.status.as_ref().unwrap().release.clone().unwrap();
    assert_eq!(
        row[..8],
        [
            "orders-to-erp",
            "True",
            "Ready",
            "1.0.0",
            release.reference.as_str(),
            "orders@v1",
            backlog.as_str(),
            dlq.as_str()
        ],
        "{text}"
    );

    // A new transform is a new revision, rolled out by a new config hash.
    let before = wait_flow(
        &client,
        ns.name(),
        "orders-to-erp",
        Duration::from_secs(5),
        "status",
        |_| true,
    )
    .await;
    let old_rev = before.status.as_ref().unwrap().revision.clone().unwrap();
    apply(
        &client,
        ns.name(),
        flow(
            "orders-to-erp",
            "orders",
            "{id: .id, qty: (.qty * 2)}",
            "Retain",
        ),
    )
    .await;
    let after = wait_flow(
        &client,
        ns.name(),
        "orders-to-erp",
        Duration::from_secs(30),
        "a new revision",
        |f| {
            f.status
                .as_ref()
                .and_then(|s| s.revision.clone())
                .is_some_and(|r| r != old_rev)
        },
    )
    .await;
    let status = after.status.unwrap();
    assert_eq!(
        status.history.len(),
        before.status.unwrap().history.len() + 1
    );
    let dep = Api::<Deployment>::namespaced(client.clone(), ns.name())
        .get("orders-to-erp-worker")
        .await
        .unwrap();
    let hash = dep.spec.template.metadata.unwrap().annotations.unwrap()["millrace.dev/config-hash"]
        .clone();
    assert_eq!(Some(hash), status.revision);
    drop(conn);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_contract_then_created_resolves_without_restart() {
    let Fixture {
        ns,
        broker,
        client,
        op: _op,
    } = Fixture::new("op-missing").await;
    apply(
        &client,
        ns.name(),
        flow("late", "late-contract", ".", "Delete"),
    )
    .await;
    let f = wait_flow(
        &client,
        ns.name(),
        "late",
        Duration::from_secs(30),
        "ContractNotFound",
        |f| is(f, "ContractsResolved", "False", Some("ContractNotFound")),
    )
    .await;
    let msg = message(f, "ContractsResolved");
    assert!(msg.contains("late-contract"), "{msg}");
    apply(&client, ns.name(), contract("late-contract")).await;
    wait_flow(
        &client,
        ns.name(),
        "late",
        Duration::from_secs(30),
        "ContractsResolved",
        |f| is(f, "ContractsResolved", "True", None),
    )
    .await;
    wait_flow(
        &client,
        ns.name(),
        "late",
        Duration::from_secs(30),
        "TopologyReady",
        |f| is(f, "TopologyReady", "True", None),
    )
    .await;

    // A queue deleted by hand is declared again within one drift interval (5 s here).
    let conn = Connection::connect(&broker.amqp_uri(), ConnectionProperties::default())
        .await
        .expect("broker");
    let queue = format!("millrace.{}.late.dlq", ns.name());
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("delete the DLQ by hand");
    let start = Instant::now();
    loop {
        let ch = conn.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if ch
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{queue} was not declared again within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The pause annotation stops reconciliation and says so; removing it resumes.
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns.name());
    let annotate = |value: serde_json::Value| json!({"metadata": {"annotations": {"millrace.dev/paused": value}}});
    pause(&client, ns.name(), "late").await;
    flows
        .patch(
            "late",
            &PatchParams::default(),
            &Patch::Merge(annotate(serde_json::Value::Null)),
        )
        .await
        .unwrap();
    wait_flow(
        &client,
        ns.name(),
        "late",
        Duration::from_secs(20),
        "no ReconciliationPaused",
        |f| condition(f, "ReconciliationPaused").is_none(),
    )
    .await;

    // A paused flow can still be deleted: deletion is a person's explicit request, and the
    // finalizer must not hold the flow for ever.
    pause(&client, ns.name(), "late").await;
    flows
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&flows, "late", 30, "a paused flow stayed Terminating").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jq_and_bad_references_give_conditions_events_and_no_hot_loop() {
    // The vhost must outlive the test, so it is bound, not dropped.
    let Fixture {
        ns,
        broker: _broker,
        client,
        op,
    } = Fixture::new("op-invalid").await;
    apply(&client, ns.name(), contract("orders")).await;
    apply(
        &client,
        ns.name(),
        flow("bad-jq", "orders", "{id: .id", "Delete"),
    )
    .await;
    // An unreachable connection: a broker URI nobody listens on.
    apply(&client, ns.name(), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nowhere"}, "stringData": {"uri": "amqp://guest:guest@127.0.0.1:1/%2f"}})).await;
    apply(&client, ns.name(), json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": "nowhere"},
        "spec": {"system": "WMS", "amqp": {"uriSecretRef": {"name": "nowhere", "key": "uri"}}, "probe": {"interval": "5s"}}})).await;

    let f = wait_flow(
        &client,
        ns.name(),
        "bad-jq",
        Duration::from_secs(30),
        "Accepted=False InvalidJq",
        |f| is(f, "Accepted", "False", Some("InvalidJq")),
    )
    .await;
    let msg = message(f, "Accepted");
    assert!(
        msg.starts_with("spec.transform.jq"),
        "the message names the field: {msg}"
    );

    wait_for::<PartnerConnection>(
        &client,
        ns.name(),
        "nowhere",
        Duration::from_secs(30),
        "Reachable=False",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Reachable" && c.status == "False" && c.reason == "Unreachable"
                })
            })
        },
    )
    .await;

    // An incompatible new contract version is rejected in status; the contract keeps serving v1.
    let mut v2 = contract("orders");
    v2["spec"]["versions"].as_array_mut().unwrap().push(json!({"version": 2,
        "schema": {"type": "object", "additionalProperties": false, "required": ["id", "qty", "plant"],
                   "properties": {"id": {"type": "string"}, "qty": {"type": "number"}, "plant": {"type": "string"}}}}));
    apply(&client, ns.name(), v2).await;
    let c = wait_for::<EventContract>(
        &client,
        ns.name(),
        "orders",
        Duration::from_secs(30),
        "v2 rejected",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Compatible"
                        && c.status == "False"
                        && c.reason == "IncompatibleVersion"
                })
            })
        },
    )
    .await;
    assert_eq!(
        c.status.unwrap().latest_accepted_version,
        Some(1),
        "the contract keeps serving v1"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    for (object, reason) in [
        ("bad-jq", "InvalidJq"),
        ("nowhere", "Unreachable"),
        ("orders", "IncompatibleVersion"),
    ] {
        let reasons = events_for(&client, ns.name(), object).await;
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event for {object}: {reasons:?}"
        );
    }

    // No hot loop: with nothing changing, the flow is reconciled only on its drift timer.
    let before = reconciles(&op.metrics);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = reconciles(&op.metrics) - before;
    assert!(
        during <= 12,
        "{during} reconciles of one flow in 30 s: a hot loop"
    );
}

/// Starts the worker binary with the container args and Secret env of the flow's live
/// Deployment, as the kubelet would, with the config file and the listen port made local.
async fn run_as_deployment(client: &Client, ns: &str, flow: &str) -> support::Worker {
    let name = format!("{flow}-worker");
    let dep = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(&name)
        .await
        .expect("the worker Deployment");
    let container = dep.spec.template.spec.unwrap().containers[0].clone();
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&name)
        .await
        .expect("the worker ConfigMap");
    let (key, config) = cm.data.unwrap().into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let config_path = dir.join(&key);
    std::fs::write(&config_path, config).unwrap();
    let mut args = container.args.unwrap_or_default();
    for (i, a) in args.clone().iter().enumerate() {
        if a.starts_with("/etc/millrace/") {
            args[i] = config_path.display().to_string();
        }
        if a.starts_with("0.0.0.0:") {
            args[i] = "127.0.0.1:0".into();
        }
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let mut cmd = std::process::Command::new(millrace_testkit::workspace_binary("millrace-worker"));
    cmd.args(&args)
        .env("RUST_LOG", "warn")
        .env_remove("KUBECONFIG");
    for e in container.env.unwrap_or_default() {
        if let Some(r) = e.value_from.and_then(|v| v.secret_key_ref) {
            let s = secrets.get(&r.name).await.expect("the referenced Secret");
            let value = s
                .data
                .and_then(|d| d.get(&r.key).cloned())
                .map(|b| String::from_utf8(b.0).unwrap())
                .or_else(|| s.string_data.and_then(|d| d.get(&r.key).cloned()))
                .expect("the Secret key");
            cmd.env(e.name, value);
        } else if let Some(v) = e.value {
            cmd.env(e.name, v);
        }
    }
    support::Worker(cmd.spawn().expect("worker starts"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_honours_the_deletion_policy() {
    let Fixture {
        ns,
        broker,
        client,
        op,
    } = Fixture::new("op-delete").await;
    apply(&client, ns.name(), contract("orders")).await;
    apply(&client, ns.name(), flow("kept", "orders", ".", "Retain")).await;
    apply(&client, ns.name(), flow("removed", "orders", ".", "Delete")).await;
    for name in ["kept", "removed"] {
        wait_flow(
            &client,
            ns.name(),
            name,
            Duration::from_secs(60),
            "TopologyReady",
            |f| is(f, "TopologyReady", "True", None),
        )
        .await;
    }
    let conn = Connection::connect(&broker.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for name in ["kept", "removed"] {
        let q = format!("millrace.{}.{name}", ns.name());
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            br#"{"id":"A","qty":1}"#,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let series = |name: &str| {
        format!(
            "millrace_operator_flow_ready{{namespace=\"{}\",flow=\"{name}\"}}",
            ns.name()
        )
    };
    let text = op.metrics.encode();
    assert!(text.contains(&series("kept")), "{text}");
    // objects_managed is sampled from the controllers' caches every 10 s.
    let start = Instant::now();
    while !op
        .metrics
        .encode()
        .contains("millrace_operator_objects_managed{kind=\"IntegrationFlow\"} 2")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "objects_managed: {}",
            op.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A worker runs `removed` exactly as its Deployment says: while it runs, the deletion must
    // stay a deletion (a worker that declares topology would bring the queues back).
    let _worker = run_as_deployment(&client, ns.name(), "removed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns.name());
    for name in ["kept", "removed"] {
        flows.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let start = Instant::now();
    while flows
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|f| f.name_any() == "kept" || f.name_any() == "removed")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "flows were not deleted (finalizer stuck?)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let kept = ch
        .queue_declare(
            format!("millrace.{}.kept", ns.name()).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .expect("Retain keeps the queue");
    assert_eq!(kept.message_count(), 1, "Retain keeps the messages");
    // Retain keeps the queue but unbinds it: what the partner publishes now goes nowhere.
    ch.basic_publish(
        "mes.events".into(),
        "order.created".into(),
        BasicPublishOptions::default(),
        br#"{"id":"B","qty":1}"#,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    // Give the worker of `removed`, still running, time to reconnect and redeclare if it would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept = ch
        .queue_declare(
            format!("millrace.{}.kept", ns.name()).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .expect("Retain keeps the queue");
    assert_eq!(
        kept.message_count(),
        1,
        "nothing new reaches a retained queue"
    );
    let ch2 = conn.create_channel().await.unwrap();
    let gone = ch2
        .queue_declare(
            format!("millrace.{}.removed", ns.name()).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "Delete removes the queue");
    // A deleted flow leaves no per-flow series behind, whatever its policy.
    let text = op.metrics.encode();
    for name in ["kept", "removed"] {
        assert!(
            !text.contains(&series(name)),
            "{name} still has a flow_ready series:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_flow_counts_its_main_queue_in_the_backlog() {
    let Fixture {
        ns,
        broker,
        client,
        op: _op,
    } = Fixture::new("op-ordered").await;
    apply(&client, ns.name(), contract("orders")).await;
    let mut ordered = flow("ordered", "orders", ".", "Delete");
    ordered["spec"]["delivery"]["ordering"] = json!({"key": ".id", "partitions": 2});
    apply(&client, ns.name(), ordered).await;
    wait_flow(
        &client,
        ns.name(),
        "ordered",
        Duration::from_secs(60),
        "TopologyReady",
        |f| is(f, "TopologyReady", "True", None),
    )
    .await;
    // No worker runs, so three events published to the main queue wait there.
    let conn = Connection::connect(&broker.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let main = format!("millrace.{}.ordered", ns.name());
    for i in 0..3 {
        ch.basic_publish(
            "".into(),
            main.as_str().into(),
            BasicPublishOptions::default(),
            format!(r#"{{"id":"A-{i}","qty":1}}"#).as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    wait_flow(
        &client,
        ns.name(),
        "ordered",
        Duration::from_secs(60),
        "a backlog of 3",
        |f| {
            f.status
                .as_ref()
                .and_then(|s| s.queue.as_ref())
                .is_some_and(|q| q.backlog == 3)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_status_or_events() {
    const PLANTED: &str = "planted-pw-4711";
    let Fixture {
        ns,
        broker: _broker,
        client,
        op: _op,
    } = Fixture::new("op-leak").await;
    let n = ns.name();
    for (name, uri) in [
        // Nothing listens on port 1; the second cannot even be parsed.
        (
            "leaky",
            format!("amqp://millrace:{PLANTED}@127.0.0.1:1/%2f"),
        ),
        (
            "broken",
            format!("amqp://millrace:{PLANTED}@@127.0.0.1:notaport/%2f"),
        ),
    ] {
        apply(&client, n, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"uri": uri}})).await;
        apply(&client, n, json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": name},
            "spec": {"system": "ERP", "amqp": {"uriSecretRef": {"name": name, "key": "uri"}}, "probe": {"interval": "5s"}}})).await;
    }
    // An HTTP API that does not answer, with Basic credentials holding the password.
    apply(&client, n, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "erp-api"}, "stringData": {"credentials": format!("millrace:{PLANTED}")}})).await;
    apply(&client, n, json!({"apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": "leaky-api"},
        "spec": {"system": "ERP", "http": {"baseUrl": "http://127.0.0.1:1/erp", "auth": {"type": "Basic", "secretRef": {"name": "erp-api", "key": "credentials"}}},
                 "probe": {"interval": "5s", "http": {"method": "GET", "path": "/health"}}}})).await;
    apply(&client, n, contract("orders")).await;
    let mut leaky_flow = flow("leaky-flow", "orders", ".", "Delete");
    leaky_flow["spec"]["broker"] = json!({"connection": "broken"});
    apply(&client, n, leaky_flow).await;
    let conns: Api<PartnerConnection> = Api::namespaced(client.clone(), n);
    for name in ["leaky", "broken", "leaky-api"] {
        wait_for::<PartnerConnection>(
            &client,
            n,
            name,
            Duration::from_secs(60),
            "Ready=False",
            |c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "False")
                })
            },
        )
        .await;
    }
    // Let a few probes and reconciles pass.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut seen =
        serde_json::to_string(&conns.list(&ListParams::default()).await.unwrap().items).unwrap();
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), n);
    seen.push_str(
        &serde_json::to_string(&flows.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    let events: Api<Event> = Api::namespaced(client.clone(), n);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        !events.is_empty(),
        "the failing connections published Events"
    );
    seen.push_str(&serde_json::to_string(&events).unwrap());
    // The Secrets themselves hold it, of course; nothing else may.
    assert!(
        seen.contains("Unreachable") || seen.contains("connect"),
        "{seen}"
    );
    assert!(
        !seen.contains(PLANTED),
        "a secret leaked into status or Events:\n{seen}"
    );
    // Nor the operator's logs, at debug level.
    let logs = String::from_utf8_lossy(&support::LOGS.lock().unwrap()).to_string();
    assert!(
        logs.contains("controllers started"),
        "the operator's logs were not captured"
    );
    assert!(
        !logs.contains(PLANTED),
        "a secret leaked into the operator's logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_of_children_are_repaired_by_content() {
    let Fixture {
        ns,
        broker: _broker,
        client,
        op: _op,
    } = Fixture::new("op-drift").await;
    apply(&client, ns.name(), contract("orders")).await;
    apply(&client, ns.name(), flow("drifty", "orders", ".", "Delete")).await;
    wait_flow(
        &client,
        ns.name(),
        "drifty",
        Duration::from_secs(60),
        "TopologyReady",
        |f| is(f, "TopologyReady", "True", None),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let name = "drifty-worker";
    let wanted_cm = cms.get(name).await.unwrap().data;
    let wanted_args = worker_args(&deps.get(name).await.unwrap());
    // Edits that keep the applied-hash annotation, as `kubectl edit` would.
    let key = wanted_cm.as_ref().unwrap().keys().next().unwrap().clone();
    cms.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {key.clone(): "{}"}})),
    )
    .await
    .unwrap();
    deps.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "worker", "args": ["--config", "/tmp/elsewhere.json"]}]}}}})),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let cm = cms.get(name).await.unwrap().data;
        let args = worker_args(&deps.get(name).await.unwrap());
        if cm == wanted_cm && args == wanted_args {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "hand edits not repaired within 30 s (drift interval 5 s): data {cm:?}, args {args:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_child_is_reported_in_status_and_retried() {
    let Fixture {
        ns,
        broker: _broker,
        client,
        op: _op,
    } = Fixture::new("op-quota").await;
    // No Deployment may be created in this namespace.
    apply(
        &client,
        ns.name(),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-deployments"},
               "spec": {"hard": {"count/deployments.apps": "0"}}}),
    )
    .await;
    apply(&client, ns.name(), contract("orders")).await;
    apply(&client, ns.name(), flow("quota", "orders", ".", "Delete")).await;
    let f = wait_flow(
        &client,
        ns.name(),
        "quota",
        Duration::from_secs(60),
        "WorkersAvailable and Ready ApplyFailed",
        // Ready names the first failing condition: wait out a connection probe that a loaded
        // machine makes fail once.
        |f| {
            is(f, "WorkersAvailable", "False", Some("ApplyFailed"))
                && is(f, "Ready", "False", Some("ApplyFailed"))
        },
    )
    .await;
    let c = condition_of(&f, "Ready").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(c.message.contains("quota"), "{}", c.message);
    // Once the quota is gone, the retry (with backoff) creates the Deployment.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(client.clone(), ns.name());
    quotas
        .delete("no-deployments", &DeleteParams::default())
        .await
        .unwrap();
    wait_flow(
        &client,
        ns.name(),
        "quota",
        Duration::from_secs(60),
        "WorkersAvailable past ApplyFailed",
        |f| !is(f, "WorkersAvailable", "False", Some("ApplyFailed")),
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    assert!(deps.get_opt("quota-worker").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_workers_name_what_the_pods_show() {
    let Fixture {
        ns,
        broker: _broker,
        client,
        op: _op,
    } = Fixture::new("op-pods").await;
    apply(&client, ns.name(), contract("orders")).await;
    // More CPU than any node has: the worker pod stays Pending, Unschedulable.
    let mut f = flow("greedy", "orders", ".", "Delete");
    f["spec"]["workers"] = json!({"replicas": 1, "resources": {"requests": {"cpu": "1000"}}});
    apply(&client, ns.name(), f).await;
    let f = wait_flow(
        &client,
        ns.name(),
        "greedy",
        Duration::from_secs(60),
        "WorkersAvailable and Ready naming the pod problem",
        |f| {
            // Until the connection's first probe, Ready names the connection instead.
            let names_pod = condition_of(f, "Ready")
                .is_some_and(|c| c.status == "False" && c.message.contains("pod greedy-worker-"));
            names_pod
                && f.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "WorkersAvailable"
                            && c.status == "False"
                            && c.message.contains("Unschedulable")
                    })
                })
        },
    )
    .await;
    let ready = condition_of(&f, "Ready").unwrap();
    assert!(ready.message.contains("Unschedulable"), "{}", ready.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_deletion_is_reported_and_can_be_forced() {
    let Fixture {
        ns,
        broker: _broker,
        client,
        op: _op,
    } = Fixture::new("op-blocked").await;
    apply(&client, ns.name(), contract("orders")).await;
    // The flow's broker cannot be reached: nothing listens on port 1.
    apply(&client, ns.name(), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dead"}, "stringData": {"uri": "amqp://guest:guest@127.0.0.1:1/%2f"}})).await;
    let mut dead = bus("dead-bus");
    dead["spec"]["amqp"]["uriSecretRef"]["name"] = "dead".into();
    apply(&client, ns.name(), dead).await;
    let mut f = flow("stuck", "orders", ".", "Delete");
    f["spec"]["source"]["amqp"]["connection"] = "dead-bus".into();
    apply(&client, ns.name(), f).await;
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns.name());
    let start = Instant::now();
    while flows
        .get("stuck")
        .await
        .unwrap()
        .metadata
        .finalizers
        .is_none_or(|f| f.is_empty())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no finalizer added"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    flows
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = wait_flow(
        &client,
        ns.name(),
        "stuck",
        Duration::from_secs(60),
        "DeletionBlocked",
        |f| is(f, "DeletionBlocked", "True", Some("BrokerUnavailable")),
    )
    .await;
    let c = condition_of(&blocked, "DeletionBlocked").unwrap();
    assert!(
        c.message.contains("millrace.dev/force-delete"),
        "{}",
        c.message
    );
    assert!(
        !c.message.contains("guest:guest"),
        "no credentials: {}",
        c.message
    );
    assert!(
        events_for(&client, ns.name(), "stuck")
            .await
            .contains(&"DeletionBlocked".to_string())
    );
    flows
        .patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"millrace.dev/force-delete": "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_gone(
        &flows,
        "stuck",
        60,
        "force-delete did not finish the deletion",
    )
    .await;
}
