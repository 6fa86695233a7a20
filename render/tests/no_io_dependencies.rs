//! millrace-render stays pure: nothing it depends on, however deep, is a kube client, an async
//! runtime, an HTTP stack or an AMQP client. Checked on the workspace's resolved graph.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

const FORBIDDEN: [&str; 9] = [
    "kube-client",
    "kube-runtime",
    "tokio",
    "mio",
    "hyper",
    "h2",
    "reqwest",
    "lapin",
    "async-rs",
];

#[test]
fn the_render_crate_depends_on_no_client_runtime_or_network_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let name_of: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default(),
                p["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolved graph")
        .iter()
        .map(|n| (n["id"].as_str().unwrap_or_default(), n))
        .collect();
    let root = name_of
        .iter()
        .find(|(_, name)| **name == "millrace-render")
        .map(|(id, _)| *id)
        .expect("millrace-render is in the workspace");

    // Walk normal and build dependencies (not dev-dependencies), remembering one path to each.
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::from([(root, vec!["millrace-render"])]);
    let mut pending = vec![root];
    while let Some(id) = pending.pop() {
        let path = seen[id].clone();
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let runtime = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            let dep_id = dep["pkg"].as_str().unwrap_or_default();
            if runtime && !seen.contains_key(dep_id) {
                let mut p = path.clone();
                p.push(name_of[dep_id]);
                seen.insert(dep_id, p);
                pending.push(dep_id);
            }
        }
    }
    let reached: BTreeSet<&str> = seen.keys().map(|id| name_of[id]).collect();
    let bad: Vec<String> = seen
        .values()
        .filter(|p| FORBIDDEN.contains(p.last().expect("non-empty path")))
        .map(|p| p.join(" -> "))
        .collect();
    assert!(
        bad.is_empty(),
        "millrace-render reaches I/O crates:\n{}",
        bad.join("\n")
    );
    // The walk really covers the tree: the pure crates it needs are there.
    for expected in [
        "millrace-crds",
        "millrace-topology",
        "k8s-openapi",
        "jaq-core",
        "jsonschema",
    ] {
        assert!(
            reached.contains(expected),
            "{expected} not reached: {reached:?}"
        );
    }
}
