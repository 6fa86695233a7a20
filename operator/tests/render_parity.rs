//! `millrace render` and `millrace diff` against what this operator really applies: the
//! manufacturing example is applied to a fresh namespace and reconciled, then the CLI, reading
//! the same files, must give byte-identical ConfigMap data and the same Deployment pod template
//! (but for the secrets-hash annotation, which needs the Secrets' versions that files lack), and
//! `diff` must see no change until a file is edited.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use millrace_crds::IntegrationFlow;
use millrace_operator::context::Settings;
use millrace_operator::metrics::Metrics;
use millrace_render::RenderSettings;
use millrace_render::objects::SECRETS_HASH_ANNOTATION;
use millrace_testkit::{TestNamespace, TestVhost};
use serde_json::Value;

mod support;
use support::{apply, documents_under};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/manufacturing");
const VALUES: &str = "workerImage:\n  repository: registry.local/millrace-worker\n  tag: parity\n";

fn millrace(args: &[&str]) -> Output {
    Command::new(millrace_testkit::workspace_binary("millrace"))
        .args(args)
        .output()
        .expect("millrace runs")
}

use millrace_testkit::output_text as text;

/// Applies the example into `ns`, with every broker URI pointing at the test's vhost.
async fn apply_example(client: &Client, ns: &str, broker: &TestVhost) -> Vec<String> {
    let mut flows = Vec::new();
    for mut doc in documents_under(std::path::Path::new(EXAMPLE)) {
        match doc["kind"].as_str() {
            Some("Namespace") => continue,
            Some("Secret") if doc["stringData"].get("uri").is_some() => {
                doc["stringData"]["uri"] = broker.amqp_uri().into();
            }
            Some("IntegrationFlow") => flows.push(
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => {}
        }
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        apply(client, ns, doc).await;
    }
    flows
}

/// Waits until the operator has applied the worker objects of every flow at its current revision.
async fn wait_rendered(client: &Client, ns: &str, flows: &[String]) {
    let api: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for f in flows {
            let flow = api.get(f).await.expect("flow exists");
            let revision = flow.status.as_ref().and_then(|s| s.revision.clone());
            let cm = cms
                .get_opt(&format!("{f}-worker"))
                .await
                .expect("configmap read");
            let current = match (&revision, &cm) {
                (Some(r), Some(cm)) => {
                    millrace_render::digest(
                        cm.data
                            .as_ref()
                            .and_then(|d| d.values().next())
                            .map(String::as_bytes)
                            .unwrap_or_default(),
                    ) == *r
                        && flow.status.as_ref().and_then(|s| s.observed_generation)
                            == flow.metadata.generation
                }
                _ => false,
            };
            if !current {
                missing.push(format!("{f}: {:?}", flow.status.map(|s| s.conditions)));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "flows not rendered after 120 s:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_and_diff_agree_with_the_operator() {
    let ns = TestNamespace::create("cli-parity").await;
    let broker = TestVhost::create("cli-parity").await;
    let client = ns.client();
    let n = ns.name().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, VALUES).expect("values written");
    let settings = Settings {
        render: RenderSettings::from_chart_values(&serde_yaml::from_str(VALUES).unwrap()).unwrap(),
        drift_interval: Duration::from_secs(5),
        sample_interval: Duration::from_secs(2),
        dlq_growth_per_minute: 30.0,
        probe_interval: Duration::from_secs(5),
        worker_rollout_max_concurrent: Default::default(),
    };
    let op = {
        let (client, n, m) = (client.clone(), n.clone(), Arc::new(Metrics::default()));
        tokio::spawn(async move {
            let _ = millrace_operator::run::run_controllers(
                client,
                settings,
                Some(n),
                m,
                Arc::new(AtomicBool::new(false)),
            )
            .await;
        })
    };
    let flows = apply_example(&client, &n, &broker).await;
    assert_eq!(flows.len(), 7, "the manufacturing example has seven flows");
    wait_rendered(&client, &n, &flows).await;

    // render: the same ConfigMap bytes and the same pod template as the live objects.
    let values_arg = values.to_str().unwrap();
    let out = millrace(&[
        "render",
        EXAMPLE,
        "-n",
        &n,
        "--settings",
        values_arg,
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("render -o json prints a List");
    let items = list["items"].as_array().expect("items");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &n);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &n);
    let mut compared = 0;
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        match item["kind"].as_str() {
            Some("ConfigMap") => {
                let live = cms.get(name).await.expect("live ConfigMap");
                assert_eq!(
                    serde_json::to_value(&live.data).unwrap(),
                    item["data"],
                    "ConfigMap {name}: rendered data differs from the live object"
                );
                compared += 1;
            }
            Some("Deployment") => {
                let live = deps.get(name).await.expect("live Deployment");
                // The apiserver fills defaults into what it stores; a server-side dry-run of
                // the rendered object shows it with the same defaults.
                let mut pp = PatchParams::apply("millrace-operator").force();
                pp.dry_run = true;
                let dry: Deployment = deps
                    .patch(name, &pp, &Patch::Apply(item))
                    .await
                    .expect("dry-run of the rendered Deployment");
                // Files carry no Secret versions, so `render` leaves out the secrets-hash
                // annotation that the operator sets from them; everything else is the same.
                let mut live_template = serde_json::to_value(&live.spec.template).unwrap();
                let removed = live_template["metadata"]["annotations"]
                    .as_object_mut()
                    .and_then(|a| a.remove(SECRETS_HASH_ANNOTATION));
                assert!(
                    removed.is_some(),
                    "Deployment {name}: the live pod template has no {SECRETS_HASH_ANNOTATION}"
                );
                assert_eq!(
                    serde_json::to_value(&dry.spec.template).unwrap(),
                    live_template,
                    "Deployment {name}: rendered pod template differs from the live one"
                );
                compared += 1;
            }
            _ => {}
        }
    }
    assert_eq!(compared, 14, "one ConfigMap and one Deployment per flow");

    // diff: nothing to change right after reconciliation.
    let kubeconfig = millrace_testkit::kubeconfig_path();
    let kc = kubeconfig.to_str().unwrap();
    let diff = |dir: &str| {
        millrace(&[
            "diff",
            dir,
            "-n",
            &n,
            "--kubeconfig",
            kc,
            "--settings",
            values_arg,
        ])
    };
    let out = diff(EXAMPLE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // An edited jq changes the ConfigMap and names the new revision.
    let edited = dir.path().join("edited");
    copy_dir(std::path::Path::new(EXAMPLE), &edited);
    let flow_file = edited.join("flows/carrier-milestones.yaml");
    let original = std::fs::read_to_string(&flow_file).unwrap();
    std::fs::write(
        &flow_file,
        original.replace("x12StatusCode: .statusCode,", "x12Status: .statusCode,"),
    )
    .unwrap();
    let ed = edited.to_str().unwrap();
    let out = diff(ed);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("~ ConfigMap"), "{shown}");
    assert!(
        shown.contains("data[worker-config.json].flows[0].transform.jq"),
        "{shown}"
    );
    assert!(shown.contains("revision: sha256:"), "{shown}");
    assert!(!shown.contains("partitions change"), "{shown}");

    // Fewer partitions: the broker cannot apply that in place.
    std::fs::write(
        &flow_file,
        original.replace("partitions: 4", "partitions: 2"),
    )
    .unwrap();
    let out = diff(ed);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("warning: IntegrationFlow")
            && shown.contains("partitions change from 4 to 2"),
        "{shown}"
    );
    op.abort();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
