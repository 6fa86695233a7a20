//! Compatibility modes, with the meaning Confluent Schema Registry gives them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CompatError;

/// How the versions of an event contract must stay compatible with each other.
///
/// Backward means a consumer on the new schema accepts every event the old schema accepted;
/// Forward means a consumer on the old schema accepts every event the new schema accepts;
/// Full means both. The transitive variants compare a new version with every earlier
/// accepted version instead of only the latest one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompatibilityMode {
    /// No checks between versions.
    None,
    /// The new version accepts everything the previous version accepted.
    #[default]
    Backward,
    /// The new version accepts everything every earlier version accepted.
    BackwardTransitive,
    /// The previous version accepts everything the new version accepts.
    Forward,
    /// Every earlier version accepts everything the new version accepts.
    ForwardTransitive,
    /// Backward and Forward against the previous version.
    Full,
    /// Backward and Forward against every earlier version.
    FullTransitive,
}

impl CompatibilityMode {
    /// Every mode, in declaration order.
    pub const ALL: [CompatibilityMode; 7] = [
        CompatibilityMode::None,
        CompatibilityMode::Backward,
        CompatibilityMode::BackwardTransitive,
        CompatibilityMode::Forward,
        CompatibilityMode::ForwardTransitive,
        CompatibilityMode::Full,
        CompatibilityMode::FullTransitive,
    ];

    /// The PascalCase name used in manifests, for example `BackwardTransitive`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::None => "None",
            CompatibilityMode::Backward => "Backward",
            CompatibilityMode::BackwardTransitive => "BackwardTransitive",
            CompatibilityMode::Forward => "Forward",
            CompatibilityMode::ForwardTransitive => "ForwardTransitive",
            CompatibilityMode::Full => "Full",
            CompatibilityMode::FullTransitive => "FullTransitive",
        }
    }

    /// Whether a new version is compared with every earlier accepted version.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityMode::BackwardTransitive
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }

    /// Whether the mode requires the new schema to accept what the old one accepted.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Backward
                | CompatibilityMode::BackwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }

    /// Whether the mode requires the old schema to accept what the new one accepts.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Forward
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityMode {
    type Err = CompatError;

    /// Accepts the manifest spelling (`BackwardTransitive`), kebab or snake case
    /// (`backward-transitive`, `backward_transitive`) and Confluent's spelling
    /// (`BACKWARD_TRANSITIVE`), in any letter case.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let folded: String = input
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        CompatibilityMode::ALL
            .into_iter()
            .find(|mode| mode.as_str().to_lowercase() == folded)
            .ok_or_else(|| CompatError::UnknownMode {
                input: input.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for (text, mode) in [
            ("backward-transitive", CompatibilityMode::BackwardTransitive),
            ("BACKWARD_TRANSITIVE", CompatibilityMode::BackwardTransitive),
            ("FullTransitive", CompatibilityMode::FullTransitive),
            ("full", CompatibilityMode::Full),
            ("none", CompatibilityMode::None),
            ("forward_transitive", CompatibilityMode::ForwardTransitive),
        ] {
            assert_eq!(text.parse::<CompatibilityMode>().ok(), Some(mode), "{text}");
        }
        assert!("sideways".parse::<CompatibilityMode>().is_err());
    }

    #[test]
    fn serializes_pascal_case() {
        let json = serde_json::to_string(&CompatibilityMode::ForwardTransitive).ok();
        assert_eq!(json.as_deref(), Some("\"ForwardTransitive\""));
    }
}
