//! Secrets and lookup ConfigMaps against the real control plane and RabbitMQ: a flow may name
//! only Secrets its connections name; a rotated Secret rolls the workers and reaches the
//! operator's own broker connection; lookups are watched by label, metadata only; and the
//! operator does all of it within the chart's RBAC, which gets Secrets by name only.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lapin::options::QueueDeleteOptions;
use millrace_crds::naming::FlowNames;
use millrace_crds::{IntegrationFlow, PartnerConnection};
use millrace_render::objects::SECRETS_HASH_ANNOTATION;
use millrace_testkit::{TestNamespace, TestVhost};
use serde_json::{Value, json};

mod support;
use support::{apply, start_operator, start_operator_with, test_settings};

fn contract() -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": "orders"},
        "spec": {"type": "com.acme.test.order.v1", "versions": [{
            "version": 1,
            "schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "examples": [{"id": "A-1"}]
        }]}
    })
}

fn secret(name: &str, key: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}})
}

/// An AMQP connection whose URI is in Secret `broker`.
fn bus(name: &str) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": name},
        "spec": {"system": "MES", "amqp": {"uriSecretRef": {"name": "broker", "key": "uri"}}, "probe": {"interval": "2s"}}
    })
}

/// An AMQP flow from `mes` to `erp-bus`, with `transform` as its transform.
fn amqp_flow(name: &str, transform: Value, suspend: bool) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": name},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": ["order.#"]}},
            "contract": {"name": "orders"},
            "transform": transform,
            "routes": [{"name": "erp", "destination": {"connection": "erp-bus", "amqp": {"exchange": "erp.in", "routingKey": "order"}}}],
            "deletionPolicy": "Delete",
            "suspend": suspend
        }
    })
}

/// An HTTP-ingress flow whose signing key is Secret `key_secret`, with its queues on `mes`.
fn ingress_flow(name: &str, key_secret: &str) -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": name},
        "spec": {
            "version": "1.0.0",
            "source": {"http": {"path": "/ingest/orders", "auth": {"type": "HmacSha256", "secretRef": {"name": key_secret, "key": "key"}}}},
            "broker": {"connection": "mes"},
            "contract": {"name": "orders"},
            "routes": [{"name": "erp", "destination": {"connection": "erp-bus", "amqp": {"exchange": "erp.in", "routingKey": "order"}}}],
            "deletionPolicy": "Delete"
        }
    })
}

async fn setup(client: &Client, ns: &str, uri: &str) {
    apply(client, ns, secret("broker", "uri", uri)).await;
    apply(client, ns, contract()).await;
    apply(client, ns, bus("mes")).await;
    apply(client, ns, bus("erp-bus")).await;
}

