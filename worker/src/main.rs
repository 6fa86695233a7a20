//! `millrace-worker`: runs the flows of a rendered worker config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use millrace_crds::worker_config::{CONFIG_MAP_KEY, WorkerConfig};
use millrace_worker::{SecretResolver, WorkerOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs Millrace flows: consume, validate, transform, route and deliver business events.
#[derive(Parser, Debug)]
#[command(name = "millrace-worker", version)]
struct Args {
    /// Read the config from this JSON file (re-read when it changes, or on SIGHUP).
    #[arg(
        long,
        env = "MILLRACE_CONFIG",
        conflicts_with = "configmap",
        required_unless_present = "configmap"
    )]
    config: Option<PathBuf>,
    /// Read the config from key `worker-config.json` of this ConfigMap (NAMESPACE/NAME), and
    /// watch it. Secrets absent from the environment are read through the API.
    #[arg(long, env = "MILLRACE_CONFIGMAP")]
    configmap: Option<String>,
    /// Address of /healthz, /readyz and /metrics (and of ingress, unless --ingress-listen).
    /// Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "MILLRACE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Separate address for HTTP ingress (POST /ingest/<flow>).
    #[arg(long, env = "MILLRACE_INGRESS_LISTEN")]
    ingress_listen: Option<SocketAddr>,
    /// Declare each flow's queues, tiers, DLQ and archive before consuming. Defaults to true
    /// with --config and false with --configmap (the operator declares them in clusters).
    #[arg(long, env = "MILLRACE_DECLARE_TOPOLOGY", num_args = 0..=1, default_missing_value = "true")]
    declare_topology: Option<bool>,
    /// Largest accepted message body in bytes; larger ones are dead-lettered (payload_too_large)
    /// or refused with 413 at ingress.
    #[arg(long, env = "MILLRACE_MAX_MESSAGE_BYTES", default_value_t = millrace_worker::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Longest wait for in-flight messages on shutdown or reload, in seconds.
    #[arg(long, env = "MILLRACE_DRAIN_TIMEOUT_SECONDS", default_value_t = 20)]
    drain_timeout_seconds: u64,
    /// Longest wait for the broker to confirm a publish, in seconds. A broker in a memory or
    /// disk alarm blocks publishers; past this wait the publish is retried like any other
    /// transient failure, and its channel is reopened.
    #[arg(long, env = "MILLRACE_CONFIRM_TIMEOUT_SECONDS", default_value_t = millrace_worker::sink::amqp::DEFAULT_CONFIRM_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    confirm_timeout_seconds: u64,
    /// Most HTTP requests in flight to one destination host (scheme, host and port), across all
    /// HTTP routes; further deliveries to that host wait for a free slot.
    #[arg(long, env = "MILLRACE_HTTP_MAX_IN_FLIGHT_PER_HOST", default_value_t = millrace_worker::sink::http::DEFAULT_MAX_IN_FLIGHT_PER_HOST, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_in_flight_per_host: usize,
    /// Deliveries of one message (as its quorum queue counts them in `x-delivery-count`)
    /// before it is dead-lettered with `delivery_limit_exceeded`, without running it: a message
    /// that crashes or stalls the worker cannot loop forever.
    #[arg(long, env = "MILLRACE_MAX_REDELIVERIES", default_value_t = millrace_worker::runtime::DEFAULT_MAX_REDELIVERIES, value_parser = clap::value_parser!(u32).range(1..))]
    max_redeliveries: u32,
    /// Time budget of one message's pipeline, in milliseconds, when the flow's jq programs may
    /// loop (recursion, range, until, reduce...). Such flows run off the async threads; a
    /// message past the budget is dead-lettered with transform_budget_exceeded.
    #[arg(long, env = "MILLRACE_TRANSFORM_BUDGET_MS", default_value_t = millrace_worker::budget::DEFAULT_TRANSFORM_BUDGET.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    transform_budget_ms: u64,
    /// Most bytes of message bodies each flow holds in process at once (the prefetch byte
    /// budget); further deliveries wait until earlier ones are settled. The flow's prefetch
    /// count still bounds what the broker has sent ahead.
    #[arg(long, env = "MILLRACE_PREFETCH_BYTES", default_value_t = millrace_worker::runtime::DEFAULT_PREFETCH_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    prefetch_bytes: usize,
    /// Log format: compact (local) or json (clusters).
    #[arg(long, env = "MILLRACE_LOG_FORMAT", default_value = "compact", value_parser = ["compact", "json"])]
    log_format: String,
    /// Check the config (schemas, jq programs, references, secrets) and exit.
    #[arg(long)]
    check: bool,
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}

