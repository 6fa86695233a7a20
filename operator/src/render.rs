//! Pure rendering: a flow plus its resolved references become a [`WorkerConfig`] and the
//! Kubernetes objects that run it. No I/O here, so an offline `render` and the operator produce
//! byte-identical output.

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
use kube::Resource;
use millrace_crds::common::SecretKeyRef;
use millrace_crds::connection::PartnerConnection;
use millrace_crds::flow::IntegrationFlow;
use millrace_crds::naming::worker_object_name;
use millrace_crds::worker_config::{
    AmqpConnectionConfig, CONFIG_MAP_KEY, ConnectionConfig, ContractConfig, DeliveryConfig,
    DestinationConfig, FlowConfig, HttpConnectionConfig, IdempotencyConfig, OrderingConfig,
    RetryConfig, RouteConfig, SecretSource, SourceConfig, TransformConfig,
    WORKER_CONFIG_API_VERSION, WorkerConfig,
};
use sha2::{Digest, Sha256};

/// Annotation on the pod template carrying the config revision, so a new config rolls out.
pub const CONFIG_HASH_ANNOTATION: &str = "millrace.dev/config-hash";
/// Annotation on every child carrying the digest of what the operator applied.
pub const APPLIED_HASH_ANNOTATION: &str = "millrace.dev/applied-hash";
/// Label naming the flow on every child.
pub const FLOW_LABEL: &str = "millrace.dev/flow";
/// Port of the worker's metrics, health and ingress server.
pub const WORKER_PORT: i32 = 8080;
/// Default HTTP timeout of a connection.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
/// Default dedupe window when `idempotency.window` is omitted.
pub const DEFAULT_IDEMPOTENCY_WINDOW_MS: u64 = 86_400_000;

/// Operator-wide settings that shape the rendered objects.
#[derive(Clone, Debug)]
pub struct RenderSettings {
    /// Image of `millrace-worker`.
    pub worker_image: String,
}

/// A contract version resolved from an EventContract.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedContract {
    /// EventContract name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// CloudEvents type.
    pub event_type: String,
    /// JSON Schema.
    pub schema: serde_json::Value,
}

/// Everything a flow references, already read from the API.
#[derive(Clone, Debug)]
pub struct FlowInputs<'a> {
    /// The flow.
    pub flow: &'a IntegrationFlow,
    /// Inbound contract.
    pub contract: ResolvedContract,
    /// Output contract, when the transform declares one.
    pub output_contract: Option<ResolvedContract>,
    /// Every connection the flow names, by name.
    pub connections: BTreeMap<String, &'a PartnerConnection>,
    /// Lookup tables by variable name.
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
}

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

/// Why a flow cannot be rendered (a reference that does not fit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    /// Field of the flow spec at fault.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn render_err(field: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError {
        field: field.into(),
        message: message.into(),
    }
}

/// The environment variable a pod gets a secret key in. Stable and unique per (secret, key).
pub fn secret_env_name(secret: &SecretKeyRef) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "MILLRACE_SECRET_{}__{}",
        clean(&secret.name),
        clean(&secret.key)
    )
}

fn secret_source(secret: &SecretKeyRef) -> SecretSource {
    SecretSource {
        env: secret_env_name(secret),
        secret_name: secret.name.clone(),
        secret_key: secret.key.clone(),
    }
}

fn duration_ms(d: &millrace_crds::Duration, field: &str) -> Result<u64, RenderError> {
    d.to_std()
        .map(|d| d.as_millis() as u64)
        .map_err(|e| render_err(field, e.to_string()))
}

fn connection_config(
    name: &str,
    conn: &PartnerConnection,
) -> Result<ConnectionConfig, RenderError> {
    let field = format!("connection {name}");
    let amqp = conn.spec.amqp.as_ref().map(|a| AmqpConnectionConfig {
        uri: secret_source(&a.uri_secret_ref),
        ca: a
            .tls
            .as_ref()
            .and_then(|t| t.ca_secret_ref.as_ref())
            .map(secret_source),
        server_name: a.tls.as_ref().and_then(|t| t.server_name.clone()),
    });
    let http = match &conn.spec.http {
        Some(h) => {
            let auth = h
                .auth
                .clone()
                .unwrap_or(millrace_crds::connection::HttpAuth {
                    type_: Default::default(),
                    secret_ref: None,
                    token_url: None,
                    header: None,
                });
            Some(HttpConnectionConfig {
                base_url: h.base_url.trim_end_matches('/').to_string(),
                auth: auth.type_,
                secret: auth.secret_ref.as_ref().map(secret_source),
                token_url: auth.token_url.clone(),
                header: auth.header.clone(),
                timeout_ms: match &h.timeout {
                    Some(t) => duration_ms(t, &format!("{field} spec.http.timeout"))?,
                    None => DEFAULT_HTTP_TIMEOUT_MS,
                },
                rate_limit_per_second: h.rate_limit.as_ref().map(|r| r.requests_per_second),
                rate_limit_burst: h.rate_limit.as_ref().and_then(|r| r.burst),
            })
        }
        None => None,
    };
    Ok(ConnectionConfig {
        system: conn.spec.system,
        amqp,
        http,
    })
}

