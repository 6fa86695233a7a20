//! The promotion repository's Git: a clean-tree check, commits built without touching the work
//! tree until they exist, pushes (never forced), and the history of promotion trailers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, anyhow, bail};

/// A Git work tree.
pub struct Git {
    root: PathBuf,
}

/// A change to one file of a commit.
pub enum Change {
    /// Write these bytes at this path (relative to the repository root).
    Write(String, Vec<u8>),
}

/// A commit found in the history, with its trailers.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The commit id.
    pub commit: String,
    /// `(key, value)` trailers, in order.
    pub trailers: Vec<(String, String)>,
}

impl Logged {
    /// The first value of a trailer.
    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

impl Git {
    /// The work tree holding `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let top = run_in(dir, &["rev-parse", "--show-toplevel"], None, &[]).map_err(|_| {
            anyhow!(
                "{} is not in a Git work tree: promotion repositories are Git repositories (git init)",
                dir.display()
            )
        })?;
        Ok(Self {
            root: PathBuf::from(top.trim()),
        })
    }

    /// The root of the work tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn git(&self, args: &[&str]) -> Result<String> {
        run_in(&self.root, args, None, &[])
    }

    /// Refuses a work tree with uncommitted changes: a promotion commits exactly what it checked.
    pub fn require_clean(&self) -> Result<()> {
        let status = self.git(&["status", "--porcelain", "--untracked-files=normal"])?;
        if let Some(first) = status.lines().next() {
            bail!(
                "the work tree of {} has uncommitted changes ({}{}): commit or stash them first",
                self.root.display(),
                first.trim(),
                if status.lines().count() > 1 {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        Ok(())
    }

    /// The current branch, or `None` when HEAD is detached.
    pub fn branch(&self) -> Option<String> {
        self.git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Builds a commit on HEAD with `changes`, in a scratch index: neither the index nor the
    /// work tree changes. Returns its id.
    pub fn commit_tree(&self, changes: &[Change], message: &str) -> Result<String> {
        let scratch = tempfile::NamedTempFile::new()
            .map_err(|e| anyhow!("cannot create a scratch index: {e}"))?;
        let index = scratch.path().to_string_lossy().to_string();
        let env = [("GIT_INDEX_FILE", index.as_str())];
        run_in(&self.root, &["read-tree", "HEAD"], None, &env)?;
        for change in changes {
            let Change::Write(path, bytes) = change;
            let blob = run_in(
                &self.root,
                &["hash-object", "-w", "--stdin"],
                Some(bytes),
                &[],
            )?;
            let info = format!("100644,{},{path}", blob.trim());
            run_in(
                &self.root,
                &["update-index", "--add", "--cacheinfo", &info],
                None,
                &env,
            )?;
        }
        let tree = run_in(&self.root, &["write-tree"], None, &env)?;
        let commit = run_in(
            &self.root,
            &["commit-tree", tree.trim(), "-p", "HEAD", "-F", "-"],
            Some(message.as_bytes()),
            &[],
        )?;
        Ok(commit.trim().to_string())
    }

    /// Moves the current branch and the work tree to `commit`, a child of HEAD.
    pub fn fast_forward(&self, commit: &str) -> Result<()> {
        self.git(&["merge", "--ff-only", "--quiet", commit])
            .map(|_| ())
    }

    /// Creates `branch` at `commit` and pushes it to `origin`, never with force.
    pub fn push_branch(&self, branch: &str, commit: &str) -> Result<()> {
        self.git(&["branch", branch, commit])?;
        let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
        self.git(&["push", "--quiet", "origin", &spec]).map(|_| ())
    }

    /// Commits touching `path`, newest first, with their trailers.
    pub fn log(&self, path: &str) -> Result<Vec<Logged>> {
        let out = self.git(&[
            "log",
            "--format=%H%x1f%(trailers:only,unfold)%x1e",
            "--",
            path,
        ])?;
        Ok(out
            .split('\u{1e}')
            .filter_map(|record| {
                let (commit, trailers) = record.trim().split_once('\u{1f}')?;
                Some(Logged {
                    commit: commit.trim().to_string(),
                    trailers: trailers
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect(),
                })
            })
            .collect())
    }

    /// The bytes of `path` at `commit`.
    pub fn show(&self, commit: &str, path: &str) -> Result<Vec<u8>> {
        let spec = format!("{commit}:{path}");
        let out = Command::new("git")
            .current_dir(&self.root)
            .args(["show", &spec])
            .output()
            .map_err(|e| anyhow!("cannot run git: {e}"))?;
        if !out.status.success() {
            bail!(
                "git show {spec}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }
}

fn run_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("cannot run git (is it installed?): {e}"))?;
    if let Some(bytes) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(bytes)
            .map_err(|e| anyhow!("git {}: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| anyhow!("git {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
