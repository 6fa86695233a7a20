//! `millrace-bench`: the worker's full pipeline against a bare lapin relay, side by side in one run
//! on the same RabbitMQ. See docs/benchmarks.md for the method and the latest figures.
//!
//! The last line it prints has the form
//! `bench: baseline_msgs_per_s=N pipeline_msgs_per_s=N ratio=R p99_added_ms=X worker_rss_mib=Y`.

mod broker;
mod event;
mod measure;
mod pipeline;
mod process;
mod progress;
mod relay;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lapin::{Connection, ExchangeKind};

use broker::{BenchVhost, BrokerAddress};
use measure::{DrainRate, Latency, PacedRun};
use pipeline::Outputs;
use process::MeasuredProcess;
use progress::Progress;

/// Benchmarks the Millrace worker against a bare lapin relay on the local RabbitMQ.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// The baseline relay (started by the bench itself as a child process).
    Relay(relay::RelaySpec),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// AMQP host:port of the broker.
    #[arg(long, default_value = "127.0.0.1:5672")]
    amqp: String,
    /// Base URL of the RabbitMQ management API.
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    management_url: String,
    /// Broker user (AMQP and management API).
    #[arg(long, default_value = "guest")]
    user: String,
    /// Broker password.
    #[arg(long, default_value = "guest")]
    password: String,
    /// Events in each throughput backlog.
    #[arg(long, env = "BENCH_MESSAGES", default_value_t = 50_000)]
    messages: u64,
    /// Throughput rounds (baseline then pipeline each round); the best of each side counts.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 2)]
    rounds: usize,
    /// Seconds of steady-rate publishing for each latency run.
    #[arg(long, env = "BENCH_LATENCY_SECONDS", default_value_t = 15)]
    latency_seconds: u64,
    /// Prefetch of both the relay and the worker.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// The worker binary (default: `millrace-worker` next to this binary).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Measure only the baseline (when no worker binary exists yet).
    #[arg(long)]
    baseline_only: bool,
}

/// Outputs of the baseline relay's queue and exchanges.
const BASELINE_INPUT: &str = "bench.baseline.in";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Internal::Relay(spec)) => runtime.block_on(relay::run(spec)),
        None => runtime.block_on(bench(cli.run)),
    }
}

/// Figures of one side.
#[derive(Clone, Copy, Debug, Default)]
struct SideFigures {
    best_msgs_per_s: f64,
    cpu_us_per_msg: f64,
    peak_rss_kib: u64,
}

impl SideFigures {
    fn record(&mut self, rate: DrainRate, cpu_us_per_msg: f64, peak_rss_kib: u64) {
        if rate.msgs_per_s > self.best_msgs_per_s {
            self.best_msgs_per_s = rate.msgs_per_s;
            self.cpu_us_per_msg = cpu_us_per_msg;
        }
        self.peak_rss_kib = self.peak_rss_kib.max(peak_rss_kib);
    }
}

struct Bench {
    args: RunArgs,
    vhost: BenchVhost,
    connection: Connection,
    channel: lapin::Channel,
    work_dir: PathBuf,
    worker_bin: Option<PathBuf>,
    baseline_outputs: Outputs,
    pipeline_outputs: Outputs,
    progress: Progress,
    worker_starts: usize,
}

async fn bench(args: RunArgs) -> Result<()> {
    let worker_bin = if args.baseline_only {
        None
    } else {
        Some(find_worker(args.worker_bin.as_deref())?)
    };
    let rounds = args.rounds.max(1);
    let sides = if worker_bin.is_some() { 2 } else { 1 };
    let mut progress = Progress::new(1 + rounds * sides + sides + 1);
    progress.step("creating a vhost and the benchmark topology");
    let address = BrokerAddress {
        amqp: args.amqp.clone(),
        management: args.management_url.trim_end_matches('/').to_string(),
        user: args.user.clone(),
        password: args.password.clone(),
    };
    let vhost = BenchVhost::create(address, format!("millrace-bench-{}", std::process::id()))
        .await
        .context("creating the bench vhost")?;
    progress.note(&format!("vhost {}", vhost.name()));
    let work_dir = std::env::temp_dir().join(vhost.name());
    std::fs::create_dir_all(&work_dir)?;
    let connection = vhost.connect("control").await?;
    let channel = connection.create_channel().await?;
    let mut bench = Bench {
        args,
        vhost,
        connection,
        channel,
        work_dir,
        worker_bin,
        baseline_outputs: Outputs::new("baseline"),
        pipeline_outputs: Outputs::new("pipeline"),
        progress,
        worker_starts: 0,
    };
    let outcome = bench.run(rounds).await;
    let _ = bench.connection.close(200, "bench done".into()).await;
    if let Err(e) = bench.vhost.delete().await {
        eprintln!("could not delete vhost {}: {e:#}", bench.vhost.name());
    }
    let line = outcome?;
    println!("{line}");
    Ok(())
}

