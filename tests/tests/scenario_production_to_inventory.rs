//! End to end, one flow of the manufacturing scenario: the operator renders
//! `examples/manufacturing/flows/production-to-inventory.yaml` in a fresh namespace, a worker runs
//! the rendered ConfigMap against a fresh RabbitMQ vhost, the simulated MES publishes production
//! events (some deliberately invalid), and the simulated ERP fails 30% of postings and loses some
//! responses after committing. Every injected event must end up delivered to every route it was
//! meant for, or in the DLQ: counted by event id, not by totals.
//!
//! Needs `make env-up`, and the workspace binaries (`cargo test --workspace`, as `make test` runs
//! it, builds them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use millrace_crds::IntegrationFlow;
use millrace_testkit::{TestNamespace, TestVhost, kubeconfig_path};
use serde_json::Value;

const FLOW: &str = "production-to-inventory";
const ERP_CREDENTIALS: &str = "millrace-demo:local-only-not-a-secret";

/// The directory holding the workspace's binaries (the one above this test's `deps/`).
fn bin_dir() -> PathBuf {
    let mut dir = PathBuf::new();
    for bin in ["millrace-operator", "millrace-worker", "millrace-simulator"] {
        dir = millrace_testkit::workspace_binary(bin)
            .parent()
            .expect("a binary lives in a directory")
            .to_path_buf();
    }
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process that is killed when the test ends, with its output in a log file.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(dir: &Path, name: &str, program: &Path, args: &[String]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, tail(&self.log));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manufacturing")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.split("\n---")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("example YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects the flow needs, taken from the examples, pointed at this test's vhost and ERP.
fn manifests(amqp_uri: &str, erp_port: u16) -> Vec<Value> {
    let dir = examples();
    let mut out = Vec::new();
    let wanted = |doc: &Value, names: &[&str]| {
        names
            .iter()
            .any(|n| doc["metadata"]["name"].as_str() == Some(n))
    };
    for mut doc in yaml_docs(&dir.join("secrets.yaml")) {
        if wanted(
            &doc,
            &["mes-berlin-amqp", "wms-berlin-amqp", "s4-berlin-api"],
        ) {
            if doc["stringData"].get("uri").is_some() {
                doc["stringData"]["uri"] = Value::from(amqp_uri);
            }
            out.push(doc);
        }
    }
    out.extend(yaml_docs(&dir.join("lookups.yaml")));
    out.extend(yaml_docs(&dir.join("contracts/production-completed.yaml")));
    for mut doc in yaml_docs(&dir.join("connections.yaml")) {
        if wanted(&doc, &["mes-berlin", "wms-berlin", "s4-berlin"]) {
            if let Some(http) = doc["spec"].get_mut("http") {
                http["baseUrl"] = Value::from(format!("http://127.0.0.1:{erp_port}/erp/api"));
            }
            out.push(doc);
        }
    }
    out.extend(yaml_docs(&dir.join(format!("flows/{FLOW}.yaml"))));
    out
}

fn kubectl_apply(namespace: &str, objects: Vec<Value>) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "apply",
            "--server-side",
            "--field-manager=millrace-scenario-test",
            "-n",
            namespace,
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(list.to_string().as_bytes())
        .expect("write manifests");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ready_reason(flow: &IntegrationFlow) -> Option<(String, String)> {
    flow.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn production_to_inventory_accounts_for_every_event_despite_erp_failures() {
    let bins = bin_dir();
    let ns = TestNamespace::create("scenario").await;
    let vhost = TestVhost::create("scenario").await;
    let work = std::env::temp_dir().join(format!("millrace-scenario-{}", ns.name()));
    std::fs::create_dir_all(&work).expect("work dir");
    let erp_port = free_port();
    let operator_port = free_port();
    let worker_port = free_port();
    let amqp_uri = vhost.amqp_uri();
    let simulator = bins.join("millrace-simulator");

    // The simulated ERP (30% 503s, 5% responses lost after posting) and the WMS receiver.
    let mut partners = Process::start(
        &work,
        "partners",
        &simulator,
        &[
            "partners".into(),
            "--amqp-uri".into(),
            amqp_uri.clone(),
            "--listen".into(),
            format!("127.0.0.1:{erp_port}"),
            "--erp-credentials".into(),
            ERP_CREDENTIALS.into(),
            "--erp-fail-rate".into(),
            "0.3".into(),
            "--erp-lost-response-rate".into(),
            "0.05".into(),
        ],
    );
    let setup = Command::new(&simulator)
        .args(["setup", "--amqp-uri", &amqp_uri])
        .output()
        .expect("simulator setup");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    kubectl_apply(ns.name(), manifests(&amqp_uri, erp_port));

    let mut operator = Process::start(
        &work,
        "operator",
        &bins.join("millrace-operator"),
        &[
            "run".into(),
            "--worker-image".into(),
            "millrace-worker:test".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{operator_port}"),
            "--no-leader-election".into(),
            "--watch-namespace".into(),
            ns.name().to_string(),
            "--sample-interval".into(),
            "2s".into(),
        ],
    );

    // The operator renders the worker's ConfigMap; a worker process runs it (kwok pods run nothing).
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    let deadline = Instant::now() + Duration::from_secs(90);
    let config_map = format!("{FLOW}-worker");
    while configmaps
        .get_opt(&config_map)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        operator.assert_running();
        assert!(
            Instant::now() < deadline,
            "no ConfigMap {config_map} after 90s; operator log:\n{}",
            tail(&operator.log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut worker = Process::start(
        &work,
        "worker",
        &bins.join("millrace-worker"),
        &[
            "--configmap".into(),
            format!("{}/{config_map}", ns.name()),
            "--listen".into(),
            format!("127.0.0.1:{worker_port}"),
        ],
    );

    let flows: kube::Api<IntegrationFlow> = ns.api();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        worker.assert_running();
        operator.assert_running();
        let flow = flows.get(FLOW).await.expect("the flow exists");
        match ready_reason(&flow) {
            Some((status, _)) if status == "True" => break,
            seen => assert!(
                Instant::now() < deadline,
                "{FLOW} not Ready after 120s (Ready = {seen:?}); status: {}\noperator log:\n{}\nworker log:\n{}",
                serde_json::to_string_pretty(&flow.status).unwrap_or_default(),
                tail(&operator.log),
                tail(&worker.log)
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The MES publishes for 8 seconds; 5% of its events break the contract.
    let ledger = work.join("ledger.jsonl");
    let events = Command::new(&simulator)
        .args([
            "events",
            "--amqp-uri",
            &amqp_uri,
            "--flow",
            FLOW,
            "--duration",
            "8s",
            "--rate",
            "25",
            "--invalid-rate",
            "0.05",
            "--seed",
            "11",
            "--ledger",
        ])
        .arg(&ledger)
        .output()
        .expect("simulator events");
    assert!(
        events.status.success(),
        "simulator events failed:\n{}\n{}",
        String::from_utf8_lossy(&events.stdout),
        String::from_utf8_lossy(&events.stderr)
    );

    let verdict_path = work.join("verdict.json");
    let report = Command::new(&simulator)
        .args([
            "report",
            "--amqp-uri",
            &amqp_uri,
            "--partners-url",
            &format!("http://127.0.0.1:{erp_port}"),
            "--namespace",
            ns.name(),
            "--wait",
            "90s",
            "--metrics",
            &format!("{FLOW}=http://127.0.0.1:{worker_port}/metrics"),
            "--json",
        ])
        .arg(&verdict_path)
        .arg("--ledger")
        .arg(&ledger)
        .output()
        .expect("simulator report");
    let report_text = String::from_utf8_lossy(&report.stdout).into_owned();
    partners.assert_running();
    assert!(
        report.status.success(),
        "not every event is accounted for:\n{report_text}\n{}\nworker log:\n{}",
        String::from_utf8_lossy(&report.stderr),
        tail(&worker.log)
    );

    let verdict: Value =
        serde_json::from_slice(&std::fs::read(&verdict_path).expect("verdict written"))
            .expect("verdict is JSON");
    let flow = &verdict["flows"][0];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    assert_eq!(flow["flow"], FLOW, "{report_text}");
    assert!(n(&flow["injected"]) >= 100, "{report_text}");
    assert_eq!(
        n(&flow["delivered"]) + n(&flow["deadLettered"]),
        n(&flow["injected"]),
        "{report_text}"
    );
    assert!(n(&flow["broken"]) >= 1, "{report_text}");
    assert_eq!(
        n(&flow["brokenDeadLettered"]),
        n(&flow["broken"]),
        "every contract violation belongs in the DLQ:\n{report_text}"
    );
    // With 30% of postings failing, the worker must have retried, and its counters must agree.
    let metrics = &flow["metrics"];
    assert!(
        metrics["retried"].as_f64().unwrap_or(0.0) > 0.0,
        "{report_text}"
    );
    assert!(
        metrics["delivered"].as_f64().unwrap_or(0.0) >= n(&flow["delivered"]) as f64,
        "{report_text}"
    );
    assert!(
        n(&verdict["partners"]["erpUnavailable"]) > 0,
        "the ERP injected no failures:\n{report_text}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
