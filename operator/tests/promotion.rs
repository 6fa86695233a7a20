//! Promotion through Git, end to end: `examples/gitops` in a clone of a bare remote, two
//! namespaces standing in for staging and prod (each with its own operator, as two clusters
//! would have), `kubectl apply --server-side -k envs/<env>` standing in for Argo CD or Flux, and
//! one worker process per environment for the promoted flow.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use millrace_crds::IntegrationFlow;
use millrace_crds::conditions::find;
use millrace_testkit::{TestNamespace, TestVhost};
use serde_json::{Value, json};

mod support;
use support::{Worker, apply, start_operator, start_worker};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gitops");
const FLOW: &str = "scrap-to-finance";

/// The test's promotion repository: a clone of a bare remote, with a kubeconfig holding the
/// contexts `staging`, `prod` and `nowhere` (a cluster that does not answer).
struct Repo {
    dir: PathBuf,
    remote: PathBuf,
    kubeconfig: PathBuf,
}

use millrace_testkit::output_text as text;

fn run(dir: &Path, program: &Path, args: &[&str], kubeconfig: &Path) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()))
}

impl Repo {
    fn git(&self, args: &[&str]) -> String {
        let o = run(&self.dir, Path::new("git"), args, &self.kubeconfig);
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn millrace(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--repo", "."]);
        run(
            &self.dir,
            &millrace_testkit::workspace_binary("millrace"),
            &all,
            &self.kubeconfig,
        )
    }

    fn promote(&self, from: &str, to: &str, extra: &[&str]) -> Output {
        let mut args = vec!["promote", FLOW, "--from", from, "--to", to];
        args.extend(extra);
        self.millrace(&args)
    }

    /// `kubectl apply --server-side -k envs/<env>`: what Argo CD or Flux would do.
    fn sync(&self, env: &str) {
        let dir = format!("envs/{env}");
        let o = run(
            &self.dir,
            Path::new("kubectl"),
            &[
                "--context",
                env,
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "gitops-sync",
                "-k",
                &dir,
            ],
            &self.kubeconfig,
        );
        assert!(o.status.success(), "sync {env}: {}", text(&o));
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    /// Edits a YAML file of the repository through its parsed tree.
    fn edit_yaml(&self, rel: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.path(rel);
        let mut v: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&path, serde_yaml::to_string(&v).unwrap()).unwrap();
    }

    /// Edits the flow's file in an environment.
    fn edit_flow(&self, env: &str, edit: impl FnOnce(&mut Value)) {
        self.edit_yaml(&format!("envs/{env}/released/flows/{FLOW}.yaml"), edit);
    }
}

/// An HTTP server that answers 200 to every request: the ERP, for the connection probe.
fn erp_stub() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
                }
            });
        }
    });
    format!("http://{addr}/erp/api")
}

/// A kubeconfig with the admin user under the contexts staging and prod, and nowhere.
fn kubeconfig(to: &Path) {
    let mut k: Value = serde_yaml::from_str(
        &std::fs::read_to_string(millrace_testkit::kubeconfig_path()).unwrap(),
    )
    .unwrap();
    let context = k["contexts"][0]["context"].clone();
    let mut contexts = vec![];
    for name in ["staging", "prod"] {
        contexts.push(json!({"name": name, "context": context.clone()}));
    }
    let mut nowhere = context.clone();
    nowhere["cluster"] = "nowhere".into();
    contexts.push(json!({"name": "nowhere", "context": nowhere}));
    k["contexts"] = Value::Array(contexts);
    k["current-context"] = "staging".into();
    let clusters = k["clusters"].as_array_mut().unwrap();
    let mut dead = clusters[0].clone();
    dead["name"] = "nowhere".into();
    dead["cluster"]["server"] = "https://127.0.0.1:1".into();
    clusters.push(dead);
    std::fs::write(to, serde_yaml::to_string(&k).unwrap()).unwrap();
}

