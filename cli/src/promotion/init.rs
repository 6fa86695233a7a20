//! `millrace init-repo DIR --envs dev,staging,prod`: scaffolds a promotion repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::pipeline::{Approval, Environment, Pipeline};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create (or an empty one).
    dir: PathBuf,
    /// The environments, in promotion order.
    #[arg(long, value_delimiter = ',', required = true, value_name = "ENV,...")]
    envs: Vec<String>,
}

pub fn run(args: &InitArgs) -> Outcome {
    super::run_command(|| init(args))
}

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";

fn init(args: &InitArgs) -> Result<Outcome> {
    let pipeline = Pipeline {
        environments: args
            .envs
            .iter()
            .enumerate()
            .map(|(i, name)| Environment {
                name: name.trim().to_string(),
                namespace: format!("integration-{}", name.trim()),
                kube_context: name.trim().to_string(),
                soak: (i + 1 < args.envs.len()).then(|| "10m".to_string()),
                approval: if i + 1 == args.envs.len() && i > 0 {
                    Approval::PullRequest
                } else {
                    Approval::Direct
                },
                freeze: Vec::new(),
            })
            .collect(),
    };
    let text = format!(
        "# The environments, in promotion order. The first is where releases are authored.\n{}",
        serde_yaml::to_string(&pipeline)?
    );
    // The same checks as reading it back.
    let checked: Pipeline = serde_yaml::from_str(&text)?;
    let scratch = tempfile::NamedTempFile::new()?;
    std::fs::write(scratch.path(), &text)?;
    Pipeline::read(scratch.path()).map(|_| checked)?;
    let dir = &args.dir;
    if dir.join("pipeline.yaml").exists() {
        bail!(
            "{} already holds a pipeline.yaml: nothing written",
            dir.display()
        );
    }
    let mut files: Vec<(PathBuf, String)> = vec![(dir.join("pipeline.yaml"), text)];
    for e in &pipeline.environments {
        let env = dir.join("envs").join(&e.name);
        files.push((
            env.join("kustomization.yaml"),
            format!(
                "# {}: what Argo CD or Flux syncs into namespace {}.\n{KUSTOMIZATION}namespace: {}\nresources:\n- released\n- env\n",
                e.name, e.namespace, e.namespace
            ),
        ));
        files.push((
            env.join("released/kustomization.yaml"),
            format!("# Written by millrace promote and rollback: every released file of this environment.\n{KUSTOMIZATION}resources: []\n"),
        ));
        files.push((
            env.join("env/kustomization.yaml"),
            format!("# Never promoted: {}'s PartnerConnections, lookup ConfigMaps and worker or SLA patches.\n{KUSTOMIZATION}resources: []\n", e.name),
        ));
        files.push((
            env.join("holds.yaml"),
            super::pipeline::Holds::default().to_yaml(),
        ));
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !in_git(dir) {
        let ok = std::process::Command::new("git")
            .args(["init", "--quiet"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("wrote {}, but `git init` failed there", dir.display());
        }
    }
    println!(
        "scaffolded a promotion repository in {} for {}: add flows and contracts to envs/{}/released/, connections to each envs/<env>/env/, then commit",
        dir.display(),
        pipeline.names(),
        pipeline.environments[0].name
    );
    Ok(Outcome::Passed)
}

fn in_git(dir: &Path) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .is_ok_and(|o| o.status.success())
}
