//! Reading referenced Secrets, by name only: the operator never lists or watches them.
//!
//! Values are read into memory for the operator's own connections only, and never written
//! anywhere: not to specs, ConfigMaps, status, Events or logs. How a Secret key becomes text is
//! `millrace_crds::secret`, shared with the worker and the CLI. For the Secrets a flow's workers
//! read, the operator asks for metadata alone (their `resourceVersion`, which rolls the workers
//! when a Secret is rotated), so their values are not even sent to it.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use millrace_crds::SecretKeyRef;
pub use millrace_crds::secret::SecretError;
use millrace_crds::secret::secret_text;

/// Reads one key of a Secret in `namespace`.
pub async fn read(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<String, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&r.name)
        .await
        .map_err(|e| SecretError::Unreadable(r.name.clone(), e.to_string()))?;
    secret_text(secret.as_ref(), r)
}

/// The `resourceVersion` of Secret `name` in `namespace`, or `None` when it does not exist.
/// Only its metadata is fetched.
pub async fn version(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_metadata_opt(name)
        .await?
        .and_then(|m| m.metadata.resource_version))
}
