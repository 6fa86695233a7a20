//! Offline admission: judges a Millrace manifest as kube-apiserver judges it on create, so that
//! `millrace validate` refuses what `kubectl apply --server-side --dry-run=server
//! --validate=strict` refuses, naming the same field.
//!
//! This is the first of three layers of checks. It looks at one object against its CRD's schema,
//! nothing else; checks across objects (does the contract exist, does the connection's kind match
//! the route) live elsewhere. It does no I/O.
//!
//! # What it checks, in the apiserver's order
//!
//! 1. **Shape.** A server-side apply first fits the manifest to the schema's structure, and a
//!    manifest that does not fit is refused with nothing else said: fields the schema does not
//!    declare (outside `x-kubernetes-preserve-unknown-fields`), values of the wrong JSON type,
//!    keyed lists (`x-kubernetes-list-type: map`) whose items repeat or omit their key. This
//!    includes `status` and `metadata`. When this step finds anything, only its findings are
//!    reported.
//! 2. **Values.** With schema defaults filled in and `status` dropped (the apiserver ignores
//!    `status` on create when the CRD has a status subresource): `metadata` (name, namespace,
//!    labels, annotations, finalizers) and every OpenAPI keyword the Millrace CRDs use. All
//!    problems are reported, not just the first.
//! 3. **CEL rules** (`x-kubernetes-validations`), evaluated with `kube-cel` on the defaulted
//!    object, at the field path of the schema node that carries each rule. As in the apiserver,
//!    a field set to `null` is absent for the rules (`has()` is false), and the rules are
//!    skipped, with a note saying so, when step 2 found a missing required field, an
//!    unsupported enum value, a too-long string, too many items or a wrong type.
//!
//! # Limits
//!
//! What the apiserver does on create that this crate does not:
//! - transition rules (those reading `oldSelf`) and ratcheting, which only matter on update;
//! - mutating and validating admission webhooks, ValidatingAdmissionPolicies, and quota;
//! - anything needing the cluster: whether the namespace exists, name conflicts, RBAC,
//!   `ownerReferences` to live objects;
//! - the CEL cost budget: rules too expensive for the apiserver are evaluated here anyway;
//! - schema keywords the Millrace CRDs do not use (`allOf`, `anyOf`, `oneOf`, `not`,
//!   `multipleOf`, `x-kubernetes-embedded-resource`, string formats other than `date-time`).
//!   A unit test fails when the CRDs start using a keyword this crate does not check;
//! - property names that CEL must escape (`my_field`, `a.b`, `namespace`): `kube-cel` escapes
//!   them differently from the apiserver, so a rule reading one would be judged differently.
//!   The Millrace CRDs have none, and a unit test keeps it so.
//!
//! Where the apiserver is not deterministic, this crate is: when a manifest has both an
//! unknown field and a wrongly typed field in one object, the apiserver names one or both,
//! depending on map iteration order; this crate always names both.
//!
//! Messages follow the apiserver's wording and add how to fix the problem where that can be
//! said; the field paths are the apiserver's.

mod defaults;
mod field_path;
mod metadata;
mod openapi;
mod pattern;
mod rules;
mod schema;
mod structure;
mod violation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

pub use violation::{Violation, ViolationKind};

use metadata::MetadataRules;
use schema::SchemaNode;

/// The apiserver's note, without a field, when it skipped the CEL rules of an invalid object.
const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// The compiled schemas of a set of CRDs: build it once, then validate many objects with it.
#[derive(Debug)]
pub struct Admission {
    kinds: Vec<ServedKind>,
    metadata: MetadataRules,
}

/// One served version of one CRD.
#[derive(Debug)]
struct ServedKind {
    api_version: String,
    kind: String,
    schema: SchemaNode,
    /// With a status subresource, the apiserver drops `status` from what is created.
    status_subresource: bool,
}

