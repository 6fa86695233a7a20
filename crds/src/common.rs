//! Small value types shared by several kinds.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Reference to one key of a Secret in the object's own namespace.
/// Millrace never copies the value: workers receive it as a `secretKeyRef` environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Reference to an object by name, in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How the delay between attempts grows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Backoff {
    /// Each delay doubles the previous one, up to `maxDelay`.
    #[default]
    Exponential,
    /// Each delay adds `initialDelay` to the previous one, up to `maxDelay`.
    Linear,
}

/// Retry policy for transient delivery failures (5xx, 408, 429, timeouts, broker trouble).
/// Unset fields fall back to the connection's default, then to Millrace's default
/// (5 attempts, exponential, 1s initial delay, 5m maximum delay).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Total delivery attempts, the first included, before the message is dead-lettered (1-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// How the delay grows between attempts: Exponential or Linear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Delay before the second attempt, for example `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Duration>,
    /// Upper bound of any single delay, for example `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Duration>,
}

/// Regular expression every duration must match: one or more `<number><unit>` groups,
/// units `ms`, `s`, `m`, `h`, `d`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// A duration written the Kubernetes way, such as `500ms`, `30s`, `10m`, `1h30m` or `7d`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Duration(pub String);

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: write one or more <number><unit> groups with units ms, s, m, h or d, such as 30s or 1h30m",
            self.input
        )
    }
}

impl std::error::Error for DurationError {}

impl Duration {
    /// Builds a duration from its text form without checking it.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Parses the text into a [`std::time::Duration`].
    pub fn to_std(&self) -> Result<std::time::Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `500ms`, `30s`, `10m`, `1h30m`, `7d` and the like.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, DurationError> {
    let err = || DurationError {
        input: text.to_string(),
    };
    if text.is_empty() {
        return Err(err());
    }
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let number: u64 = text[start..i].parse().map_err(|_| err())?;
        let unit_ms: u64 = if text[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = bytes.get(i).ok_or_else(err)?;
            i += 1;
            match unit {
                b's' => 1_000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                _ => return Err(err()),
            }
        };
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

/// Regular expression of a semantic version (semver.org 2.0.0).
pub const SEMVER_PATTERN: &str =
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

/// A semantic version such as `1.4.0` or `2.0.0-rc.1`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct SemVer(pub String);

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for SemVer {
    fn schema_name() -> Cow<'static, str> {
        "SemVer".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": SEMVER_PATTERN,
            "maxLength": 64,
        })
    }
}

/// Schema for a free-form JSON object (a JSON Schema document, an example event). Typed as an
/// object so CEL rules can compare it.
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema for a list of free-form JSON objects.
pub fn any_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 20,
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
            ("1m30s250ms", 90_250),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text).unwrap().as_millis() as u64,
                ms,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "",
            "10",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "10 s",
            "99999999999999999999d",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(
                e.to_string().contains("units ms, s, m, h or d"),
                "{text}: {e}"
            );
        }
    }
}
