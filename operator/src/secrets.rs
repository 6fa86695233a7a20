//! Reading referenced secret values into memory, for the operator's own connections only.
//! Values are never written anywhere: not to specs, ConfigMaps, status, Events or logs.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use millrace_crds::SecretKeyRef;

/// Why a secret reference does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No such Secret.
    #[error("Secret {0:?} not found")]
    MissingSecret(String),
    /// The Secret lacks the key.
    #[error("Secret {0:?} has no key {1:?}")]
    MissingKey(String, String),
    /// The value is not UTF-8.
    #[error("Secret {0:?} key {1:?} is not UTF-8 text")]
    NotText(String, String),
    /// The API failed.
    #[error("reading Secret {0:?}: {1}")]
    Api(String, String),
}

impl SecretError {
    /// CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretError::MissingSecret(_) => "SecretNotFound",
            SecretError::MissingKey(..) => "SecretKeyNotFound",
            SecretError::NotText(..) => "SecretNotText",
            SecretError::Api(..) => "SecretUnreadable",
        }
    }
}

/// Reads one key of a Secret in `namespace`.
pub async fn read(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<String, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(SecretError::MissingSecret(r.name.clone())),
        Err(e) => return Err(SecretError::Api(r.name.clone(), e.to_string())),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| SecretError::MissingKey(r.name.clone(), r.key.clone()))?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| SecretError::NotText(r.name.clone(), r.key.clone()))
}
