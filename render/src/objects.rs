//! The Kubernetes objects that run a flow's workers: ConfigMap, Deployment, Service and PDB.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::Resource;
use millrace_crds::FieldError;
use millrace_crds::flow::IntegrationFlow;
use millrace_crds::naming::worker_object_name;
use millrace_crds::worker_config::{CONFIG_MAP_KEY, WorkerConfig};

use crate::digest::{digest, stamp};
use crate::settings::RenderSettings;
use crate::worker_config::{FlowInputs, worker_config};

/// Annotation on the pod template carrying the config revision, so a new config rolls out.
pub const CONFIG_HASH_ANNOTATION: &str = "millrace.dev/config-hash";
/// Annotation on the pod template carrying a digest of the `resourceVersion` of every Secret the
/// workers read (never of their values), so a rotated Secret rolls the workers. Omitted when the
/// versions are not known: `millrace render` reads files, which carry none.
pub const SECRETS_HASH_ANNOTATION: &str = "millrace.dev/secrets-hash";
/// Label naming the flow on every child.
pub const FLOW_LABEL: &str = "millrace.dev/flow";
/// Port of the worker's metrics, health and ingress server.
pub const WORKER_PORT: i32 = 8080;

/// The rendered result.
#[derive(Clone, Debug)]
pub struct RenderedFlow {
    /// The worker config.
    pub config: WorkerConfig,
    /// `sha256:` digest of the config JSON.
    pub revision: String,
    /// ConfigMap holding the config.
    pub config_map: ConfigMap,
    /// The worker Deployment.
    pub deployment: Deployment,
    /// The metrics Service.
    pub service: Service,
    /// A PodDisruptionBudget when more than one replica runs.
    pub pdb: Option<PodDisruptionBudget>,
}

fn labels(flow: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "millrace-worker".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), flow.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "millrace-operator".to_string(),
        ),
        (FLOW_LABEL.to_string(), flow.to_string()),
    ])
}

fn selector(flow: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(FLOW_LABEL.to_string(), flow.to_string())])
}

fn owner(flow: &IntegrationFlow) -> Option<OwnerReference> {
    flow.controller_owner_ref(&())
}