fn setup_repo(tmp: &Path, staging: &str, prod: &str, erp: &str) -> Repo {
    let remote = tmp.join("remote.git");
    let dir = tmp.join("work");
    let kc = tmp.join("kubeconfig");
    kubeconfig(&kc);
    let ok = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&remote)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("git")
        .arg("clone")
        .arg("-q")
        .arg(&remote)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success());
    copy_dir(Path::new(EXAMPLE), &dir);
    // This test's namespaces, a soak of 5 s, direct commits into prod (pull requests later),
    // and the ERP stub.
    for file in millrace_testkit::manifests::yaml_files(&dir) {
        let t = std::fs::read_to_string(&file).unwrap();
        let n = t
            .replace("integration-staging", staging)
            .replace("integration-prod", prod)
            .replace("http://127.0.0.1:18090/erp/api", erp);
        if n != t {
            std::fs::write(&file, n).unwrap();
        }
    }
    let p = dir.join("pipeline.yaml");
    let t = std::fs::read_to_string(&p).unwrap();
    let t = t
        .replace("soak: 10m", "soak: 5s")
        .replace("approval: pullRequest", "approval: direct");
    std::fs::write(&p, t).unwrap();
    let repo = Repo {
        dir,
        remote,
        kubeconfig: kc,
    };
    repo.git(&["checkout", "-q", "-b", "main"]);
    repo.git(&["config", "user.name", "Release Bot"]);
    repo.git(&["config", "user.email", "release@example.com"]);
    repo.commit_all("the manufacturing flows, promoted to staging and prod");
    repo.git(&["push", "-q", "origin", "main"]);
    repo
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The Secrets each environment's secret store would provide, pointing at the test's vhost.
async fn secrets(client: &Client, ns: &str, broker: &TestVhost) {
    let file = Path::new(EXAMPLE).join("local-secrets.yaml");
    for mut doc in millrace_testkit::manifests::documents(&file) {
        if doc["stringData"].get("uri").is_some() {
            doc["stringData"]["uri"] = broker.amqp_uri().into();
        }
        apply(client, ns, doc).await;
    }
}

async fn flow(client: &Client, ns: &str) -> IntegrationFlow {
    Api::<IntegrationFlow>::namespaced(client.clone(), ns)
        .get(FLOW)
        .await
        .expect("flow read")
}

fn cond(f: &IntegrationFlow, t: &str) -> Option<String> {
    let s = f.status.as_ref()?;
    find(&s.conditions, t).map(|c| format!("{}/{}", c.status, c.reason))
}

