//! Promotion through Git: a release moves between environments as a commit, gated by evidence
//! from the source environment, and is proved by the target cluster (`ReleaseVerified`).
//!
//! | module | what |
//! |---|---|
//! | [`pipeline`] | `pipeline.yaml` and `holds.yaml` |
//! | [`repo`] | the repository's folders and released objects |
//! | [`git`] | clean-tree check, commits in a scratch index, pushes, trailers |
//! | [`gates`] | the gates, pure |
//! | [`target`] | the target environment after a change: the render, connection and topology gates |
//! | [`promote`], [`rollback`], [`hold`], [`status`], [`init`] | the commands |

pub mod gates;
pub mod git;
pub mod hold;
pub mod init;
pub mod pipeline;
pub mod promote;
pub mod repo;
pub mod rollback;
pub mod status;
pub mod target;

use anyhow::Result;
use millrace_crds::IntegrationFlow;
use sha2::{Digest, Sha256};

use crate::Outcome;
use gates::Refusal;
use git::Change;
use pipeline::Approval;

/// Commit trailers promotion writes and reads.
pub mod trailer {
    /// The promotion's id (also the flow's `millrace.dev/promotion-id`).
    pub const PROMOTION_ID: &str = "Millrace-Promotion-Id";
    /// The release digest of the flow committed.
    pub const RELEASE_DIGEST: &str = "Millrace-Release-Digest";
    /// The soak evidence from the source environment.
    pub const SOAK: &str = "Millrace-Soak";
    /// A gate overridden, with the reason.
    pub const OVERRIDE: &str = "Millrace-Override";
    /// `FLOW@VERSION`.
    pub const FLOW: &str = "Millrace-Flow";
    /// The environment the commit changes.
    pub const ENVIRONMENT: &str = "Millrace-Environment";
    /// The environment the release came from.
    pub const PROMOTED_FROM: &str = "Millrace-Promoted-From";
    /// On a rollback: the promotion it reverts.
    pub const ROLLBACK_OF: &str = "Millrace-Rollback-Of";
}

/// A short id for a promotion: 8 hex digits of a digest of what it promotes, and when.
pub fn promotion_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.update(
        chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_le_bytes(),
    );
    hex::encode(&h.finalize()[..4])
}

/// The files a command commits, as `(path relative to the repository root, text)`.
pub type Writes = Vec<(String, String)>;

/// Lands a commit of `writes`: on the current branch (direct), or on `branch` pushed to
/// `origin` (pull request). Returns what to print.
pub fn land(
    repo: &repo::Repo,
    writes: &Writes,
    message: &str,
    approval: Approval,
    branch: &str,
) -> Result<String> {
    let changes: Vec<Change> = writes
        .iter()
        .map(|(path, text)| Change::Write(repo.git_path(path), text.as_bytes().to_vec()))
        .collect();
    let commit = repo.git.commit_tree(&changes, message)?;
    let short = &commit[..commit.len().min(12)];
    match approval {
        Approval::Direct => {
            repo.git.fast_forward(&commit)?;
            Ok(format!(
                "committed {short} on {}",
                repo.git.branch().unwrap_or_else(|| "HEAD".into())
            ))
        }
        Approval::PullRequest => {
            repo.git.push_branch(branch, &commit)?;
            Ok(format!(
                "pushed branch {branch} ({short}) to origin: open a pull request from it; the current branch is unchanged"
            ))
        }
    }
}

/// Prints refusals and says nothing was written.
pub fn refused(refusals: &[Refusal]) -> Outcome {
    for r in refusals {
        eprintln!("{r}");
    }
    eprintln!("nothing was committed");
    Outcome::Failed
}

/// The flow's `NAME@VERSION`.
pub fn release_name(flow: &IntegrationFlow) -> String {
    format!(
        "{}@{}",
        flow.metadata.name.as_deref().unwrap_or_default(),
        flow.spec.version.0
    )
}

/// Runs a command body, mapping an error (unusable input) onto exit 2 with one line.
pub fn run_command(body: impl FnOnce() -> Result<Outcome>) -> Outcome {
    match body() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Unusable
        }
    }
}

/// Opens the repository and refuses a dirty work tree.
pub fn open_clean(dir: &std::path::Path) -> Result<repo::Repo> {
    let repo = repo::Repo::open(dir)?;
    repo.git.require_clean()?;
    Ok(repo)
}
