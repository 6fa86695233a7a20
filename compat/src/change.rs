//! The typed changes found between two schemas.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mode::CompatibilityMode;

macro_rules! change_kinds {
    ($( $(#[$meta:meta])* $variant:ident => $name:literal, )*) => {
        /// What changed between two schemas at one location. Serialized as SCREAMING_SNAKE_CASE
        /// words, in the style of Confluent Schema Registry's JSON Schema differences.
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ChangeKind {
            $( $(#[$meta])* #[serde(rename = $name)] $variant, )*
        }

        impl ChangeKind {
            /// Every change kind, in declaration order.
            pub const ALL: &'static [ChangeKind] = &[$(ChangeKind::$variant),*];

            /// The SCREAMING_SNAKE_CASE name, for example `TYPE_NARROWED`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ChangeKind::$variant => $name,)*
                }
            }
        }
    };
}

change_kinds! {
    /// `type` allows more instance types (for example integer to number, or null added).
    TypeExtended => "TYPE_EXTENDED",
    /// `type` allows fewer instance types.
    TypeNarrowed => "TYPE_NARROWED",
    /// `type` allows other instance types, neither a superset nor a subset.
    TypeChanged => "TYPE_CHANGED",
    /// A schema became `false`: nothing is accepted there any more.
    FalseSchemaAdded => "FALSE_SCHEMA_ADDED",
    /// A `false` schema was replaced: something is accepted there now.
    FalseSchemaRemoved => "FALSE_SCHEMA_REMOVED",
    /// `maxLength` added.
    MaxLengthAdded => "MAX_LENGTH_ADDED",
    /// `maxLength` removed.
    MaxLengthRemoved => "MAX_LENGTH_REMOVED",
    /// `maxLength` increased.
    MaxLengthIncreased => "MAX_LENGTH_INCREASED",
    /// `maxLength` decreased.
    MaxLengthDecreased => "MAX_LENGTH_DECREASED",
    /// `minLength` added.
    MinLengthAdded => "MIN_LENGTH_ADDED",
    /// `minLength` removed.
    MinLengthRemoved => "MIN_LENGTH_REMOVED",
    /// `minLength` increased.
    MinLengthIncreased => "MIN_LENGTH_INCREASED",
    /// `minLength` decreased.
    MinLengthDecreased => "MIN_LENGTH_DECREASED",
    /// `pattern` added.
    PatternAdded => "PATTERN_ADDED",
    /// `pattern` removed.
    PatternRemoved => "PATTERN_REMOVED",
    /// `pattern` replaced by another pattern.
    PatternChanged => "PATTERN_CHANGED",
    /// `format` added.
    FormatAdded => "FORMAT_ADDED",
    /// `format` removed.
    FormatRemoved => "FORMAT_REMOVED",
    /// `format` replaced by another format.
    FormatChanged => "FORMAT_CHANGED",
    /// `maximum` added.
    MaximumAdded => "MAXIMUM_ADDED",
    /// `maximum` removed.
    MaximumRemoved => "MAXIMUM_REMOVED",
    /// `maximum` increased.
    MaximumIncreased => "MAXIMUM_INCREASED",
    /// `maximum` decreased.
    MaximumDecreased => "MAXIMUM_DECREASED",
    /// `minimum` added.
    MinimumAdded => "MINIMUM_ADDED",
    /// `minimum` removed.
    MinimumRemoved => "MINIMUM_REMOVED",
    /// `minimum` increased.
    MinimumIncreased => "MINIMUM_INCREASED",
    /// `minimum` decreased.
    MinimumDecreased => "MINIMUM_DECREASED",
    /// `exclusiveMaximum` added.
    ExclusiveMaximumAdded => "EXCLUSIVE_MAXIMUM_ADDED",
    /// `exclusiveMaximum` removed.
    ExclusiveMaximumRemoved => "EXCLUSIVE_MAXIMUM_REMOVED",
    /// `exclusiveMaximum` increased.
    ExclusiveMaximumIncreased => "EXCLUSIVE_MAXIMUM_INCREASED",
    /// `exclusiveMaximum` decreased.
    ExclusiveMaximumDecreased => "EXCLUSIVE_MAXIMUM_DECREASED",
    /// `exclusiveMinimum` added.
    ExclusiveMinimumAdded => "EXCLUSIVE_MINIMUM_ADDED",
    /// `exclusiveMinimum` removed.
    ExclusiveMinimumRemoved => "EXCLUSIVE_MINIMUM_REMOVED",
    /// `exclusiveMinimum` increased.
    ExclusiveMinimumIncreased => "EXCLUSIVE_MINIMUM_INCREASED",
    /// `exclusiveMinimum` decreased.
    ExclusiveMinimumDecreased => "EXCLUSIVE_MINIMUM_DECREASED",
    /// `multipleOf` added.
    MultipleOfAdded => "MULTIPLE_OF_ADDED",
    /// `multipleOf` removed.
    MultipleOfRemoved => "MULTIPLE_OF_REMOVED",
    /// `multipleOf` became a multiple of the old value (for example 2 to 4): fewer values pass.
    MultipleOfExpanded => "MULTIPLE_OF_EXPANDED",
    /// `multipleOf` became a divisor of the old value (for example 4 to 2): more values pass.
    MultipleOfReduced => "MULTIPLE_OF_REDUCED",
    /// `multipleOf` changed to an unrelated value.
    MultipleOfChanged => "MULTIPLE_OF_CHANGED",
    /// `enum` added.
    EnumAdded => "ENUM_ADDED",
    /// `enum` removed.
    EnumRemoved => "ENUM_REMOVED",
    /// `enum` allows more values.
    EnumExtended => "ENUM_EXTENDED",
    /// `enum` allows fewer values.
    EnumNarrowed => "ENUM_NARROWED",
    /// `enum` allows other values, neither a superset nor a subset.
    EnumChanged => "ENUM_CHANGED",
    /// `const` added.
    ConstAdded => "CONST_ADDED",
    /// `const` removed.
    ConstRemoved => "CONST_REMOVED",
    /// `const` changed to another value.
    ConstChanged => "CONST_CHANGED",
    /// A property became required.
    RequiredAttributeAdded => "REQUIRED_ATTRIBUTE_ADDED",
    /// A property is no longer required.
    RequiredAttributeRemoved => "REQUIRED_ATTRIBUTE_REMOVED",
    /// A property was declared where any value was allowed before.
    PropertyAddedToOpenContentModel => "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
    /// A property was declared where it was forbidden before (`additionalProperties: false`).
    PropertyAddedToClosedContentModel => "PROPERTY_ADDED_TO_CLOSED_CONTENT_MODEL",
    /// A property was declared where `patternProperties` or an `additionalProperties` schema
    /// governed it before; it breaks when the new declaration is narrower.
    PropertyAddedToPartiallyOpenContentModel => "PROPERTY_ADDED_TO_PARTIALLY_OPEN_CONTENT_MODEL",
    /// A declared property was dropped and any value is allowed under its name now.
    PropertyRemovedFromOpenContentModel => "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
    /// A declared property was dropped and its name is forbidden now.
    PropertyRemovedFromClosedContentModel => "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    /// A declared property was dropped and `patternProperties` or an `additionalProperties`
    /// schema governs its name now.
    PropertyRemovedFromPartiallyOpenContentModel => "PROPERTY_REMOVED_FROM_PARTIALLY_OPEN_CONTENT_MODEL",
    /// A `patternProperties` entry was added.
    PatternPropertyAdded => "PATTERN_PROPERTY_ADDED",
    /// A `patternProperties` entry was removed.
    PatternPropertyRemoved => "PATTERN_PROPERTY_REMOVED",
    /// Undeclared properties (or items past the declared ones) were forbidden and are allowed now.
    ContentModelOpened => "CONTENT_MODEL_OPENED",
    /// Undeclared properties (or items past the declared ones) were allowed and are forbidden now.
    ContentModelClosed => "CONTENT_MODEL_CLOSED",
    /// `maxProperties` added.
    MaxPropertiesAdded => "MAX_PROPERTIES_ADDED",
    /// `maxProperties` removed.
    MaxPropertiesRemoved => "MAX_PROPERTIES_REMOVED",
    /// `maxProperties` increased.
    MaxPropertiesIncreased => "MAX_PROPERTIES_INCREASED",
    /// `maxProperties` decreased.
    MaxPropertiesDecreased => "MAX_PROPERTIES_DECREASED",
    /// `minProperties` added.
    MinPropertiesAdded => "MIN_PROPERTIES_ADDED",
    /// `minProperties` removed.
    MinPropertiesRemoved => "MIN_PROPERTIES_REMOVED",
    /// `minProperties` increased.
    MinPropertiesIncreased => "MIN_PROPERTIES_INCREASED",
    /// `minProperties` decreased.
    MinPropertiesDecreased => "MIN_PROPERTIES_DECREASED",
    /// A `dependentRequired` entry (or draft-07 array `dependencies`) added.
    DependentRequiredAdded => "DEPENDENT_REQUIRED_ADDED",
    /// A `dependentRequired` entry removed.
    DependentRequiredRemoved => "DEPENDENT_REQUIRED_REMOVED",
    /// A `dependentRequired` entry requires more properties.
    DependentRequiredExtended => "DEPENDENT_REQUIRED_EXTENDED",
    /// A `dependentRequired` entry requires fewer properties.
    DependentRequiredNarrowed => "DEPENDENT_REQUIRED_NARROWED",
    /// A `dependentRequired` entry requires other properties.
    DependentRequiredChanged => "DEPENDENT_REQUIRED_CHANGED",
    /// A `dependentSchemas` entry (or draft-07 schema `dependencies`) added.
    DependentSchemaAdded => "DEPENDENT_SCHEMA_ADDED",
    /// A `dependentSchemas` entry removed.
    DependentSchemaRemoved => "DEPENDENT_SCHEMA_REMOVED",
    /// A tuple position was declared where any item was allowed before.
    ItemAddedToOpenContentModel => "ITEM_ADDED_TO_OPEN_CONTENT_MODEL",
    /// A tuple position was declared where arrays could not be that long before.
    ItemAddedToClosedContentModel => "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
    /// A tuple position was declared where the `items` schema governed it before.
    ItemAddedToPartiallyOpenContentModel => "ITEM_ADDED_TO_PARTIALLY_OPEN_CONTENT_MODEL",
    /// A tuple position was dropped and any item is allowed there now.
    ItemRemovedFromOpenContentModel => "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
    /// A tuple position was dropped and arrays cannot be that long any more.
    ItemRemovedFromClosedContentModel => "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    /// A tuple position was dropped and the `items` schema governs it now.
    ItemRemovedFromPartiallyOpenContentModel => "ITEM_REMOVED_FROM_PARTIALLY_OPEN_CONTENT_MODEL",
    /// `maxItems` added.
    MaxItemsAdded => "MAX_ITEMS_ADDED",
    /// `maxItems` removed.
    MaxItemsRemoved => "MAX_ITEMS_REMOVED",
    /// `maxItems` increased.
    MaxItemsIncreased => "MAX_ITEMS_INCREASED",
    /// `maxItems` decreased.
    MaxItemsDecreased => "MAX_ITEMS_DECREASED",
    /// `minItems` added.
    MinItemsAdded => "MIN_ITEMS_ADDED",
    /// `minItems` removed.
    MinItemsRemoved => "MIN_ITEMS_REMOVED",
    /// `minItems` increased.
    MinItemsIncreased => "MIN_ITEMS_INCREASED",
    /// `minItems` decreased.
    MinItemsDecreased => "MIN_ITEMS_DECREASED",
    /// `uniqueItems: true` added.
    UniqueItemsAdded => "UNIQUE_ITEMS_ADDED",
    /// `uniqueItems: true` removed.
    UniqueItemsRemoved => "UNIQUE_ITEMS_REMOVED",
    /// `contains` added.
    ContainsAdded => "CONTAINS_ADDED",
    /// `contains` removed.
    ContainsRemoved => "CONTAINS_REMOVED",
    /// `minContains` or `maxContains` changed.
    ContainsChanged => "CONTAINS_CHANGED",
    /// An `allOf` subschema added: every instance must match one more schema.
    ProductTypeExtended => "PRODUCT_TYPE_EXTENDED",
    /// An `allOf` subschema removed.
    ProductTypeNarrowed => "PRODUCT_TYPE_NARROWED",
    /// An `anyOf`/`oneOf` alternative added (or a plain schema became one alternative of several).
    SumTypeExtended => "SUM_TYPE_EXTENDED",
    /// An `anyOf`/`oneOf` alternative removed.
    SumTypeNarrowed => "SUM_TYPE_NARROWED",
    /// `anyOf`/`oneOf` added next to other keywords.
    CombinedTypeAdded => "COMBINED_TYPE_ADDED",
    /// `anyOf`/`oneOf` removed.
    CombinedTypeRemoved => "COMBINED_TYPE_REMOVED",
    /// `anyOf` became `oneOf` or the other way round.
    CombinedTypeChanged => "COMBINED_TYPE_CHANGED",
    /// `not` added.
    NotTypeAdded => "NOT_TYPE_ADDED",
    /// `not` removed.
    NotTypeRemoved => "NOT_TYPE_REMOVED",
    /// The `not` schema matches more, so fewer instances pass.
    NotTypeExtended => "NOT_TYPE_EXTENDED",
    /// The `not` schema matches less, so more instances pass.
    NotTypeNarrowed => "NOT_TYPE_NARROWED",
    /// The `not` schema matches other instances.
    NotTypeChanged => "NOT_TYPE_CHANGED",
    /// `if`/`then`/`else` added.
    ConditionalAdded => "CONDITIONAL_ADDED",
    /// `if`/`then`/`else` removed.
    ConditionalRemoved => "CONDITIONAL_REMOVED",
    /// The `if` condition changed.
    ConditionalChanged => "CONDITIONAL_CHANGED",
    /// A `$ref` added next to other constraints.
    ReferenceAdded => "REFERENCE_ADDED",
    /// A `$ref` removed from next to other constraints.
    ReferenceRemoved => "REFERENCE_REMOVED",
    /// A keyword the checker does not know was added. Unknown keywords fail closed.
    UnknownKeywordAdded => "UNKNOWN_KEYWORD_ADDED",
    /// A keyword the checker does not know was removed. Unknown keywords fail closed.
    UnknownKeywordRemoved => "UNKNOWN_KEYWORD_REMOVED",
    /// A keyword the checker does not know changed value. Unknown keywords fail closed.
    UnknownKeywordChanged => "UNKNOWN_KEYWORD_CHANGED",
    /// `title`, `description`, `default`, `examples` or another annotation changed. Never breaking.
    AnnotationChanged => "ANNOTATION_CHANGED",
}

impl ChangeKind {
    /// Looks a kind up by its SCREAMING_SNAKE_CASE name.
    pub fn from_name(name: &str) -> Option<ChangeKind> {
        ChangeKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between an old and a new schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Where, as a JSON pointer fragment from the schema root (`#/properties/qty`). Paths follow
    /// `$ref`s from the root, so a change inside `$defs` is reported where it is used.
    pub path: String,
    /// True when the new schema rejects something the old schema accepted.
    pub breaks_backward: bool,
    /// True when the old schema rejects something the new schema accepts.
    pub breaks_forward: bool,
}

impl Change {
    pub(crate) fn new(
        kind: ChangeKind,
        path: &str,
        breaks_backward: bool,
        breaks_forward: bool,
    ) -> Self {
        Change {
            kind,
            path: path.to_string(),
            breaks_backward,
            breaks_forward,
        }
    }

    /// Whether this change breaks compatibility under `mode`.
    pub fn breaking(&self, mode: CompatibilityMode) -> bool {
        (mode.checks_backward() && self.breaks_backward)
            || (mode.checks_forward() && self.breaks_forward)
    }
}

impl fmt::Display for Change {
    /// `KIND pointer`, the line format of `millrace contracts diff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.path)
    }
}

/// Every difference between two schemas, in a stable order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaDiff {
    /// The changes, in the order the schemas were walked.
    pub changes: Vec<Change>,
}

impl SchemaDiff {
    /// Whether no change breaks compatibility under `mode`. Transitive modes behave like their
    /// plain counterparts here: a diff compares exactly two schemas.
    pub fn is_compatible(&self, mode: CompatibilityMode) -> bool {
        !self.changes.iter().any(|change| change.breaking(mode))
    }

    /// The changes that break compatibility under `mode`.
    pub fn breaking(&self, mode: CompatibilityMode) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(move |change| change.breaking(mode))
    }
}