/// Waits until `pred` holds for the flow, or fails with its status.
async fn wait_for(
    client: &Client,
    ns: &str,
    what: &str,
    secs: u64,
    pred: impl Fn(&IntegrationFlow) -> bool,
) -> IntegrationFlow {
    let start = Instant::now();
    loop {
        let f = flow(client, ns).await;
        if pred(&f) {
            return f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{ns}: {what} not seen after {secs} s; status: {}",
            serde_json::to_string_pretty(&f.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn released(f: &IntegrationFlow, digest: &str) -> bool {
    let s = f.status.clone().unwrap_or_default();
    s.observed_generation == f.metadata.generation
        && s.release
            .as_ref()
            .is_some_and(|r| r.digest == digest && r.rolled_out_at.is_some())
        && cond(f, "Ready").as_deref() == Some("True/Ready")
}

fn file_digest(repo: &Repo, env: &str) -> String {
    let path = repo.path(&format!("envs/{env}/released/flows/{FLOW}.yaml"));
    let f: IntegrationFlow = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    millrace_render::release_digest(&f)
}

fn refused_by(o: &Output, gate: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("refused by gate {gate}:")),
        "expected gate {gate}: {}",
        text(o)
    );
}

/// Exit 2, one line on stderr, nothing written.
fn unusable(repo: &Repo, o: &Output, says: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {}", text(o));
    assert!(err.contains(says), "expected {says:?}: {}", text(o));
    let _ = repo;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_soak_verify_rollback_and_refuse() {
    let staging_ns = TestNamespace::create("gitops-staging").await;
    let prod_ns = TestNamespace::create("gitops-prod").await;
    let broker = TestVhost::create("gitops").await;
    let client = staging_ns.client();
    let (s, p) = (staging_ns.name().to_string(), prod_ns.name().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let repo = setup_repo(tmp.path(), &s, &p, &erp_stub());
    secrets(&client, &s, &broker).await;
    secrets(&client, &p, &broker).await;
    let _ops = (start_operator(&client, &s), start_operator(&client, &p));
    repo.sync("staging");
    repo.sync("prod");
    let cm = format!("{FLOW}-worker");
    // A worker reads its flow's ConfigMap at start: start each once the operator wrote it.
    for ns in [&s, &p] {
        wait_for(&client, ns, "the worker ConfigMap", 120, |f| {
            f.status.as_ref().is_some_and(|s| s.revision.is_some())
        })
        .await;
    }
    let mut staging_worker: Option<Worker> = Some(start_worker(&s, &cm));
    let _prod_worker = start_worker(&p, &cm);
    let seed = file_digest(&repo, "prod");
    wait_for(&client, &s, "the seeded release Ready", 180, |f| {
        released(f, &seed) && cond(f, "ReleaseVerified").as_deref() == Some("True/DigestMatches")
    })
    .await;
    wait_for(&client, &p, "the seeded release Ready", 180, |f| {
        released(f, &seed)
    })
    .await;

    // A release authored in dev, promoted to staging (dev has no cluster here: overridden,
    // and the override is recorded).
    repo.edit_flow("dev", |v| {
        v["spec"]["version"] = "1.1.0".into();
        let jq = v["spec"]["transform"]["jq"].as_str().unwrap().to_string();
        v["spec"]["transform"]["jq"] = jq.replace("\"0001\"", "\"0002\"").into();
    });
    repo.commit_all("scrap-to-finance 1.1.0: default storage location 0002");
    let o = repo.promote(
        "dev",
        "staging",
        &[
            "--override",
            "source-truth",
            "--override",
            "soak",
            "--reason",
            "dev has no cluster in this test",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        repo.git(&["log", "-1", "--format=%B"])
            .contains("Millrace-Override: soak: dev has no cluster")
    );
    let new = file_digest(&repo, "staging");
    assert_ne!(new, seed);

    // 3. Source truth: staging's file is not synced yet, and the refusal names both digests.
    let before = repo.head();
    let o = repo.promote("staging", "prod", &[]);
    refused_by(&o, "source-truth");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains(&seed) && err.contains(&new), "{err}");
    assert_eq!(repo.head(), before, "a refusal commits nothing");

    // 2. Soak: synced and Ready, but not Healthy for 5 s yet.
    repo.sync("staging");
    wait_for(&client, &s, "1.1.0 rolled out and Ready", 120, |f| {
        released(f, &new) && cond(f, "ReleaseVerified").as_deref() == Some("True/DigestMatches")
    })
    .await;
    // A flap restarts the clock: stop the worker until Healthy is False, then start it again.
    staging_worker.take();
    wait_for(&client, &s, "Healthy False", 60, |f| {
        cond(f, "Healthy").is_some_and(|c| c.starts_with("False"))
    })
    .await;
    staging_worker = Some(start_worker(&s, &cm));
    wait_for(&client, &s, "Healthy True", 60, |f| {
        cond(f, "Healthy").as_deref() == Some("True/Healthy")
    })
    .await;
    let o = repo.promote("staging", "prod", &[]);
    refused_by(&o, "soak");
    assert_eq!(repo.head(), before);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 1. Promote: one commit, only under envs/prod/released, with the evidence.
    let o = repo.promote("staging", "prod", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let touched = repo.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(
        touched
            .lines()
            .all(|l| l.starts_with("envs/prod/released/")),
        "{touched}"
    );
    assert_eq!(
        repo.git(&["rev-list", "--count", &format!("{before}..HEAD")]),
        "1"
    );
    let message = repo.git(&["log", "-1", "--format=%B"]);
    for t in [
        "Millrace-Promotion-Id:",
        "Millrace-Release-Digest: ",
        "Millrace-Soak: ",
    ] {
        assert!(message.contains(t), "{message}");
    }
    assert!(message.contains(&new), "{message}");
    // 5. Promoting twice makes one commit.
    let promoted = repo.head();
    let o = repo.promote("staging", "prod", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(repo.head(), promoted, "nothing to promote the second time");

    // After sync prod runs staging's digest, verified and Ready, and its ConfigMap is what
    // `millrace render` of the prod folder says.
    repo.sync("prod");
    let live = wait_for(&client, &p, "the promoted release", 120, |f| {
        released(f, &new) && cond(f, "ReleaseVerified").as_deref() == Some("True/DigestMatches")
    })
    .await;
    let promotion = live
        .status
        .as_ref()
        .unwrap()
        .release
        .as_ref()
        .unwrap()
        .promotion_id
        .clone();
    assert!(promotion.is_some());
    let out = run(
        &repo.dir,
        &millrace_testkit::workspace_binary("millrace"),
        &["render", "envs/prod", "-o", "json"],
        &repo.kubeconfig,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rendered = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "ConfigMap" && i["metadata"]["name"] == cm.as_str())
        .expect("render gives the flow's ConfigMap")
        .clone();
    let live_cm = Api::<ConfigMap>::namespaced(client.clone(), &p)
        .get(&cm)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&live_cm.data).unwrap(),
        rendered["data"]
    );

    // 5. Drift: a hand edit in prod keeps running, reported as DigestMismatch with an Event.
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), &p);
    let jq = live
        .spec
        .transform
        .as_ref()
        .and_then(|t| t.jq.clone())
        .unwrap();
    let edit = json!({"spec": {"transform": {"jq": jq.replace("\"0002\"", "\"9999\"")}}});
    flows
        .patch(FLOW, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("hand edit");
    wait_for(&client, &p, "DigestMismatch", 60, |f| {
        cond(f, "ReleaseVerified").as_deref() == Some("False/DigestMismatch")
            && cond(f, "Ready").as_deref() == Some("True/Ready")
    })
    .await;
    let start = Instant::now();
    loop {
        let events = Api::<Event>::namespaced(client.clone(), &p)
            .list(&ListParams::default())
            .await
            .unwrap();
        if events.items.iter().any(|e| {
            e.reason.as_deref() == Some("DigestMismatch") && e.type_.as_deref() == Some("Warning")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no DigestMismatch Event"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    repo.sync("prod");
    wait_for(&client, &p, "the release verified again", 60, |f| {
        cond(f, "ReleaseVerified").as_deref() == Some("True/DigestMatches")
    })
    .await;

    // 6. Rollback: a forward commit restores the older bytes, history shows Reverted, and a
    // hold refuses the next promotion until it is released.
    let seeded_bytes = repo.git(&[
        "show",
        &format!("{before}:envs/prod/released/flows/{FLOW}.yaml"),
    ]);
    let o = repo.millrace(&["rollback", FLOW, "--env", "prod"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let now_bytes =
        std::fs::read_to_string(repo.path(&format!("envs/prod/released/flows/{FLOW}.yaml")))
            .unwrap();
    assert_eq!(
        now_bytes.trim(),
        seeded_bytes.trim(),
        "rollback restores the older bytes"
    );
    assert!(
        std::fs::read_to_string(repo.path("envs/prod/holds.yaml"))
            .unwrap()
            .contains(FLOW)
    );
    repo.sync("prod");
    wait_for(
        &client,
        &p,
        "the restored release, the promotion Reverted",
        120,
        |f| {
            let s = f.status.clone().unwrap_or_default();
            released(f, &seed)
                && s.history
                    .iter()
                    .any(|h| h.outcome == "Reverted" && h.promotion_id == promotion)
        },
    )
    .await;
    let o = repo.promote("staging", "prod", &[]);
    refused_by(&o, "holds");
    let o = repo.millrace(&["hold", "release", FLOW, "--env", "prod"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // 7. Pull request mode: the branch is pushed to the remote; main is unchanged.
    let p_file = repo.path("pipeline.yaml");
    let t = std::fs::read_to_string(&p_file).unwrap();
    let idx = t.rfind("approval: direct").unwrap();
    std::fs::write(
        &p_file,
        format!(
            "{}approval: pullRequest{}",
            &t[..idx],
            &t[idx + "approval: direct".len()..]
        ),
    )
    .unwrap();
    repo.commit_all("prod takes promotions by pull request");
    repo.git(&["push", "-q", "origin", "main"]);
    let main_before = repo.head();
    let o = repo.promote("staging", "prod", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(repo.head(), main_before, "main is unchanged");
    let remote_main = repo.git(&["ls-remote", "origin", "refs/heads/main"]);
    assert!(remote_main.starts_with(&main_before), "{remote_main}");
    let branches = repo.git(&["ls-remote", "origin", "refs/heads/promote/*"]);
    assert!(
        branches.contains(&format!("refs/heads/promote/{FLOW}-1.1.0-")),
        "{branches}"
    );
    assert!(repo.git(&["status", "--porcelain"]).is_empty());

    // 8. Bad input: one line, exit 2, nothing written.
    let o = repo.millrace(&["promote", FLOW, "--from", "staging", "--to", "qa"]);
    unusable(&repo, &o, "unknown environment qa");
    let o = repo.millrace(&[
        "promote",
        "no-such-flow",
        "--from",
        "staging",
        "--to",
        "prod",
    ]);
    unusable(
        &repo,
        &o,
        "IntegrationFlow/no-such-flow is not in envs/staging/released",
    );
    std::fs::write(repo.path("envs/prod/env/scratch.yaml"), "x: 1\n").unwrap();
    let o = repo.promote("staging", "prod", &[]);
    unusable(&repo, &o, "uncommitted changes");
    std::fs::remove_file(repo.path("envs/prod/env/scratch.yaml")).unwrap();
    let good = std::fs::read_to_string(&p_file).unwrap();
    std::fs::write(&p_file, good.replace("environments:", "environment:")).unwrap();
    repo.commit_all("a broken pipeline.yaml");
    let o = repo.promote("staging", "prod", &[]);
    unusable(&repo, &o, "pipeline.yaml: malformed");
    std::fs::write(
        &p_file,
        good.replace("kubeContext: staging", "kubeContext: nowhere"),
    )
    .unwrap();
    repo.commit_all("staging's cluster is unreachable");
    let head = repo.head();
    let o = repo.promote("staging", "prod", &[]);
    unusable(&repo, &o, "cannot reach staging's cluster");
    assert_eq!(repo.head(), head);
    assert!(repo.git(&["status", "--porcelain"]).is_empty());

    // status --wait: the CI hook.
    std::fs::write(&p_file, &good).unwrap();
    repo.commit_all("staging's cluster is back");
    let o = repo.millrace(&[
        "status",
        FLOW,
        "--env",
        "prod",
        "--release",
        &seed,
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = repo.millrace(&[
        "status",
        FLOW,
        "--env",
        "prod",
        "--release",
        "sha256:0000",
        "--wait",
        "--timeout",
        "3s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // 4. Contracts: a missing version is appended and accepted; a drifted one is refused; an
    // incompatible one is refused with the compatibility engine's changes.
    let contract = "envs/dev/released/contracts/material-scrapped.yaml";
    repo.edit_yaml(contract, |c| {
        let mut v2 = c["spec"]["versions"][0].clone();
        v2["version"] = 2.into();
        v2["schema"]["properties"]["comment"] = json!({"type": "string"});
        c["spec"]["versions"].as_array_mut().unwrap().push(v2);
    });
    repo.edit_flow("dev", |v| {
        v["spec"]["version"] = "1.2.0".into();
        v["spec"]["contract"]["version"] = 2.into();
    });
    repo.commit_all("material-scrapped v2; scrap-to-finance 1.2.0 uses it");
    let skip = [
        "--override",
        "source-truth",
        "--override",
        "soak",
        "--reason",
        "contracts only",
    ];
    let o = repo.promote("dev", "staging", &skip);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let staged = std::fs::read_to_string(
        repo.path("envs/staging/released/contracts/material-scrapped.yaml"),
    )
    .unwrap();
    assert!(staged.contains("version: 2"), "{staged}");
    assert!(
        repo.git(&["log", "-1", "--format=%B"])
            .contains("material-scrapped v2")
    );
    // Drift: prod's published v1 was changed by hand.
    let prod_contract = "envs/prod/released/contracts/material-scrapped.yaml";
    repo.edit_yaml(prod_contract, |pc| {
        pc["spec"]["versions"][0]["schema"]["description"] = "edited by hand".into();
    });
    repo.commit_all("a hand edit of a published contract version");
    let o = repo.promote("staging", "prod", &skip);
    refused_by(&o, "contracts");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ContractDrift"),
        "{}",
        text(&o)
    );
    // Incompatible under the target's mode: dev allows anything, staging is BackwardTransitive.
    repo.edit_yaml(contract, |c| {
        c["spec"]["compatibility"] = "None".into();
        let mut v3 = c["spec"]["versions"][1].clone();
        v3["version"] = 3.into();
        v3["schema"]["required"]
            .as_array_mut()
            .unwrap()
            .push("comment".into());
        v3["examples"] = json!([]);
        c["spec"]["versions"].as_array_mut().unwrap().push(v3);
    });
    repo.edit_flow("dev", |v| {
        v["spec"]["version"] = "1.3.0".into();
        v["spec"]["contract"]["version"] = 3.into();
    });
    repo.commit_all("material-scrapped v3 requires a comment");
    let head = repo.head();
    let o = repo.promote("dev", "staging", &skip);
    refused_by(&o, "contracts");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("EventContract/material-scrapped version 3 would break staging's BackwardTransitive compatibility: ")
            && err.contains(" at "),
        "{err}"
    );
    assert_eq!(repo.head(), head);

    // Topology: partitions need --allow-topology-change; --dry-run writes nothing.
    repo.git(&["revert", "--no-edit", "HEAD"]);
    repo.edit_flow("dev", |v| {
        v["spec"]["version"] = "1.4.0".into();
        v["spec"]["delivery"]["ordering"] = json!({"key": ".materialId", "partitions": 4});
    });
    repo.commit_all("scrap-to-finance 1.4.0: ordered by material");
    let head = repo.head();
    let o = repo.promote("dev", "staging", &skip);
    refused_by(&o, "topology");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("partitions change from 0 to 4"),
        "{}",
        text(&o)
    );
    let mut allowed = skip.to_vec();
    allowed.push("--allow-topology-change");
    let mut dry = allowed.clone();
    dry.push("--dry-run");
    let o = repo.promote("dev", "staging", &dry);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would commit"),
        "{}",
        text(&o)
    );
    assert_eq!(repo.head(), head, "a dry run writes nothing");
    let o = repo.promote("dev", "staging", &allowed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_ne!(repo.head(), head);
    drop(staging_worker);
    let _ = &repo.remote;
}
