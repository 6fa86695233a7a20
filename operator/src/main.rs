//! `millrace-operator`: run the controllers, or print the CRDs.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use millrace_operator::context::Settings;
use millrace_operator::run::{RunOptions, run};
use millrace_render::RenderSettings;

#[derive(Parser)]
#[command(
    name = "millrace-operator",
    version,
    about = "Reconciles Millrace resources into RabbitMQ topology and worker pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as multi-document YAML, or write one file per kind into a directory.
    Crds {
        /// Write `<plural>.millrace.dev.yaml` files here instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Also write JSON Schemas for kubeconform here, as `<group>/<kind>_<version>.json`.
        #[arg(long)]
        schemas_dir: Option<PathBuf>,
    },
    /// Run the controllers against the cluster in KUBECONFIG, or in-cluster.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Image of millrace-worker used in worker Deployments.
    #[arg(
        long,
        env = "MILLRACE_WORKER_IMAGE",
        default_value_t = millrace_render::settings::default_worker_image()
    )]
    worker_image: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "millrace-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "millrace-operator")]
    lease_name: String,
    /// Run without leader election (a single replica only: local runs and tests).
    #[arg(long)]
    no_leader_election: bool,
    /// How often each flow is re-checked, so a queue deleted by hand is declared again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drift_interval: std::time::Duration,
    /// How often queue figures are sampled.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample_interval: std::time::Duration,
    /// Default probe interval of connections without `spec.probe.interval`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    probe_interval: std::time::Duration,
    /// Dead-letters per minute above which a flow is not Healthy.
    #[arg(long, default_value_t = 30.0)]
    dlq_growth_per_minute: f64,
    /// How many flows may roll their worker pods at once (a new worker image, new resources, a
    /// rotated Secret): a count, or a percentage of the managed flows, rounded up.
    #[arg(long, default_value = "10%")]
    worker_rollout_max_concurrent: millrace_operator::rollouts::MaxConcurrent,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "MILLRACE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log format: `compact` for terminals, `json` in clusters.
    #[arg(long, env = "MILLRACE_LOG_FORMAT", default_value = "compact")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Both ring (kube) and aws-lc-rs (lapin) are compiled in; rustls needs one chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Crds {
            out_dir,
            schemas_dir,
        } => print_crds(out_dir, schemas_dir),
        Command::Run(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            if args.log_format == "json" {
                tracing_subscriber::fmt()
                    .json()
                    .with_env_filter(filter)
                    .init();
            } else {
                tracing_subscriber::fmt()
                    .compact()
                    .with_env_filter(filter)
                    .init();
            }
            let client = kube::Client::try_default().await?;
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("millrace-operator-{}", std::process::id()));
            let options = RunOptions {
                settings: Settings {
                    render: RenderSettings {
                        worker_image: args.worker_image,
                    },
                    drift_interval: args.drift_interval,
                    sample_interval: args.sample_interval,
                    dlq_growth_per_minute: args.dlq_growth_per_minute,
                    probe_interval: args.probe_interval,
                    worker_rollout_max_concurrent: args.worker_rollout_max_concurrent,
                },
                metrics_addr: args.metrics_addr,
                lease: (!args.no_leader_election)
                    .then_some((args.lease_namespace, args.lease_name)),
                identity,
                namespace: args.watch_namespace,
            };
            run(client, options).await
        }
    }
}

fn print_crds(out_dir: Option<PathBuf>, schemas_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = millrace_crds::all_crds();
    if let Some(dir) = schemas_dir {
        for crd in &crds {
            for (path, schema) in millrace_crds::json_schema::kubeconform_schemas(crd) {
                let path = dir.join(path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")?;
            }
        }
    }
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for crd in &crds {
                let path = dir.join(millrace_crds::crd_file_name(crd));
                std::fs::write(&path, serde_yaml::to_string(crd)?)?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for crd in &crds {
                writeln!(out, "---")?;
                out.write_all(serde_yaml::to_string(crd)?.as_bytes())?;
            }
        }
    }
    Ok(())
}
