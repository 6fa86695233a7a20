//! One case per schema keyword and per step of admission, on the Millrace CRDs.
//!
//! Each expected outcome was taken from kube-apiserver v1.37 (`kubectl apply --server-side
//! --dry-run=server --validate=strict`) on the same manifest: the same fields, refused for the
//! same reasons. The apiserver's note that it skipped the CEL rules appears as the violation
//! without a field.

mod common;

use common::listed;
use millrace_admission::{Admission, Violation, ViolationKind};
use serde_json::{Value, json};

use ViolationKind::*;

/// The apiserver's field-less note that it did not run the CEL rules.
const SKIPPED: (&str, ViolationKind) = ("", Invalid);

/// A valid flow, changed by each case.
fn flow() -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1",
        "kind": "IntegrationFlow",
        "metadata": {"name": "probe"},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "core-bus", "exchange": "mes.events", "routingKeys": ["production.completed.#"]}},
            "contract": {"name": "production-completed", "version": 1},
            "routes": [{"name": "canonical", "destination": {"connection": "core-bus", "amqp": {"exchange": "canonical.events"}}}]
        }
    })
}

fn route(name: &str) -> Value {
    json!({"name": name, "destination": {"connection": "core-bus", "amqp": {"exchange": "canonical.events"}}})
}

/// A change to the valid flow.
type Change = fn(&mut Value);

/// A case: its name, the change, and the violations expected, as field and kind.
type Case = (&'static str, Change, Vec<(&'static str, ViolationKind)>);

fn check(
    admission: &Admission,
    name: &str,
    change: Change,
    expected: &[(&str, ViolationKind)],
) -> Option<String> {
    let mut manifest = flow();
    change(&mut manifest);
    let violations = admission.validate(&manifest);
    let mut found: Vec<(&str, ViolationKind)> = violations
        .iter()
        .map(|v| (v.field.as_str(), v.kind))
        .collect();
    let mut expected = expected.to_vec();
    found.sort_by_key(|(field, kind)| (field.to_string(), format!("{kind:?}")));
    expected.sort_by_key(|(field, kind)| (field.to_string(), format!("{kind:?}")));
    (found != expected).then(|| {
        format!(
            "{name}: expected {expected:?}, found:\n{}",
            listed(&violations)
        )
    })
}