impl Admission {
    /// Compiles the schema, patterns and CEL rules of every served version of `crds`.
    pub fn new(crds: &[CustomResourceDefinition]) -> Self {
        let mut kinds = Vec::new();
        for crd in crds {
            let group = &crd.spec.group;
            for version in crd.spec.versions.iter().filter(|version| version.served) {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|validation| validation.open_api_v3_schema.as_ref())
                    .and_then(|schema| serde_json::to_value(schema).ok())
                    .map_or_else(SchemaNode::open, |schema| SchemaNode::compile(&schema));
                kinds.push(ServedKind {
                    api_version: format!("{group}/{}", version.name),
                    kind: crd.spec.names.kind.clone(),
                    schema,
                    status_subresource: version
                        .subresources
                        .as_ref()
                        .is_some_and(|subresources| subresources.status.is_some()),
                });
            }
        }
        Self {
            kinds,
            metadata: MetadataRules::new(),
        }
    }

    /// The Millrace CRDs: [`Admission::new`] of [`millrace_crds::all_crds`].
    pub fn millrace() -> Self {
        Self::new(&millrace_crds::all_crds())
    }

    /// True when `api_version`/`kind` is served by one of the CRDs.
    pub fn serves(&self, api_version: &str, kind: &str) -> bool {
        self.served(api_version, kind).is_some()
    }

    /// Every violation of `object`, a whole manifest (apiVersion, kind, metadata, spec), as the
    /// apiserver would refuse it on create. Empty means admitted.
    ///
    /// An object whose apiVersion and kind are not served gets one violation saying so.
    pub fn validate(&self, object: &Value) -> Vec<Violation> {
        let (served, manifest) = match self.resolve(object) {
            Ok(found) => found,
            Err(violation) => return vec![violation],
        };
        let mut found = Vec::new();
        structure::check_manifest(&served.schema, manifest, &mut found);
        if !found.is_empty() {
            return found;
        }

        let mut admitted = served.admitted(object);
        self.metadata.validate(admitted.get("metadata"), &mut found);
        openapi::validate(&served.schema, &admitted, "", &mut found);
        if found.iter().any(|violation| violation.kind.blocks_rules()) {
            found.push(Violation::new(
                "",
                ViolationKind::Invalid,
                RULES_NOT_CHECKED,
            ));
            return found;
        }
        rules::remove_null_fields(&mut admitted);
        rules::check(&served.schema, &admitted, "", &mut found);
        found
    }

    /// `object` with schema defaults filled in, as the apiserver would store it: `status` dropped
    /// (for a CRD with a status subresource) and fields the schema does not declare pruned.
    /// An object of a kind that is not served comes back unchanged.
    pub fn defaulted(&self, object: &Value) -> Value {
        let Ok((served, _)) = self.resolve(object) else {
            return object.clone();
        };
        let mut stored = served.admitted(object);
        if let Value::Object(fields) = &mut stored {
            fields.retain(|name, field| match name.as_str() {
                "apiVersion" | "kind" => true,
                "metadata" => {
                    metadata::prune(field);
                    true
                }
                _ => match served.schema.field(name) {
                    Some(schema) => {
                        defaults::prune(schema, field);
                        true
                    }
                    None => served.schema.preserve_unknown_fields,
                },
            });
        }
        stored
    }

    fn served(&self, api_version: &str, kind: &str) -> Option<&ServedKind> {
        self.kinds
            .iter()
            .find(|served| served.api_version == api_version && served.kind == kind)
    }

    /// The served kind of a manifest, or the violation that stops it before any schema applies.
    fn resolve<'a>(
        &self,
        object: &'a Value,
    ) -> Result<(&ServedKind, &'a serde_json::Map<String, Value>), Violation> {
        let Value::Object(manifest) = object else {
            return Err(structure::wrong_type("", object, "object"));
        };
        let text = |name: &str| {
            manifest
                .get(name)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        };
        let example = self.kinds.first();
        let Some(api_version) = text("apiVersion") else {
            let hint = example.map_or(String::new(), |k| {
                format!(", for example {}", k.api_version)
            });
            return Err(Violation::new(
                "apiVersion",
                ViolationKind::Required,
                format!("Required value: add apiVersion{hint}"),
            ));
        };
        let Some(kind) = text("kind") else {
            let hint = example.map_or(String::new(), |k| format!(", for example {}", k.kind));
            return Err(Violation::new(
                "kind",
                ViolationKind::Required,
                format!("Required value: add kind{hint}"),
            ));
        };
        match self.served(api_version, kind) {
            Some(served) => Ok((served, manifest)),
            None => {
                let known: Vec<String> = self
                    .kinds
                    .iter()
                    .map(|served| format!("{} {}", served.api_version, served.kind))
                    .collect();
                Err(Violation::new(
                    "kind",
                    ViolationKind::NotSupported,
                    format!(
                        "Unsupported value: {}: no CRD here serves kind {kind} in {api_version}; served: {}",
                        Value::from(kind),
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

impl ServedKind {
    /// The manifest as the apiserver validates it on create: defaults filled in, `status`
    /// dropped.
    fn admitted(&self, object: &Value) -> Value {
        let mut admitted = object.clone();
        if self.status_subresource
            && let Value::Object(fields) = &mut admitted
        {
            fields.remove("status");
        }
        defaults::apply(&self.schema, &mut admitted);
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A CRD of kind `Widget` whose spec has a defaulted `policy` that a CEL rule reads.
    fn widget_admission() -> Admission {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "policy": {"type": "string", "default": "Retain"},
                                    "size": {"type": "integer"}
                                },
                                "x-kubernetes-validations": [{
                                    "rule": "self.policy == 'Delete' || self.size <= 10",
                                    "message": "a size above 10 needs policy Delete"
                                }]
                            }
                        }
                    }}
                }]
            }
        }))
        .expect("a valid CRD");
        Admission::new(&[crd])
    }

    fn widget(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
    }

    #[test]
    fn defaults_are_applied_before_the_rules_read_them() {
        let admission = widget_admission();
        assert!(admission.serves("example.com/v1", "Widget"));
        // Without the default the rule could not read `policy` and would fail to evaluate.
        let violations = admission.validate(&widget(json!({"size": 20})));
        assert_eq!(
            violations,
            [Violation::new(
                "spec",
                ViolationKind::Rule,
                "a size above 10 needs policy Delete"
            )]
        );
        assert!(admission.validate(&widget(json!({"size": 5}))).is_empty());
        assert!(
            admission
                .validate(&widget(json!({"size": 20, "policy": "Delete"})))
                .is_empty()
        );
        assert_eq!(
            admission.defaulted(&widget(json!({"size": 5})))["spec"],
            json!({"size": 5, "policy": "Retain"})
        );
    }

    #[test]
    fn a_crd_without_a_status_subresource_validates_status() {
        let admission = widget_admission();
        let mut with_status = widget(json!({"size": 1}));
        with_status["status"] = json!({"ready": true});
        // `status` is not in this schema, and without a subresource it is not dropped.
        let violations = admission.validate(&with_status);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(
            (violations[0].field.as_str(), violations[0].kind),
            ("status", ViolationKind::Unknown)
        );
    }

    #[test]
    fn admission_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Admission>();
    }

    #[test]
    fn serves_the_millrace_kinds_only() {
        let admission = Admission::millrace();
        for kind in ["EventContract", "PartnerConnection", "IntegrationFlow"] {
            assert!(admission.serves("millrace.dev/v1alpha1", kind), "{kind}");
        }
        assert!(!admission.serves("millrace.dev/v1beta1", "IntegrationFlow"));
        assert!(!admission.serves("v1", "Secret"));
        assert!(!admission.serves("v1", "ConfigMap"));
        assert!(!admission.serves("v1", "Namespace"));
    }
}
