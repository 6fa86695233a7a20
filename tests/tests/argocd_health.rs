//! The Argo CD health checks in `charts/millrace/files/argocd/` give the status that
//! docs/argocd-health.md promises for each state of the three kinds, and the chart's argocd-cm
//! patch holds exactly those scripts.
//!
//! The checks run in gopher-lua, the Lua engine Argo CD embeds, set up as Argo CD sets it up (no
//! standard libraries, a one-second limit), through the harness in `hack/argocd-health`. It is
//! built on first use into `$MILLRACE_HOME/bin/argocd-health-check`, so these tests need Go; they
//! need no cluster.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use millrace_testkit::manifests::{repo_root, shown};
use millrace_testkit::millrace_home;
use serde_json::{Value, json};

const SCRIPTS_DIR: &str = "charts/millrace/files/argocd";
const PATCH: &str = "charts/millrace/files/argocd/argocd-cm-patch.yaml";
const HARNESS_SOURCE: &str = "hack/argocd-health";

/// Each kind and its script; its argocd-cm key is `resource.customizations.health.millrace.dev_<kind>`.
const KINDS: [(&str, &str); 3] = [
    ("EventContract", "eventcontract.lua"),
    ("IntegrationFlow", "integrationflow.lua"),
    ("PartnerConnection", "partnerconnection.lua"),
];

fn script(file: &str) -> PathBuf {
    repo_root().join(SCRIPTS_DIR).join(file)
}

fn output_text(output: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The harness, built once per test run, and rebuilt only when a source is newer than the binary.
fn harness() -> &'static Path {
    static HARNESS: OnceLock<PathBuf> = OnceLock::new();
    HARNESS.get_or_init(build_harness)
}