#[test]
fn each_keyword_refuses_as_the_apiserver_does() {
    let cases: Vec<Case> = vec![
        ("valid", |_| {}, vec![]),
        // required
        (
            "required field missing",
            |o| {
                o["spec"].as_object_mut().map(|s| s.remove("contract"));
            },
            vec![("spec.contract", Required), SKIPPED],
        ),
        (
            "spec missing",
            |o| {
                o.as_object_mut().map(|s| s.remove("spec"));
            },
            vec![("spec", Required), SKIPPED],
        ),
        (
            "required field missing in a list item",
            |o| {
                o["spec"]["routes"][0]
                    .as_object_mut()
                    .map(|r| r.remove("destination"));
            },
            vec![("spec.routes[0].destination", Required), SKIPPED],
        ),
        (
            "two required fields missing",
            |o| o["spec"]["delivery"] = json!({"ordering": {}}),
            vec![
                ("spec.delivery.ordering.key", Required),
                ("spec.delivery.ordering.partitions", Required),
                SKIPPED,
            ],
        ),
        // type
        (
            "string for a list",
            |o| o["spec"]["routes"] = json!("x"),
            vec![("spec.routes", Type)],
        ),
        (
            "string for an integer",
            |o| o["spec"]["contract"]["version"] = json!("one"),
            vec![("spec.contract.version", Type)],
        ),
        (
            "boolean for a string",
            |o| o["spec"]["deletionPolicy"] = json!(true),
            vec![("spec.deletionPolicy", Type)],
        ),
        (
            "number for a boolean",
            |o| o["spec"]["suspend"] = json!(1),
            vec![("spec.suspend", Type)],
        ),
        (
            "fraction for an integer",
            |o| o["spec"]["contract"]["version"] = json!(1.5),
            vec![("spec.contract.version", Type), SKIPPED],
        ),
        (
            "1.0 is an integer",
            |o| o["spec"]["contract"]["version"] = json!(1.0),
            vec![],
        ),
        (
            "integer beyond int64",
            |o| o["spec"]["contract"]["version"] = json!(1e20),
            vec![
                ("spec.contract.version", Type),
                ("spec.contract.version", Invalid),
                SKIPPED,
            ],
        ),
        (
            "null where not nullable",
            |o| o["spec"]["contract"] = Value::Null,
            vec![("spec.contract", Type), SKIPPED],
        ),
        (
            "null where nullable",
            |o| o["spec"]["broker"] = Value::Null,
            vec![],
        ),
        (
            "null where a default applies",
            |o| o["spec"]["deletionPolicy"] = Value::Null,
            vec![],
        ),
        (
            "null item in a plain list",
            |o| o["spec"]["source"]["amqp"]["routingKeys"] = json!(["a", null]),
            vec![("spec.source.amqp.routingKeys[1]", Type), SKIPPED],
        ),
        (
            "int-or-string takes an integer and a string",
            |o| {
                o["spec"]["workers"] = json!({"resources": {"limits": {"cpu": 1, "memory": "1Gi"}}})
            },
            vec![],
        ),
        (
            "int-or-string refuses a fraction",
            |o| o["spec"]["workers"] = json!({"resources": {"limits": {"cpu": 0.5}}}),
            vec![("spec.workers.resources.limits.cpu", Type), SKIPPED],
        ),
        // enum
        (
            "enum",
            |o| o["spec"]["deletionPolicy"] = json!("Orphan"),
            vec![("spec.deletionPolicy", NotSupported), SKIPPED],
        ),
        (
            "enum in a list item",
            |o| {
                o["spec"]["routes"][0]["destination"] =
                    json!({"connection": "erp", "http": {"method": "GET", "path": "/x"}})
            },
            vec![
                ("spec.routes[0].destination.http.method", NotSupported),
                SKIPPED,
            ],
        ),
        // pattern
        (
            "pattern",
            |o| o["spec"]["version"] = json!("1.0"),
            vec![("spec.version", Invalid)],
        ),
        (
            "pattern in a list item",
            |o| o["spec"]["routes"][0]["name"] = json!("Canonical_Bus"),
            vec![("spec.routes[0].name", Invalid)],
        ),
        // string length
        (
            "maxLength",
            |o| o["spec"]["routes"][0]["name"] = json!("a".repeat(64)),
            vec![("spec.routes[0].name", TooLong), SKIPPED],
        ),
        (
            "minLength",
            |o| o["spec"]["contract"]["name"] = json!(""),
            vec![("spec.contract.name", TooShort)],
        ),
        (
            "minLength in a plain list",
            |o| o["spec"]["source"]["amqp"]["routingKeys"] = json!([""]),
            vec![("spec.source.amqp.routingKeys[0]", TooShort)],
        ),
        // numeric bounds
        (
            "minimum",
            |o| o["spec"]["contract"]["version"] = json!(0),
            vec![("spec.contract.version", Invalid)],
        ),
        (
            "maximum",
            |o| o["spec"]["delivery"] = json!({"ordering": {"key": ".id", "partitions": 65}}),
            vec![("spec.delivery.ordering.partitions", Invalid)],
        ),
        // item and property counts
        (
            "minItems",
            |o| o["spec"]["routes"] = json!([]),
            vec![("spec.routes", TooFew)],
        ),
        (
            "maxItems",
            |o| {
                o["spec"]["routes"] =
                    Value::Array((0..17).map(|i| route(&format!("r{i}"))).collect())
            },
            vec![("spec.routes", TooMany), SKIPPED],
        ),
        (
            "maxProperties",
            |o| o["spec"]["transform"] = json!({"args": (0..33).map(|i| (format!("a{i}"), json!("x"))).collect::<serde_json::Map<_, _>>()}),
            vec![("spec.transform.args", TooMany), SKIPPED],
        ),
        // map values (additionalProperties): a dot before the key, as the OpenAPI validator writes it
        (
            "map value too long",
            |o| o["spec"]["transform"] = json!({"args": {"a": "x".repeat(4097)}}),
            vec![("spec.transform.args.a", TooLong), SKIPPED],
        ),
        (
            "map value of the wrong type",
            |o| o["spec"]["transform"] = json!({"args": {"a": 5}}),
            vec![("spec.transform.args.a", Type)],
        ),
        // keyed lists
        (
            "duplicate list-map key",
            |o| o["spec"]["routes"] = json!([route("canonical"), route("canonical")]),
            vec![("spec.routes[1]", Duplicate)],
        ),
        (
            "list-map item without its key",
            |o| {
                o["spec"]["routes"][0]
                    .as_object_mut()
                    .map(|r| r.remove("name"));
            },
            vec![("spec.routes[0]", Required)],
        ),
        (
            "null item in a list-map",
            |o| o["spec"]["routes"] = json!([route("canonical"), null]),
            vec![("spec.routes[1]", Invalid)],
        ),
        // unknown fields (strict), which stop everything else
        (
            "unknown field",
            |o| o["spec"]["foo"] = json!(1),
            vec![("spec.foo", Unknown)],
        ),
        (
            "unknown fields in a list item and an object",
            |o| {
                o["spec"]["routes"][0]["bar"] = json!(1);
                o["spec"]["source"]["amqp"]["baz"] = json!("x");
            },
            vec![
                ("spec.routes[0].bar", Unknown),
                ("spec.source.amqp.baz", Unknown),
            ],
        ),
        (
            "unknown top-level field",
            |o| o["extra"] = json!(1),
            vec![("extra", Unknown)],
        ),
        (
            "unknown metadata field",
            |o| o["metadata"]["foo"] = json!(1),
            vec![("metadata.foo", Unknown)],
        ),
        (
            "unknown field hides value problems",
            |o| {
                o["spec"]["foo"] = json!(1);
                o["spec"]["deletionPolicy"] = json!("X");
            },
            vec![("spec.foo", Unknown)],
        ),
        // status: its shape is checked, its values are not (the apiserver drops it on create)
        (
            "status of the wrong shape",
            |o| o["status"] = json!({"foo": 1, "conditions": "x"}),
            vec![("status.conditions", Type), ("status.foo", Unknown)],
        ),
        (
            "status of the right shape",
            |o| o["status"] = json!({"queue": {"backlog": -1}, "conditions": [{"type": "Ready"}], "revision": "r"}),
            vec![],
        ),
        // metadata
        (
            "invalid name",
            |o| o["metadata"]["name"] = json!("Bad_Name"),
            // The name is no DNS subdomain, and the flow's own rule on its name refuses it too.
            vec![("metadata.name", Invalid), ("", Rule)],
        ),
        (
            "invalid label key and value",
            |o| o["metadata"]["labels"] = json!({"app": "bad value!", "Bad Key": "x"}),
            vec![("metadata.labels", Invalid), ("metadata.labels", Invalid)],
        ),
        (
            "annotations too large",
            |o| o["metadata"]["annotations"] = json!({"a": "x".repeat(262_145)}),
            vec![("metadata.annotations", TooLong), SKIPPED],
        ),
        // CEL
        (
            "rule on an object",
            |o| o["spec"]["source"]["http"] = json!({"path": "/hooks", "auth": {"type": "Bearer", "secretRef": {"name": "h", "key": "t"}}}),
            vec![("spec.source", Rule)],
        ),
        (
            "rule on a list item",
            |o| o["spec"]["routes"][0]["destination"]["http"] = json!({"path": "/x"}),
            vec![("spec.routes[0].destination", Rule)],
        ),
        (
            "rules still run after an Invalid value",
            |o| {
                o["spec"]["contract"]["name"] = json!("");
                o["spec"]["routes"][0]["destination"]["http"] = json!({"path": "/x"});
            },
            vec![
                ("spec.contract.name", TooShort),
                ("spec.routes[0].destination", Rule),
            ],
        ),
        (
            "several value problems at once",
            |o| {
                o["spec"]["contract"] = json!({"name": "", "version": 0});
                o["spec"]["routes"] = json!([]);
            },
            vec![
                ("spec.contract.name", TooShort),
                ("spec.contract.version", Invalid),
                ("spec.routes", TooFew),
            ],
        ),
        // The loop rule reads the route's routing key, which only the default sets here.
        (
            "defaults are applied before the rules",
            |o| {
                o["spec"]["source"]["amqp"]["routingKeys"] = json!([""]);
                o["spec"]["routes"][0]["destination"] =
                    json!({"connection": "core-bus", "amqp": {"exchange": "mes.events"}});
            },
            vec![
                ("spec.source.amqp.routingKeys[0]", TooShort),
                ("spec", Rule),
            ],
        ),
    ];
    let admission = Admission::millrace();
    let wrong: Vec<String> = cases
        .into_iter()
        .filter_map(|(name, change, expected)| check(&admission, name, change, &expected))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn first(manifest: Value) -> Violation {
    let violations = Admission::millrace().validate(&manifest);
    violations
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("expected a violation"))
}