fn meta(flow: &IntegrationFlow, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: flow.metadata.namespace.clone(),
        labels: Some(labels(flow.metadata.name.as_deref().unwrap_or_default())),
        owner_references: owner(flow).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The digest of `name=resourceVersion` of every Secret the config's pods read, sorted by name;
/// a Secret that does not exist yet counts with an empty version.
fn secrets_hash(config: &WorkerConfig, versions: &BTreeMap<String, String>) -> String {
    let names: std::collections::BTreeSet<&str> = config
        .secrets()
        .into_iter()
        .map(|s| s.secret_name.as_str())
        .collect();
    let text: String = names
        .into_iter()
        .map(|n| {
            format!(
                "{n}={}\n",
                versions.get(n).map(String::as_str).unwrap_or("")
            )
        })
        .collect();
    digest(text.as_bytes())
}

/// Renders the worker config and every Kubernetes object of a flow.
pub fn render(
    inputs: &FlowInputs<'_>,
    settings: &RenderSettings,
) -> Result<RenderedFlow, FieldError> {
    let config = worker_config(inputs)?;
    let config_json = serde_json::to_string_pretty(&config)
        .map_err(|e| FieldError::new("spec", e.to_string()))?;
    let revision = digest(config_json.as_bytes());
    let flow = inputs.flow;
    let flow_name = flow.metadata.name.clone().unwrap_or_default();
    let object_name = worker_object_name(&flow_name);
    let spec = &flow.spec;
    let workers = spec.workers.clone().unwrap_or_default();
    let replicas = if spec.suspend {
        0
    } else {
        workers.replicas.unwrap_or(1)
    };

    let config_map = ConfigMap {
        metadata: meta(flow, &object_name),
        data: Some(BTreeMap::from([(CONFIG_MAP_KEY.to_string(), config_json)])),
        ..ConfigMap::default()
    };

    let env: Vec<EnvVar> = config
        .secrets()
        .into_iter()
        .map(|s| EnvVar {
            name: s.env.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.secret_name.clone(),
                    key: s.secret_key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .chain([EnvVar {
            name: "RUST_LOG".into(),
            value: Some("info".into()),
            ..EnvVar::default()
        }])
        .collect();
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let resources = workers
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("128Mi".into()),
            )])),
            ..ResourceRequirements::default()
        });
    let container = Container {
        name: "worker".into(),
        image: Some(settings.worker_image.clone()),
        // The operator declares and deletes the topology; a worker in a cluster never declares
        // it, or a flow deleted with its queues would get them back from a running worker.
        args: Some(vec![
            "--config".into(),
            format!("/etc/millrace/{CONFIG_MAP_KEY}"),
            "--declare-topology=false".into(),
            "--listen".into(),
            format!("0.0.0.0:{WORKER_PORT}"),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: WORKER_PORT,
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        resources: Some(resources),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: "/etc/millrace".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut template_meta = ObjectMeta {
        labels: Some(labels(&flow_name)),
        ..ObjectMeta::default()
    };
    let mut annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), revision.clone())]);
    if let Some(versions) = inputs.secret_versions {
        annotations.insert(
            SECRETS_HASH_ANNOTATION.to_string(),
            secrets_hash(&config, versions),
        );
    }
    template_meta.annotations = Some(annotations);
    let deployment = Deployment {
        metadata: meta(flow, &object_name),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&flow_name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: object_name.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(flow, &object_name),
        spec: Some(ServiceSpec {
            selector: Some(selector(&flow_name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: WORKER_PORT,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = (replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(flow, &object_name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&flow_name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });
    Ok(RenderedFlow {
        config,
        revision,
        config_map: stamp(config_map),
        deployment: stamp(deployment),
        service: stamp(service),
        pdb: pdb.map(stamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker_config::ResolvedContract;
    use millrace_crds::connection::PartnerConnection;

    fn parse<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn fixtures() -> (IntegrationFlow, Vec<PartnerConnection>) {
        let mut flow: IntegrationFlow =
            parse(include_str!("../../examples/basic/integration-flow.yaml"));
        flow.metadata.namespace = Some("plant-berlin".into());
        flow.metadata.uid = Some("0000-1111".into());
        let conns = include_str!("../../examples/basic/partner-connection.yaml")
            .split("\n---\n")
            .map(|doc| {
                let mut c: PartnerConnection = parse(doc);
                c.metadata.namespace = Some("plant-berlin".into());
                c
            })
            .collect();
        (flow, conns)
    }

    fn inputs<'a>(flow: &'a IntegrationFlow, conns: &'a [PartnerConnection]) -> FlowInputs<'a> {
        FlowInputs {
            flow,
            contract: ResolvedContract {
                name: "production-completed".into(),
                version: 1,
                event_type: "com.acme.mfg.production.completed.v1".into(),
                schema: serde_json::json!({"type": "object"}),
            },
            output_contract: None,
            connections: conns
                .iter()
                .map(|c| (c.metadata.name.clone().unwrap(), c))
                .collect(),
            lookups: BTreeMap::new(),
            secret_versions: None,
        }
    }

    fn settings() -> RenderSettings {
        RenderSettings {
            worker_image: "millrace-worker:1".into(),
        }
    }

    #[test]
    fn rendering_is_deterministic_and_holds_no_secret_values() {
        let (flow, conns) = fixtures();
        let a = render(&inputs(&flow, &conns), &settings()).unwrap();
        let b = render(&inputs(&flow, &conns), &settings()).unwrap();
        assert_eq!(
            serde_json::to_string(&a.deployment).unwrap(),
            serde_json::to_string(&b.deployment).unwrap()
        );
        assert_eq!(a.revision, b.revision);
        let cm = serde_json::to_string(&a.config_map).unwrap();
        assert!(cm.contains("secretName") && !cm.contains("guest"), "{cm}");
        let template = a.deployment.spec.template.metadata.as_ref().unwrap();
        assert_eq!(
            template.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
            a.revision
        );
    }

    #[test]
    fn worker_pods_are_hardened_and_get_secrets_by_reference() {
        let (flow, conns) = fixtures();
        let r = render(&inputs(&flow, &conns), &settings()).unwrap();
        let pod = r.deployment.spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        let env = c.env.as_ref().unwrap();
        let refs: Vec<_> = env
            .iter()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .collect();
        assert_eq!(refs.len(), 2, "{env:?}");
        assert!(
            env.iter()
                .all(|e| e.value.is_none() || e.name == "RUST_LOG")
        );
        assert!(
            r.deployment
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o[0].controller == Some(true))
        );
        assert!(r.pdb.is_none(), "one replica needs no PDB");
    }

    #[test]
    fn replicas_suspend_retries_and_a_new_transform() {
        let (mut flow, conns) = fixtures();
        flow.spec.workers.as_mut().unwrap().replicas = Some(3);
        let r = render(&inputs(&flow, &conns), &settings()).unwrap();
        assert!(r.pdb.is_some());
        let f = &r.config.flows[0];
        // The flow's retry policy wins over the connection's default.
        assert_eq!(f.routes[0].retry.max_attempts, 5);
        assert_eq!(f.delivery.retry_tiers_ms, vec![1_000, 2_000, 4_000, 8_000]);

        let before = r.revision.clone();
        flow.spec.transform.as_mut().unwrap().jq = Some("{order: .prodOrderId}".into());
        let changed = render(&inputs(&flow, &conns), &settings()).unwrap();
        assert_ne!(changed.revision, before);

        flow.spec.suspend = true;
        let suspended = render(&inputs(&flow, &conns), &settings()).unwrap();
        assert_eq!(suspended.deployment.spec.replicas, Some(0));
    }

    /// Every key of a rendered config is camelCase, except inside user data (schemas, lookup
    /// tables, args) and the names that key the connections.
    #[test]
    fn every_key_of_the_worker_config_is_camel_case() {
        fn walk(path: &str, v: &serde_json::Value, bad: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, child) in map {
                        let here = format!("{path}.{k}");
                        let camel = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                            && k.chars().all(|c| c.is_ascii_alphanumeric());
                        if !camel {
                            bad.push(here.clone());
                        }
                        match k.as_str() {
                            "schema" | "lookups" | "args" => {}
                            "connections" => {
                                for (name, c) in child.as_object().into_iter().flatten() {
                                    walk(&format!("{here}[{name}]"), c, bad);
                                }
                            }
                            _ => walk(&here, child, bad),
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{path}[{i}]"), item, bad);
                    }
                }
                _ => {}
            }
        }
        let (flow, conns) = fixtures();
        let r = render(&inputs(&flow, &conns), &settings()).unwrap();
        let value = serde_json::to_value(&r.config).unwrap();
        let mut bad = Vec::new();
        walk("", &value, &mut bad);
        assert!(bad.is_empty(), "keys that are not camelCase: {bad:?}");
        let text = serde_json::to_string(&r.config).unwrap();
        assert!(
            text.contains("\"routingKeys\"") && text.contains("\"routingKey\""),
            "{text}"
        );
        // A config rendered before the keys were camelCase still loads.
        let old = text
            .replace("\"routingKeys\"", "\"routing_keys\"")
            .replace("\"routingKey\"", "\"routing_key\"");
        assert_eq!(WorkerConfig::from_json(&old).unwrap(), r.config);
    }

    #[test]
    fn a_rotated_secret_changes_the_pod_template_and_nothing_else() {
        let (flow, conns) = fixtures();
        let hash = |r: &RenderedFlow| {
            r.deployment
                .spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()
                .get(SECRETS_HASH_ANNOTATION)
                .cloned()
        };
        // Offline, no versions are known: no annotation.
        let offline = render(&inputs(&flow, &conns), &settings()).unwrap();
        assert_eq!(hash(&offline), None);

        let names: Vec<String> = offline
            .config
            .secrets()
            .iter()
            .map(|s| s.secret_name.clone())
            .collect();
        assert!(!names.is_empty());
        let mut versions: BTreeMap<String, String> = names
            .iter()
            .map(|n| (n.clone(), "100".to_string()))
            .collect();
        let with = |versions: &BTreeMap<String, String>| {
            let mut i = inputs(&flow, &conns);
            let versions = versions.clone();
            i.secret_versions = Some(&versions);
            render(&i, &settings()).unwrap()
        };
        let before = with(&versions);
        let again = with(&versions);
        assert_eq!(hash(&before), hash(&again), "the hash is deterministic");
        assert!(hash(&before).is_some_and(|h| h.starts_with("sha256:")));
        // It hashes versions, never values: no value is an input at all.
        versions.insert(names[0].clone(), "101".into());
        let rotated = with(&versions);
        assert_ne!(
            hash(&rotated),
            hash(&before),
            "a new resourceVersion rolls the workers"
        );
        assert_eq!(
            rotated.revision, before.revision,
            "the worker config is unchanged"
        );
        assert_eq!(rotated.config_map, before.config_map);
        // A Secret the flow does not use changes nothing.
        versions.insert("unrelated".into(), "7".into());
        assert_eq!(hash(&with(&versions)), hash(&rotated));
        // A Secret that does not exist yet counts too: creating it rolls the workers.
        versions.remove(&names[0]);
        assert_ne!(hash(&with(&versions)), hash(&rotated));
    }

    #[test]
    fn a_route_to_the_wrong_kind_of_connection_names_the_field() {
        let (mut flow, conns) = fixtures();
        flow.spec.routes[1].destination.connection = "s4-prod".into();
        let e = render(&inputs(&flow, &conns), &settings()).unwrap_err();
        assert_eq!(e.field, "spec.routes[1].destination.connection");
        assert!(e.message.contains("HTTP"), "{e}");
    }

    #[test]
    fn tls_settings_reach_the_workers_and_ca_bundles_only_by_reference() {
        use millrace_crds::SecretKeyRef;
        use millrace_crds::connection::{AmqpTls, HttpTls};
        let (flow, mut conns) = fixtures();
        let ca = |name: &str| SecretKeyRef {
            name: name.into(),
            key: "ca.crt".into(),
        };
        for c in &mut conns {
            if let Some(a) = c.spec.amqp.as_mut() {
                a.tls = Some(AmqpTls {
                    ca_secret_ref: Some(ca("bus-ca")),
                    server_name: Some("rabbitmq.plant.example.com".into()),
                });
            }
            if let Some(h) = c.spec.http.as_mut() {
                h.tls = Some(HttpTls {
                    ca_secret_ref: Some(ca("erp-ca")),
                    server_name: Some("erp.plant.example.com".into()),
                });
            }
        }
        let r = render(&inputs(&flow, &conns), &settings()).unwrap();
        let config: WorkerConfig =
            serde_json::from_str(&r.config_map.data.as_ref().unwrap()[CONFIG_MAP_KEY]).unwrap();
        for c in config.connections.values() {
            let (ca, server_name) = match (&c.amqp, &c.http) {
                (Some(a), _) => (a.ca.as_ref(), a.server_name.as_deref()),
                (None, Some(h)) => (h.ca.as_ref(), h.server_name.as_deref()),
                (None, None) => unreachable!("a connection is AMQP or HTTP"),
            };
            let ca = ca.expect("the CA bundle is referenced");
            assert!(server_name.is_some_and(|n| n.ends_with(".plant.example.com")));
            let env = r.deployment.spec.template.spec.as_ref().unwrap().containers[0]
                .env
                .as_ref()
                .unwrap();
            let var = env
                .iter()
                .find(|e| e.name == ca.env)
                .unwrap_or_else(|| panic!("{} is not in the pod's env: {env:?}", ca.env));
            let from = var.value_from.as_ref().unwrap().secret_key_ref.as_ref();
            assert_eq!(from.map(|s| s.name.as_str()), Some(ca.secret_name.as_str()));
            assert!(var.value.is_none());
        }
    }
}
