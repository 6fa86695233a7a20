//! The Millrace CRDs, as checked in under `crds/yaml`, behave on a real kube-apiserver: every example
//! under `examples/` is accepted, and each manifest under `tests/fixtures/invalid` is refused with a
//! message that names the offending field.
//!
//! Each invalid fixture breaks one OpenAPI or CEL rule and says, in a `# expect: <text>` line, what the
//! apiserver's refusal must contain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use millrace_testkit::TestNamespace;
use millrace_testkit::manifests::{
    documents, example_files, expectation, repo_root, shown, yaml_files,
};

const FIELD_MANAGER: &str = "millrace-tests";

/// Applies the checked-in CRDs (server-side, so a second run changes nothing) and waits until the
/// apiserver serves them, so that the tests check this checkout's CRDs and not an older install.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let files = yaml_files(&repo_root().join("crds/yaml"));
    assert!(!files.is_empty(), "no CRD manifests in crds/yaml");
    for file in files {
        for doc in documents(&file) {
            let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap_or_else(|e| {
                panic!("{} is not a CustomResourceDefinition: {e}", shown(&file))
            });
            let name = crd.metadata.name.clone().expect("a CRD has a name");
            crds.patch(
                &name,
                &PatchParams::apply("millrace-env").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused {}: {e}", shown(&file)));
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(crds.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
            .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
        }
    }
}

/// Resolves kinds to API resources, asking discovery once per kind.
struct Kinds {
    client: Client,
    known: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
}

impl Kinds {
    fn new(client: Client) -> Self {
        Self {
            client,
            known: HashMap::new(),
        }
    }

    async fn resolve(&mut self, object: &DynamicObject) -> (ApiResource, ApiCapabilities) {
        let types = object.types.as_ref().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
        if !self.known.contains_key(&gvk) {
            // The CRDs were just installed; discovery may take a moment to catch up.
            let mut attempts = 0;
            let found = loop {
                match pinned_kind(&self.client, &gvk).await {
                    Ok(found) => break found,
                    Err(_) if attempts < 20 => attempts += 1,
                    Err(e) => panic!("the apiserver does not serve {gvk:?}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            self.known.insert(gvk.clone(), found);
        }
        self.known[&gvk].clone()
    }
}

/// A server-side apply with `dryRun=All`: the apiserver runs every validation and admission step but
/// stores nothing. Namespaced objects go into `namespace`, whatever their manifest says.
async fn dry_run_apply(
    kinds: &mut Kinds,
    namespace: &str,
    mut object: DynamicObject,
) -> Result<(), kube::Error> {
    let (resource, capabilities) = kinds.resolve(&object).await;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            object.metadata.namespace = Some(namespace.to_string());
            Api::namespaced_with(kinds.client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(kinds.client.clone(), &resource),
    };
    let name = object
        .metadata
        .name
        .clone()
        .expect("every manifest has a name");
    // Strict field validation, as `kubectl apply --validate=strict` (kubectl's default) asks.
    let mut params = PatchParams::apply(FIELD_MANAGER).dry_run().force();
    params.field_validation = Some(ValidationDirective::Strict);
    api.patch(&name, &params, &Patch::Apply(&object))
        .await
        .map(|_| ())
}

fn object_from(path: &Path, doc: serde_json::Value) -> DynamicObject {
    serde_json::from_value(doc)
        .unwrap_or_else(|e| panic!("{} is not a Kubernetes object: {e}", shown(path)))
}

#[tokio::test]
async fn every_example_is_accepted() {
    let ns = TestNamespace::create("env-examples").await;
    install_crds(&ns.client()).await;
    let mut kinds = Kinds::new(ns.client());

    let mut refused = Vec::new();
    let mut accepted_by_kind: HashMap<String, usize> = HashMap::new();
    for file in example_files(&repo_root().join("examples")) {
        for doc in documents(&file) {
            let object = object_from(&file, doc);
            let kind = object
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            let name = object.metadata.name.clone().unwrap_or_default();
            match dry_run_apply(&mut kinds, ns.name(), object).await {
                Ok(()) => *accepted_by_kind.entry(kind).or_default() += 1,
                Err(e) => refused.push(format!("{} {kind}/{name}: {e}", shown(&file))),
            }
        }
    }
    assert!(
        refused.is_empty(),
        "examples refused by the apiserver:\n  {}",
        refused.join("\n  ")
    );
    for kind in ["EventContract", "PartnerConnection", "IntegrationFlow"] {
        assert!(
            accepted_by_kind.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} example was checked; accepted: {accepted_by_kind:?}"
        );
    }
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let ns = TestNamespace::create("env-invalid").await;
    install_crds(&ns.client()).await;
    let mut kinds = Kinds::new(ns.client());

    let fixtures = yaml_files(&repo_root().join("tests/fixtures/invalid"));
    assert!(
        fixtures.len() >= 12,
        "expected at least 12 invalid fixtures, found {}",
        fixtures.len()
    );

    let mut wrong = Vec::new();
    for file in &fixtures {
        let expected = expectation(file);
        let mut docs = documents(file);
        assert_eq!(
            docs.len(),
            1,
            "{} must hold exactly one manifest",
            shown(file)
        );
        let object = object_from(file, docs.remove(0));
        match dry_run_apply(&mut kinds, ns.name(), object).await {
            Ok(()) => wrong.push(format!("{}: accepted, but should be refused", shown(file))),
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(&expected) => {}
            Err(kube::Error::Api(status)) => wrong.push(format!(
                "{}: refused with {} {:?}, without {expected:?}: {}",
                shown(file),
                status.code,
                status.reason,
                status.message
            )),
            Err(e) => wrong.push(format!("{}: {e}", shown(file))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} fixtures misbehaved:\n  {}",
        wrong.len(),
        fixtures.len(),
        wrong.join("\n  ")
    );
}

/// `millrace validate --allow-missing-refs -o json` of one file, offline: the field paths of the
/// errors, by `Kind/name`. Missing references are the cluster's business at reconcile time, not
/// admission's, so they are only warnings here.
fn offline_errors(file: &Path) -> HashMap<String, Vec<String>> {
    let out = std::process::Command::new(millrace_testkit::workspace_binary("millrace"))
        .args(["validate", "--allow-missing-refs", "-o", "json"])
        .arg(file)
        .env_remove("KUBECONFIG")
        .output()
        .expect("millrace runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: millrace validate exited {:?}: {}",
        shown(file),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: validate -o json is not a list: {e}", shown(file)));
    let mut errors: HashMap<String, Vec<String>> = HashMap::new();
    for p in problems.iter().filter(|p| p["severity"] == "error") {
        errors
            .entry(format!(
                "{}/{}",
                p["kind"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or("")
            ))
            .or_default()
            .push(p["field"].as_str().unwrap_or("").to_string());
    }
    errors
}

#[tokio::test]
async fn offline_validate_gives_the_apiservers_verdict() {
    let ns = TestNamespace::create("env-parity").await;
    install_crds(&ns.client()).await;
    let mut kinds = Kinds::new(ns.client());

    // Every admission fixture, every example, and a few refusals the fixtures do not cover.
    let extra = tempfile_dir();
    for (name, text) in [
        (
            "unknown-field.yaml",
            "apiVersion: millrace.dev/v1alpha1\nkind: PartnerConnection\nmetadata: {name: erp}\nspec: {system: ERP, colour: blue, http: {baseUrl: https://erp.example.com}}\n",
        ),
        (
            "bad-name.yaml",
            "apiVersion: millrace.dev/v1alpha1\nkind: EventContract\nmetadata: {name: Not_A_Name}\nspec: {type: com.acme.x.v1, versions: [{version: 1, schema: {type: object}}]}\n",
        ),
        (
            "wrong-type.yaml",
            "apiVersion: millrace.dev/v1alpha1\nkind: IntegrationFlow\nmetadata: {name: typed}\nspec: {version: 1.0.0, source: {amqp: {connection: bus, exchange: x, routingKeys: [a]}}, contract: {name: c}, routes: [{name: r, destination: {connection: bus, amqp: {exchange: y}}}], workers: {replicas: many}}\n",
        ),
    ] {
        std::fs::write(extra.join(name), text).expect("fixture written");
    }
    let mut files = yaml_files(&repo_root().join("tests/fixtures/invalid"));
    files.extend(example_files(&repo_root().join("examples")));
    files.extend(yaml_files(&extra));

    let mut disagreements = Vec::new();
    let mut checked = 0;
    for file in &files {
        let offline = offline_errors(file);
        for doc in documents(file) {
            let object = object_from(file, doc);
            let kind = object
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            let id = format!(
                "{kind}/{}",
                object.metadata.name.clone().unwrap_or_default()
            );
            let fields = offline.get(&id).cloned().unwrap_or_default();
            checked += 1;
            match dry_run_apply(&mut kinds, ns.name(), object).await {
                Ok(()) if fields.is_empty() => {}
                Ok(()) => disagreements.push(format!(
                    "{} {id}: the apiserver accepts it, millrace validate refuses {fields:?}",
                    shown(file)
                )),
                Err(e) => {
                    let message = match &e {
                        kube::Error::Api(status) => status.message.clone(),
                        other => other.to_string(),
                    };
                    if fields.is_empty() {
                        disagreements.push(format!(
                            "{} {id}: the apiserver refuses it ({message}), millrace validate accepts it",
                            shown(file)
                        ));
                    } else if let Some(f) = fields.iter().find(|f| {
                        // A rule at the schema's root: the apiserver names no path (`<nil>`).
                        let named = if f.as_str() == "<root>" {
                            "<nil>"
                        } else {
                            f.as_str()
                        };
                        !message.contains(named)
                    }) {
                        disagreements.push(format!(
                            "{} {id}: millrace validate names {f}, the apiserver says: {message}",
                            shown(file)
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 60, "only {checked} objects checked");
    assert!(
        disagreements.is_empty(),
        "{} of {checked} verdicts differ:\n  {}",
        disagreements.len(),
        disagreements.join("\n  ")
    );
}

/// A fresh directory under the system temp dir, for generated manifests.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// GitOps tools compare the stored object with the file: nothing inside `routes[]` may be filled
/// in by the apiserver, or every flow would show as out of sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_adds_nothing_inside_routes() {
    let ns = TestNamespace::create("env-routes").await;
    install_crds(&ns.client()).await;
    let routes = serde_json::json!([
        {"name": "erp", "destination": {"connection": "s4", "http": {"path": "/receipts"}}},
        {"name": "wms", "when": ".qty > 0", "destination": {"connection": "wms", "amqp": {"exchange": "wms.inbound"}}}
    ]);
    let flow = serde_json::json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow",
        "metadata": {"name": "receipts"},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "wms", "exchange": "wms.events", "routingKeys": ["receipt.#"]}},
            "contract": {"name": "goods-receipt"},
            "routes": routes.clone()
        }
    });
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "millrace.dev",
        "v1alpha1",
        "IntegrationFlow",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &resource);
    let stored = api
        .patch(
            "receipts",
            &PatchParams::apply("gitops-sync"),
            &Patch::Apply(&flow),
        )
        .await
        .expect("the flow is stored");
    assert_eq!(
        stored.data["spec"]["routes"], routes,
        "the apiserver changed routes[]: a GitOps diff would never be clean"
    );
}
