//! Step 4: apply what the render produced: the flow's RabbitMQ topology (migrated from what the
//! workers run, [`migrate`]), then the worker objects (skipping unchanged ones), then the
//! retired queues are emptied.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use millrace_broker::tls::TlsOptions;
use millrace_crds::flow::{IntegrationFlow, IntegrationFlowStatus, reason};
use millrace_crds::naming::{FlowNames, worker_object_name};
use millrace_crds::worker_config::FlowConfig;
use millrace_render::{Catalog, RenderedFlow, Verdict};
use millrace_topology::TopologyPlan;

use super::super::apply_if_changed;
use super::migrate;
use crate::context::{Context, FlowQueues};
use crate::error::{Error, Result};
use crate::rollouts::Queued;
use crate::secrets;

/// What applying the worker objects left.
pub struct Children {
    /// The live Deployment (for its status).
    pub deployment: Option<Deployment>,
    /// Set when a changed pod template waits for a rollout slot; the ConfigMap and the
    /// Deployment were not changed.
    pub queued: Option<Queued>,
}

/// Applies the worker objects. A revision whose pod template changes (it rolls the pods: a new
/// config, image, resources or Secret) takes a rollout slot first ([`crate::rollouts`]);
/// without one, its ConfigMap and Deployment are left as they are for now.
pub async fn apply_children(
    ctx: &Context,
    flow: &IntegrationFlow,
    rendered: &RenderedFlow,
) -> Result<Children> {
    let ns = flow.namespace().unwrap_or_default();
    let name = flow.name_any();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let dep_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    let object = worker_object_name(&name);
    let live = dep_api.get_opt(&object).await?;
    let rolls = live
        .as_ref()
        .is_some_and(|live| !template_covers(live, &rendered.deployment));
    let queued = match rolls {
        true => ctx
            .rollouts
            .admit(&ObjectRef::from_obj(flow), ctx.flows.state().len())
            .err(),
        false => None,
    };
    // The revision waits whole: its config too, which running workers would otherwise load.
    if queued.is_none() {
        apply_if_changed(ctx, &cm_api, &rendered.config_map).await?;
        apply_if_changed(ctx, &dep_api, &rendered.deployment).await?;
    }
    apply_if_changed(ctx, &svc_api, &rendered.service).await?;
    match &rendered.pdb {
        Some(pdb) => {
            apply_if_changed(ctx, &pdb_api, pdb).await?;
        }
        None => {
            if pdb_api.get_opt(&object).await?.is_some() {
                pdb_api.delete(&object, &DeleteParams::default()).await?;
                ctx.metrics.write("PodDisruptionBudget", "delete");
            }
        }
    }
    let deployment = match queued {
        Some(_) => live,
        None => dep_api.get_opt(&object).await?,
    };
    Ok(Children { deployment, queued })
}

/// Whether the live Deployment's pod template already holds every field of the wanted one.
fn template_covers(live: &Deployment, want: &Deployment) -> bool {
    let template = |d: &Deployment| serde_json::to_value(&d.spec.template).unwrap_or_default();
    super::super::covers(&template(live), &template(want))
}

/// The live worker Deployment, for a pass that applies nothing (a refused migration).
pub async fn live_deployment(ctx: &Context, ns: &str, name: &str) -> Result<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(&worker_object_name(name)).await?)
}

/// What the topology step decided.
pub struct TopologyStep {
    /// TopologyReady.
    pub verdict: Verdict,
    /// `false` when the change is refused, or cannot be carried out for now (the broker is
    /// unreachable): the workers keep their config.
    pub apply_children: bool,
    /// The broker and the wanted plan, for draining retired queues after the workers got
    /// their config.
    pub declared: Option<(String, TopologyPlan)>,
}

