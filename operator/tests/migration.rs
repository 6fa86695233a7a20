//! Topology changes on a loaded flow: partitions 4 → 2 → 4, a changed retry delay and a
//! removed routing key, with 1,000 events queued and one worker running throughout. Every event
//! is delivered, nothing is left on a queue of the old topology, and no worker meets a 406.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use millrace_crds::IntegrationFlow;
use serde_json::{Value, json};

mod support;
use support::{apply, start_operator};

use millrace_testkit::{TestNamespace, TestVhost};

const EVENTS: usize = 1_000;
const PREFETCH: usize = 5;

/// The ERP: answers 503 to every POST until opened, then 200, and records the ids it took.
/// GETs (the connection probe) always get 200.
struct Erp {
    url: String,
    open: Arc<AtomicBool>,
    taken: Arc<Mutex<HashSet<String>>>,
}

fn erp() -> Erp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/erp", listener.local_addr().unwrap());
    let open = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(Mutex::new(HashSet::new()));
    let (o, t) = (open.clone(), taken.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (open, taken) = (o.clone(), t.clone());
            std::thread::spawn(move || serve(stream, &open, &taken));
        }
    });
    Erp { url, open, taken }
}

/// One keep-alive connection: request line, headers, a body of content-length bytes.
fn serve(stream: std::net::TcpStream, open: &AtomicBool, taken: &Mutex<HashSet<String>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let post = line.starts_with("POST");
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let accept = !post || open.load(Ordering::SeqCst);
        if post && accept {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(id) = find_id(&v) {
                taken.lock().unwrap().insert(id);
            }
        }
        let reply: &[u8] = if accept {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        } else {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        };
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

fn find_id(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| m.values().find_map(find_id)),
        _ => None,
    }
}

fn flow() -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": "orders"},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": ["order.#", "legacy.#"]}},
            "contract": {"name": "orders"},
            "routes": [{"name": "erp", "destination": {"connection": "erp", "http": {"method": "POST", "path": "/orders"}}}],
            "delivery": {
                "retry": {"maxAttempts": 100, "initialDelay": "1s", "maxDelay": "2s"},
                "ordering": {"key": ".id", "partitions": 4}
            },
            "workers": {"prefetch": PREFETCH},
            "deletionPolicy": "Delete"
        }
    })
}

async fn setup(client: &Client, ns: &str, broker: &TestVhost, erp: &Erp) {
    support::apply_broker(client, ns, broker).await;
    apply(client, ns, json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": "erp"},
        "spec": {"system": "ERP", "http": {"baseUrl": erp.url, "timeout": "5s"},
                 "probe": {"interval": "5s", "http": {"method": "GET", "path": "/health"}}}
    })).await;
    apply(client, ns, json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": "orders"},
        "spec": {"type": "com.acme.test.order.v1", "compatibility": "BackwardTransitive", "versions": [{
            "version": 1,
            "schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "examples": [{"id": "O-1"}]
        }]}
    })).await;
    apply(client, ns, flow()).await;
}

/// Polls `check` every half second until it gives `Some`; panics naming `what` after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ready messages on `queue`, or `None` when it does not exist.
async fn ready(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()?;
    let _ = ch.close(200, "done".into()).await;
    Some(q.message_count())
}

async fn publish(ch: &Channel, key: &str, body: String) -> Confirmation {
    ch.basic_publish(
        "mes.events".into(),
        key.into(),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        body.as_bytes(),
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap()
}

/// Changes the flow's spec and waits until the operator has reconciled that generation with
/// its topology in place (not refused, not still retiring queues).
async fn change(flows: &Api<IntegrationFlow>, patch: Value) {
    let generation = flows
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": patch })),
        )
        .await
        .unwrap()
        .metadata
        .generation;
    eventually(90, &format!("the topology of {patch}"), || async {
        let f = flows.get("orders").await.ok()?;
        let s = f.status?;
        let topology = s.conditions.iter().find(|c| c.type_ == "TopologyReady")?;
        assert_ne!(
            topology.reason, "MigrationRequired",
            "{patch} was refused: {}",
            topology.message
        );
        (s.observed_generation == generation
            && topology.status == "True"
            && s.retiring_queues.is_empty())
        .then_some(())
    })
    .await;
}

/// A test's own namespace, vhost and operator, the ERP stub, and the flow `orders` applied.
struct Scene {
    ns: TestNamespace,
    broker: TestVhost,
    client: Client,
    op: support::Operator,
    erp: Erp,
    flows: Api<IntegrationFlow>,
    conn: Connection,
}

