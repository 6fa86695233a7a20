//! A fresh namespace per test, and the removal of what earlier runs left behind.
//!
//! Millrace objects carry the operator's finalizer. A test's operator stops with the test, so
//! nobody would remove those finalizers and the namespace would stay `Terminating` for ever, with
//! the namespace controller retrying it. Deleting a test namespace therefore also releases the
//! finalizers of the Millrace objects in it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, Resource};
use millrace_crds::{EventContract, IntegrationFlow, PartnerConnection};
use tokio::sync::OnceCell;

use crate::cleanup::run_detached;
use crate::env::{self, KEEP_ENV_VAR};

/// A namespace created for one test on the local control plane, with an admin [`Client`].
///
/// The namespace is deleted when this value is dropped. When the test fails and
/// `MILLRACE_KEEP_NAMESPACE=1` is set, it is kept and its name printed.
pub struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    /// Creates a namespace named after `prefix` plus a random suffix, labelled `millrace.dev/test=true`.
    ///
    /// Panics, saying to run `make env-up`, when the control plane is not up.
    pub async fn create(prefix: &str) -> Self {
        let client = env::kube_client().await;
        sweep_once(&client).await;
        let name = env::unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        Self { client, name }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client with admin rights on the local control plane (not limited to this namespace).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Api`] for namespaced objects of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if env::keep_on_failure() {
            eprintln!(
                "millrace-testkit: kept namespace {} ({KEEP_ENV_VAR}=1)",
                self.name
            );
            return;
        }
        let name = self.name.clone();
        run_detached(format!("namespace {name}"), move || async move {
            let client = env::client_from(&env::kubeconfig_path()).await?;
            delete_namespace(&client, &name)
                .await
                .map_err(|e| e.to_string())
        });
    }
}

/// Label (set to `true`) of every namespace a test creates.
const TEST_LABEL: &str = "millrace.dev/test";

/// Test namespaces older than this are leftovers of runs that were killed.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Deletes `name` and releases the finalizers of the Millrace objects in it.
async fn delete_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    release_finalizers(client, name).await
}

async fn release_finalizers(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    // The Millrace kinds, whose finalizer only a running operator removes.
    let kinds = [
        ApiResource::erase::<IntegrationFlow>(&()),
        ApiResource::erase::<EventContract>(&()),
        ApiResource::erase::<PartnerConnection>(&()),
    ];
    for resource in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let objects = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // The CRDs are not installed: nothing can carry their finalizer.
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        for object in objects {
            if object
                .metadata
                .finalizers
                .as_ref()
                .is_none_or(Vec::is_empty)
            {
                continue;
            }
            let Some(name) = object.metadata.name.as_deref() else {
                continue;
            };
            let release = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
            match api.patch(name, &PatchParams::default(), &release).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Once per test process: deletes the test namespaces that earlier runs left behind (stuck in
/// `Terminating`, or older than an hour), so they do not pile up on a long-lived environment.
async fn sweep_once(client: &Client) {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            if let Err(e) = sweep(client).await {
                eprintln!("millrace-testkit: could not sweep old test namespaces: {e}");
            }
        })
        .await;
}

async fn sweep(client: &Client) -> Result<(), kube::Error> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{TEST_LABEL}=true")))
        .await?;
    let now = Timestamp::now();
    let mut swept = 0;
    for namespace in namespaces.items {
        let Some(name) = namespace.metadata.name.as_deref() else {
            continue;
        };
        let terminating = namespace.metadata.deletion_timestamp.is_some();
        let stale = namespace
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0).as_secs() > STALE_AFTER.as_secs() as i64);
        if terminating || stale {
            delete_namespace(client, name).await?;
            swept += 1;
        }
    }
    if swept > 0 {
        eprintln!("millrace-testkit: removed {swept} test namespaces left by earlier runs");
    }
    Ok(())
}