#[test]
fn messages_say_what_is_wrong_and_how_to_fix_it() {
    let mut missing = flow();
    missing["spec"]
        .as_object_mut()
        .map(|spec| spec.remove("contract"));
    let mut unsupported = flow();
    unsupported["spec"]["deletionPolicy"] = json!("Foo");
    let mut pattern = flow();
    pattern["spec"]["routes"][0]["name"] = json!("Bad_Name");
    let mut long = flow();
    long["spec"]["routes"][0]["name"] = json!("a".repeat(64));
    let mut duplicate = flow();
    duplicate["spec"]["routes"] = json!([route("erp"), route("erp")]);
    let mut unknown = flow();
    unknown["spec"]["foo"] = json!(1);
    let mut rule = flow();
    rule["spec"]["routes"][0]["destination"]["http"] = json!({"path": "/x"});

    let cases = [
        (missing, "spec.contract: Required value: add spec.contract"),
        (
            unsupported,
            "spec.deletionPolicy: Unsupported value: \"Foo\": supported values: \"Retain\", \"Delete\"",
        ),
        (
            pattern,
            "spec.routes[0].name: Invalid value: \"Bad_Name\": must match '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'",
        ),
        (
            long,
            "spec.routes[0].name: Too long: may not be more than 63 characters (has 64)",
        ),
        (
            duplicate,
            "spec.routes[1]: Duplicate value: map[name:erp]: another item of spec.routes has the same name; give each item its own",
        ),
        (
            unknown,
            "spec.foo: unknown field \"spec.foo\": remove it or check its spelling",
        ),
        (
            rule,
            "spec.routes[0].destination: set exactly one of destination.amqp or destination.http",
        ),
    ];
    for (manifest, expected) in cases {
        assert_eq!(first(manifest).to_string(), expected);
    }
}

