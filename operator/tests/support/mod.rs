//! Shared by the operator's integration tests. Each test binary uses a part of it.
#![allow(dead_code)]

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::{Api, Client};
use millrace_operator::context::Settings;
use millrace_operator::metrics::Metrics;
use millrace_render::RenderSettings;
use serde_json::Value;

/// Applies one manifest (any namespaced kind) server-side, as a person would with kubectl.
pub async fn apply(client: &Client, ns: &str, doc: Value) {
    let kind = doc["kind"]
        .as_str()
        .expect("manifest has a kind")
        .to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .expect("manifest has a name")
        .to_string();
    let (group, version) = match doc["apiVersion"]
        .as_str()
        .expect("manifest has an apiVersion")
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    api.patch(
        &name,
        &PatchParams::apply("millrace-tests").force(),
        &Patch::Apply(&doc),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {kind}/{name}: {e}"));
}

/// The Secret `broker` with the URI of `vhost`, and the AMQP PartnerConnection `mes` to it.
pub async fn apply_broker(client: &Client, ns: &str, vhost: &millrace_testkit::TestVhost) {
    apply(client, ns, serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"}, "stringData": {"uri": vhost.amqp_uri()}})).await;
    apply(client, ns, serde_json::json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": "mes"},
        "spec": {"system": "MES", "amqp": {"uriSecretRef": {"name": "broker", "key": "uri"}}, "probe": {"interval": "5s"}}
    })).await;
}

/// Every non-empty YAML document of every manifest under `dir`, sorted by path.
pub fn documents_under(dir: &std::path::Path) -> Vec<Value> {
    use millrace_testkit::manifests::{documents, yaml_files};
    yaml_files(dir).iter().flat_map(|f| documents(f)).collect()
}

/// A running operator for one namespace, with its metrics.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start_operator(client: &Client, ns: &str) -> Operator {
    start_operator_with(client, ns, test_settings())
}

/// Everything the operators of this test binary logged, for tests that search it.
pub static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Writes a log line to [`LOGS`] and to the test's output.
struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(line);
        print!("{}", String::from_utf8_lossy(line));
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The operator's debug logs, kept in [`LOGS`] and shown with a failing test.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Captured)
        .with_ansi(false)
        .with_env_filter("millrace_operator=debug,kube=info")
        .try_init();
}

/// A `millrace-worker --configmap` process, killed when dropped.
pub struct Worker(pub std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the worker binary built next to this test (`make test` builds it first).
pub fn start_worker(ns: &str, configmap: &str) -> Worker {
    let bin = millrace_testkit::workspace_binary("millrace-worker");
    let child = std::process::Command::new(&bin)
        .args([
            "--configmap",
            &format!("{ns}/{configmap}"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", millrace_testkit::kubeconfig_path())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("worker starts");
    Worker(child)
}

/// The settings `start_operator` runs with, for tests that change one of them.
pub fn test_settings() -> Settings {
    Settings {
        render: RenderSettings {
            worker_image: "millrace-worker:test".into(),
        },
        drift_interval: Duration::from_secs(5),
        sample_interval: Duration::from_secs(2),
        dlq_growth_per_minute: 30.0,
        probe_interval: Duration::from_secs(5),
        worker_rollout_max_concurrent: Default::default(),
    }
}

/// An operator for one namespace with the given settings and client (which may act as another
/// identity than the admin).
pub fn start_operator_with(client: &Client, ns: &str, settings: Settings) -> Operator {
    init_logs();
    let metrics = Arc::new(Metrics::default());
    let (client, ns, m) = (client.clone(), ns.to_string(), metrics.clone());
    let task = tokio::spawn(async move {
        let ready = Arc::new(AtomicBool::new(false));
        if let Err(e) =
            millrace_operator::run::run_controllers(client, settings, Some(ns), m, ready).await
        {
            panic!("operator stopped: {e}");
        }
    });
    Operator { metrics, task }
}
