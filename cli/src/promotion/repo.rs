//! The promotion repository on disk: `pipeline.yaml`, and per environment `envs/<env>/` with
//! `released/` (written by promote and rollback), `env/` (people's), `holds.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use millrace_crds::{EventContract, IntegrationFlow};
use serde_json::Value;

use super::git::Git;
use super::pipeline::{Environment, Holds, Pipeline};
use crate::input::manifest_files;
use crate::manifest::parse_file;

/// An open promotion repository.
pub struct Repo {
    /// The folder holding `pipeline.yaml`.
    pub root: PathBuf,
    /// Its Git work tree.
    pub git: Git,
    /// `pipeline.yaml`.
    pub pipeline: Pipeline,
}

/// An object of an environment's `released/` folder.
#[derive(Clone, Debug)]
pub struct Released<T> {
    /// The file, relative to the repository root.
    pub path: String,
    /// True when the file holds this object alone.
    pub alone: bool,
    /// The object.
    pub object: T,
}

/// The released flows and contracts of one environment, by name.
#[derive(Clone, Debug, Default)]
pub struct ReleasedSet {
    /// IntegrationFlows.
    pub flows: BTreeMap<String, Released<IntegrationFlow>>,
    /// EventContracts.
    pub contracts: BTreeMap<String, Released<EventContract>>,
}

impl Repo {
    /// Opens the repository at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let git = Git::open(dir)?;
        let pipeline = Pipeline::read(&dir.join("pipeline.yaml"))?;
        Ok(Self {
            root: dir.to_path_buf(),
            git,
            pipeline,
        })
    }

    /// The environment named `name`, whose folder must exist.
    pub fn environment(&self, name: &str) -> Result<&Environment> {
        let env = self.pipeline.environment(name)?;
        let dir = self.env_dir(name);
        if !dir.is_dir() {
            bail!(
                "environment {name} has no folder {}: run `millrace init-repo` or create it",
                self.shown(&dir)
            );
        }
        Ok(env)
    }

    /// `envs/<env>`.
    pub fn env_dir(&self, env: &str) -> PathBuf {
        self.root.join("envs").join(env)
    }

    /// `envs/<env>/released`, relative to the root.
    pub fn released_rel(env: &str) -> String {
        format!("envs/{env}/released")
    }

    /// `path` relative to the root, for messages and for Git.
    pub fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// A path relative to the root, as Git names it (relative to the work tree's top).
    pub fn git_path(&self, rel: &str) -> String {
        let root = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let prefix = root
            .strip_prefix(self.git.root())
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let joined = prefix.join(rel);
        joined.to_string_lossy().trim_start_matches('/').to_string()
    }

    /// Every flow and contract under `envs/<env>/released`.
    pub fn released(&self, env: &str) -> Result<ReleasedSet> {
        let dir = self.root.join(Self::released_rel(env));
        let mut set = ReleasedSet::default();
        if !dir.is_dir() {
            return Ok(set);
        }
        for file in manifest_files(&dir)? {
            if crate::kustomize::FILE_NAMES
                .iter()
                .any(|n| file.file_name().is_some_and(|f| f == *n))
            {
                continue;
            }
            let docs = parse_file(&file)?;
            let alone = docs.len() == 1;
            let rel = self.shown(&file);
            for d in docs {
                let kind = d.value["kind"].as_str().unwrap_or_default().to_string();
                let name = d.value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let at = format!("{}:{}", rel, d.line);
                match kind.as_str() {
                    "IntegrationFlow" => {
                        let object = typed(&d.value, &at)?;
                        set.flows.insert(
                            name,
                            Released {
                                path: rel.clone(),
                                alone,
                                object,
                            },
                        );
                    }
                    "EventContract" => {
                        let object = typed(&d.value, &at)?;
                        set.contracts.insert(
                            name,
                            Released {
                                path: rel.clone(),
                                alone,
                                object,
                            },
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok(set)
    }

    /// The holds of an environment.
    pub fn holds(&self, env: &str) -> Result<Holds> {
        Holds::read(&self.env_dir(env).join("holds.yaml"))
    }

    /// `released/kustomization.yaml` listing every released file, after `writes`.
    pub fn released_kustomization(&self, env: &str, writes: &[String]) -> Result<(String, String)> {
        let rel_dir = Self::released_rel(env);
        let dir = self.root.join(&rel_dir);
        let mut files: Vec<String> = Vec::new();
        if dir.is_dir() {
            for f in manifest_files(&dir)? {
                let rel = self.shown(&f);
                files.push(rel);
            }
        }
        files.extend(writes.iter().cloned());
        let mut resources: Vec<String> = files
            .into_iter()
            .filter_map(|f| f.strip_prefix(&format!("{rel_dir}/")).map(str::to_string))
            .filter(|f| !crate::kustomize::FILE_NAMES.contains(&f.as_str()))
            .collect();
        resources.sort();
        resources.dedup();
        let mut text = String::from(
            "# Written by millrace promote and rollback: every released file of this environment.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        );
        if resources.is_empty() {
            text = text.replace("resources:\n", "resources: []\n");
        }
        for r in resources {
            text.push_str(&format!("- {r}\n"));
        }
        Ok((format!("{rel_dir}/kustomization.yaml"), text))
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value, at: &str) -> Result<T> {
    serde_json::from_value(value.clone()).map_err(|e| anyhow!("{at}: cannot be read: {e}"))
}

/// The metadata a released file keeps: name, labels and annotations. The namespace comes from
/// the environment's kustomization; server fields never belong in Git.
pub fn released_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        labels: meta.labels.clone().filter(|l| !l.is_empty()),
        annotations: meta.annotations.clone().filter(|a| !a.is_empty()),
        ..Default::default()
    }
}

/// The file text of a released object: a header comment, then the object.
pub fn released_yaml<T: serde::Serialize>(header: &str, object: &T) -> Result<String> {
    Ok(format!("{header}{}", serde_yaml::to_string(object)?))
}
