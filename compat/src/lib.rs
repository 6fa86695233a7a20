//! JSON Schema compatibility for Millrace event contracts, with the semantics of Confluent
//! Schema Registry's JSON Schema support.
//!
//! [`diff`] walks an old and a new schema (draft-07 or 2020-12) side by side and reports each
//! difference as a typed [`Change`] with a JSON pointer and whether it breaks backward
//! compatibility (the new schema rejects something the old one accepted) or forward
//! compatibility (the old schema rejects something the new one accepts).
//! [`check_versions`] applies a [`CompatibilityMode`] to an ordered list of versions, as the
//! operator does for an EventContract and as `millrace contracts check` does offline.
//!
//! The checker is conservative: when it cannot prove a change safe it reports it as breaking.
//! Keywords it does not know fail closed.
//!
//! ```
//! use millrace_compat::{diff, ChangeKind, CompatibilityMode};
//! use serde_json::json;
//!
//! let v1 = json!({"type": "object", "properties": {"qty": {"type": "number"}}, "additionalProperties": false});
//! let v2 = json!({"type": "object", "properties": {"qty": {"type": "number"}, "uom": {"type": "string"}},
//!                 "additionalProperties": false});
//! let changes = diff(&v1, &v2).unwrap();
//! assert_eq!(changes.changes[0].kind, ChangeKind::PropertyAddedToClosedContentModel);
//! assert!(changes.is_compatible(CompatibilityMode::Backward));
//! assert!(!changes.is_compatible(CompatibilityMode::Forward));
//! ```

mod change;
mod compare;
mod error;
mod mode;
mod schema;
mod versions;

pub use change::{Change, ChangeKind, SchemaDiff};
pub use error::CompatError;
pub use mode::CompatibilityMode;
pub use versions::{Incompatibility, VersionVerdict, check_versions};

use serde_json::Value;

use compare::Comparator;
use schema::Document;

/// Compares an old and a new schema and lists every difference.
///
/// Errors when either is not a schema the checker can read: not an object or boolean, a
/// keyword of the wrong shape, a `$ref` that does not resolve locally, or a pattern in
/// `patternProperties` that cannot be compiled.
pub fn diff(old: &Value, new: &Value) -> Result<SchemaDiff, CompatError> {
    let old_doc = Document::new(old)?;
    let new_doc = Document::new(new)?;
    let mut comparator = Comparator::new(&old_doc, &new_doc);
    let found = comparator.compare(old_doc.root(), new_doc.root(), "#")?;
    let mut changes: Vec<Change> = Vec::with_capacity(found.len());
    for change in found {
        if !changes.contains(&change) {
            changes.push(change);
        }
    }
    Ok(SchemaDiff { changes })
}

/// Checks that a schema can be compared at all: the same walk as [`diff`] against itself.
pub fn validate_schema(schema: &Value) -> Result<(), CompatError> {
    diff(schema, schema).map(|_| ())
}
