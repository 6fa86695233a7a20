//! IntegrationFlow: dereference → validate → render (pure) → apply → status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use millrace_crds::conditions::{ConditionStatus, is_true, set_condition};
use millrace_crds::connection::PartnerConnection;
use millrace_crds::contract::EventContract;
use millrace_crds::flow::{
    ContractRef, DeletionPolicy, HISTORY_LIMIT, IntegrationFlow, IntegrationFlowSpec, QueueFigures,
    ReplicaCounts, ResolvedContract as StatusContract, RevisionRecord, condition,
};
use millrace_crds::naming::{FlowNames, worker_object_name};
use millrace_crds::worker_config::FlowConfig;

use super::{apply_if_changed, apply_pause, measured, now, write_status};
use crate::context::{Context, FlowQueues};
use crate::error::{Error, Result};
use crate::render::{FlowInputs, ResolvedContract, render};
use crate::{jq, secrets};

/// Finalizer that lets deletion honour `deletionPolicy`.
pub const FINALIZER: &str = "millrace.dev/topology";

/// Every PartnerConnection name a flow spec refers to.
pub fn connection_names(spec: &IntegrationFlowSpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .source
        .amqp
        .iter()
        .map(|a| a.connection.clone())
        .collect();
    names.extend(spec.broker.iter().map(|b| b.connection.clone()));
    names.extend(spec.routes.iter().map(|r| r.destination.connection.clone()));
    names.sort();
    names.dedup();
    names
}

/// True when the flow uses contract `name` for input or output.
pub fn uses_contract(spec: &IntegrationFlowSpec, name: &str) -> bool {
    spec.contract.name == name
        || spec
            .transform
            .as_ref()
            .and_then(|t| t.output_contract.as_ref())
            .is_some_and(|c| c.name == name)
}

/// Every ConfigMap name a flow's lookups refer to.
pub fn lookup_names(spec: &IntegrationFlowSpec) -> Vec<String> {
    spec.transform
        .iter()
        .flat_map(|t| t.lookups.iter().map(|l| l.config_map_ref.name.clone()))
        .collect()
}

/// Checks every jq program of the spec. Returns the field and the error of the first that fails.
pub fn check_jq(spec: &IntegrationFlowSpec) -> Result<(), (String, String)> {
    let mut vars: Vec<String> = Vec::new();
    if let Some(t) = &spec.transform {
        vars.extend(t.lookups.iter().map(|l| l.name.clone()));
        vars.extend(t.args.keys().cloned());
    }
    let mut programs: Vec<(String, &str)> = Vec::new();
    if let Some(p) = spec.transform.as_ref().and_then(|t| t.jq.as_deref()) {
        programs.push(("spec.transform.jq".into(), p));
    }
    for (i, r) in spec.routes.iter().enumerate() {
        if let Some(w) = r.when.as_deref() {
            programs.push((format!("spec.routes[{i}].when"), w));
        }
    }
    if let Some(d) = &spec.delivery {
        if let Some(i) = &d.idempotency {
            programs.push(("spec.delivery.idempotency.key".into(), &i.key));
        }
        if let Some(o) = &d.ordering {
            programs.push(("spec.delivery.ordering.key".into(), &o.key));
        }
    }
    for (field, program) in programs {
        // Keys and predicates see the same variables as the transform.
        jq::check(program, &vars).map_err(|e| (field, e))?;
    }
    Ok(())
}