/// Polls `get` until `pred` holds; panics with what it saw last after `timeout`.
async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut get: impl AsyncFnMut() -> T,
    pred: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let seen = get().await;
        if pred(&seen) {
            return seen;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn condition(flow: &IntegrationFlow, type_: &str) -> Option<(String, String, String)> {
    flow.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is(flow: &IntegrationFlow, type_: &str, status: &str, reason: &str) -> bool {
    condition(flow, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

async fn flow_until(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&IntegrationFlow) -> bool,
) -> IntegrationFlow {
    let api: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns);
    wait_for(
        what,
        Duration::from_secs(60),
        async || api.get(name).await.expect("flow read"),
        pred,
    )
    .await
}

fn secrets_hash(d: &Option<Deployment>) -> Option<String> {
    d.as_ref()?
        .spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(SECRETS_HASH_ANNOTATION)
        .cloned()
}

/// RabbitMQ's management API as `guest`, for users and connections.
struct Management {
    http: reqwest::Client,
    base: &'static str,
}

impl Management {
    fn new(vhost: &TestVhost) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: vhost.management_url(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
        let response = request
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            response.status().is_success(),
            "{what}: RabbitMQ answered {}",
            response.status()
        );
        response
    }

    /// Sends with the admin's credentials, whatever the answer (`None` when nothing answered).
    async fn try_send(&self, request: reqwest::RequestBuilder) -> Option<reqwest::Response> {
        request.basic_auth("guest", Some("guest")).send().await.ok()
    }

    /// Creates user `name` with every permission on `vhost`.
    async fn create_user(&self, name: &str, password: &str, vhost: &str) {
        let url = format!("{}/api/users/{name}", self.base);
        self.send(
            self.http
                .put(url)
                .json(&json!({"password": password, "tags": ""})),
            &format!("creating user {name}"),
        )
        .await;
        let url = format!("{}/api/permissions/{vhost}/{name}", self.base);
        self.send(
            self.http
                .put(url)
                .json(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
            &format!("granting {name} vhost {vhost}"),
        )
        .await;
    }

    /// Deletes user `name` and closes every connection it still has.
    async fn delete_user(&self, name: &str) {
        let url = format!("{}/api/users/{name}", self.base);
        self.try_send(self.http.delete(url)).await;
        for c in self.connections().await {
            if c["user"] == name
                && let Some(id) = c["name"].as_str()
            {
                let url = format!("{}/api/connections/{}", self.base, urlencode(id));
                self.try_send(self.http.delete(url)).await;
            }
        }
    }

    async fn connections(&self) -> Vec<Value> {
        let url = format!("{}/api/connections", self.base);
        self.send(self.http.get(url), "listing connections")
            .await
            .json()
            .await
            .unwrap_or_default()
    }

    /// The users with an open connection to `vhost`.
    async fn users_connected_to(&self, vhost: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .connections()
            .await
            .into_iter()
            .filter(|c| c["vhost"] == vhost)
            .filter_map(|c| c["user"].as_str().map(str::to_string))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    async fn queue_exists(&self, vhost: &str, queue: &str) -> bool {
        let url = format!("{}/api/queues/{vhost}/{}", self.base, urlencode(queue));
        self.try_send(self.http.get(url))
            .await
            .is_some_and(|r| r.status().is_success())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_may_name_only_secrets_its_connections_name() {
    let ns = TestNamespace::create("secret-refs").await;
    let broker = TestVhost::create("secret-refs").await;
    let client = ns.client();
    let n = ns.name();
    let _op = start_operator(&client, n);
    setup(&client, n, &broker.amqp_uri()).await;
    // Any Secret of the namespace: here one the flow's author has no business with.
    apply(&client, n, secret("payroll-db", "key", "hunter2")).await;
    apply(&client, n, ingress_flow("orders-in", "payroll-db")).await;

    let flow = flow_until(
        &client,
        n,
        "orders-in",
        "Accepted=False SecretNotAllowed",
        |f| is(f, "Accepted", "False", "SecretNotAllowed"),
    )
    .await;
    let (_, _, message) = condition(&flow, "Accepted").unwrap();
    for needle in [
        "spec.source.http.auth.secretRef.name",
        "\"orders-in\"",
        "\"payroll-db\"",
        "PartnerConnection \"mes\"",
        "millrace.dev/ingress-secrets",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    assert!(
        deployments
            .get_opt("orders-in-worker")
            .await
            .unwrap()
            .is_none(),
        "a refused flow must get no workers, so no pod ever holds the Secret"
    );

    // The connection's owner lends a key: the flow is accepted and its workers get it.
    apply(&client, n, secret("orders-hmac", "key", "signing-key")).await;
    let conns: Api<PartnerConnection> = Api::namespaced(client.clone(), n);
    let lend =
        json!({"metadata": {"annotations": {"millrace.dev/ingress-secrets": "orders-hmac"}}});
    conns
        .patch("mes", &PatchParams::default(), &Patch::Merge(lend))
        .await
        .unwrap();
    apply(&client, n, ingress_flow("orders-in", "orders-hmac")).await;
    flow_until(&client, n, "orders-in", "Accepted=True", |f| {
        is(f, "Accepted", "True", "Valid")
    })
    .await;
    let deployment = wait_for(
        "the worker Deployment",
        Duration::from_secs(30),
        async || deployments.get_opt("orders-in-worker").await.unwrap(),
        Option::is_some,
    )
    .await;
    let text = serde_json::to_string(&deployment).unwrap();
    assert!(
        text.contains("\"orders-hmac\"") && !text.contains("payroll-db"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_rolls_the_workers_and_reaches_the_broker_connection() {
    let ns = TestNamespace::create("secret-rotation").await;
    let broker = TestVhost::create("secret-rotation").await;
    let client = ns.client();
    let n = ns.name();
    let vhost = broker.name();
    let rabbit = Management::new(&broker);
    let (first, second) = (format!("{vhost}-a"), format!("{vhost}-b"));
    rabbit.create_user(&first, "first-password", vhost).await;
    rabbit.create_user(&second, "second-password", vhost).await;
    let uri =
        |user: &str, password: &str| format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}");

    let _op = start_operator(&client, n);
    setup(&client, n, &uri(&first, "first-password")).await;
    apply(
        &client,
        n,
        amqp_flow("orders", json!({"jq": "{id: .id}"}), false),
    )
    .await;
    flow_until(&client, n, "orders", "TopologyReady=True", |f| {
        is(f, "TopologyReady", "True", "Declared")
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let before = wait_for(
        "the secrets-hash annotation",
        Duration::from_secs(30),
        async || secrets_hash(&deployments.get_opt("orders-worker").await.unwrap()),
        Option::is_some,
    )
    .await;

    // Rotate: the Secret names the second user, and the first one is gone.
    apply(
        &client,
        n,
        secret("broker", "uri", &uri(&second, "second-password")),
    )
    .await;
    let rotated_at = Instant::now();
    rabbit.delete_user(&first).await;

    // The workers roll within a drift interval (5 s here), with no Secret watch.
    let after = wait_for(
        "a new secrets-hash after the rotation",
        Duration::from_secs(30),
        async || secrets_hash(&deployments.get_opt("orders-worker").await.unwrap()),
        |h| h.is_some() && *h != before,
    )
    .await;
    assert!(after.is_some());

    // The operator's own connection follows: a queue deleted by hand is declared again, as the
    // second user, and the connection is probed Ready with the new credentials.
    let main = FlowNames::new(n, "orders").main_queue();
    let ch = broker.connection().create_channel().await.unwrap();
    ch.queue_delete(main.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("the main queue is deleted by hand");
    wait_for(
        "the main queue declared again",
        Duration::from_secs(30),
        async || rabbit.queue_exists(vhost, &main).await,
        |exists| *exists,
    )
    .await;
    flow_until(
        &client,
        n,
        "orders",
        "TopologyReady=True after rotation",
        |f| is(f, "TopologyReady", "True", "Declared"),
    )
    .await;
    // Probes run every 2 s and read the Secret each time: with the first user gone, a probe
    // with the old URI fails, so Ready after a few probes means the new one is in use.
    let settle = Duration::from_secs(7).saturating_sub(rotated_at.elapsed());
    tokio::time::sleep(settle).await;
    let conns: Api<PartnerConnection> = Api::namespaced(client.clone(), n);
    for name in ["mes", "erp-bus"] {
        let status = conns.get(name).await.unwrap().status;
        assert!(
            status.as_ref().is_some_and(|s| s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")),
            "connection {name} after the rotation: {status:#?}"
        );
    }
    // The operator holds its broker connections only while it declares and probes, so one
    // sample may fall between two of them.
    let users = wait_for(
        "the operator connected with the new user only",
        Duration::from_secs(30),
        async || rabbit.users_connected_to(vhost).await,
        |users| users.contains(&second) && !users.contains(&first),
    )
    .await;
    assert!(
        users.contains(&second) && !users.contains(&first),
        "connected to {vhost}: {users:?}"
    );
    rabbit.delete_user(&second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_watched_by_label_and_unlabelled_ones_are_named() {
    let ns = TestNamespace::create("lookup-watch").await;
    let broker = TestVhost::create("lookup-watch").await;
    let client = ns.client();
    let n = ns.name();
    // No periodic re-check during the test: only watches start a pass.
    let mut settings = test_settings();
    settings.drift_interval = Duration::from_secs(600);
    let _op = start_operator_with(&client, n, settings);
    setup(&client, n, &broker.amqp_uri()).await;
    let lookup = |name: &str, labelled: bool, value: &str| {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"1000": value}});
        if labelled {
            cm["metadata"]["labels"] = json!({"millrace.dev/lookup": "plant"});
        }
        cm
    };
    apply(&client, n, lookup("plants", true, "BE01")).await;
    apply(&client, n, lookup("sites", false, "Berlin")).await;
    // Suspended: no pods, so nothing but the watches starts a pass.
    let transform = json!({
        "jq": "{id: .id, plant: $plants[\"1000\"], site: $sites[\"1000\"]}",
        "lookups": [
            {"name": "plants", "configMapRef": {"name": "plants"}},
            {"name": "sites", "configMapRef": {"name": "sites"}}
        ]
    });
    apply(&client, n, amqp_flow("orders", transform, true)).await;
    let flow = flow_until(&client, n, "orders", "Accepted=True", |f| {
        is(f, "Accepted", "True", "Valid")
    })
    .await;
    let (_, _, message) = condition(&flow, "Accepted").unwrap();
    assert!(
        message.contains("\"sites\"")
            && message.contains("millrace.dev/lookup")
            && !message.contains("\"plants\""),
        "the unlabelled lookup is named: {message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    let config = async || {
        cms.get_opt("orders-worker")
            .await
            .unwrap()
            .and_then(|c| c.data)
            .map(|d| d.values().cloned().collect::<String>())
            .unwrap_or_default()
    };
    wait_for("the worker config", Duration::from_secs(30), config, |c| {
        c.contains("BE01") && c.contains("Berlin")
    })
    .await;
    // Let the passes that creating the children started settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // An unlabelled lookup is not watched: its edit waits for the re-check.
    let edit = |name: &str, value: &str| {
        let cms = cms.clone();
        let (name, value) = (name.to_string(), value.to_string());
        async move {
            let mut cm = cms.get(&name).await.unwrap();
            cm.data = Some([("1000".to_string(), value)].into());
            cms.replace(&name, &PostParams::default(), &cm)
                .await
                .unwrap();
        }
    };
    edit("sites", "Spandau").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let seen = config().await;
    assert!(
        seen.contains("Berlin") && !seen.contains("Spandau"),
        "an unlabelled ConfigMap started a pass: {seen}"
    );

    // A labelled one is: its edit arrives at once, and the pass reads the other lookup too.
    edit("plants", "BE02").await;
    wait_for(
        "the labelled lookup's edit",
        Duration::from_secs(15),
        config,
        |c| c.contains("BE02") && c.contains("Spandau"),
    )
    .await;
}

/// The ClusterRole rules the chart grants the operator, read from its template.
fn chart_operator_rules() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/millrace/templates/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the chart's RBAC template");
    let first = text.split("\n---\n").next().unwrap_or_default();
    // The ClusterRole's rules hold no template expressions; its metadata does.
    let plain: String = first
        .lines()
        .filter(|l| !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let role: Value = serde_yaml::from_str(&plain).expect("the ClusterRole is YAML");
    assert_eq!(role["kind"], "ClusterRole", "{role}");
    role["rules"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_needs_no_more_than_the_charts_role() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::DeleteParams;
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};

    let ns = TestNamespace::create("chart-role").await;
    let broker = TestVhost::create("chart-role").await;
    let admin = ns.client();
    let n = ns.name();
    let user = format!("millrace-operator-{n}");
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": user}, "rules": chart_operator_rules()
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The operator runs as that user: a list or a watch of Secrets would be refused.
    let kubeconfig = Kubeconfig::read_from(millrace_testkit::kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.clone());
    let as_operator = Client::try_from(config).unwrap();
    let op = start_operator_with(&as_operator, n, test_settings());

    setup(&admin, n, &broker.amqp_uri()).await;
    let transform = json!({
        "jq": "{id: .id, plant: $plants[\"1000\"]}",
        "lookups": [{"name": "plants", "configMapRef": {"name": "plants"}}]
    });
    apply(&admin, n, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plants", "labels": {"millrace.dev/lookup": "plant"}}, "data": {"1000": "BE01"}})).await;
    apply(&admin, n, amqp_flow("orders", transform, false)).await;
    flow_until(&admin, n, "orders", "TopologyReady=True", |f| {
        is(f, "TopologyReady", "True", "Declared")
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), n);
    wait_for(
        "the secrets-hash annotation",
        Duration::from_secs(30),
        async || secrets_hash(&deployments.get_opt("orders-worker").await.unwrap()),
        Option::is_some,
    )
    .await;
    // Refused reads and watches would count here (the watches retry quietly, with backoff).
    let refused = op
        .metrics
        .errors
        .get_or_create(&millrace_operator::metrics::ErrorLabels {
            kind: "IntegrationFlow".into(),
            category: "kubernetes".into(),
        })
        .get();
    assert_eq!(
        refused, 0,
        "the operator hit API errors under the chart's role"
    );
    let _ = bindings.delete(&user, &DeleteParams::default()).await;
    let _ = roles.delete(&user, &DeleteParams::default()).await;
}
