//! The worker's life: serve HTTP, run the flows of the current config, swap configs on reload
//! without losing in-flight messages, and drain on shutdown.
//!
//! A reload builds and checks the new config first; a bad one is logged and the old one keeps
//! running. A good one replaces the ingress table, then the old consumers stop (in-flight
//! messages finish and are acked; unconsumed ones stay in their queues) and the new ones start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use millrace_crds::worker_config::{SourceConfig, WorkerConfig};
use millrace_topology::QueueRole;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{CompiledConfig, ConfigError, SecretResolver};
use crate::flow::{self, Runtimes};
use crate::metrics::{Metrics, ReloadLabels};
use crate::server::{self, Health, IngressTable, ServerState};
use crate::sink::amqp::{
    ConfirmPublisher, DEFAULT_CONFIRM_TIMEOUT, DEFAULT_WINDOW, PublisherSettings,
};
use crate::source::amqp::{ConsumerKind, ConsumerSettings, run_consumer};
use crate::source::http::IngressTarget;

/// Default largest message body: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How a worker runs (everything but the config).
#[derive(Clone)]
pub struct WorkerOptions {
    /// Address of `/healthz`, `/readyz`, `/metrics` (and ingress unless `ingress_listen`).
    pub listen: SocketAddr,
    /// Separate address for ingress, if any.
    pub ingress_listen: Option<SocketAddr>,
    /// Declare each flow's topology before consuming (local runs and tests; in clusters the
    /// operator declares it).
    pub declare_topology: bool,
    /// Largest accepted body; larger ones are dead-lettered (`payload_too_large`) or refused
    /// with 413 at ingress.
    pub max_message_bytes: usize,
    /// Longest wait for in-flight messages when stopping.
    pub drain_timeout: Duration,
    /// Unconfirmed publishes per broker publisher (all its exchanges together).
    pub publisher_window: usize,
    /// Longest wait for a publish to be confirmed; past it the publish is a transient failure
    /// and its channel is replaced (a broker in a memory or disk alarm blocks publishers).
    pub confirm_timeout: Duration,
    /// Where secrets come from.
    pub secrets: SecretResolver,
    /// Most HTTP requests in flight to one destination host (scheme, host and port), across
    /// the connections and routes of the config.
    pub http_max_in_flight_per_host: usize,
    /// Deliveries of one message (as its queue counts them) before the worker dead-letters it
    /// with `delivery_limit_exceeded` without running it.
    pub max_redeliveries: u32,
    /// Time budget of one message's pipeline when the flow's jq programs may loop; past it
    /// the message is dead-lettered with `transform_budget_exceeded`.
    pub transform_budget: Duration,
    /// Most bytes of message bodies each flow holds in process at once; further deliveries
    /// wait in the consumer until earlier ones are settled.
    pub prefetch_bytes: usize,
}

/// Default of [`WorkerOptions::prefetch_bytes`]: 16 MiB per flow.
pub const DEFAULT_PREFETCH_BYTES: usize = 16 * 1024 * 1024;

/// Default of [`WorkerOptions::max_redeliveries`].
pub const DEFAULT_MAX_REDELIVERIES: u32 = 10;

impl WorkerOptions {
    /// The bounds every flow runs within.
    pub fn limits(&self) -> flow::Limits {
        flow::Limits {
            publisher: self.publisher_settings(),
            http_max_in_flight_per_host: self.http_max_in_flight_per_host,
            max_redeliveries: self.max_redeliveries,
            transform_budget: self.transform_budget,
            prefetch_bytes: self.prefetch_bytes,
        }
    }

    /// The settings of every broker publisher.
    pub fn publisher_settings(&self) -> PublisherSettings {
        PublisherSettings {
            window: self.publisher_window,
            confirm_timeout: self.confirm_timeout,
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            ingress_listen: None,
            declare_topology: true,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            drain_timeout: Duration::from_secs(20),
            publisher_window: DEFAULT_WINDOW,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            secrets: SecretResolver::default(),
            http_max_in_flight_per_host: crate::sink::http::DEFAULT_MAX_IN_FLIGHT_PER_HOST,
            max_redeliveries: DEFAULT_MAX_REDELIVERIES,
            transform_budget: crate::budget::DEFAULT_TRANSFORM_BUDGET,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
        }
    }
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config is invalid.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl WorkerError {
    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WorkerError::Config(_) => "invalid_config",
            WorkerError::Listen { .. } => "listen",
        }
    }
}

