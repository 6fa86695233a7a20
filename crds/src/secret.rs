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

/// `text` with every trace of `secret` replaced by `***`: the whole value and, when it is a URI
/// with credentials (`amqp://user:password@host/`), its user-info and its password. Errors of URI
/// parsers and clients echo what they were given; every message that may carry one passes here.
pub fn redact(text: &str, secret: &str) -> String {
    let mut out = text.to_string();
    let mut parts: Vec<&str> = vec![secret];
    if let Some((_, rest)) = secret.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // A malformed URI may hold several `@`: take the user-info up to the first and the last.
        for userinfo in [authority.split_once('@'), authority.rsplit_once('@')]
            .into_iter()
            .flatten()
            .map(|(u, _)| u)
        {
            parts.push(userinfo);
            if let Some((_, password)) = userinfo.split_once(':') {
                parts.push(password);
            }
        }
    }
    // Longest first, so a part inside another is not left half-replaced.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for part in parts {
        // Very short parts would blank out ordinary words; the whole value still goes.
        if part.len() >= 3 || part == secret {
            out = out.replace(part, "***");
        }
    }
    out
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
    fn redaction_removes_the_value_the_userinfo_and_the_password() {
        let uri = "amqp://millrace:pl4nted-pw@broker.local:5672/%2f";
        let echoed = format!("invalid URI {uri:?}: bad port");
        assert_eq!(redact(&echoed, uri), "invalid URI \"***\": bad port");
        assert_eq!(
            redact("login refused for millrace:pl4nted-pw", uri),
            "login refused for ***"
        );
        assert_eq!(
            redact("password pl4nted-pw rejected", uri),
            "password *** rejected"
        );
        // A malformed URI still loses its password.
        let broken = "amqp://millrace:pl4nted-pw@@:x";
        assert!(!redact(&format!("cannot parse {broken}"), broken).contains("pl4nted"));
        assert!(!redact("cannot parse amqp://millrace:pl4nted-pw@@", broken).contains("pl4nted"));
        assert_eq!(redact("nothing secret here", uri), "nothing secret here");
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
