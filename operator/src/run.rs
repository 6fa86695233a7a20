//! Wiring: the flow cache, three controllers, the queue sampler, leader election and shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Config};
use kube::runtime::{Controller, WatchStreamExt, controller::Action};
use kube::{Api, Client, Resource, ResourceExt};
use millrace_crds::{EventContract, IntegrationFlow, PartnerConnection};
use millrace_render::references;
use tokio::sync::Mutex;

use crate::broker::Brokers;
use crate::context::{Context, Settings};
use crate::controllers::{connection, contract, flow};
use crate::error::Error;
use crate::http::{self, Health};
use crate::metrics::{ErrorLabels, Metrics};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Controller settings.
    pub settings: Settings,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub metrics_addr: SocketAddr,
    /// Leader election: the Lease's namespace and name. `None` runs without election
    /// (one replica only, for local runs and tests).
    pub lease: Option<(String, String)>,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Watch only this namespace (a namespace-scoped install); `None` watches all.
    pub namespace: Option<String>,
}

/// An `Api` over all namespaces, or over the one being watched.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(
    kind: &'static str,
    metrics: Arc<Metrics>,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        let labels = ErrorLabels {
            kind: kind.into(),
            category: err.category().into(),
        };
        metrics.errors.get_or_create(&labels).inc();
        let wait = ctx
            .backoff
            .failed(&crate::controllers::backoff_key(obj.as_ref()));
        tracing::warn!(kind, object = %obj.name_any(), error = %err, category = err.category(), retry_in = ?wait, "reconcile failed; retrying");
        Action::requeue(wait)
    }
}

/// Runs until SIGTERM/SIGINT, or until leadership is lost.
pub async fn run(client: Client, options: RunOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let addr = options.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, health).await {
            tracing::error!(error = %e, %addr, "the metrics server stopped");
        }
    });

    if let Some((namespace, name)) = &options.lease {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(&options.identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leader, _task) = manager.watch().await;
        // A standby replica is healthy and ready; it just does not reconcile.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(lease = %format!("{namespace}/{name}"), identity = %options.identity, "waiting for leadership");
        while !*leader.borrow_and_update() {
            leader.changed().await?;
        }
        tracing::info!("leading: starting the controllers");
        tokio::spawn(async move {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                    tracing::error!("leadership lost; exiting so that only one replica reconciles");
                    std::process::exit(1);
                }
            }
        });
    }
    run_controllers(client, options.settings, options.namespace, metrics, ready).await
}

