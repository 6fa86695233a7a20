//! `millrace-simulator`: the partner systems of the manufacturing demo.
//!
//! - `partners` serves the ERP's HTTP API (postings recorded by business key, idempotent, with
//!   injectable latency and failures) and receives what flows deliver to the WMS and TMS.
//! - `events` plays the MES, WMS, TMS and the ERP's outbound side: it publishes CloudEvents to
//!   their exchanges and posts to HTTP ingress, and writes a ledger of every accepted event.
//! - `report` accounts for every ledger entry: delivered to every route, or dead-lettered.
//! - `setup` declares the partners' exchanges and inbound queues.

mod broker;
mod events;
mod ledger;
mod partners;
mod prom;
mod publish;
mod report;
mod scenario;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "millrace-simulator",
    version,
    about = "ERP, WMS, TMS and MES simulators for the Millrace manufacturing demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Broker {
    /// RabbitMQ URI of the partners' broker.
    #[arg(
        long,
        env = "MILLRACE_DEMO_AMQP_URI",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_uri: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ERP API and receive WMS/TMS deliveries until stopped.
    Partners {
        #[command(flatten)]
        broker: Broker,
        /// Address of the ERP API (loopback only in the demo).
        #[arg(long, default_value = "127.0.0.1:18090")]
        listen: SocketAddr,
        /// HTTP Basic credentials the ERP demands, as user:password.
        #[arg(long, env = "MILLRACE_DEMO_ERP_CREDENTIALS")]
        erp_credentials: Option<String>,
        /// Share of postings answered 503 (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        erp_fail_rate: f64,
        /// Share of postings rejected with 422 (0 to 1): these end in the DLQ.
        #[arg(long, default_value_t = 0.0)]
        erp_reject_rate: f64,
        /// Share of postings recorded but answered 504 (0 to 1): retries must be idempotent.
        #[arg(long, default_value_t = 0.0)]
        erp_lost_response_rate: f64,
        /// Latency added to each posting, in milliseconds (plus up to 50% jitter).
        #[arg(long, default_value_t = 0)]
        erp_latency_ms: u64,
    },
    /// Publish events at a steady rate and write the ledger.
    Events {
        #[command(flatten)]
        broker: Broker,
        /// How long to publish, for example 60s.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Events per second, all flows together.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Only these flows (repeatable); default all.
        #[arg(long = "flow")]
        flows: Vec<String>,
        /// Ingress URL of an HTTP-source flow, as FLOW=URL (repeatable).
        #[arg(long, value_parser = parse_pair)]
        ingress: Vec<(String, String)>,
        /// How the ingress authenticates.
        #[arg(long, value_enum, default_value = "hmac")]
        ingress_auth: publish::IngressAuth,
        /// File holding the ingress HMAC key or bearer token.
        #[arg(long)]
        ingress_secret_file: Option<PathBuf>,
        /// Ledger file (JSON lines), appended to.
        #[arg(long, default_value = "ledger.jsonl")]
        ledger: PathBuf,
        /// Share of MES/WMS/TMS events that violate their contract (0 to 1).
        #[arg(long, default_value_t = 0.01)]
        invalid_rate: f64,
        /// Random seed.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Base URL of the partners process, to switch on an ERP outage.
        #[arg(long)]
        partners_url: Option<String>,
        /// ERP outage as START+LENGTH from the start of the run, for example 20s+10s.
        #[arg(long, value_parser = parse_outage)]
        erp_outage: Option<(std::time::Duration, std::time::Duration)>,
    },
    /// Account for every event in the ledger, print the report, exit 1 if any is missing.
    Report {
        #[command(flatten)]
        broker: Broker,
        /// Ledger written by `events`.
        #[arg(long, default_value = "ledger.jsonl")]
        ledger: PathBuf,
        /// Base URL of the partners process.
        #[arg(long, default_value = "http://127.0.0.1:18090")]
        partners_url: String,
        /// Namespace of the flows.
        #[arg(long, default_value = "plant-berlin")]
        namespace: String,
        /// Worker metrics URL of a flow, as FLOW=URL (repeatable).
        #[arg(long, value_parser = parse_pair)]
        metrics: Vec<(String, String)>,
        /// How long to wait for retries to settle.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// Also write the verdict as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Declare the partners' exchanges and inbound queues (idempotent).
    Setup {
        #[command(flatten)]
        broker: Broker,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

fn parse_outage(text: &str) -> Result<(std::time::Duration, std::time::Duration), String> {
    let (start, length) = text
        .split_once('+')
        .ok_or_else(|| format!("expected START+LENGTH such as 20s+10s, got {text:?}"))?;
    let parse = |t: &str| humantime::parse_duration(t).map_err(|e| format!("{t:?}: {e}"));
    Ok((parse(start)?, parse(length)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .compact()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=error".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Partners {
            broker,
            listen,
            erp_credentials,
            erp_fail_rate,
            erp_reject_rate,
            erp_lost_response_rate,
            erp_latency_ms,
        } => {
            partners::run(partners::Settings {
                listen,
                amqp_uri: broker.amqp_uri,
                erp_credentials,
                faults: partners::Faults {
                    fail_rate: erp_fail_rate,
                    reject_rate: erp_reject_rate,
                    lost_response_rate: erp_lost_response_rate,
                    latency_ms: erp_latency_ms,
                    outage_seconds: None,
                },
            })
            .await
        }
        Command::Events {
            broker,
            duration,
            rate,
            flows,
            ingress,
            ingress_auth,
            ingress_secret_file,
            ledger,
            invalid_rate,
            seed,
            partners_url,
            erp_outage,
        } => {
            let ingress_secret = match ingress_secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
                None => None,
            };
            publish::run(publish::Settings {
                amqp_uri: broker.amqp_uri,
                duration,
                rate,
                flows,
                ingress: ingress.into_iter().collect::<HashMap<_, _>>(),
                ingress_auth,
                ingress_secret,
                ledger,
                invalid_rate,
                seed,
                partners_url,
                erp_outage,
            })
            .await
        }
        Command::Report {
            broker,
            ledger,
            partners_url,
            namespace,
            metrics,
            wait,
            json,
        } => {
            let verdict = report::run(report::Settings {
                ledger,
                partners_url,
                amqp_uri: broker.amqp_uri,
                namespace,
                metrics,
                wait,
                json,
            })
            .await?;
            if !verdict.all_accounted_for {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Setup { broker } => {
            let connection = broker::connect(&broker.amqp_uri).await?;
            let channel = connection.create_channel().await?;
            broker::declare_partner_topology(&channel).await?;
            println!(
                "declared exchanges {:?}, wms.inbound and tms.inbound with their inbound queues",
                scenario::SOURCE_EXCHANGES
            );
            Ok(())
        }
    }
}
