//! Reading referenced secret values into memory, for the operator's own connections only.
//! Values are never written anywhere: not to specs, ConfigMaps, status, Events or logs. How a
//! Secret key becomes text is `millrace_crds::secret`, shared with the worker and the CLI.

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
