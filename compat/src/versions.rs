//! Checking an ordered list of versions under a compatibility mode.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::Change;
use crate::error::CompatError;
use crate::mode::CompatibilityMode;
use crate::{diff, validate_schema};

/// The verdict for one version in an ordered list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionVerdict {
    /// Position of the version in the list (0 is the first version).
    pub index: usize,
    /// Whether the version is compatible with every version it had to be compared with.
    /// A version that is not is rejected: later versions are never compared with it.
    pub compatible: bool,
    /// Positions of the earlier accepted versions it was compared with, oldest first.
    pub compared_with: Vec<usize>,
    /// The changes that break the mode, each with the version it breaks against.
    pub breaking_changes: Vec<Incompatibility>,
    /// Every change since the latest earlier accepted version, breaking or not; empty for
    /// the first version.
    pub changes_from_previous: Vec<Change>,
}

/// A change that makes a version incompatible with an earlier one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Incompatibility {
    /// Position of the earlier version it breaks against.
    pub against: usize,
    /// The breaking change.
    pub change: Change,
}

/// Checks `schemas` (oldest first) under `mode`, as a schema registry does when each is
/// registered in turn: a version is compared with the latest accepted version, or with every
/// accepted version for the transitive modes. The first version is always compatible, and a
/// rejected version is never a baseline for later ones.
pub fn check_versions(
    mode: CompatibilityMode,
    schemas: &[&Value],
) -> Result<Vec<VersionVerdict>, CompatError> {
    for (index, schema) in schemas.iter().enumerate() {
        validate_schema(schema).map_err(|source| CompatError::Version {
            index,
            source: Box::new(source),
        })?;
    }
    let mut accepted: Vec<usize> = Vec::new();
    let mut verdicts = Vec::with_capacity(schemas.len());
    for (index, schema) in schemas.iter().enumerate() {
        let in_version = |source| CompatError::Version {
            index,
            source: Box::new(source),
        };
        let changes_from_previous = match accepted.last() {
            Some(&previous) => diff(schemas[previous], schema).map_err(in_version)?.changes,
            None => Vec::new(),
        };
        let compared_with: Vec<usize> = match (mode, accepted.last()) {
            (CompatibilityMode::None, _) | (_, None) => Vec::new(),
            (m, Some(&previous)) if !m.is_transitive() => vec![previous],
            _ => accepted.clone(),
        };
        let mut breaking_changes = Vec::new();
        for &against in &compared_with {
            let changes = if Some(&against) == accepted.last() {
                changes_from_previous.clone()
            } else {
                diff(schemas[against], schema).map_err(in_version)?.changes
            };
            breaking_changes.extend(
                changes
                    .into_iter()
                    .filter(|change| change.breaking(mode))
                    .map(|change| Incompatibility { against, change }),
            );
        }
        let compatible = breaking_changes.is_empty();
        if compatible {
            accepted.push(index);
        }
        verdicts.push(VersionVerdict {
            index,
            compatible,
            compared_with,
            breaking_changes,
            changes_from_previous,
        });
    }
    Ok(verdicts)
}
