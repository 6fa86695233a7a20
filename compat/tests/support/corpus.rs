//! Loads the compatibility corpus (`compat/tests/corpus/*.yaml`) and the manufacturing
//! EventContract manifests it refers to. Shared by the library's and the CLI's tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One old/new pair with the changes and verdicts it must produce.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub name: String,
    pub old: Value,
    pub new: Value,
    /// Expected changes as `KIND pointer`, sorted.
    pub changes: Vec<String>,
    pub backward: bool,
    pub forward: bool,
}

/// Ordered versions and, per mode name, whether each version is accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct Sequence {
    pub name: String,
    pub versions: Vec<Value>,
    pub verdicts: BTreeMap<String, Vec<bool>>,
}

/// A pair the checker must refuse to compare, with part of the error message.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorCase {
    pub name: String,
    pub old: Value,
    pub new: Value,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub cases: Vec<Case>,
    pub sequences: Vec<Sequence>,
    pub errors: Vec<ErrorCase>,
}

/// A schema in a case: written inline, or taken from a manufacturing contract version and
/// optionally edited with a JSON Patch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SchemaSource {
    Contract {
        contract: String,
        version: u64,
        #[serde(default)]
        patch: Option<json_patch::Patch>,
    },
    Inline(Value),
}

#[derive(Debug, Deserialize)]
struct RawCase {
    name: String,
    #[serde(default)]
    old: Option<Value>,
    #[serde(default)]
    new: Option<Value>,
    #[serde(default)]
    old_from: Option<SchemaSource>,
    #[serde(default)]
    new_from: Option<SchemaSource>,
    changes: Vec<String>,
    backward: bool,
    forward: bool,
}

#[derive(Debug, Deserialize, Default)]
struct RawFile {
    #[serde(default)]
    cases: Vec<RawCase>,
    #[serde(default)]
    sequences: Vec<Sequence>,
    #[serde(default)]
    errors: Vec<ErrorCase>,
}

/// One EventContract manifest, reduced to what the corpus needs.
#[derive(Debug, Clone)]
pub struct Contract {
    pub name: String,
    pub compatibility: String,
    /// Version number and schema, in manifest order.
    pub versions: Vec<(u64, Value)>,
    /// Version number and its examples.
    pub examples: Vec<(u64, Vec<Value>)>,
}

pub fn workspace_root() -> PathBuf {
    // Both compat/ and cli/ sit directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub fn corpus_dir() -> PathBuf {
    workspace_root().join("compat/tests/corpus")
}

pub fn contracts_dir() -> PathBuf {
    workspace_root().join("examples/manufacturing/contracts")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// Every EventContract manifest of the manufacturing example, by metadata.name.
pub fn contracts() -> BTreeMap<String, Contract> {
    let mut out = BTreeMap::new();
    for file in yaml_files(&contracts_dir()) {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if value["kind"] != "EventContract" {
                continue;
            }
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let spec = &value["spec"];
            let mut contract = Contract {
                name: name.clone(),
                compatibility: spec["compatibility"]
                    .as_str()
                    .unwrap_or("BackwardTransitive")
                    .to_string(),
                versions: Vec::new(),
                examples: Vec::new(),
            };
            for version in spec["versions"].as_array().into_iter().flatten() {
                let number = version["version"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: version without a number"));
                contract.versions.push((number, version["schema"].clone()));
                let examples = version["examples"].as_array().cloned().unwrap_or_default();
                contract.examples.push((number, examples));
            }
            out.insert(name, contract);
        }
    }
    out
}

fn resolve(source: SchemaSource, contracts: &BTreeMap<String, Contract>, case: &str) -> Value {
    match source {
        SchemaSource::Inline(value) => value,
        SchemaSource::Contract {
            contract,
            version,
            patch,
        } => {
            let found = contracts
                .get(&contract)
                .unwrap_or_else(|| panic!("case {case:?}: no contract named {contract}"));
            let mut schema = found
                .versions
                .iter()
                .find(|(n, _)| *n == version)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| panic!("case {case:?}: {contract} has no version {version}"));
            if let Some(patch) = patch {
                json_patch::patch(&mut schema, &patch)
                    .unwrap_or_else(|e| panic!("case {case:?}: patch failed: {e}"));
            }
            schema
        }
    }
}

pub fn load() -> Corpus {
    let contracts = contracts();
    let mut corpus = Corpus {
        cases: Vec::new(),
        sequences: Vec::new(),
        errors: Vec::new(),
    };
    for file in yaml_files(&corpus_dir()) {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let raw: RawFile =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let file_name = file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        for case in raw.cases {
            let old = match (case.old, case.old_from) {
                (Some(v), None) => v,
                (None, Some(s)) => resolve(s, &contracts, &case.name),
                _ => panic!("case {:?}: give exactly one of old / old_from", case.name),
            };
            let new = match (case.new, case.new_from) {
                (Some(v), None) => v,
                (None, Some(s)) => resolve(s, &contracts, &case.name),
                _ => panic!("case {:?}: give exactly one of new / new_from", case.name),
            };
            let mut changes = case.changes;
            changes.sort();
            corpus.cases.push(Case {
                file: file_name.clone(),
                name: case.name,
                old,
                new,
                changes,
                backward: case.backward,
                forward: case.forward,
            });
        }
        corpus.sequences.extend(raw.sequences);
        corpus.errors.extend(raw.errors);
    }
    corpus
}
