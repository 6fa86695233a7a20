//! Why a schema could not be compared.

use thiserror::Error;

/// A schema the checker cannot reason about. Every message names where the problem is and
/// how to fix it.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CompatError {
    /// A (sub)schema is neither a JSON object nor a boolean.
    #[error(
        "the schema at {path} is {found}, but a JSON Schema must be an object or a boolean: \
         write it as an object such as {{\"type\": \"string\"}}, or as true/false"
    )]
    InvalidSchema {
        /// JSON pointer of the offending schema.
        path: String,
        /// What was found instead (for example "a string").
        found: &'static str,
    },
    /// A keyword has a value of the wrong shape.
    #[error("keyword `{keyword}` at {path} must be {expected}: fix its value")]
    InvalidKeyword {
        /// JSON pointer of the schema holding the keyword.
        path: String,
        /// The keyword, for example `required`.
        keyword: String,
        /// What the keyword's value must be.
        expected: &'static str,
    },
    /// A `$ref` that does not point into the same document.
    #[error(
        "$ref \"{reference}\" at {path} does not resolve inside the schema: only local references \
         (#/$defs/Name, #/definitions/Name, #anchor) are supported, so move the referenced schema \
         under $defs and refer to it as #/$defs/Name"
    )]
    UnresolvableRef {
        /// JSON pointer of the schema holding the `$ref`.
        path: String,
        /// The reference as written.
        reference: String,
    },
    /// `$ref`s that only point at each other and never reach a schema.
    #[error(
        "$ref \"{reference}\" at {path} is part of a loop of references that never reaches a \
         schema: make one of them a real schema"
    )]
    RefLoop {
        /// JSON pointer of the schema holding the `$ref`.
        path: String,
        /// The reference as written.
        reference: String,
    },
    /// A `patternProperties` pattern the checker cannot compile.
    #[error(
        "pattern \"{pattern}\" in patternProperties at {path} cannot be compiled ({reason}): \
         rewrite it without look-around or back-references"
    )]
    UnsupportedPattern {
        /// JSON pointer of the schema holding the pattern.
        path: String,
        /// The pattern as written.
        pattern: String,
        /// The regex engine's complaint.
        reason: String,
    },
    /// A compatibility mode name that is not one of the seven modes.
    #[error(
        "unknown compatibility mode \"{input}\": use one of none, backward, backward-transitive, \
         forward, forward-transitive, full, full-transitive"
    )]
    UnknownMode {
        /// The text that was given.
        input: String,
    },
    /// A problem in one version of an ordered list of versions.
    #[error("version at position {index} (counting from 0): {source}")]
    Version {
        /// Position of the version in the list given to `check_versions`.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<CompatError>,
    },
}

impl CompatError {
    /// A short, bounded label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            CompatError::InvalidSchema { .. } => "invalid_schema",
            CompatError::InvalidKeyword { .. } => "invalid_keyword",
            CompatError::UnresolvableRef { .. } => "unresolvable_ref",
            CompatError::RefLoop { .. } => "ref_loop",
            CompatError::UnsupportedPattern { .. } => "unsupported_pattern",
            CompatError::UnknownMode { .. } => "unknown_mode",
            CompatError::Version { source, .. } => source.category(),
        }
    }
}