/// Moves the flow's topology from what its workers run to what the render wants
/// ([`migrate`]), and remembers where its queues are. Queues it retires are written to the
/// flow's status before this returns.
pub async fn topology(
    ctx: &Context,
    flow: &IntegrationFlow,
    flow_config: &FlowConfig,
    catalog: &Catalog,
    status: &mut IntegrationFlowStatus,
) -> Result<TopologyStep> {
    let ns = flow_config.namespace.as_str();
    let wanted = millrace_render::topology_plan(flow_config);
    let live = migrate::live_plan(ctx, ns, &flow_config.name).await?;
    // Without the broker a topology change can be neither judged nor recorded: the workers
    // keep their config until it can. Anything else still reaches them.
    let changes = live.as_ref().is_some_and(|l| *l != wanted);
    let failed = |verdict| TopologyStep {
        verdict,
        apply_children: !changes,
        declared: None,
    };
    let uri = match broker_uri(ctx, ns, flow_config, catalog).await {
        Ok(uri) => uri,
        Err(v) => return Ok(failed(v)),
    };
    let unavailable = |e: Error| {
        Verdict::fail(
            reason::BROKER_UNAVAILABLE,
            None,
            format!("declaring the topology on {:?}: {e}", flow_config.broker),
        )
    };
    let m = match migrate::judge(ctx, &uri, live.as_ref(), &wanted).await {
        Ok(m) => m,
        Err(e) => return Ok(failed(unavailable(e))),
    };
    if !m.blocked.is_empty() {
        return Ok(TopologyStep {
            verdict: Verdict::fail(reason::MIGRATION_REQUIRED, None, migrate::refusal(&m)),
            apply_children: false,
            declared: None,
        });
    }
    if migrate::record(&mut status.retiring_queues, &m, &wanted) {
        let api: Api<IntegrationFlow> = Api::namespaced(ctx.client.clone(), ns);
        super::super::patch_status(ctx, &api, &flow_config.name, &status).await?;
    }
    let declared = async {
        migrate::unbind(ctx, &uri, &m).await?;
        ctx.brokers.declare(&uri, &wanted).await
    };
    if let Err(e) = declared.await {
        return Ok(failed(unavailable(e)));
    }
    remember_queues(ctx, flow, flow_config, &uri).await;
    Ok(TopologyStep {
        verdict: Verdict::ok(
            reason::DECLARED,
            format!(
                "queues, retry tiers, DLQ and archive are declared on {:?}",
                flow_config.broker
            ),
        ),
        apply_children: true,
        declared: Some((uri, wanted)),
    })
}

/// Empties and deletes the retired queues it can; while some remain, TopologyReady says so
/// (reason `Migrating`).
pub async fn retire(
    ctx: &Context,
    uri: &str,
    wanted: &TopologyPlan,
    status: &mut IntegrationFlowStatus,
    verdict: &mut Verdict,
) {
    if status.retiring_queues.is_empty() {
        return;
    }
    migrate::drain(ctx, uri, wanted, status).await;
    if let Some(note) = migrate::retiring_note(&status.retiring_queues) {
        *verdict = Verdict::ok(reason::MIGRATING, format!("{}; {note}", verdict.message));
    }
}

/// The URI of the flow's broker connection, read from its Secret.
async fn broker_uri(
    ctx: &Context,
    ns: &str,
    flow_config: &FlowConfig,
    catalog: &Catalog,
) -> std::result::Result<String, Verdict> {
    let Some(amqp) = catalog
        .connections
        .get(&flow_config.broker)
        .and_then(|c| c.connection.spec.amqp.as_ref())
    else {
        return Err(Verdict::fail(
            reason::BROKER_NOT_FOUND,
            None,
            format!(
                "PartnerConnection {:?} is not an AMQP connection",
                flow_config.broker
            ),
        ));
    };
    let failed = |e: secrets::SecretError| {
        Verdict::fail(
            e.reason(),
            None,
            format!("broker connection {:?}: {e}", flow_config.broker),
        )
    };
    let uri = secrets::read(&ctx.client, ns, &amqp.uri_secret_ref)
        .await
        .map_err(failed)?;
    // The connection's TLS settings, so that this pass does not depend on a probe having
    // recorded them.
    if let Some(tls) = &amqp.tls {
        let ca_pem = match &tls.ca_secret_ref {
            Some(r) => Some(secrets::read(&ctx.client, ns, r).await.map_err(failed)?),
            None => None,
        };
        ctx.brokers.set_tls(
            &uri,
            TlsOptions {
                ca_pem,
                server_name: tls.server_name.clone(),
            },
        );
    }
    Ok(uri)
}

/// Remembers where the flow's queues are, for sampling.
async fn remember_queues(
    ctx: &Context,
    flow: &IntegrationFlow,
    flow_config: &FlowConfig,
    uri: &str,
) {
    let names = FlowNames::new(&flow_config.namespace, &flow_config.name);
    // An ordered flow's events wait in the main queue until the splitter moves them to their
    // partition, so the backlog counts the main queue and every partition.
    let main = match &flow_config.delivery.ordering {
        Some(o) => std::iter::once(names.main_queue())
            .chain((0..o.partitions).map(|i| names.partition_queue(i)))
            .collect(),
        None => vec![names.main_queue()],
    };
    ctx.queues.lock().await.insert(
        ObjectRef::from_obj(flow),
        FlowQueues {
            uri: uri.to_string(),
            main,
            dlq: names.dead_letter_queue(),
        },
    );
}
