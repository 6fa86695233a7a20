//! Every manifest under examples/ parses into the Rust types, with no field left over.

use std::path::{Path, PathBuf};

use millrace_crds::{EventContract, IntegrationFlow, PartnerConnection};
use serde::de::DeserializeOwned;

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // A promotion repository's machinery holds no whole objects: kustomizations, the
        // pipeline, holds, and partial objects under patches/.
        if matches!(
            name,
            "kustomization.yaml" | "pipeline.yaml" | "holds.yaml" | "patches"
        ) {
            continue;
        }
        if path.is_dir() {
            manifests(&path, out);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
}

/// Parses `doc` as `K` and checks that serializing it back loses no field of the input.
fn parse_exact<K: DeserializeOwned + serde::Serialize>(doc: &serde_json::Value, path: &Path) {
    let typed: K =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let back = serde_json::to_value(&typed).unwrap();
    let spec_in = &doc["spec"];
    let spec_out = &back["spec"];
    fn covered(input: &serde_json::Value, output: &serde_json::Value, at: &str, path: &Path) {
        if let (Some(i), Some(o)) = (input.as_object(), output.as_object()) {
            for (k, v) in i {
                let o = o.get(k).unwrap_or_else(|| {
                    panic!("{}: field {at}.{k} is not part of the API", path.display())
                });
                covered(v, o, &format!("{at}.{k}"), path);
            }
        }
    }
    covered(spec_in, spec_out, "spec", path);
}

#[test]
fn examples_parse_into_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files = Vec::new();
    manifests(&root, &mut files);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "EventContract" => parse_exact::<EventContract>(&value, path),
                "PartnerConnection" => parse_exact::<PartnerConnection>(&value, path),
                "IntegrationFlow" => parse_exact::<IntegrationFlow>(&value, path),
                _ => continue,
            }
            *counts.entry(kind).or_default() += 1;
        }
    }
    for kind in ["EventContract", "PartnerConnection", "IntegrationFlow"] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} example found in {counts:?}"
        );
    }
}