impl Scene {
    async fn new(prefix: &str) -> Self {
        let ns = TestNamespace::create(prefix).await;
        let broker = TestVhost::create(prefix).await;
        let client = ns.client();
        let op = start_operator(&client, ns.name());
        let erp = erp();
        setup(&client, ns.name(), &broker, &erp).await;
        let flows = Api::namespaced(client.clone(), ns.name());
        let conn = Connection::connect(&broker.amqp_uri(), ConnectionProperties::default())
            .await
            .unwrap();
        Self {
            ns,
            broker,
            client,
            op,
            erp,
            flows,
            conn,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_flow_changes_topology_without_losing_or_stranding_a_message() {
    // Every field is bound: the vhost and the operator live as long as the test.
    let Scene {
        ns,
        broker: _broker,
        client: _client,
        op: _op,
        erp,
        flows,
        conn,
    } = Scene::new("op-migrate").await;
    let base = format!("millrace.{}.orders", ns.name());
    let p3 = format!("{base}.p3");
    eventually(90, "p3 to be declared", || ready(&conn, &p3)).await;

    // One worker, as a Deployment runs it (no topology declarations), for the whole test.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = support::Worker(
        std::process::Command::new(millrace_testkit::workspace_binary("millrace-worker"))
            .args([
                "--configmap",
                &format!("{}/orders-worker", ns.name()),
                "--listen",
                "127.0.0.1:0",
                "--declare-topology=false",
            ])
            .env("KUBECONFIG", millrace_testkit::kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("worker starts"),
    );

    // 1,000 events; the ERP refuses them all for now, so they queue in the partitions.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..EVENTS {
        let c = publish(&ch, "order.created", format!(r#"{{"id":"O-{i:04}"}}"#)).await;
        assert!(matches!(c, Confirmation::Ack(None)), "event {i}: {c:?}");
    }
    let partitions = |n: u32| (0..n).map(|i| format!("{base}.p{i}")).collect::<Vec<_>>();
    eventually(60, "the events to wait in the partitions", || async {
        let mut sum = 0;
        for q in partitions(4) {
            sum += ready(&conn, &q).await?;
        }
        // Each partition's consumer holds up to its prefetch, unacked.
        let main = ready(&conn, &base).await?;
        (sum as usize + 4 * PREFETCH >= EVENTS && main == 0).then_some(())
    })
    .await;

    // 4 → 2: p2 and p3 are unbound, emptied into p0 and p1, and deleted.
    change(&flows, json!({"delivery": {"ordering": {"partitions": 2}}})).await;
    for q in [format!("{base}.p2"), format!("{base}.p3")] {
        assert_eq!(ready(&conn, &q).await, None, "{q} is left behind");
    }
    let mut held = 0;
    for q in partitions(2) {
        held += ready(&conn, &q).await.unwrap();
    }
    assert!(
        held as usize + 2 * PREFETCH >= EVENTS,
        "only {held} events are on p0 and p1"
    );

    // 2 → 4: the partitions are back (and new events hash onto them).
    change(&flows, json!({"delivery": {"ordering": {"partitions": 4}}})).await;
    for q in partitions(4) {
        assert!(ready(&conn, &q).await.is_some(), "{q} is not declared");
    }

    // A changed retry delay: a new retry queue; the old one is deleted once empty.
    change(
        &flows,
        json!({"delivery": {"retry": {"maxAttempts": 100, "initialDelay": "1500ms", "maxDelay": "2s"}}}),
    )
    .await;
    assert_eq!(ready(&conn, &format!("{base}.delay.1000ms")).await, None);
    assert!(
        ready(&conn, &format!("{base}.delay.1500ms"))
            .await
            .is_some()
    );

    // A removed routing key: its binding goes, so the source's event finds no queue.
    change(
        &flows,
        json!({"source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": ["order.#"]}}}),
    )
    .await;
    let c = publish(&ch, "legacy.created", r#"{"id":"L-1"}"#.to_string()).await;
    assert!(
        matches!(c, Confirmation::Ack(Some(_))),
        "an event with the removed key was still routed: {c:?}"
    );

    // The ERP comes back: every event arrives, and nothing is left anywhere.
    erp.open.store(true, Ordering::SeqCst);
    eventually(180, "every event to reach the ERP", || async {
        let n = erp.taken.lock().unwrap().len();
        (n >= EVENTS).then_some(())
    })
    .await;
    let taken = erp.taken.lock().unwrap().clone();
    for i in 0..EVENTS {
        assert!(taken.contains(&format!("O-{i:04}")), "O-{i:04} was lost");
    }
    let mut queues = partitions(4);
    queues.extend([
        base.clone(),
        format!("{base}.dlq"),
        format!("{base}.delay.1500ms"),
        format!("{base}.delay.2000ms"),
    ]);
    for q in &queues {
        eventually(30, &format!("{q} to be empty"), || async {
            (ready(&conn, q).await == Some(0)).then_some(())
        })
        .await;
    }

    let _ = worker.0.kill();
    let _ = worker.0.wait();
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("consuming"),
        "the worker log holds no consumer: {text}"
    );
    // lapin names a 406 `PRECONDITION-FAILED: PRECONDITION_FAILED - ...` (a bare "406" would
    // match timestamps).
    assert!(
        !text.contains("PRECONDITION"),
        "the worker met a 406:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_broker_cannot_make_is_refused_and_the_old_topology_keeps_working() {
    let Scene {
        ns,
        broker: _broker,
        client,
        op: _op,
        erp: _erp,
        flows,
        conn,
    } = Scene::new("op-refuse").await;
    let configs: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns.name());
    let archive = format!("millrace.{}.orders.archive", ns.name());
    change(&flows, json!({"replay": {"retention": "1h"}})).await;
    let before = configs.get("orders-worker").await.unwrap().data;

    // A stream's retention cannot change in place: refused, with what to do, and nothing
    // applied.
    let generation = flows
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replay": {"retention": "2h"}}})),
        )
        .await
        .unwrap()
        .metadata
        .generation;
    let message = eventually(60, "MigrationRequired", || async {
        let s = flows.get("orders").await.ok()?.status?;
        let c = s.conditions.iter().find(|c| c.type_ == "TopologyReady")?;
        (s.observed_generation == generation && c.reason == "MigrationRequired")
            .then(|| c.message.clone())
    })
    .await;
    assert!(
        message.contains(&archive)
            && message.contains("x-max-age")
            && message.contains("spec.replay.retention"),
        "{message}"
    );
    assert_eq!(configs.get("orders-worker").await.unwrap().data, before);

    // Once the stream is gone, the change goes through.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(archive.as_str().into(), Default::default())
        .await
        .unwrap();
    eventually(60, "the change to be applied", || async {
        let s = flows.get("orders").await.ok()?.status?;
        let c = s.conditions.iter().find(|c| c.type_ == "TopologyReady")?;
        (c.status == "True").then_some(())
    })
    .await;
    assert_ne!(configs.get("orders-worker").await.unwrap().data, before);
    assert!(ready(&conn, &archive).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_change_waits_for_an_unreachable_broker() {
    let Scene {
        ns,
        broker,
        client,
        flows,
        conn,
        op: _op,
        erp: _erp,
    } = Scene::new("op-hold").await;
    let configs: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns.name());
    let p3 = format!("millrace.{}.orders.p3", ns.name());
    eventually(90, "p3 to be declared", || ready(&conn, &p3)).await;
    // The topology is declared before the worker objects are applied.
    let before = eventually(30, "the worker ConfigMap", || async {
        configs.get_opt("orders-worker").await.ok().flatten()
    })
    .await
    .data;

    // The broker goes away, and the partitions change: the change is held, since it could be
    // neither judged nor recorded.
    apply(
        &client,
        ns.name(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"},
        "stringData": {"uri": "amqp://guest:guest@127.0.0.1:1/%2f"}}),
    )
    .await;
    flows
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"delivery": {"ordering": {"partitions": 2}}}})),
        )
        .await
        .unwrap();
    eventually(60, "TopologyReady BrokerUnavailable", || async {
        let s = flows.get("orders").await.ok()?.status?;
        let c = s.conditions.iter().find(|c| c.type_ == "TopologyReady")?;
        (c.reason == "BrokerUnavailable").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(configs.get("orders-worker").await.unwrap().data, before);

    // The broker is back: p3 is retired, and the workers get the new config.
    support::apply_broker(&client, ns.name(), &broker).await;
    change(&flows, json!({"delivery": {"ordering": {"partitions": 2}}})).await;
    assert_eq!(ready(&conn, &p3).await, None);
    assert_ne!(configs.get("orders-worker").await.unwrap().data, before);
}