fn parse_config(text: &str, origin: &str) -> Result<WorkerConfig> {
    WorkerConfig::from_json(text).map_err(|e| anyhow::anyhow!("{origin}: invalid config: {e}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    millrace_worker::runtime::init_tls();

    let shutdown = CancellationToken::new();
    let (updates_tx, updates_rx) = mpsc::channel::<WorkerConfig>(4);
    let mut options = WorkerOptions {
        listen: args.listen,
        ingress_listen: args.ingress_listen,
        declare_topology: args.declare_topology.unwrap_or(args.config.is_some()),
        max_message_bytes: args.max_message_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
        confirm_timeout: Duration::from_secs(args.confirm_timeout_seconds),
        http_max_in_flight_per_host: args.http_max_in_flight_per_host,
        max_redeliveries: args.max_redeliveries,
        transform_budget: Duration::from_millis(args.transform_budget_ms),
        prefetch_bytes: args.prefetch_bytes,
        ..WorkerOptions::default()
    };

    let initial = if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let config = parse_config(&text, &path.display().to_string())?;
        tokio::spawn(watch_file(path.clone(), text, updates_tx));
        config
    } else if let Some(reference) = &args.configmap {
        let Some((namespace, name)) = reference.split_once('/') else {
            bail!("--configmap: {reference:?} is not NAMESPACE/NAME");
        };
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster)")?;
        options.secrets = SecretResolver {
            values: Default::default(),
            kube: Some((client.clone(), namespace.to_string())),
        };
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, namespace);
        let cm = api
            .get(name)
            .await
            .with_context(|| format!("reading ConfigMap {reference}"))?;
        let text = config_text(&cm)
            .with_context(|| format!("ConfigMap {reference} has no key {CONFIG_MAP_KEY}"))?;
        let config = parse_config(&text, &format!("ConfigMap {reference}"))?;
        tokio::spawn(watch_config_map(api, name.to_string(), updates_tx));
        config
    } else {
        bail!("one of --config or --configmap is required");
    };

    if args.check {
        millrace_worker::config::CompiledConfig::build(
            initial,
            &options.secrets,
            options.max_message_bytes,
        )
        .await
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        println!("config ok");
        return Ok(());
    }

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("termination signal received");
        stop.cancel();
    });
    millrace_worker::run(initial, options, Some(updates_rx), shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn config_text(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get(CONFIG_MAP_KEY).cloned()
}

/// Re-reads the file every two seconds and on SIGHUP; sends configs that changed and parse.
async fn watch_file(path: PathBuf, mut last: String, updates: mpsc::Sender<WorkerConfig>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(2));
        match hup.as_mut() {
            Some(h) => {
                tokio::select! {
                    _ = tick => {}
                    _ = h.recv() => {}
                }
            }
            None => tick.await,
        }
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        if text == last {
            continue;
        }
        last = text.clone();
        match parse_config(&text, &path.display().to_string()) {
            Ok(config) => {
                if updates.send(config).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "changed config is invalid; keeping the running one")
            }
        }
    }
}

/// Watches the ConfigMap and sends configs that parse.
async fn watch_config_map(
    api: kube::Api<ConfigMap>,
    name: String,
    updates: mpsc::Sender<WorkerConfig>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        let cm = match event {
            Ok(watcher::Event::Apply(cm)) | Ok(watcher::Event::InitApply(cm)) => cm,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "ConfigMap watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let Some(text) = config_text(&cm) else {
            tracing::error!(configmap = %name, "ConfigMap has no {CONFIG_MAP_KEY}; keeping the running config");
            continue;
        };
        match parse_config(&text, &format!("ConfigMap {name}")) {
            Ok(config) => {
                if updates.send(config).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "changed config is invalid; keeping the running one")
            }
        }
    }
}
