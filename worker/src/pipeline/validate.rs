//! JSON Schema validation against a pinned contract version, compiled once per config.

use serde_json::Value;

/// A compiled contract schema.
pub struct ContractValidator {
    validator: jsonschema::Validator,
    /// `name/vN`, for error messages.
    pub contract: String,
}

impl ContractValidator {
    /// Compiles `schema` (draft detected from `$schema`, 2020-12 by default).
    pub fn compile(name: &str, version: u32, schema: &Value) -> Result<Self, String> {
        // The same compilation that judges contract examples, so examples and events agree.
        let validator = millrace_render::contract::validator(schema)?;
        Ok(Self {
            validator,
            contract: format!("{name}/v{version}"),
        })
    }

    /// Validates `instance`; the error lists the first few violations by JSON pointer, keyword and
    /// schema location, never with the event's values: the text reaches logs and the
    /// `x-millrace-last-error` header, and business data belongs in neither (the dead-letter keeps
    /// the original bytes for whoever may read them).
    pub fn validate(&self, instance: &Value) -> Result<(), String> {
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let problems: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                format!(
                    "{path}: fails {:?} (schema {})",
                    e.kind().keyword(),
                    e.schema_path()
                )
            })
            .collect();
        Err(format!(
            "does not match contract {}: {}",
            self.contract,
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_paths_of_violations() {
        let v = ContractValidator::compile(
            "c",
            1,
            &json!({"type": "object", "required": ["id"], "properties": {"qty": {"type": "number"}}}),
        )
        .unwrap();
        assert!(v.validate(&json!({"id": 1, "qty": 2})).is_ok());
        let e = v.validate(&json!({"qty": "x"})).unwrap_err();
        assert!(e.contains("/qty"), "{e}");
        assert!(e.contains("c/v1"), "{e}");
        assert!(ContractValidator::compile("c", 1, &json!({"type": 12})).is_err());
    }

    #[test]
    fn violations_name_the_pointer_and_keyword_but_never_the_values() {
        let v = ContractValidator::compile(
            "c",
            1,
            &json!({"type": "object", "properties": {
                "qty": {"type": "number"},
                "iban": {"type": "string", "pattern": "^DE[0-9]{20}$"}
            }}),
        )
        .unwrap();
        let e = v
            .validate(&json!({"qty": "SECRET-QTY", "iban": "GB00-PRIVATE-ACCOUNT"}))
            .unwrap_err();
        assert!(e.contains("/qty: fails \"type\""), "{e}");
        assert!(e.contains("/iban: fails \"pattern\""), "{e}");
        assert!(
            !e.contains("SECRET-QTY") && !e.contains("PRIVATE-ACCOUNT"),
            "{e}"
        );
    }
}