/// Resolves a retry policy: the flow's fields win, then the connection's, then the defaults.
fn retry_config(
    flow: &IntegrationFlow,
    conn: &PartnerConnection,
) -> Result<RetryConfig, RenderError> {
    let d = RetryConfig::default();
    let f = flow
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.retry.clone())
        .unwrap_or_default();
    let c = conn
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.retry.clone())
        .unwrap_or_default();
    let ms = |a: &Option<millrace_crds::Duration>,
              b: &Option<millrace_crds::Duration>,
              field: &str,
              default: u64| {
        match a.as_ref().or(b.as_ref()) {
            Some(v) => duration_ms(v, field),
            None => Ok(default),
        }
    };
    Ok(RetryConfig {
        max_attempts: f.max_attempts.or(c.max_attempts).unwrap_or(d.max_attempts),
        backoff: f.backoff.or(c.backoff).unwrap_or(d.backoff),
        initial_delay_ms: ms(
            &f.initial_delay,
            &c.initial_delay,
            "spec.delivery.retry.initialDelay",
            d.initial_delay_ms,
        )?,
        max_delay_ms: ms(
            &f.max_delay,
            &c.max_delay,
            "spec.delivery.retry.maxDelay",
            d.max_delay_ms,
        )?,
    })
}

/// The distinct retry delays any route can need, shortest first: one delay queue each.
pub fn retry_tiers(routes: &[RouteConfig]) -> Vec<u64> {
    let mut tiers: Vec<u64> = routes
        .iter()
        .flat_map(|r| (2..=r.retry.max_attempts.max(1)).map(move |a| r.retry.delay_ms(a)))
        .filter(|ms| *ms > 0)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    tiers
}

