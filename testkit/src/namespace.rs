//! A fresh namespace per test.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource};

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
        let name = env::unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("millrace.dev/test".to_string(), "true".to_string())].into()),
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
            match Api::<Namespace>::all(client)
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}