/// One running config: its consumers and publishers.
struct Generation {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    publishers: Vec<Arc<ConfirmPublisher>>,
}

impl Generation {
    async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        for p in &self.publishers {
            p.close().await;
        }
    }
}

/// A started worker (see [`start`]).
pub struct RunningWorker {
    /// Bound address of health, metrics (and ingress unless separate).
    pub addr: SocketAddr,
    /// Bound ingress address.
    pub ingress_addr: SocketAddr,
    /// Metrics, for embedding and tests.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    reload: mpsc::Sender<WorkerConfig>,
}

impl RunningWorker {
    /// Sends a new config (as a reload would).
    pub async fn reload(&self, config: WorkerConfig) {
        let _ = self.reload.send(config).await;
    }

    /// Stops consuming, drains in-flight messages, and waits until everything has stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }

    /// Stops without draining (as a crash would): in-flight messages stay unacked.
    pub fn abort(self) {
        self.handle.abort();
    }
}

/// Chooses the process-wide TLS provider once (two are compiled in through dependencies).
pub fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means a provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Checks `config`, binds the listeners and starts the worker in the background.
pub async fn start(
    config: WorkerConfig,
    options: WorkerOptions,
) -> Result<RunningWorker, WorkerError> {
    init_tls();
    let metrics = Arc::new(Metrics::new());
    let compiled =
        CompiledConfig::build(config, &options.secrets, options.max_message_bytes).await?;
    let runtimes = flow::build(&compiled, &metrics, options.limits())?;
    let health = Arc::new(Health::default());
    let ingress: IngressTable = Arc::default();
    let state = ServerState {
        metrics: metrics.clone(),
        health: health.clone(),
        ingress: ingress.clone(),
    };
    let shutdown = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let (addr, ingress_addr, mut servers) = match options.ingress_listen {
        Some(ingress_listen) => {
            let (a, h1) = server::serve(
                options.listen,
                server::ops_router(state.clone()),
                server_stop.clone(),
            )
            .await
            .map_err(|source| WorkerError::Listen {
                addr: options.listen,
                source,
            })?;
            let (b, h2) = server::serve(
                ingress_listen,
                server::ingress_router(state),
                server_stop.clone(),
            )
            .await
            .map_err(|source| WorkerError::Listen {
                addr: ingress_listen,
                source,
            })?;
            (a, b, vec![h1, h2])
        }
        None => {
            let router = server::ops_router(state.clone()).merge(server::ingress_router(state));
            let (a, h) = server::serve(options.listen, router, server_stop.clone())
                .await
                .map_err(|source| WorkerError::Listen {
                    addr: options.listen,
                    source,
                })?;
            (a, a, vec![h])
        }
    };
    tracing::info!(%addr, %ingress_addr, "listening");

    let (reload_tx, mut reload_rx) = mpsc::channel::<WorkerConfig>(4);
    let stop = shutdown.clone();
    let task_metrics = metrics.clone();
    let handle = tokio::spawn(async move {
        let mut current_raw = compiled.raw.clone();
        let mut generation = launch(
            &compiled,
            runtimes,
            &options,
            &health,
            &ingress,
            &task_metrics,
        );
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                update = reload_rx.recv() => {
                    let Some(update) = update else {
                        stop.cancelled().await;
                        break;
                    };
                    if update == current_raw {
                        continue;
                    }
                    match prepare(update, &options, &task_metrics).await {
                        Ok((next, runtimes)) => {
                            tracing::info!(flows = next.flows.len(), "config reloaded; switching");
                            let old = generation;
                            // The new ingress table goes in first, so ingress never sees a gap;
                            // then the old consumers drain before the new ones start.
                            set_ingress(&ingress, &runtimes, &next, &options, &task_metrics);
                            old.stop().await;
                            current_raw = next.raw.clone();
                            generation = launch(&next, runtimes, &options, &health, &ingress, &task_metrics);
                            task_metrics.config_reloads.get_or_create(&ReloadLabels { outcome: "applied".into() }).inc();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reloaded config is invalid; keeping the running one");
                            task_metrics.config_reloads.get_or_create(&ReloadLabels { outcome: "rejected".into() }).inc();
                        }
                    }
                }
            }
        }
        health.set_stopping();
        tracing::info!("stopping: draining in-flight messages");
        generation.stop().await;
        server_stop.cancel();
        for s in servers.drain(..) {
            let _ = s.await;
        }
        tracing::info!("stopped");
    });
    Ok(RunningWorker {
        addr,
        ingress_addr,
        metrics,
        shutdown,
        handle,
        reload: reload_tx,
    })
}