/// Runs the controllers with the given metrics (tests read them) until shutdown.
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    // One cache of every flow, used for reverse look-ups (usedBy and watch mappers).
    let flows_api: Api<IntegrationFlow> = scoped(&client, &namespace);
    let (flows, writer) = reflector::store();
    let flow_cache = reflector::reflector(
        writer,
        watcher::watcher(flows_api.clone(), Config::default())
            .default_backoff()
            .modify(|f| f.managed_fields_mut().clear()),
    )
    .touched_objects()
    .for_each(|_| async {});
    tokio::spawn(flow_cache);
    flows.wait_until_ready().await?;

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "millrace-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        recorder,
        brokers: Brokers::default(),
        flows: flows.clone(),
        queues: Mutex::new(HashMap::new()),
        samples: Mutex::new(HashMap::new()),
        probes: Mutex::new(HashMap::new()),
        backoff: Default::default(),
        rollouts: crate::rollouts::Rollouts::new(settings.worker_rollout_max_concurrent),
    });

    let (trigger, triggered) = mpsc::channel::<ObjectRef<IntegrationFlow>>(1024);
    tokio::spawn(sample_queues(ctx.clone(), trigger));

    let c = ctx.clone();
    let by_contract = move |ec: EventContract| {
        let name = ec.name_any();
        flow::flows_using(&c, ec.namespace(), |s| references::uses_contract(s, &name))
    };
    let c = ctx.clone();
    let by_connection = move |pc: PartnerConnection| {
        let name = pc.name_any();
        flow::flows_using(&c, pc.namespace(), |s| {
            references::connection_names(s).contains(&name)
        })
    };
    let c = ctx.clone();
    let by_lookup = move |cm: PartialObjectMeta<ConfigMap>| {
        let name = cm.name_any();
        flow::flows_using(&c, cm.namespace(), |s| {
            references::lookup_names(s).contains(&name)
        })
    };
    let flows_ctl = Controller::new(flows_api.clone(), Config::default().any_semantic())
        .owns(
            scoped::<Deployment>(&client, &namespace),
            Config::default().labels("app.kubernetes.io/managed-by=millrace-operator"),
        )
        .watches(
            scoped::<EventContract>(&client, &namespace),
            Config::default(),
            by_contract,
        )
        .watches(
            scoped::<PartnerConnection>(&client, &namespace),
            Config::default(),
            by_connection,
        )
        // Lookup tables only, and their metadata only: the operator has no use for the data of
        // every ConfigMap in the cluster. An unlabelled lookup is still read at each pass, so
        // its edits arrive at the drift re-check, and the flow's Accepted condition says so.
        .watches_stream(
            watcher::watcher(
                scoped::<PartialObjectMeta<ConfigMap>>(&client, &namespace),
                Config::default().labels(references::LOOKUP_LABEL),
            )
            .default_backoff()
            .touched_objects(),
            by_lookup,
        )
        .reconcile_on(triggered)
        .shutdown_on_signal()
        .run(
            flow::reconcile,
            error_policy("IntegrationFlow", metrics.clone()),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let contracts = Controller::new(
        scoped::<EventContract>(&client, &namespace),
        Config::default(),
    );
    let contract_store = contracts.store();
    let contracts_ctl = contracts
        .watches(
            flows_api.clone(),
            Config::default(),
            move |f: IntegrationFlow| {
                let mut names = vec![f.spec.contract.name.clone()];
                names.extend(
                    f.spec
                        .transform
                        .as_ref()
                        .and_then(|t| t.output_contract.as_ref())
                        .map(|o| o.name.clone()),
                );
                refs_to::<EventContract>(&f, names)
            },
        )
        .shutdown_on_signal()
        .run(
            contract::reconcile,
            error_policy("EventContract", metrics.clone()),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let connections = Controller::new(
        scoped::<PartnerConnection>(&client, &namespace),
        Config::default(),
    );
    let connection_store = connections.store();
    let connections_ctl = connections
        .watches(
            flows_api.clone(),
            Config::default(),
            move |f: IntegrationFlow| {
                let names = references::connection_names(&f.spec);
                refs_to::<PartnerConnection>(&f, names)
            },
        )
        .shutdown_on_signal()
        .run(
            connection::reconcile,
            error_policy("PartnerConnection", metrics.clone()),
            ctx.clone(),
        )
        .for_each(|_| async {});

    ready.store(true, Ordering::Relaxed);
    tracing::info!("controllers started");
    // objects_managed{kind}, from the controllers' own caches.
    let flow_store = ctx.flows.clone();
    let managed = async {
        loop {
            metrics.set_managed("IntegrationFlow", flow_store.state().len());
            metrics.set_managed("EventContract", contract_store.state().len());
            metrics.set_managed("PartnerConnection", connection_store.state().len());
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(flows_ctl, contracts_ctl, connections_ctl) } => {}
        () = managed => {}
    }
    tracing::info!("controllers stopped");
    Ok(())
}

/// References to objects named by a flow, in the flow's namespace.
fn refs_to<K: Resource<DynamicType = ()>>(
    flow: &IntegrationFlow,
    names: Vec<String>,
) -> Vec<ObjectRef<K>> {
    let ns = flow.namespace();
    names
        .into_iter()
        .map(|n| match &ns {
            Some(ns) => ObjectRef::new(&n).within(ns),
            None => ObjectRef::new(&n),
        })
        .collect()
}

/// Samples every flow's queues on its own timer, and asks for a reconcile only when the figures
/// differ from what status shows. Status then changes only when the queues do.
async fn sample_queues(ctx: Arc<Context>, mut trigger: mpsc::Sender<ObjectRef<IntegrationFlow>>) {
    let mut tick = tokio::time::interval(ctx.settings.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let queues: Vec<_> = ctx
            .queues
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (flow_ref, q) in queues {
            let Ok((counts, _)) = ctx.sample(&flow_ref, &q).await else {
                continue;
            };
            let shown = ctx
                .flows
                .get(&flow_ref)
                .and_then(|f| f.status.clone())
                .and_then(|s| s.queue);
            let same = shown.is_some_and(|s| {
                s.backlog == counts.backlog
                    && s.dead_letters == counts.dead_letters
                    && s.consumers == counts.consumers
            });
            if !same && trigger.send(flow_ref).await.is_err() {
                return;
            }
        }
    }
}
