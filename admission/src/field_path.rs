//! Field paths written the way the apiserver writes them.
//!
//! The apiserver has two notations for the value of a map (`additionalProperties`): its OpenAPI
//! validator joins the key with a dot (`spec.transform.args.plant`), while its CEL validator puts
//! it in brackets (`spec.transform.args[plant]`). Both are kept, so a path here is the one
//! `kubectl` prints for the same refusal.

/// The path of a declared property, or of a map value as the OpenAPI checks name it.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The path of a list item.
pub(crate) fn index(parent: &str, position: usize) -> String {
    format!("{parent}[{position}]")
}

/// The path of a map value as the CEL rules name it.
pub(crate) fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

/// A rule's `fieldPath` (`.spec.x` or `x`) joined to the path of the node carrying the rule.
pub(crate) fn relative(parent: &str, relative: &str) -> String {
    if relative.is_empty() {
        parent.to_string()
    } else if let Some(rest) = relative.strip_prefix('.') {
        child(parent, rest)
    } else {
        child(parent, relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_apiservers() {
        let cases = [
            (child("", "spec"), "spec"),
            (child("spec", "routes"), "spec.routes"),
            (index("spec.routes", 2), "spec.routes[2]"),
            (
                child(&index("spec.routes", 0), "name"),
                "spec.routes[0].name",
            ),
            (
                child("spec.transform.args", "plant"),
                "spec.transform.args.plant",
            ),
            (
                key("spec.transform.args", "1plant"),
                "spec.transform.args[1plant]",
            ),
            (relative("spec", ""), "spec"),
            (relative("spec", ".source.amqp"), "spec.source.amqp"),
            (relative("spec", "broker"), "spec.broker"),
            (relative("", ".spec"), "spec"),
        ];
        for (built, expected) in cases {
            assert_eq!(built, expected);
        }
    }
}