#[test]
fn the_envelope_is_checked_first() {
    let admission = Admission::millrace();
    let cases = [
        (json!("a string"), "", Type),
        (
            json!({"kind": "IntegrationFlow", "metadata": {"name": "x"}}),
            "apiVersion",
            Required,
        ),
        (
            json!({"apiVersion": "millrace.dev/v1alpha1", "metadata": {"name": "x"}}),
            "kind",
            Required,
        ),
        (
            json!({"apiVersion": "millrace.dev/v1", "kind": "IntegrationFlow"}),
            "kind",
            NotSupported,
        ),
    ];
    for (manifest, field, kind) in cases {
        let violations = admission.validate(&manifest);
        assert_eq!(violations.len(), 1, "{manifest}:\n{}", listed(&violations));
        assert_eq!(
            (violations[0].field.as_str(), violations[0].kind),
            (field, kind),
            "{manifest}"
        );
    }
    let mut nameless = flow();
    nameless["metadata"] = json!({"generateName": "probe-"});
    assert!(admission.validate(&nameless).is_empty());
    nameless["metadata"] = json!({});
    let violations = admission.validate(&nameless);
    assert_eq!(
        violations[0].field,
        "metadata.name",
        "{}",
        listed(&violations)
    );
    assert_eq!(violations[0].kind, Required);
}

#[test]
fn defaulted_fills_defaults_drops_status_and_prunes() {
    let admission = Admission::millrace();
    let mut manifest = flow();
    manifest["status"] = json!({"revision": "r"});
    manifest["spec"]["foo"] = json!(1);
    manifest["metadata"]["bar"] = json!(1);
    let stored = admission.defaulted(&manifest);
    assert_eq!(stored["spec"]["deletionPolicy"], "Retain");
    // Nothing is defaulted inside routes[]: a GitOps diff of the stored flow stays clean.
    assert!(
        stored["spec"]["routes"][0]["destination"]["amqp"]
            .get("routingKey")
            .is_none()
    );
    assert!(stored.get("status").is_none());
    assert!(stored["spec"].get("foo").is_none());
    assert!(stored["metadata"].get("bar").is_none());
    assert_eq!(stored["apiVersion"], "millrace.dev/v1alpha1");
    assert_eq!(stored["metadata"]["name"], "probe");
    // The input is left alone.
    assert!(manifest["spec"].get("deletionPolicy").is_none());

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert_eq!(admission.defaulted(&secret), secret);
}
