//! What a refusal looks like: the field the apiserver names, what is wrong there, and of which kind.

use std::fmt;

/// One refusal, as the apiserver would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field the apiserver names, in its notation: `spec.routes[0].name`, `spec.source`,
    /// `metadata.name`, `spec` for a rule on the spec itself. Values of a map are written as the
    /// apiserver writes them: `spec.transform.args.plant` for an OpenAPI check, and
    /// `spec.transform.args[plant]` for a CEL rule. Empty only for the apiserver's own note that CEL
    /// rules were not checked, which it reports without a field.
    pub field: String,
    /// What is wrong and, where it can be said, how to fix it. For a CEL rule, the rule's
    /// `message`.
    pub message: String,
    /// Which check refused the field.
    pub kind: ViolationKind,
}

/// Which check a [`Violation`] failed. The names follow the apiserver's field error types, split
/// finer where that helps a reader (the apiserver reports too-short strings and too-few items as
/// plain `Invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A required field is missing.
    Required,
    /// A value breaks `pattern`, `minimum`, `maximum`, `format` or a metadata syntax rule.
    Invalid,
    /// A value is not one of the schema's `enum` values.
    NotSupported,
    /// A string is longer than `maxLength`, or the annotations exceed their total size.
    TooLong,
    /// A string is shorter than `minLength`.
    TooShort,
    /// A list has more than `maxItems` items, or a map more than `maxProperties` entries.
    TooMany,
    /// A list has fewer than `minItems` items, or a map fewer than `minProperties` entries.
    TooFew,
    /// Two items of a `x-kubernetes-list-type: map` (or `set`) list have the same key.
    Duplicate,
    /// A field the schema does not declare, refused as `--validate=strict` refuses it.
    Unknown,
    /// A value of the wrong JSON type (a string where a list belongs, `null` where it may not be).
    Type,
    /// A CEL rule (`x-kubernetes-validations`) failed or could not be evaluated.
    Rule,
}

impl ViolationKind {
    /// Whether the apiserver skips every CEL rule of an object with a violation of this kind.
    ///
    /// It does so for missing required fields, unsupported enum values, too-long strings,
    /// too-many items and wrong types, because the rules could not run meaningfully on such data.
    pub(crate) fn blocks_rules(self) -> bool {
        matches!(
            self,
            Self::Required | Self::NotSupported | Self::TooLong | Self::TooMany | Self::Type
        )
    }
}

impl Violation {
    pub(crate) fn new(
        field: impl Into<String>,
        kind: ViolationKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for Violation {}