/// Builds the worker config of one flow.
pub fn worker_config(inputs: &FlowInputs<'_>) -> Result<WorkerConfig, RenderError> {
    let flow = inputs.flow;
    let spec = &flow.spec;
    let namespace = flow.metadata.namespace.clone().unwrap_or_default();
    let name = flow.metadata.name.clone().unwrap_or_default();
    let conn = |n: &str, field: &str| -> Result<&PartnerConnection, RenderError> {
        inputs
            .connections
            .get(n)
            .copied()
            .ok_or_else(|| render_err(field, format!("PartnerConnection {n:?} not found")))
    };

    let mut connections = BTreeMap::new();
    let mut add = |n: &str, field: &str| -> Result<(), RenderError> {
        let c = conn(n, field)?;
        connections.insert(n.to_string(), connection_config(n, c)?);
        Ok(())
    };

    let source = match (&spec.source.amqp, &spec.source.http) {
        (Some(a), _) => {
            add(&a.connection, "spec.source.amqp.connection")?;
            SourceConfig::Amqp {
                connection: a.connection.clone(),
                exchange: a.exchange.clone(),
                routing_keys: a.routing_keys.clone(),
            }
        }
        (None, Some(h)) => SourceConfig::Http {
            path: h.path.clone(),
            auth: h.auth.type_,
            secret: secret_source(&h.auth.secret_ref),
        },
        (None, None) => return Err(render_err("spec.source", "set exactly one of amqp or http")),
    };
    let broker = match (&spec.broker, &spec.source.amqp) {
        (Some(b), _) => b.connection.clone(),
        (None, Some(a)) => a.connection.clone(),
        (None, None) => return Err(render_err("spec.broker", "required for an HTTP source")),
    };
    add(&broker, "spec.broker.connection")?;
    if conn(&broker, "spec.broker.connection")?.spec.amqp.is_none() {
        return Err(render_err(
            "spec.broker.connection",
            format!("PartnerConnection {broker:?} is not an AMQP connection"),
        ));
    }
    if let Some(a) = &spec.source.amqp
        && conn(&a.connection, "spec.source.amqp.connection")?
            .spec
            .amqp
            .is_none()
    {
        return Err(render_err(
            "spec.source.amqp.connection",
            format!(
                "PartnerConnection {:?} is not an AMQP connection",
                a.connection
            ),
        ));
    }

    let mut routes = Vec::with_capacity(spec.routes.len());
    for (i, route) in spec.routes.iter().enumerate() {
        let field = format!("spec.routes[{i}].destination.connection");
        let c = conn(&route.destination.connection, &field)?;
        let destination = match (&route.destination.amqp, &route.destination.http) {
            (Some(a), _) => {
                if c.spec.amqp.is_none() {
                    return Err(render_err(
                        field,
                        format!(
                            "route {:?} publishes over AMQP but PartnerConnection {:?} is HTTP",
                            route.name, route.destination.connection
                        ),
                    ));
                }
                DestinationConfig::Amqp {
                    exchange: a.exchange.clone(),
                    routing_key: a.routing_key.clone(),
                }
            }
            (None, Some(h)) => {
                if c.spec.http.is_none() {
                    return Err(render_err(
                        field,
                        format!(
                            "route {:?} sends HTTP but PartnerConnection {:?} is AMQP",
                            route.name, route.destination.connection
                        ),
                    ));
                }
                DestinationConfig::Http {
                    method: h.method,
                    path: h.path.clone(),
                }
            }
            (None, None) => {
                return Err(render_err(
                    format!("spec.routes[{i}].destination"),
                    "set exactly one of amqp or http",
                ));
            }
        };
        add(&route.destination.connection, &field)?;
        routes.push(RouteConfig {
            name: route.name.clone(),
            when: route.when.clone(),
            connection: route.destination.connection.clone(),
            destination,
            retry: retry_config(flow, c)?,
        });
    }

    let contract_config = |c: &ResolvedContract| ContractConfig {
        name: c.name.clone(),
        version: c.version,
        event_type: c.event_type.clone(),
        schema: c.schema.clone(),
    };
    let transform = spec.transform.as_ref().map(|t| TransformConfig {
        jq: t.jq.clone(),
        lookups: inputs.lookups.clone(),
        args: t
            .args
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
        output_contract: inputs.output_contract.as_ref().map(contract_config),
    });
    let delivery_spec = spec.delivery.clone().unwrap_or_default();
    let idempotency = match &delivery_spec.idempotency {
        Some(i) => Some(IdempotencyConfig {
            key: i.key.clone(),
            window_ms: match &i.window {
                Some(w) => duration_ms(w, "spec.delivery.idempotency.window")?,
                None => DEFAULT_IDEMPOTENCY_WINDOW_MS,
            },
        }),
        None => None,
    };
    let delivery = DeliveryConfig {
        dead_letter: delivery_spec.dead_letter.as_ref().is_none_or(|d| d.enabled),
        idempotency,
        ordering: delivery_spec.ordering.as_ref().map(|o| OrderingConfig {
            key: o.key.clone(),
            partitions: o.partitions,
        }),
        retry_tiers_ms: retry_tiers(&routes),
    };
    let workers = spec.workers.clone().unwrap_or_default();
    let flow_config = FlowConfig {
        namespace,
        name,
        version: spec.version.0.clone(),
        broker,
        source,
        contract: contract_config(&inputs.contract),
        transform,
        routes,
        delivery,
        archive_retention_ms: match &spec.replay {
            Some(r) => duration_ms(&r.retention, "spec.replay.retention")?,
            None => 0,
        },
        sla_max_latency_ms: match &spec.sla {
            Some(s) => Some(duration_ms(&s.max_latency, "spec.sla.maxLatency")?),
            None => None,
        },
        prefetch: workers.prefetch.unwrap_or(100),
    };
    let config = WorkerConfig {
        api_version: WORKER_CONFIG_API_VERSION.into(),
        flows: vec![flow_config],
        connections,
    };
    config.check().map_err(|e| render_err(e.field, e.message))?;
    Ok(config)
}

/// `sha256:<hex>` of bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
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

/// Stamps the digest of `obj` (without the stamp) into its annotations, so an unchanged object
/// can be recognised and never re-applied.
pub fn stamp<K: Resource + serde::Serialize>(mut obj: K) -> K {
    let hash = digest(&serde_json::to_vec(&obj).unwrap_or_default());
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    obj
}

/// Renders the worker config and every Kubernetes object of a flow.
pub fn render(
    inputs: &FlowInputs<'_>,
    settings: &RenderSettings,
) -> Result<RenderedFlow, RenderError> {
    let config = worker_config(inputs)?;
    let config_json =
        serde_json::to_string_pretty(&config).map_err(|e| render_err("spec", e.to_string()))?;
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
        args: Some(vec![
            "--config".into(),
            format!("/etc/millrace/{CONFIG_MAP_KEY}"),
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
    template_meta.annotations = Some(BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_string(),
        revision.clone(),
    )]));
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

    #[test]
    fn a_route_to_the_wrong_kind_of_connection_names_the_field() {
        let (mut flow, conns) = fixtures();
        flow.spec.routes[1].destination.connection = "s4-prod".into();
        let e = render(&inputs(&flow, &conns), &settings()).unwrap_err();
        assert_eq!(e.field, "spec.routes[1].destination.connection");
        assert!(e.message.contains("HTTP"), "{e}");
    }
}