fn build_harness() -> PathBuf {
    // Go is required even when an earlier run left a binary: without it a changed harness could not
    // be rebuilt, and the tests would run whatever binary the machine happens to hold.
    match Command::new("go").arg("version").output() {
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "Go is not installed (no `go` on PATH). These tests run the Argo CD health checks in \
             gopher-lua, the engine Argo CD embeds, through the harness in {HARNESS_SOURCE}, which \
             needs Go 1.22 or newer: install Go and run them again"
        ),
        Err(e) => panic!("cannot run `go version`: {e}"),
        Ok(out) if !out.status.success() => {
            panic!("`go version` failed:\n{}", output_text(&out))
        }
        Ok(_) => {}
    }

    let source = repo_root().join(HARNESS_SOURCE);
    let binary = millrace_home().join("bin").join("argocd-health-check");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let newest_source = ["main.go", "go.mod", "go.sum"]
        .iter()
        .map(|file| {
            let path = source.join(file);
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", shown(&path)))
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if built.is_some_and(|built| built > newest_source) {
        return binary;
    }

    let bin_dir = binary.parent().expect("the binary has a directory");
    std::fs::create_dir_all(bin_dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", bin_dir.display()));
    // The harness needs no version stamp, and without one the build never calls git.
    let out = Command::new("go")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run go build: {e}"));
    assert!(
        out.status.success(),
        "go build in {HARNESS_SOURCE} failed (the first build downloads gopher-lua through the Go \
         module proxy):\n{}",
        output_text(&out)
    );
    binary
}

/// What a check returned for one object: (status, message), or why the harness failed.
fn evaluate(script: &Path, object: &Value) -> Result<(String, String), String> {
    let mut child = Command::new(harness())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", harness().display()));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(object.to_string().as_bytes())
        .expect("write the object to the harness");
    let out = child.wait_with_output().expect("wait for the harness");
    if !out.status.success() {
        return Err(format!(
            "the harness failed ({}):\n{}",
            out.status,
            output_text(&out)
        ));
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the harness printed no JSON ({e}):\n{}", output_text(&out)))?;
    let field = |name: &str| result[name].as_str().unwrap_or_default().to_string();
    Ok((field("status"), field("message")))
}

/// One object and the health Argo CD must show for it.
struct Case {
    name: &'static str,
    object: Value,
    status: &'static str,
    message: String,
}

/// Runs every case through `file`, then fails once, listing each case that went wrong.
fn check_cases(file: &str, cases: Vec<Case>) {
    let path = script(file);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| match evaluate(&path, &case.object) {
            Ok((status, message)) if status == case.status && message == case.message => None,
            Ok((status, message)) => Some(format!(
                "{}:\n  expected {} {:?}\n  got      {status} {message:?}\n  object   {}",
                case.name, case.status, case.message, case.object
            )),
            Err(why) => Some(format!("{}: {why}\n  object {}", case.name, case.object)),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases of {} failed:\n\n{}",
        failures.len(),
        cases.len(),
        shown(&path),
        failures.join("\n\n")
    );
}

/// A live object of `kind` at `generation`, with `status` when the operator wrote one.
fn object(kind: &str, generation: u64, spec: Value, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "millrace.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "orders", "namespace": "team-a", "generation": generation},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-30T09:00:00Z",
    })
}

/// A status the operator wrote for `generation`.
fn observed(generation: u64, conditions: Vec<Value>) -> Value {
    json!({"observedGeneration": generation, "conditions": conditions})
}

const PAUSED_MESSAGE: &str =
    "the millrace.dev/paused annotation is set; nothing is reconciled until it is removed";

fn paused() -> Value {
    condition("ReconciliationPaused", "True", "Paused", PAUSED_MESSAGE)
}

/// Cases every kind shares: the generation rule, the pause rule, and Ready missing or Unknown.
fn common_cases(kind: &str, spec: &Value, ready_true: &Value) -> Vec<Case> {
    vec![
        Case {
            name: "new object, no status yet",
            object: object(kind, 1, spec.clone(), None),
            status: "Progressing",
            message: "waiting for the operator to observe generation 1".into(),
        },
        Case {
            name: "status without observedGeneration",
            object: object(
                kind,
                2,
                spec.clone(),
                Some(json!({"conditions": [ready_true]})),
            ),
            status: "Progressing",
            message: "waiting for the operator to observe generation 2".into(),
        },
        Case {
            name: "stale observedGeneration: Ready True is about the previous spec",
            object: object(
                kind,
                4,
                spec.clone(),
                Some(observed(3, vec![ready_true.clone()])),
            ),
            status: "Progressing",
            message: "waiting for the operator to observe generation 4".into(),
        },
        Case {
            name: "paused",
            object: object(
                kind,
                2,
                spec.clone(),
                Some(observed(2, vec![ready_true.clone(), paused()])),
            ),
            status: "Suspended",
            message: PAUSED_MESSAGE.into(),
        },
        Case {
            name: "ReconciliationPaused False does not suspend",
            object: object(
                kind,
                2,
                spec.clone(),
                Some(observed(
                    2,
                    vec![
                        condition("ReconciliationPaused", "False", "Resumed", "resumed"),
                        ready_true.clone(),
                    ],
                )),
            ),
            status: "Healthy",
            message: ready_true["message"].as_str().expect("a message").into(),
        },
        Case {
            name: "observed, but no Ready condition yet",
            object: object(kind, 2, spec.clone(), Some(observed(2, vec![]))),
            status: "Progressing",
            message: "waiting for the Ready condition".into(),
        },
        Case {
            name: "Ready Unknown",
            object: object(
                kind,
                2,
                spec.clone(),
                Some(observed(
                    2,
                    vec![condition("Ready", "Unknown", "Reconciling", "first pass")],
                )),
            ),
            status: "Progressing",
            message: "Reconciling: first pass".into(),
        },
    ]
}

const FLOW_READY: &str = "the flow is accepted, resolved, declared, running and healthy";
const DIGEST_MISMATCH: &str = "the live spec's release digest sha256:9c0d7e differs from the \
                               promoted sha256:1f2e9a: the cluster was edited by hand";

fn flow(generation: u64, spec: Value, status: Option<Value>) -> Value {
    object("IntegrationFlow", generation, spec, status)
}

fn flow_ready(message: &str) -> Value {
    condition("Ready", "True", "Ready", message)
}

fn digest_mismatch() -> Value {
    condition(
        "ReleaseVerified",
        "False",
        "DigestMismatch",
        DIGEST_MISMATCH,
    )
}

/// A flow observed at generation 5 with the given conditions.
fn flow_with(conditions: Vec<Value>) -> Value {
    flow(
        5,
        json!({"version": "1.4.0"}),
        Some(observed(5, conditions)),
    )
}

/// A flow whose Ready is False for `reason`.
fn flow_not_ready(reason: &str, message: &str) -> Value {
    flow_with(vec![condition("Ready", "False", reason, message)])
}

#[test]
fn integration_flow_health() {
    let spec = json!({"version": "1.4.0"});
    let mut cases = common_cases("IntegrationFlow", &spec, &flow_ready(FLOW_READY));
    let mut released = observed(
        5,
        vec![
            condition(
                "ReleaseVerified",
                "True",
                "DigestMatches",
                "the live spec is the release",
            ),
            flow_ready(FLOW_READY),
        ],
    );
    released["release"] =
        json!({"version": "1.4.0", "digest": "sha256:1f2e9a77", "ref": "1.4.0@1f2e9a"});
    let suspended_spec = json!({"version": "1.4.0", "suspend": true});
    let suspended_conditions = vec![
        condition(
            "WorkersAvailable",
            "False",
            "Suspended",
            "spec.suspend is true; no worker runs and messages wait in the queue",
        ),
        condition(
            "Ready",
            "False",
            "Suspended",
            "spec.suspend is true; no worker runs and messages wait in the queue",
        ),
    ];
    cases.extend([
        Case {
            name: "suspended",
            object: flow(5, suspended_spec.clone(), Some(observed(5, suspended_conditions.clone()))),
            status: "Suspended",
            message: "spec.suspend is true: the flow runs no workers".into(),
        },
        Case {
            name: "paused and suspended: the pause is named",
            object: flow(
                5,
                suspended_spec.clone(),
                Some(observed(5, [suspended_conditions.clone(), vec![paused()]].concat())),
            ),
            status: "Suspended",
            message: PAUSED_MESSAGE.into(),
        },
        Case {
            name: "suspended with a digest mismatch: suspension comes first",
            object: flow(
                5,
                suspended_spec,
                Some(observed(5, [suspended_conditions, vec![digest_mismatch()]].concat())),
            ),
            status: "Suspended",
            message: "spec.suspend is true: the flow runs no workers".into(),
        },
        Case {
            name: "spec.suspend false",
            object: flow(
                5,
                json!({"version": "1.4.0", "suspend": false}),
                Some(observed(5, vec![flow_ready(FLOW_READY)])),
            ),
            status: "Healthy",
            message: FLOW_READY.into(),
        },
        Case {
            name: "DigestMismatch, though Ready is True",
            object: flow_with(vec![digest_mismatch(), flow_ready(FLOW_READY)]),
            status: "Degraded",
            message: DIGEST_MISMATCH.into(),
        },
        Case {
            name: "DigestMismatch and InvalidJq: the mismatch is named",
            object: flow_with(vec![
                condition("Ready", "False", "InvalidJq", "transform: syntax error"),
                digest_mismatch(),
            ]),
            status: "Degraded",
            message: DIGEST_MISMATCH.into(),
        },
        Case {
            name: "Ready True with the release ref",
            object: flow(5, spec.clone(), Some(released)),
            status: "Healthy",
            message: "the flow is accepted, resolved, declared, running and healthy (release 1.4.0@1f2e9a)".into(),
        },
        Case {
            name: "Ready True, not promoted (no release, no ReleaseVerified)",
            object: flow_with(vec![flow_ready(FLOW_READY)]),
            status: "Healthy",
            message: FLOW_READY.into(),
        },
        Case {
            name: "Ready False Blocked",
            object: flow_not_ready("Blocked", "waiting for ContractsResolved"),
            status: "Progressing",
            message: "Blocked: waiting for ContractsResolved".into(),
        },
        Case {
            name: "Ready False RollingOut",
            object: flow_not_ready("RollingOut", "1/3 workers run the new revision"),
            status: "Progressing",
            message: "RollingOut: 1/3 workers run the new revision".into(),
        },
        Case {
            name: "Ready False without a reason",
            object: flow_with(vec![json!({"type": "Ready", "status": "False"})]),
            status: "Degraded",
            message: "Ready is False".into(),
        },
    ]);
    for (reason, message) in [
        (
            "InvalidJq",
            "spec.transform: jq does not compile: unexpected token",
        ),
        ("ContractNotFound", "EventContract orders does not exist"),
        ("ConnectionNotReady", "PartnerConnection acme is not Ready"),
        ("BrokerUnavailable", "connection refused"),
        ("RolloutStuck", "the rollout passed its progress deadline"),
        ("NoConsumers", "the queue has no consumers"),
        ("DeadLettersGrowing", "12 dead letters in 5 minutes"),
        ("WorkersUnavailable", "1/3 workers available"),
    ] {
        cases.push(Case {
            name: reason,
            object: flow_not_ready(reason, message),
            status: "Degraded",
            message: format!("{reason}: {message}"),
        });
    }
    check_cases("integrationflow.lua", cases);
}

#[test]
fn event_contract_health() {
    let spec = json!({"versions": [{"version": 1, "schema": {"type": "object"}}]});
    let ready = condition("Ready", "True", "Ready", "version 1 is accepted");
    let mut cases = common_cases("EventContract", &spec, &ready);
    let contract = |conditions| {
        object(
            "EventContract",
            3,
            spec.clone(),
            Some(observed(3, conditions)),
        )
    };
    cases.extend([
        Case {
            name: "Ready True",
            object: contract(vec![ready.clone()]),
            status: "Healthy",
            message: "version 1 is accepted".into(),
        },
        Case {
            name: "VersionRejected",
            object: contract(vec![condition(
                "Ready",
                "False",
                "VersionRejected",
                "version 2 removes required field sku",
            )]),
            status: "Degraded",
            message: "VersionRejected: version 2 removes required field sku".into(),
        },
        Case {
            name: "NoAcceptedVersion",
            object: contract(vec![condition(
                "Ready",
                "False",
                "NoAcceptedVersion",
                "no version has a valid schema",
            )]),
            status: "Degraded",
            message: "NoAcceptedVersion: no version has a valid schema".into(),
        },
        Case {
            name: "Blocked is not transient for a contract",
            object: contract(vec![condition("Ready", "False", "Blocked", "waiting")]),
            status: "Degraded",
            message: "Blocked: waiting".into(),
        },
    ]);
    check_cases("eventcontract.lua", cases);
}

#[test]
fn partner_connection_health() {
    let spec = json!({"type": "http", "http": {"baseUrl": "https://partner.example"}});
    let ready = condition(
        "Ready",
        "True",
        "Ready",
        "credentials resolve and the endpoint is reachable",
    );
    let mut cases = common_cases("PartnerConnection", &spec, &ready);
    let connection = |conditions| {
        object(
            "PartnerConnection",
            2,
            spec.clone(),
            Some(observed(2, conditions)),
        )
    };
    cases.extend([
        Case {
            name: "Ready True",
            object: connection(vec![ready.clone()]),
            status: "Healthy",
            message: "credentials resolve and the endpoint is reachable".into(),
        },
        Case {
            name: "Ready Unknown, not probed yet",
            object: connection(vec![condition("Ready", "Unknown", "", "")]),
            status: "Progressing",
            message: "waiting for the Ready condition".into(),
        },
        Case {
            name: "Ready False Unreachable",
            object: connection(vec![condition(
                "Ready",
                "False",
                "Unreachable",
                "connect: connection refused",
            )]),
            status: "Degraded",
            message: "Unreachable: connect: connection refused".into(),
        },
        Case {
            name: "Ready False SecretNotFound",
            object: connection(vec![condition(
                "Ready",
                "False",
                "SecretNotFound",
                "Secret acme-token does not exist",
            )]),
            status: "Degraded",
            message: "SecretNotFound: Secret acme-token does not exist".into(),
        },
    ]);
    check_cases("partnerconnection.lua", cases);
}

/// The generator's output is the checked-in patch, byte for byte, and the patch's YAML gives back
/// each script unchanged under its argocd-cm key.
#[test]
fn argocd_cm_patch_holds_the_current_scripts() {
    let root = repo_root();
    let patch_path = root.join(PATCH);
    let checked_in =
        std::fs::read(&patch_path).unwrap_or_else(|e| panic!("read {}: {e}", shown(&patch_path)));
    let out = Command::new("bash")
        .arg(root.join("hack/gen-argocd-health.sh"))
        .arg("--stdout")
        .output()
        .expect("run hack/gen-argocd-health.sh");
    assert!(
        out.status.success(),
        "hack/gen-argocd-health.sh --stdout failed:\n{}",
        output_text(&out)
    );
    assert!(
        out.stdout == checked_in,
        "{} is stale: run hack/gen-argocd-health.sh and commit the result",
        shown(&patch_path)
    );

    let patch: Value = serde_yaml::from_slice(&checked_in)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", shown(&patch_path)));
    let top: Vec<&String> = patch.as_object().expect("a mapping").keys().collect();
    assert_eq!(top, ["data"], "a patch of argocd-cm's data only");
    let data = patch["data"].as_object().expect("data is a mapping");
    let mut expected_keys = Vec::new();
    for (kind, file) in KINDS {
        let key = format!("resource.customizations.health.millrace.dev_{kind}");
        let path = script(file);
        let lua =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", shown(&path)));
        assert_eq!(
            data.get(&key).and_then(Value::as_str),
            Some(lua.as_str()),
            "{key} in {} is not {}",
            shown(&patch_path),
            shown(&path)
        );
        expected_keys.push(key);
    }
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    assert_eq!(keys, expected_keys.iter().collect::<Vec<_>>());
}