/// Runs `config` until `shutdown` is cancelled, applying configs received on `updates`.
pub async fn run(
    config: WorkerConfig,
    options: WorkerOptions,
    updates: Option<mpsc::Receiver<WorkerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let worker = start(config, options).await?;
    match updates {
        Some(mut updates) => loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = updates.recv() => match next {
                    Some(c) => worker.reload(c).await,
                    None => { shutdown.cancelled().await; break; }
                }
            }
        },
        None => shutdown.cancelled().await,
    }
    worker.shutdown().await;
    Ok(())
}

async fn prepare(
    raw: WorkerConfig,
    options: &WorkerOptions,
    metrics: &Arc<Metrics>,
) -> Result<(CompiledConfig, Runtimes), ConfigError> {
    let compiled = CompiledConfig::build(raw, &options.secrets, options.max_message_bytes).await?;
    let runtimes = flow::build(&compiled, metrics, options.limits())?;
    Ok((compiled, runtimes))
}

fn set_ingress(
    table: &IngressTable,
    runtimes: &Runtimes,
    compiled: &CompiledConfig,
    options: &WorkerOptions,
    metrics: &Arc<Metrics>,
) {
    let mut next = HashMap::new();
    for rt in &runtimes.flows {
        let SourceConfig::Http { path, auth, secret } = &rt.flow.config.source else {
            continue;
        };
        let Some(secret) = compiled.secret(secret) else {
            continue;
        };
        let target = Arc::new(IngressTarget {
            label: rt.label.clone(),
            exchange: rt.flow.names.exchange(),
            auth: *auth,
            secret: secret.to_string(),
            publisher: rt.publisher.clone(),
            max_bytes: options.max_message_bytes,
            metrics: metrics.clone(),
        });
        next.insert(format!("/ingest/{}", rt.flow.config.name), target.clone());
        next.insert(path.clone(), target);
    }
    if let Ok(mut t) = table.write() {
        *t = next;
    }
}

fn launch(
    compiled: &CompiledConfig,
    runtimes: Runtimes,
    options: &WorkerOptions,
    health: &Arc<Health>,
    ingress: &IngressTable,
    metrics: &Arc<Metrics>,
) -> Generation {
    set_ingress(ingress, &runtimes, compiled, options, metrics);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut flags = Vec::new();
    let settings = ConsumerSettings {
        declare_topology: options.declare_topology,
        drain_timeout: options.drain_timeout,
    };
    for rt in &runtimes.flows {
        let mut consumers = vec![(
            rt.flow.names.main_queue(),
            if rt.flow.is_ordered() {
                ConsumerKind::Splitter
            } else {
                ConsumerKind::Pipeline
            },
        )];
        for q in &rt.flow.plan.queues {
            if let QueueRole::Partition(_) = q.role {
                consumers.push((q.name.clone(), ConsumerKind::Partition));
            }
        }
        for (queue, kind) in consumers {
            let ready = Arc::new(AtomicBool::new(false));
            flags.push(ready.clone());
            tasks.spawn(run_consumer(
                rt.clone(),
                queue,
                kind,
                settings.clone(),
                cancel.clone(),
                ready,
            ));
        }
    }
    health.set_consumers(flags);
    Generation {
        cancel,
        tasks,
        publishers: runtimes.publishers,
    }
}