/// Reconciles one IntegrationFlow.
pub async fn reconcile(flow: Arc<IntegrationFlow>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, "IntegrationFlow", async {
        let ns = flow
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<IntegrationFlow> = Api::namespaced(ctx.client.clone(), &ns);
        let old = flow.status.clone().unwrap_or_default();
        let mut status = old.clone();
        if apply_pause(&flow.metadata, &mut status) {
            write_status(&ctx, &api, flow.as_ref(), &old, &status).await?;
            return Ok(Action::await_change());
        }
        finalizer(&api, FINALIZER, flow, |event| async {
            match event {
                Finalizer::Apply(flow) => apply(&flow, &ctx, &api).await,
                Finalizer::Cleanup(flow) => cleanup(&flow, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

/// What dereferencing found, or why it stopped.
enum Resolved {
    Contract(ResolvedContract),
    Missing {
        reason: &'static str,
        message: String,
    },
}

async fn resolve_contract(
    ctx: &Context,
    ns: &str,
    r: &ContractRef,
    field: &str,
) -> Result<Resolved> {
    let api: Api<EventContract> = Api::namespaced(ctx.client.clone(), ns);
    let Some(contract) = api.get_opt(&r.name).await? else {
        return Ok(Resolved::Missing {
            reason: "ContractNotFound",
            message: format!(
                "{field}: EventContract {:?} not found in namespace {ns}; create it or fix the name",
                r.name
            ),
        });
    };
    let status = contract.status.clone().unwrap_or_default();
    let version = match r.version {
        Some(v) => {
            let accepted = status.versions.iter().any(|s| s.version == v && s.accepted);
            if !accepted {
                let why = status
                    .versions
                    .iter()
                    .find(|s| s.version == v)
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "it is not (yet) accepted".into());
                return Ok(Resolved::Missing {
                    reason: "ContractVersionNotAccepted",
                    message: format!(
                        "{field}: EventContract {:?} version {v} cannot be used: {why}",
                        r.name
                    ),
                });
            }
            v
        }
        None => match status.latest_accepted_version {
            Some(v) => v,
            None => {
                return Ok(Resolved::Missing {
                    reason: "ContractNotReady",
                    message: format!(
                        "{field}: EventContract {:?} has no accepted version yet",
                        r.name
                    ),
                });
            }
        },
    };
    let Some(spec_version) = contract.spec.version(version) else {
        return Ok(Resolved::Missing {
            reason: "ContractVersionNotFound",
            message: format!(
                "{field}: EventContract {:?} has no version {version}",
                r.name
            ),
        });
    };
    Ok(Resolved::Contract(ResolvedContract {
        name: r.name.clone(),
        version,
        event_type: contract.spec.type_.clone(),
        schema: spec_version.schema.clone(),
    }))
}

struct Verdict {
    ok: bool,
    reason: String,
    message: String,
}

impl Verdict {
    fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
    fn fail(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
    fn pending(upstream: &str) -> Self {
        Self::fail("Blocked", format!("waiting for {upstream}"))
    }
}

async fn apply(
    flow: &IntegrationFlow,
    ctx: &Context,
    api: &Api<IntegrationFlow>,
) -> Result<Action> {
    let ns = flow
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = flow.name_any();
    let generation = flow.metadata.generation;
    let old = flow.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status
        .conditions
        .retain(|c| c.type_ != super::PAUSED_CONDITION);
    let flow_ref = ObjectRef::from_obj(flow);

    // 1. Validate what needs no other object.
    let mut accepted = match check_jq(&flow.spec) {
        Ok(()) => Verdict::ok("Valid", "the spec is valid and every jq program compiles"),
        Err((field, e)) => Verdict::fail("InvalidJq", format!("{field}: {e}")),
    };

    // 2. Dereference contracts, lookups and connections.
    let mut contracts = Verdict::ok("Resolved", "");
    let mut input = None;
    let mut output = None;
    match resolve_contract(ctx, &ns, &flow.spec.contract, "spec.contract").await? {
        Resolved::Contract(c) => input = Some(c),
        Resolved::Missing { reason, message } => contracts = Verdict::fail(reason, message),
    }
    if let Some(r) = flow
        .spec
        .transform
        .as_ref()
        .and_then(|t| t.output_contract.as_ref())
    {
        match resolve_contract(ctx, &ns, r, "spec.transform.outputContract").await? {
            Resolved::Contract(c) => output = Some(c),
            Resolved::Missing { reason, message } => {
                if contracts.ok {
                    contracts = Verdict::fail(reason, message);
                }
            }
        }
    }
    if contracts.ok {
        let c = input
            .as_ref()
            .map(|c| format!("{}@v{}", c.name, c.version))
            .unwrap_or_default();
        contracts.message = match &output {
            Some(o) => format!("input {c}, output {}@v{}", o.name, o.version),
            None => format!("input {c}"),
        };
    }

    let mut lookups = BTreeMap::new();
    if let Some(t) = &flow.spec.transform {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        for (i, l) in t.lookups.iter().enumerate() {
            match cms.get_opt(&l.config_map_ref.name).await? {
                Some(cm) => {
                    lookups.insert(l.name.clone(), cm.data.unwrap_or_default());
                }
                None if accepted.ok => {
                    accepted = Verdict::fail(
                        "LookupNotFound",
                        format!(
                            "spec.transform.lookups[{i}].configMapRef: ConfigMap {:?} not found in namespace {ns}",
                            l.config_map_ref.name
                        ),
                    );
                }
                None => {}
            }
        }
    }

    let conn_api: Api<PartnerConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let mut connections: BTreeMap<String, PartnerConnection> = BTreeMap::new();
    let mut conns = Verdict::ok("Ready", "every connection is Ready");
    for c in connection_names(&flow.spec) {
        match conn_api.get_opt(&c).await? {
            Some(pc) => {
                let ready = pc
                    .status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, "Ready"));
                if !ready && conns.ok {
                    let why = pc
                        .status
                        .as_ref()
                        .and_then(|s| {
                            millrace_crds::conditions::find(&s.conditions, "Ready")
                                .map(|c| c.message.clone())
                        })
                        .unwrap_or_else(|| "not probed yet".into());
                    conns = Verdict::fail(
                        "ConnectionNotReady",
                        format!("PartnerConnection {c:?} is not Ready: {why}"),
                    );
                }
                connections.insert(c, pc);
            }
            None => {
                if conns.ok || conns.reason == "ConnectionNotReady" {
                    conns = Verdict::fail(
                        "ConnectionNotFound",
                        format!("PartnerConnection {c:?} not found in namespace {ns}"),
                    );
                }
            }
        }
    }

    // 3. Render (pure) when everything it needs is known.
    let mut topology = Verdict::pending("the flow to be accepted and its references to resolve");
    let mut workers = Verdict::pending("the worker Deployment");
    let mut rendered = None;
    let all_connections_exist = conns.reason != "ConnectionNotFound";
    if accepted.ok
        && all_connections_exist
        && let Some(input) = input.clone()
    {
        let inputs = FlowInputs {
            flow,
            contract: input,
            output_contract: output.clone(),
            connections: connections.iter().map(|(k, v)| (k.clone(), v)).collect(),
            lookups: lookups.clone(),
        };
        match render(&inputs, &ctx.settings.render) {
            Ok(r) => rendered = Some(r),
            Err(e) => accepted = Verdict::fail("InvalidReference", e.to_string()),
        }
    }

    // 4. Apply: children, then topology.
    let mut deployment_status = None;
    if let Some(r) = &rendered {
        let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        let dep_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
        let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        apply_if_changed(ctx, &cm_api, &r.config_map).await?;
        apply_if_changed(ctx, &dep_api, &r.deployment).await?;
        apply_if_changed(ctx, &svc_api, &r.service).await?;
        match &r.pdb {
            Some(pdb) => {
                apply_if_changed(ctx, &pdb_api, pdb).await?;
            }
            None => {
                if pdb_api.get_opt(&worker_object_name(&name)).await?.is_some() {
                    pdb_api
                        .delete(&worker_object_name(&name), &DeleteParams::default())
                        .await?;
                    ctx.metrics.write("PodDisruptionBudget", "delete");
                }
            }
        }
        deployment_status = dep_api.get_opt(&worker_object_name(&name)).await?;

        let flow_config = &r.config.flows[0];
        topology = declare_topology(ctx, &ns, &flow_ref, flow_config, &connections).await;
    }

    // 5. Observe: workers, queue health.
    let desired = rendered
        .as_ref()
        .and_then(|r| r.deployment.spec.replicas)
        .unwrap_or(0);
    let ready_replicas = deployment_status
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if rendered.is_some() {
        let dep = deployment_status.as_ref();
        let observed = dep
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        let dep_gen = dep.and_then(|d| d.metadata.generation).unwrap_or(0);
        let updated = dep
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.updated_replicas)
            .unwrap_or(0);
        workers = if flow.spec.suspend {
            Verdict::fail(
                "Suspended",
                "spec.suspend is true; no worker runs and messages wait in the queue",
            )
        } else if observed < dep_gen || updated < desired {
            Verdict::fail(
                "RollingOut",
                format!("{updated}/{desired} workers run the new revision"),
            )
        } else if ready_replicas >= desired {
            Verdict::ok(
                "Available",
                format!("{ready_replicas}/{desired} workers available"),
            )
        } else {
            Verdict::fail(
                "WorkersUnavailable",
                format!("{ready_replicas}/{desired} workers available"),
            )
        };
    }
    let (healthy, figures) = health(ctx, &flow_ref, topology.ok).await;
    if let Some(f) = figures {
        let unchanged = old.queue.as_ref().is_some_and(|q| {
            q.backlog == f.backlog && q.dead_letters == f.dead_letters && q.consumers == f.consumers
        });
        if !unchanged {
            status.queue = Some(QueueFigures {
                sampled_at: Some(now()),
                ..f
            });
        }
    }

    // 6. Status.
    let ready = [&accepted, &contracts, &conns, &topology, &workers, &healthy]
        .iter()
        .all(|v| v.ok);
    let first_failure = [&accepted, &contracts, &conns, &topology, &workers, &healthy]
        .into_iter()
        .find(|v| !v.ok);
    let t = now();
    for (type_, v) in [
        (condition::ACCEPTED, &accepted),
        (condition::CONTRACTS_RESOLVED, &contracts),
        (condition::CONNECTIONS_READY, &conns),
        (condition::TOPOLOGY_READY, &topology),
        (condition::WORKERS_AVAILABLE, &workers),
        (condition::HEALTHY, &healthy),
    ] {
        set_condition(
            &mut status.conditions,
            type_,
            ConditionStatus::from_bool(v.ok),
            &v.reason,
            v.message.clone(),
            generation,
            t.clone(),
        );
    }
    let (reason, message) = match first_failure {
        None => (
            "Ready".to_string(),
            "the flow is accepted, resolved, declared, running and healthy".to_string(),
        ),
        Some(v) => (v.reason.clone(), v.message.clone()),
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ConditionStatus::from_bool(ready),
        &reason,
        message,
        generation,
        t.clone(),
    );

    status.observed_generation = generation;
    if let Some(c) = &input {
        status.contract = Some(StatusContract {
            name: c.name.clone(),
            version: c.version,
            reference: format!("{}@v{}", c.name, c.version),
        });
    }
    if let Some(r) = &rendered {
        status.replicas = Some(ReplicaCounts {
            desired,
            ready: ready_replicas,
        });
        if status.revision.as_deref() != Some(r.revision.as_str()) {
            status.history.insert(
                0,
                RevisionRecord {
                    revision: r.revision.clone(),
                    version: flow.spec.version.0.clone(),
                    applied_at: t.clone(),
                    outcome: "Applied".into(),
                },
            );
            status.history.truncate(HISTORY_LIMIT);
            status.revision = Some(r.revision.clone());
            status.version = Some(flow.spec.version.0.clone());
        }
        if workers.ok
            && let Some(h) = status.history.first_mut()
            && h.revision == r.revision
            && h.outcome == "Applied"
        {
            h.outcome = "RolledOut".into();
        }
    }

    ctx.metrics
        .flow_ready
        .get_or_create(&crate::metrics::FlowLabels {
            namespace: ns.clone(),
            flow: name.clone(),
        })
        .set(i64::from(ready));
    write_status(ctx, api, flow, &old, &status).await?;
    Ok(Action::requeue(ctx.settings.drift_interval))
}

async fn declare_topology(
    ctx: &Context,
    ns: &str,
    flow_ref: &ObjectRef<IntegrationFlow>,
    flow_config: &FlowConfig,
    connections: &BTreeMap<String, PartnerConnection>,
) -> Verdict {
    let Some(secret) = connections
        .get(&flow_config.broker)
        .and_then(|c| c.spec.amqp.as_ref())
        .map(|a| a.uri_secret_ref.clone())
    else {
        return Verdict::fail(
            "BrokerNotFound",
            format!(
                "PartnerConnection {:?} is not an AMQP connection",
                flow_config.broker
            ),
        );
    };
    let uri = match secrets::read(&ctx.client, ns, &secret).await {
        Ok(uri) => uri,
        Err(e) => {
            return Verdict::fail(
                e.reason(),
                format!("broker connection {:?}: {e}", flow_config.broker),
            );
        }
    };
    let plan = millrace_topology::plan(flow_config);
    if let Err(e) = ctx.brokers.declare(&uri, &plan).await {
        return Verdict::fail(
            "BrokerUnavailable",
            format!("declaring the topology on {:?}: {e}", flow_config.broker),
        );
    }
    let names = FlowNames::new(&flow_config.namespace, &flow_config.name);
    let main = match &flow_config.delivery.ordering {
        Some(o) => (0..o.partitions)
            .map(|i| names.partition_queue(i))
            .collect(),
        None => vec![names.main_queue()],
    };
    ctx.queues.lock().await.insert(
        flow_ref.clone(),
        FlowQueues {
            uri,
            main,
            dlq: names.dead_letter_queue(),
        },
    );
    Verdict::ok(
        "Declared",
        format!(
            "queues, retry tiers, DLQ and archive are declared on {:?}",
            flow_config.broker
        ),
    )
}

/// Samples the flow's queues now and judges health from consumers and dead-letter growth.
async fn health(
    ctx: &Context,
    flow_ref: &ObjectRef<IntegrationFlow>,
    declared: bool,
) -> (Verdict, Option<QueueFigures>) {
    if !declared {
        return (Verdict::pending("the topology"), None);
    }
    let Some(queues) = ctx.queues.lock().await.get(flow_ref).cloned() else {
        return (Verdict::pending("the topology"), None);
    };
    // Reuse a fresh sample: a reconcile started by our own status write must not sample anew,
    // or a busy queue would keep the flow reconciling.
    let fresh = {
        let samples = ctx.samples.lock().await;
        samples.get(flow_ref).and_then(|s| {
            s.latest_if_newer_than(ctx.settings.sample_interval)
                .map(|c| (c, s.dead_letter_growth_per_minute()))
        })
    };
    let (counts, growth) = match fresh {
        Some(found) => found,
        None => match ctx.sample(flow_ref, &queues).await {
            Ok(found) => found,
            Err(e) => return (Verdict::fail("QueueUnavailable", e.to_string()), None),
        },
    };
    let labels = crate::metrics::FlowLabels {
        namespace: flow_ref.namespace.clone().unwrap_or_default(),
        flow: flow_ref.name.clone(),
    };
    ctx.metrics
        .flow_dead_letters
        .get_or_create(&labels)
        .set(counts.dead_letters as i64);
    ctx.metrics
        .flow_backlog
        .get_or_create(&labels)
        .set(counts.backlog as i64);
    let figures = QueueFigures {
        backlog: counts.backlog,
        dead_letters: counts.dead_letters,
        consumers: counts.consumers,
        sampled_at: None,
    };
    let verdict = if counts.consumers == 0 {
        Verdict::fail("NoConsumers", "nothing consumes the flow's queue")
    } else if growth > ctx.settings.dlq_growth_per_minute {
        Verdict::fail(
            "DeadLettersGrowing",
            format!(
                "dead-letters grow by {growth:.0}/min, above the threshold of {}/min",
                ctx.settings.dlq_growth_per_minute
            ),
        )
    } else {
        Verdict::ok(
            "Healthy",
            "the queue has consumers and dead-letters are not growing",
        )
    };
    (verdict, Some(figures))
}

async fn cleanup(flow: &IntegrationFlow, ctx: &Context) -> Result<Action> {
    let flow_ref = ObjectRef::from_obj(flow);
    let queues = ctx.queues.lock().await.remove(&flow_ref);
    ctx.samples.lock().await.remove(&flow_ref);
    if flow.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(flow = %flow_ref, "deletionPolicy Retain: queues and their messages are kept");
        return Ok(Action::await_change());
    }
    // Delete: remove the topology. The broker URI comes from the remembered queues, or is
    // resolved again after an operator restart.
    let ns = flow
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let broker = flow
        .spec
        .broker
        .as_ref()
        .map(|b| b.connection.clone())
        .or_else(|| flow.spec.source.amqp.as_ref().map(|a| a.connection.clone()));
    let uri = match queues {
        Some(q) => Some(q.uri),
        None => match broker {
            Some(b) => {
                let api: Api<PartnerConnection> = Api::namespaced(ctx.client.clone(), &ns);
                match api.get_opt(&b).await?.and_then(|c| c.spec.amqp) {
                    Some(a) => secrets::read(&ctx.client, &ns, &a.uri_secret_ref)
                        .await
                        .ok(),
                    None => None,
                }
            }
            None => None,
        },
    };
    let Some(uri) = uri else {
        tracing::warn!(flow = %flow_ref, "deletionPolicy Delete, but the broker cannot be resolved; queues are left in place");
        return Ok(Action::await_change());
    };
    let partitions = flow
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.ordering.as_ref())
        .map_or(0, |o| o.partitions);
    ctx.brokers
        .delete_flow(&uri, &FlowNames::new(&ns, &flow.name_any()), partitions)
        .await?;
    tracing::info!(flow = %flow_ref, "deletionPolicy Delete: topology removed");
    Ok(Action::await_change())
}

/// Maps a changed contract, connection or ConfigMap to the flows in its namespace that use it.
pub fn flows_using(
    ctx: &Context,
    ns: Option<String>,
    pred: impl Fn(&IntegrationFlowSpec) -> bool,
) -> Vec<ObjectRef<IntegrationFlow>> {
    ctx.flows
        .state()
        .iter()
        .filter(|f| f.namespace() == ns)
        .filter(|f| pred(&f.spec))
        .map(|f| ObjectRef::from_obj(f.as_ref()))
        .collect()
}