impl Bench {
    async fn run(&mut self, rounds: usize) -> Result<String> {
        self.declare_topology().await?;
        let mut baseline = SideFigures::default();
        let mut pipeline = SideFigures::default();
        for round in 1..=rounds {
            self.progress.step(&format!(
                "round {round}/{rounds}: baseline relay throughput ({} events)",
                self.args.messages
            ));
            let (rate, cpu, rss) = self.baseline_throughput().await?;
            self.progress.note(&format!(
                "baseline: {:.0} msg/s over {:.1}s, {cpu:.1} µs CPU/msg",
                rate.msgs_per_s, rate.seconds
            ));
            baseline.record(rate, cpu, rss);
            if self.worker_bin.is_some() {
                self.progress.step(&format!(
                    "round {round}/{rounds}: worker pipeline throughput ({} events)",
                    self.args.messages
                ));
                let (rate, cpu, rss) = self.pipeline_throughput().await?;
                self.progress.note(&format!(
                    "pipeline: {:.0} msg/s over {:.1}s, {cpu:.1} µs CPU/msg",
                    rate.msgs_per_s, rate.seconds
                ));
                pipeline.record(rate, cpu, rss);
            }
        }

        let rate = (baseline.best_msgs_per_s / 2.0).max(1.0);
        self.progress.step(&format!(
            "baseline relay latency at {rate:.0} msg/s (half the baseline throughput)"
        ));
        let baseline_latency = self.baseline_latency(rate).await?;
        self.progress.note(&describe_latency(&baseline_latency));

        let mut lines = vec![
            "summary:".to_string(),
            format!(
                "  baseline (bare lapin relay): {:.0} msg/s, {:.1} µs CPU/msg, peak RSS {:.1} MiB",
                baseline.best_msgs_per_s,
                baseline.cpu_us_per_msg,
                mib(baseline.peak_rss_kib)
            ),
            format!(
                "  baseline latency at {rate:.0} msg/s: {}",
                describe_latency(&baseline_latency)
            ),
        ];
        if self.worker_bin.is_none() {
            lines.push(format!(
                "bench: baseline_msgs_per_s={:.0}",
                baseline.best_msgs_per_s
            ));
            self.progress.step("summary");
            return Ok(lines.join("\n"));
        }

        self.progress.step(&format!(
            "worker pipeline latency at {rate:.0} msg/s (half the baseline throughput)"
        ));
        let (pipeline_latency, rss) = self.pipeline_latency(rate).await?;
        pipeline.peak_rss_kib = pipeline.peak_rss_kib.max(rss);
        self.progress.note(&describe_latency(&pipeline_latency));

        self.progress.step("summary");
        let ratio = pipeline.best_msgs_per_s / baseline.best_msgs_per_s;
        let added = pipeline_latency.p99_ms - baseline_latency.p99_ms;
        lines.extend([
            format!(
                "  pipeline (millrace-worker):  {:.0} msg/s, {:.1} µs CPU/msg, peak RSS {:.1} MiB",
                pipeline.best_msgs_per_s,
                pipeline.cpu_us_per_msg,
                mib(pipeline.peak_rss_kib)
            ),
            format!(
                "  pipeline latency at {rate:.0} msg/s: {}",
                describe_latency(&pipeline_latency)
            ),
            format!(
                "  ratio {ratio:.2} (target >= 0.80){}",
                verdict(ratio >= 0.8)
            ),
            format!(
                "  p99 added {added:.2} ms (target < 5){}",
                verdict(added < 5.0)
            ),
            format!(
                "  worker peak RSS {:.1} MiB (target < 40){}",
                mib(pipeline.peak_rss_kib),
                verdict(mib(pipeline.peak_rss_kib) < 40.0)
            ),
            format!(
                "bench: baseline_msgs_per_s={:.0} pipeline_msgs_per_s={:.0} ratio={ratio:.2} p99_added_ms={added:.2} worker_rss_mib={:.1}",
                baseline.best_msgs_per_s,
                pipeline.best_msgs_per_s,
                mib(pipeline.peak_rss_kib)
            ),
        ]);
        Ok(lines.join("\n"))
    }

