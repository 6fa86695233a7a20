//! The jq programs of the example flows (`examples/manufacturing/flows`, `examples/basic`) run
//! natively on their contracts' example events, with the lookups and args the worker gives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::tests::assert_agrees;
use crate::pipeline::transform::{JqProgram, JqVariables};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every YAML document of a file, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            serde_json::to_value(yaml).expect("YAML maps to JSON")
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} cannot be listed: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// One example flow's programs, their variables and the events they see.
pub(super) struct ExampleFlow {
    pub name: String,
    pub vars: JqVariables,
    /// The contract's example events: what the transform and the keys run on.
    pub events: Vec<Value>,
    /// `(what, program)` run on the event: the transform and the delivery keys.
    pub on_event: Vec<(String, String)>,
    /// Route predicates, run on the transform's output.
    pub on_output: Vec<(String, String)>,
}

/// The example flows of `examples/manufacturing` and `examples/basic`.
pub(super) fn example_flows() -> Vec<ExampleFlow> {
    let root = examples_dir();
    let mut contracts: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut config_maps: BTreeMap<String, Value> = BTreeMap::new();
    let mut flows = Vec::new();
    for (dir, flow_files) in [
        (
            "manufacturing",
            yaml_files(&root.join("manufacturing/flows")),
        ),
        ("basic", vec![root.join("basic/integration-flow.yaml")]),
    ] {
        let mut files = yaml_files(&root.join(dir));
        if dir == "manufacturing" {
            files.extend(yaml_files(&root.join("manufacturing/contracts")));
        }
        for doc in files.iter().flat_map(|f| documents(f)) {
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match doc["kind"].as_str() {
                Some("EventContract") => {
                    contracts.insert((dir.to_string(), name), doc);
                }
                Some("ConfigMap") => {
                    config_maps.insert(name, doc["data"].clone());
                }
                _ => {}
            }
        }
        for file in flow_files {
            for flow in documents(&file) {
                flows.push(example_flow(dir, &flow, &contracts, &config_maps));
            }
        }
    }
    flows
}

fn example_flow(
    dir: &str,
    flow: &Value,
    contracts: &BTreeMap<(String, String), Value>,
    config_maps: &BTreeMap<String, Value>,
) -> ExampleFlow {
    let name = flow["metadata"]["name"]
        .as_str()
        .expect("a flow has a name")
        .to_string();
    let spec = &flow["spec"];
    let transform = &spec["transform"];

    // The variables as the worker builds them: lookups are tables of strings, args as given.
    let mut pairs: BTreeMap<String, Value> = BTreeMap::new();
    for lookup in transform["lookups"].as_array().into_iter().flatten() {
        let table = lookup["configMapRef"]["name"]
            .as_str()
            .expect("a ConfigMap name");
        let data = config_maps
            .get(table)
            .unwrap_or_else(|| panic!("flow {name}: no ConfigMap {table} in the example"));
        let lookup_name = lookup["name"].as_str().expect("a lookup name");
        pairs.insert(lookup_name.to_string(), data.clone());
    }
    for (arg, value) in transform["args"].as_object().into_iter().flatten() {
        pairs.insert(arg.clone(), value.clone());
    }

    let contract_name = spec["contract"]["name"].as_str().expect("a contract name");
    let contract = contracts
        .get(&(dir.to_string(), contract_name.to_string()))
        .unwrap_or_else(|| panic!("flow {name}: no contract {contract_name} in the example"));
    let versions = contract["spec"]["versions"].as_array().expect("versions");
    let version = match spec["contract"]["version"].as_u64() {
        Some(v) => versions
            .iter()
            .find(|ver| ver["version"].as_u64() == Some(v))
            .unwrap_or_else(|| panic!("flow {name}: contract {contract_name} has no v{v}")),
        None => versions.last().expect("a version"),
    };
    let events = version["examples"].as_array().cloned().unwrap_or_default();
    assert!(
        !events.is_empty(),
        "contract {contract_name}: the version flow {name} reads has no examples"
    );

    let mut on_event = Vec::new();
    if let Some(code) = transform["jq"].as_str() {
        on_event.push(("transform.jq".to_string(), code.to_string()));
    }
    for key in ["idempotency", "ordering"] {
        if let Some(code) = spec["delivery"][key]["key"].as_str() {
            on_event.push((format!("delivery.{key}.key"), code.to_string()));
        }
    }
    let on_output = spec["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|route| {
            let code = route["when"].as_str()?;
            Some((format!("route {} when", route["name"]), code.to_string()))
        })
        .collect();
    ExampleFlow {
        name,
        vars: JqVariables::new(pairs),
        events,
        on_event,
        on_output,
    }
}

/// Runs `code` natively on `event`, checks jaq agrees, and returns the output.
fn native_output(flow: &str, what: &str, code: &str, vars: &JqVariables, event: &Value) -> Value {
    let program =
        JqProgram::compile(code, vars).unwrap_or_else(|e| panic!("flow {flow}, {what}: {e}"));
    assert!(
        program.is_native(),
        "flow {flow}, {what} is not native: {code}"
    );
    assert!(
        !program.may_loop(),
        "flow {flow}, {what} counts as may-loop: {code}"
    );
    let out = program
        .run_natively(event, vars)
        .unwrap_or_else(|| panic!("flow {flow}, {what} left {event} to jaq: {code}"));
    assert_agrees(code, vars, std::slice::from_ref(event));
    out
}

#[test]
fn every_example_program_is_answered_natively() {
    let flows = example_flows();
    assert!(flows.len() >= 8, "found only {} example flows", flows.len());
    let mut programs = 0;
    for flow in &flows {
        programs += flow.on_event.len() + flow.on_output.len();
        for event in &flow.events {
            let mut output = event.clone();
            for (what, code) in &flow.on_event {
                let out = native_output(&flow.name, what, code, &flow.vars, event);
                if what == "transform.jq" {
                    output = out;
                }
            }
            for (what, code) in &flow.on_output {
                native_output(&flow.name, what, code, &flow.vars, &output);
            }
        }
    }
    assert!(programs >= 20, "found only {programs} example programs");
}

/// Variants of the example events (a field missing, a field null, a number as a string): the
/// native path may leave them to jaq, but where it answers, it agrees.
#[test]
fn example_programs_agree_with_jaq_on_variants_of_their_events() {
    for flow in example_flows() {
        let mut inputs = Vec::new();
        for event in &flow.events {
            let Value::Object(fields) = event else {
                continue;
            };
            for key in fields.keys() {
                let mut missing = fields.clone();
                missing.remove(key);
                inputs.push(Value::Object(missing));
                let mut null = fields.clone();
                null.insert(key.clone(), Value::Null);
                inputs.push(Value::Object(null));
                if let Some(Value::Number(n)) = fields.get(key) {
                    let mut text = fields.clone();
                    text.insert(key.clone(), Value::String(n.to_string()));
                    inputs.push(Value::Object(text));
                }
            }
        }
        for (_, code) in &flow.on_event {
            assert_agrees(code, &flow.vars, &inputs);
        }
    }
}
