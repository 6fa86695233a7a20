//! The Helm chart lints, renders, and its output is accepted by the local control plane
//! (server-side dry-run apply), with and without the optional monitoring objects.
//!
//! Needs `make env-up` (helm and the kube-apiserver come from there).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn millrace_home() -> PathBuf {
    std::env::var_os("MILLRACE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/millrace")
        })
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/millrace")
}

/// The local environment's helm and kubeconfig, or a panic that says how to get them.
fn environment() -> (PathBuf, PathBuf) {
    let home = millrace_home();
    let helm = home.join("bin/helm");
    let kubeconfig = home.join("env/kubeconfig");
    assert!(
        helm.is_file(),
        "{} is missing: run `make env-up`, which builds helm",
        helm.display()
    );
    assert!(
        kubeconfig.is_file(),
        "{} is missing: run `make env-up` to start the local control plane",
        kubeconfig.display()
    );
    let ping = kubectl(&kubeconfig, &["get", "--raw", "/readyz"], None);
    assert!(
        ping.status.success(),
        "the local kube-apiserver does not answer: run `make env-up`\n{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    (helm, kubeconfig)
}

fn run(mut command: Command, stdin: Option<&[u8]>) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    if let Some(bytes) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(bytes)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for child")
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(command, stdin)
}

fn helm(helm: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(helm);
    command.args(args);
    // Keep helm's caches out of the user's home configuration.
    let home = millrace_home().join("helm");
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    run(command, None)
}

fn expect_success(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A namespace that exists for one test and is deleted when it ends.
struct Namespace<'a> {
    name: String,
    kubeconfig: &'a Path,
}

impl<'a> Namespace<'a> {
    fn create(kubeconfig: &'a Path, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!("{prefix}-{}-{nanos:x}", std::process::id());
        let out = kubectl(kubeconfig, &["create", "namespace", &name], None);
        expect_success("kubectl create namespace", &out);
        Self { name, kubeconfig }
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = kubectl(
            self.kubeconfig,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// Splits a multi-document YAML stream into parsed documents, skipping empty ones.
fn documents(text: &str) -> Vec<serde_json::Value> {
    text.split("\n---")
        .map(|doc| serde_yaml::from_str(doc).expect("rendered YAML parses"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn chart_lints_strictly() {
    let (helm_bin, _) = environment();
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let out = helm(&helm_bin, &["lint", "--strict", chart]);
    expect_success("helm lint --strict", &out);
    let out = helm(
        &helm_bin,
        &[
            "lint",
            "--strict",
            chart,
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    expect_success("helm lint --strict (monitoring enabled)", &out);
}

#[test]
fn values_schema_rejects_unknown_and_mistyped_values() {
    let (helm_bin, _) = environment();
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    for bad in [
        "replicaCount=zero",
        "operator.driftInterval=thirty",
        "metrics.service.tipe=ClusterIP",
    ] {
        let out = helm(&helm_bin, &["template", "t", chart, "--set", bad]);
        assert!(
            !out.status.success(),
            "values.schema.json accepted --set {bad}"
        );
    }
}

#[test]
fn rendered_chart_is_accepted_by_the_api_server() {
    let (helm_bin, kubeconfig) = environment();
    let ns = Namespace::create(&kubeconfig, "chart");
    let chart = chart_dir();
    let rendered = expect_success(
        "helm template",
        &helm(
            &helm_bin,
            &[
                "template",
                "millrace",
                chart.to_str().expect("utf-8 path"),
                "--namespace",
                &ns.name,
                "--include-crds",
            ],
        ),
    );
    let docs = documents(&rendered);
    let kinds = kinds(&docs);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }

    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{security}");
    assert_eq!(security["runAsNonRoot"], true, "{security}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{security}");
    assert_eq!(
        security["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{security}"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args.first(), Some(&"run"), "{args:?}");
    assert!(
        args.iter().any(|a| a.starts_with("--worker-image=")),
        "{args:?}"
    );
    let env = container["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "POD_NAMESPACE must come from the downward API: {env:?}"
    );

    // Least privilege: no wildcards, Secrets read by name only (never listed or watched),
    // Leases only through the namespaced Role.
    let cluster_role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    for rule in cluster_role["rules"].as_array().expect("rules") {
        let text = rule.to_string();
        assert!(!text.contains("\"*\""), "wildcard in ClusterRole: {text}");
        assert!(
            !text.contains("leases"),
            "Leases must be namespaced: {text}"
        );
        if rule["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "secrets"))
        {
            assert_eq!(rule["verbs"], serde_json::json!(["get"]), "{text}");
        }
    }

    let out = kubectl(
        &kubeconfig,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=millrace-chart-test",
            "--force-conflicts",
            "-n",
            &ns.name,
            "-f",
            "-",
        ],
        Some(rendered.as_bytes()),
    );
    let applied = expect_success("kubectl apply --server-side --dry-run=server", &out);
    assert!(
        applied.contains("deployment.apps/millrace"),
        "the Deployment was not part of the apply:\n{applied}"
    );
}

#[test]
fn monitoring_objects_render_with_the_documented_alerts() {
    let (helm_bin, _) = environment();
    let chart = chart_dir();
    let rendered = expect_success(
        "helm template (monitoring enabled)",
        &helm(
            &helm_bin,
            &[
                "template",
                "millrace",
                chart.to_str().expect("utf-8 path"),
                "--namespace",
                "millrace-system",
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.prometheusRule.enabled=true",
            ],
        ),
    );
    let docs = documents(&rendered);
    let monitors = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceMonitor")
        .count();
    assert_eq!(
        monitors, 2,
        "one ServiceMonitor for the operator, one for workers"
    );
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let text = rule.to_string();
    for (alert, metric) in [
        ("MillraceFlowNotReady", "millrace_operator_flow_ready"),
        (
            "MillraceDeadLettersGrowing",
            "millrace_operator_flow_dead_letters",
        ),
        ("MillraceSlaBreaches", "millrace_sla_breaches_total"),
    ] {
        assert!(text.contains(alert), "alert {alert} missing");
        assert!(text.contains(metric), "metric {metric} missing");
    }

    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "millrace-dashboard")
        .expect("the dashboard ConfigMap");
    let json = dashboard["data"]["millrace-business.json"]
        .as_str()
        .expect("dashboard JSON");
    let board: serde_json::Value = serde_json::from_str(json).expect("dashboard is JSON");
    let exprs = board.to_string();
    for metric in [
        "millrace_end_to_end_latency_seconds_bucket",
        "millrace_operator_flow_dead_letters",
        "millrace_events_dead_lettered_total",
    ] {
        assert!(exprs.contains(metric), "dashboard lacks {metric}");
    }
}