    async fn declare_topology(&mut self) -> Result<()> {
        broker::declare_quorum_queue(&self.channel, BASELINE_INPUT, None).await?;
        for outputs in [&self.baseline_outputs, &self.pipeline_outputs] {
            for exchange in &outputs.exchanges {
                broker::declare_exchange(&self.channel, exchange, ExchangeKind::Direct).await?;
                broker::declare_quorum_queue(
                    &self.channel,
                    exchange,
                    Some((exchange, pipeline::OUTPUT_ROUTING_KEY)),
                )
                .await?;
            }
        }
        if self.worker_bin.is_some() {
            broker::declare_exchange(
                &self.channel,
                pipeline::SOURCE_EXCHANGE,
                ExchangeKind::Topic,
            )
            .await?;
            // The worker declares its own queues; one short start creates them before pre-loading.
            let mut worker = self.start_worker()?;
            self.wait_for_consumer(&pipeline::flow_names().main_queue(), &mut worker)
                .await?;
            worker.kill();
        }
        Ok(())
    }

    fn start_relay(&self) -> Result<MeasuredProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("relay")
            .args(["--uri", &self.vhost.uri()])
            .args(["--queue", BASELINE_INPUT])
            .args(["--routing-key", pipeline::OUTPUT_ROUTING_KEY])
            .args(["--prefetch", &self.args.prefetch.to_string()]);
        for exchange in &self.baseline_outputs.exchanges {
            command.args(["--exchange", exchange]);
        }
        MeasuredProcess::spawn("baseline relay", command, &self.work_dir.join("relay.log"))
    }

    fn start_worker(&mut self) -> Result<MeasuredProcess> {
        let bin = self
            .worker_bin
            .as_ref()
            .context("no worker binary for this run")?;
        let config = pipeline::worker_config(&self.pipeline_outputs, self.args.prefetch);
        let path = self.work_dir.join("worker-config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        self.worker_starts += 1;
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
            .env(pipeline::BROKER_URI_ENV, self.vhost.uri());
        MeasuredProcess::spawn(
            "worker",
            command,
            &self
                .work_dir
                .join(format!("worker-{}.log", self.worker_starts)),
        )
    }

    /// Waits until `queue` exists and has a consumer.
    async fn wait_for_consumer(&self, queue: &str, process: &mut MeasuredProcess) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            process.ensure_running()?;
            // A passive declare of a missing queue closes its channel, so each try gets its own.
            let channel = self.connection.create_channel().await?;
            if let Ok(depth) = broker::queue_depth(&channel, queue).await {
                let _ = channel.close(200, "probed".into()).await;
                if depth.consumers > 0 {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "no consumer on {queue} after 60s; last lines of the log:\n{}",
                    process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn purge_all(&self, queues: &[String]) -> Result<()> {
        for queue in queues {
            broker::purge(&self.channel, queue).await?;
        }
        Ok(())
    }

    /// Pre-loads the baseline input, starts the relay, and times the drain.
    async fn baseline_throughput(&mut self) -> Result<(DrainRate, f64, u64)> {
        let outputs = self.baseline_outputs.queues();
        let mut all = outputs.clone();
        all.push(BASELINE_INPUT.to_string());
        self.purge_all(&all).await?;
        measure::preload(
            &self.connection,
            "",
            BASELINE_INPUT,
            self.args.messages,
            &mut self.progress,
        )
        .await?;
        let mut relay = self.start_relay()?;
        let rate = measure::drain(
            &self.channel,
            &outputs,
            self.args.messages,
            &mut relay,
            &mut self.progress,
            Duration::from_secs(30),
        )
        .await?;
        let cpu = relay.cpu_seconds()? * 1e6 / self.args.messages as f64;
        let rss = relay.peak_rss_kib()?;
        relay.kill();
        Ok((rate, cpu, rss))
    }

    /// Pre-loads the flow's source exchange, starts the worker, and times the drain.
    async fn pipeline_throughput(&mut self) -> Result<(DrainRate, f64, u64)> {
        let names = pipeline::flow_names();
        let outputs = self.pipeline_outputs.queues();
        let mut all = outputs.clone();
        all.push(names.main_queue());
        all.push(names.dead_letter_queue());
        self.purge_all(&all).await?;
        measure::preload(
            &self.connection,
            pipeline::SOURCE_EXCHANGE,
            event::ROUTING_KEY,
            self.args.messages,
            &mut self.progress,
        )
        .await?;
        let mut worker = self.start_worker()?;
        let rate = measure::drain(
            &self.channel,
            &outputs,
            self.args.messages,
            &mut worker,
            &mut self.progress,
            Duration::from_secs(30),
        )
        .await?;
        let cpu = worker.cpu_seconds()? * 1e6 / self.args.messages as f64;
        let rss = worker.peak_rss_kib()?;
        worker.kill();
        let dead = broker::queue_depth(&self.channel, &names.dead_letter_queue())
            .await?
            .messages;
        if dead > 0 {
            bail!(
                "{dead} bench events were dead-lettered; the bench flow must deliver every event"
            );
        }
        Ok((rate, cpu, rss))
    }

    async fn baseline_latency(&mut self, rate: f64) -> Result<Latency> {
        let outputs = self.baseline_outputs.queues();
        let mut all = outputs.clone();
        all.push(BASELINE_INPUT.to_string());
        self.purge_all(&all).await?;
        let mut relay = self.start_relay()?;
        self.wait_for_consumer(BASELINE_INPUT, &mut relay).await?;
        let run = PacedRun {
            exchange: "",
            routing_key: BASELINE_INPUT,
            timed_output: &outputs[0],
            other_outputs: &outputs[1..],
            rate,
            duration: Duration::from_secs(self.args.latency_seconds),
            warm_up: Duration::from_secs(2),
        };
        let latency =
            measure::paced_latency(&self.connection, run, &mut relay, &mut self.progress).await?;
        relay.kill();
        Ok(latency)
    }

    async fn pipeline_latency(&mut self, rate: f64) -> Result<(Latency, u64)> {
        let names = pipeline::flow_names();
        let outputs = self.pipeline_outputs.queues();
        let mut all = outputs.clone();
        all.push(names.main_queue());
        self.purge_all(&all).await?;
        let mut worker = self.start_worker()?;
        self.wait_for_consumer(&names.main_queue(), &mut worker)
            .await?;
        let run = PacedRun {
            exchange: pipeline::SOURCE_EXCHANGE,
            routing_key: event::ROUTING_KEY,
            timed_output: &outputs[0],
            other_outputs: &outputs[1..],
            rate,
            duration: Duration::from_secs(self.args.latency_seconds),
            warm_up: Duration::from_secs(2),
        };
        let latency =
            measure::paced_latency(&self.connection, run, &mut worker, &mut self.progress).await?;
        let rss = worker.peak_rss_kib()?;
        worker.kill();
        Ok((latency, rss))
    }
}

/// The worker binary: the given path, else `millrace-worker` next to this binary.
fn find_worker(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent directory")?
            .join("millrace-worker"),
    };
    if !path.is_file() {
        bail!(
            "no worker binary at {}; build it with `cargo build --release -p millrace-worker`, \
             pass --worker-bin, or measure only the baseline with --baseline-only",
            path.display()
        );
    }
    Ok(path)
}

/// A loopback port that is free now (the worker binds it right after).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn describe_latency(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(met: bool) -> &'static str {
    if met { "" } else { "  MISSED" }
}
