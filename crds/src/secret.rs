//! How a referenced Secret key becomes text: one policy for the operator, the worker and the CLI.
//!
//! A value is taken from `data` (or `stringData`), must be UTF-8, and loses surrounding
//! whitespace, because `kubectl create secret --from-file` keeps the file's trailing newline and a
//! URI or token with a newline never works. Errors name the Secret and the key, never the value.

use k8s_openapi::api::core::v1::Secret;

use crate::common::SecretKeyRef;

/// Why a secret reference does not give a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// No such Secret.
    MissingSecret(String),
    /// The Secret lacks the key.
    MissingKey(String, String),
    /// The value is not UTF-8.
    NotText(String, String),
    /// The API failed while reading it.
    Unreadable(String, String),
}

impl SecretError {
    /// CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretError::MissingSecret(_) => "SecretNotFound",
            SecretError::MissingKey(..) => "SecretKeyNotFound",
            SecretError::NotText(..) => "SecretNotText",
            SecretError::Unreadable(..) => "SecretUnreadable",
        }
    }
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::MissingSecret(s) => write!(f, "Secret {s:?} not found"),
            SecretError::MissingKey(s, k) => write!(f, "Secret {s:?} has no key {k:?}"),
            SecretError::NotText(s, k) => write!(f, "Secret {s:?} key {k:?} is not UTF-8 text"),
            SecretError::Unreadable(s, e) => write!(f, "reading Secret {s:?}: {e}"),
        }
    }
}

impl std::error::Error for SecretError {}

/// A secret value as it is used: surrounding whitespace removed.
pub fn normalize(value: &str) -> String {
    value.trim().to_string()
}

/// The text of key `r.key` of `secret` (the Secret named `r.name`, or `None` when it does not exist).
pub fn secret_text(secret: Option<&Secret>, r: &SecretKeyRef) -> Result<String, SecretError> {
    let secret = secret.ok_or_else(|| SecretError::MissingSecret(r.name.clone()))?;
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
        .map(|s| normalize(&s))
        .map_err(|_| SecretError::NotText(r.name.clone(), r.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn r() -> SecretKeyRef {
        SecretKeyRef {
            name: "broker".into(),
            key: "uri".into(),
        }
    }

    #[test]
    fn values_are_trimmed_and_errors_never_show_them() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "uri".to_string(),
                ByteString(b"amqp://u:hunter2@h/\n".to_vec()),
            )])),
            ..Secret::default()
        };
        assert_eq!(
            secret_text(Some(&secret), &r()).unwrap(),
            "amqp://u:hunter2@h/"
        );
        let bad = Secret {
            data: Some(BTreeMap::from([(
                "uri".to_string(),
                ByteString(vec![0xff, 0xfe]),
            )])),
            ..Secret::default()
        };
        let e = secret_text(Some(&bad), &r()).unwrap_err();
        assert_eq!(e.reason(), "SecretNotText");
        assert_eq!(
            secret_text(None, &r()).unwrap_err(),
            SecretError::MissingSecret("broker".into())
        );
        let e = secret_text(Some(&Secret::default()), &r()).unwrap_err();
        assert!(e.to_string().contains("no key \"uri\""), "{e}");
    }
}
